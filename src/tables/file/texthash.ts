/**
 * texthash: a postmap(1) source file read into memory at open time
 * (src/util/dict_thash.c, Postfix 3.7 semantics).
 */
import { open } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { DICT_FLAG } from '../../protocol/flags.js';
import { foldKey, utf8Active } from '../core/casefold.js';
import { readLogicalLines } from '../../util/lines.js';
import { MemoryTable } from '../core/memory.js';
import { parseSourceLine, type SourceLineOptions } from '../core/source.js';
import { isSpaceCode } from '../../util/ctype.js';
import { strerror } from '../../util/strerror.js';
import { TableOpenError, type Bytes, type Table, type TableOpenOptions } from '../core/table.js';
import { requireReadOnly } from '../core/util.js';
import type { TableType } from '../core/registry.js';
import { FileStamp } from '../core/filestamp.js';

/**
 * For a line of ASCII bytes without NUL, '"' or '\\' whose key is followed by
 * whitespace: the index of that whitespace, plus 0x40000000 when the key has
 * an upper-case letter. -1 for any other line (the general path handles it).
 */
function simpleLine(line: Bytes): number {
  const n = line.length;
  let ws = -1;
  let upper = 0;
  for (let i = 0; i < n; i++) {
    const c = line.charCodeAt(i);
    if (c >= 0x80 || c === 0 || c === 0x22 || c === 0x5c) return -1;
    if (ws < 0) {
      if (c === 32 || (c >= 9 && c <= 13)) ws = i;
      else if (c >= 0x41 && c <= 0x5a) upper = 0x40000000;
    }
  }
  return ws <= 0 || n > 0x3fffffff ? -1 : ws | upper;
}

/**
 * Parse postmap source text into stored (folded) key -> value, applying the
 * open options' fold mode, UTF-8 checks and duplicate policy. `path` names
 * the file in warnings.
 */
export function parseTextHash(text: Bytes, path: string, opts: TableOpenOptions): Map<Bytes, Bytes> {
  const { warn, openFlags, fold } = opts;
  const checkUtf8 = utf8Active(fold, openFlags);
  const entries = new Map<Bytes, Bytes>();
  const at = (lineNo: number) => `${path}, line ${lineNo}`;
  const store = (stored: Bytes, key: Bytes, value: Bytes, lineNo: number): void => {
    if (!entries.has(stored)) entries.set(stored, value);
    else if (openFlags & DICT_FLAG.DUP_IGNORE) {
      // keep the first silently
    } else if (openFlags & DICT_FLAG.DUP_REPLACE) entries.set(stored, value);
    // Postfix makes the table a surrogate when no dup flag is set; we always warn and keep the first.
    else warn(`${at(lineNo)}: duplicate entry: "${key}"`);
  };
  const lineOpts: SourceLineOptions = { utf8Check: checkUtf8, rhsIsFile: (openFlags & DICT_FLAG.SRC_RHS_IS_FILE) !== 0, badFormatSuffix: ' -- ignoring this line', warn };
  for (const { text: raw, lineNo } of readLogicalLines(text, path, warn)) {
    // Fast path, the same result for the common line: ASCII, no NUL, quote or backslash (so the UTF-8 check
    // passes and folding is ASCII lower-casing), key and value separated by whitespace.
    const simple = simpleLine(raw);
    if (simple >= 0 && !(openFlags & DICT_FLAG.SRC_RHS_IS_FILE)) {
      const key = raw.slice(0, simple & 0x3fffffff);
      let a = (simple & 0x3fffffff) + 1;
      let b = raw.length;
      while (a < b && isSpaceCode(raw.charCodeAt(a))) a++;
      while (b > a && isSpaceCode(raw.charCodeAt(b - 1))) b--;
      if (a < b && key.charCodeAt(key.length - 1) !== 0x3a) {
        const value = raw.slice(a, b);
        store(fold === 'none' || simple < 0x40000000 ? key : key.toLowerCase(), key, value, lineNo);
        continue;
      }
    }
    const rec = parseSourceLine(raw, at(lineNo), lineOpts);
    if (rec === null) continue;
    const { key, value } = rec;
    store(foldKey(key, fold), key, value, lineNo);
  }
  return entries;
}

/** Read a whole file as bytes plus its stat, with Postfix's error texts. */
async function readSource(path: Bytes): Promise<{ text: Bytes; st: Stats }> {
  let fh;
  try {
    fh = await open(Buffer.from(path, 'latin1'), 'r');
  } catch (err) {
    throw new TableOpenError(`open database ${path}: ${strerror(err)}`);
  }
  try {
    // Status first: a write that lands after it makes changed() report the file as changed.
    const st = await fh.stat();
    const data = await fh.readFile();
    return { text: data.toString('latin1'), st };
  } catch (err) {
    throw new TableOpenError(`read ${path}: ${strerror(err)}`);
  } finally {
    await fh.close();
  }
}

class TextHashTable extends MemoryTable {
  constructor(
    name: string,
    entries: Map<Bytes, Bytes>,
    private readonly id: FileStamp,
  ) {
    super('texthash', name, entries);
  }

  /** True when the file was replaced, modified or removed since it was read. */
  changed(): Promise<boolean> {
    return this.id.changedAt(this.name);
  }
}

/** Opener for texthash:/path. */
export async function openTextHash(opts: TableOpenOptions): Promise<Table> {
  requireReadOnly(opts);
  const { text, st } = await readSource(opts.name);
  return new TextHashTable(opts.name, parseTextHash(text, opts.name, opts), FileStamp.of(st));
}

/**
 * JIT warm-up at daemon start (when texthash tables are approved): parse a
 * synthetic source a few times, so that the first real open runs optimized
 * code instead of the interpreter.
 */
export function warmUpTextHash(): void {
  const lines: string[] = [];
  for (let i = 0; i < 3000; i++) lines.push(i % 7 === 0 ? `User${i}@Example.COM\tv${i}` : `user${i}@example.com value-${i}`);
  lines.push('# comment', '"quoted key" x', 'cont a', '  b', 'dup 1', 'dup 2', 'alias: x', 'k\xe4 v');
  const text = lines.join('\n') + '\n';
  for (const fold of ['utf8', 'ascii', 'none'] as const) {
    for (let round = 0; round < 3; round++) {
      parseTextHash(text, 'warm-up', {
        type: 'texthash',
        name: 'warm-up',
        openFlags: fold === 'utf8' ? DICT_FLAG.FOLD_FIX | DICT_FLAG.UTF8_REQUEST : fold === 'ascii' ? DICT_FLAG.FOLD_FIX : 0,
        fold,
        writable: false,
        param: () => undefined,
        warn: () => undefined,
      });
    }
  }
}

export const texthashType: TableType = {
  name: 'texthash',
  open: openTextHash,
  implFlags: DICT_FLAG.FIXED,
  writable: false,
  loadsSource: true,
  warmUp: warmUpTextHash,
};
