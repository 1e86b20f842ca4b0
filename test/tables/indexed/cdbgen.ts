/**
 * Helpers for the cdb and build tests: seeded random postmap sources (mixed
 * case, non-ASCII, empty values, duplicates, quoted keys ...), their lookup
 * keys, and a synchronous `postmap cdb:file` run in a scratch directory.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { utf8ToBytes as u, type Bytes } from '../../../src/tables/index.js';
import { buildCdb, parsePostmapSource } from '../../../src/tables/build/build.js';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { gen } from '../pattern/cidrgen.js';
import { configDirFor, type DiffMode } from '../../support/postmap.js';

export const POSTMAP = ['/usr/sbin/postmap', '/usr/bin/postmap'].find((p) => existsSync(p));

/** Key characters: ASCII of both cases, letters whose folding differs between ASCII/UTF-8 modes. */
const KEY_CHARS = [
  'a', 'b', 'c', 'A', 'B', 'C', 'z', 'Z', '0', '7', '.', '-', '@', '_', '+', '=',
  u('é'), u('É'), u('ß'), u('ẞ'), u('σ'), u('Σ'), u('ς'), u('Ä'), u('ä'), u('ﬀ'), u('İ'), u('Ω'), u('ж'), u('Ж'),
];
const VALUE_WORDS = ['x', 'Bar', 'baz qux', 'V', u('Ünïcödé'), '1.2.3.4', 'OK', 'REJECT text here', '""', 'a\tb', '\\', 'k:v'];

export interface RandomSource {
  /** The source text (byte string). */
  text: Bytes;
  /** Lookup keys: the source keys as written, case variants, absent keys. */
  keys: Bytes[];
}

function randomKey(g: ReturnType<typeof gen>): Bytes {
  let k = '';
  const n = 1 + g.int(8);
  for (let i = 0; i < n; i++) k += g.pick(KEY_CHARS);
  if (g.chance(0.08)) k = `"${k} ${g.pick(KEY_CHARS)}"`;
  else if (g.chance(0.05)) k = `${k}\\ ${g.pick(KEY_CHARS)}`;
  else if (g.chance(0.04)) k += ':';
  return k;
}

/** Upper-/lower-case the ASCII letters of a byte string (and leave everything else). */
function upper(s: Bytes): Bytes {
  return s.replace(/[a-z]/g, (c) => c.toUpperCase());
}
function lower(s: Bytes): Bytes {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/**
 * A random postmap source with `lines` entries: duplicates in other case,
 * empty values, comments, continuation lines, CRLF, non-UTF-8 lines.
 */
export function randomSource(seed: number, lines: number): RandomSource {
  const g = gen(seed);
  const out: string[] = [];
  const keys: Bytes[] = [];
  for (let i = 0; i < lines; i++) {
    let key = keys.length > 0 && g.chance(0.15) ? g.pick(keys) : randomKey(g);
    if (g.chance(0.3)) key = g.chance(0.5) ? upper(key) : lower(key);
    keys.push(key);
    let value = g.chance(0.06) ? '' : g.pick(VALUE_WORDS) + (g.chance(0.3) ? ` ${i}` : '');
    if (g.chance(0.05)) value += '   ';
    let line = `${key}${g.pick([' ', '\t', '  '])}${value}`;
    if (g.chance(0.03)) line += '\r';
    if (g.chance(0.03)) line += `\n ${g.pick(VALUE_WORDS)}`;
    if (g.chance(0.03)) line = `# ${line}`;
    if (g.chance(0.02)) line = `${key}\xff ${value}`;
    if (g.chance(0.02)) out.push('');
    out.push(line);
  }
  const queries = new Set<Bytes>();
  for (const k of keys) {
    queries.add(k);
    queries.add(upper(k));
    queries.add(lower(k));
  }
  for (let i = 0; i < 20; i++) queries.add(randomKey(g));
  for (const k of ['', 'nosuchkey', '\xff\xfe', u('STRASSE'), '"', 'a\\']) queries.add(k);
  return { text: out.join('\n') + '\n', keys: [...queries].filter((k) => !k.includes('\n') && !k.includes('\r')) };
}

export interface PostmapBuild {
  /** The .cdb file's bytes, undefined when postmap wrote none. */
  cdb: Bytes | undefined;
  status: number;
  /** stderr as a byte string */
  stderr: Bytes;
}

/**
 * Run `postmap -c <mode's config> args cdb:<dir>/src` on source text in a
 * fresh directory. Without postmap, build with our own builder instead (so
 * that reader tests still have files to read).
 */
export function postmapBuildCdb(source: Bytes, args: string[] = [], mode: DiffMode = 'utf8'): PostmapBuild {
  const dir = mkdtempSync(join(tmpdir(), 'cdbgen-'));
  try {
    const path = join(dir, 'src');
    writeFileSync(path, Buffer.from(source, 'latin1'));
    if (!POSTMAP) return { cdb: ourBuild(source, path, args, mode), status: 0, stderr: '' };
    const r = spawnSync(POSTMAP, ['-c', configDirFor(mode), ...args, `cdb:${path}`], { timeout: 60_000 });
    const cdbPath = `${path}.cdb`;
    return {
      cdb: existsSync(cdbPath) ? readFileSync(cdbPath).toString('latin1') : undefined,
      status: r.status ?? -1,
      stderr: r.stderr.toString('latin1'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function ourBuild(source: Bytes, path: string, args: string[], mode: DiffMode): Bytes {
  let flags = DICT_FLAG.DUP_WARN | DICT_FLAG.FOLD_FIX | DICT_FLAG.UTF8_REQUEST;
  for (const a of args) {
    for (const c of a.slice(1)) {
      if (c === 'f') flags &= ~DICT_FLAG.FOLD_FIX;
      if (c === 'u') flags &= ~DICT_FLAG.UTF8_REQUEST;
      if (c === 'N') flags = (flags | DICT_FLAG.TRY1NULL) & ~DICT_FLAG.TRY0NULL;
      if (c === 'n') flags = (flags | DICT_FLAG.TRY0NULL) & ~DICT_FLAG.TRY1NULL;
      if (c === 'r') flags = (flags & ~(DICT_FLAG.DUP_WARN | DICT_FLAG.DUP_IGNORE)) | DICT_FLAG.DUP_REPLACE;
      if (c === 'w') flags = (flags & ~(DICT_FLAG.DUP_WARN | DICT_FLAG.DUP_REPLACE)) | DICT_FLAG.DUP_IGNORE;
    }
  }
  const smtputf8 = mode === 'utf8' || mode === 'none';
  const warn = () => undefined;
  buildCdb(path, parsePostmapSource(source, path, { dictFlags: flags, smtputf8, warn }), { dictFlags: flags, warn });
  return readFileSync(`${path}.cdb`).toString('latin1');
}
