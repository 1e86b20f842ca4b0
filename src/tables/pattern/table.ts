/**
 * The regexp:/pcre: table object: opens the source (read and scanned by the
 * addon when it is a regular file), builds the native rule set, and
 * evaluates it in one call per lookup, expanding $n in the winning value.
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { loadNative, type NativeEngines, type PatternScan, type RuleSetHandle } from '../../addon/index.js';
import { lowercaseAscii } from '../core/casefold.js';
import { readTableSource } from '../core/stream.js';
import { DICT_ERR, NOT_FOUND, TableOpenError, found, type Bytes, type LookupResult, type Table, type TableOpenOptions } from '../core/table.js';
import { cString, requireReadOnly } from '../core/util.js';
import { type PatternKind } from './syntax.js';
import { noRegsub, parseRules, scanFast, type PatternDialect, type RuleInfos } from './rules.js';
import { scheduler } from './threads.js';
import { FileStamp } from '../core/filestamp.js';

/** Append group n of `subject` the way the Postfix expansion callbacks do. */
function groupText(kind: PatternKind, subject: Bytes, offsets: Int32Array, n: number): Bytes {
  const so = offsets[2 * n];
  const eo = offsets[2 * n + 1];
  if (kind === 'regexp') {
    // empty or not matched: nothing
    return so < 0 || so === eo ? '' : subject.slice(so, eo);
  }
  // pcre2: PCRE2_UNSET pairs (-1, -1) have length 0.
  if (so === eo) return '';
  if (eo < so) return subject.slice(Math.max(so, 0)); // size_t wrap-around: strncat copies to the end
  return subject.slice(so, eo);
}

export class PatternTable implements Table {
  readonly implFlags = DICT_FLAG.PATTERN;
  private set: RuleSetHandle | null;
  private readonly offsets: Int32Array;

  constructor(
    readonly type: PatternKind,
    readonly name: Bytes,
    private readonly native: NativeEngines,
    set: RuleSetHandle,
    private readonly infos: RuleInfos,
    maxSub: number,
    private readonly warn: (text: string) => void,
    private readonly fileId: FileStamp | undefined,
  ) {
    this.set = set;
    this.offsets = new Int32Array(2 * (maxSub + 1));
  }

  /** Number of rules kept (match, IF and ENDIF). */
  get ruleCount(): number {
    return this.infos.lineNos.length;
  }

  lookup(key: Bytes, flags: number): LookupResult | Promise<LookupResult> {
    const set = this.set;
    if (set === null) return { found: false, error: DICT_ERR.RETRY };
    let subject = cString(key);
    if (flags & DICT_FLAG.FOLD_MUL) subject = lowercaseAscii(subject);
    const skipRegsub = (flags & DICT_FLAG.NO_REGSUB) !== 0;
    if (this.infos.lineNos.length < ASYNC_MIN_RULES || scheduler.runHere()) {
      const r = this.native.ruleSetExec(set, subject, skipRegsub, this.offsets);
      scheduler.stats.sync++;
      if (typeof r === 'number') return this.result(subject, r, this.offsets, null);
      return this.result(subject, r.index, this.offsets, r.errors);
    }
    return new Promise((resolve) => {
      scheduler.submit(this.native, {
        set,
        subject,
        skipRegsub,
        done: (r) => resolve(r.index === -2 ? { found: false, error: DICT_ERR.RETRY } : this.result(subject, r.index, r.offsets, r.errors)),
      });
    });
  }

  private result(subject: Bytes, index: number, offsets: Int32Array | null, errors: Array<[number, string]> | null): LookupResult {
    if (errors) for (const [at, text] of errors) this.warn(`${this.type} map ${this.name}, line ${this.infos.lineNos[at]}: ${text}`);
    if (index < 0) return NOT_FOUND;
    const value = this.infos.values[index]!;
    if (typeof value === 'string') return found(value);
    let out = '';
    for (const part of value) out += typeof part === 'number' ? groupText(this.type, subject, offsets!, part) : part;
    return found(out);
  }

  /** True when the source file was replaced, modified or removed since it was read (inline text never changes). */
  async changed(): Promise<boolean> {
    return this.fileId !== undefined && this.fileId.changedAt(this.name);
  }

  close(): void {
    // The native memory goes with the handles when they are collected.
    this.set = null;
  }
}

/** Tables with fewer rules are always evaluated on the main thread (a hand-off would cost more than the scan). */
const ASYNC_MIN_RULES = 32;

/** Build the table from source text. */
function buildPatternTable(
  native: NativeEngines,
  dialect: PatternDialect,
  opts: TableOpenOptions,
  text: Bytes,
  fileId: FileStamp | undefined,
  scanned?: PatternScan,
): PatternTable {
  const { batch, program, infos, maxSub } = parseRules(native, dialect, text, opts, {}, scanned);
  const set = native.ruleSetFromBatch(batch, program);
  return new PatternTable(dialect.kind, opts.name, native, set, infos, maxSub, opts.warn, fileId);
}

/** Open a regexp/pcre table: read the source, parse and compile every rule, build the native rule set. */
export async function openPatternTable(opts: TableOpenOptions, dialect: PatternDialect): Promise<Table> {
  requireReadOnly(opts);
  let native: NativeEngines;
  try {
    native = loadNative();
  } catch (err) {
    throw new TableOpenError(`${dialect.kind}:${opts.name}: ${(err as Error).message}`);
  }
  if (!opts.name.startsWith('{')) {
    // A regular file is read by the addon, which starts compiling as it scans (else: null, read it here).
    const got = native.patternsScanFile(dialect.engine, opts.name, scanFast(opts), noRegsub(opts));
    if (got !== null) {
      return buildPatternTable(native, dialect, opts, got.text, FileStamp.fromNative(got.stat), got);
    }
  }
  const source = await readTableSource(dialect.kind, opts.name);
  return buildPatternTable(native, dialect, opts, source.text, source.stat && FileStamp.of(source.stat));
}

