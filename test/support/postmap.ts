/**
 * Differential testing against the real postmap(1) (Postfix 3.7.11): the
 * expected answers come from postmap, run with a private config directory.
 * Skipped when postmap is not installed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DICT_FLAG } from '../../src/protocol/flags.js';
import { DICT_ERR, TableOpenError, openTable, type Bytes, type FoldMode, type TableOpener } from '../../src/tables/index.js';
import { dictLookup, openOptions, outcome, sequenceAll, type Expect } from '../tables/conformance.js';
import { skipUnlessPresent } from './skip.js';

const POSTMAP = ['/usr/sbin/postmap', '/usr/bin/postmap'].find((p) => existsSync(p));
/** Why differential tests are skipped (outside CI; in CI a missing postmap fails), or false when postmap is there. */
export const skipPostmap: string | false = skipUnlessPresent(!POSTMAP && 'postmap (Postfix) is not installed');

/**
 * How postmap is run and which open options reproduce it:
 * utf8 = `compatibility_level = 3.6` (smtputf8 on, UTF-8 folding); ascii = bare
 * main.cf; none = `-f` with compatibility 3.6 (UTF-8 checks, no folding);
 * none-ascii = `-f` with a bare main.cf.
 */
export type DiffMode = 'utf8' | 'ascii' | 'none' | 'none-ascii';
export const ALL_MODES: readonly DiffMode[] = ['utf8', 'ascii', 'none', 'none-ascii'];

const MODE: Record<DiffMode, { fold: FoldMode; utf8: boolean; args: string[] }> = {
  utf8: { fold: 'utf8', utf8: true, args: [] },
  ascii: { fold: 'ascii', utf8: false, args: [] },
  none: { fold: 'none', utf8: true, args: ['-f'] },
  'none-ascii': { fold: 'none', utf8: false, args: ['-f'] },
};

let configRoot = '';
/** The config directory postmap runs with in a mode (postmap also exports it as MAIL_CONFIG). */
export function configDirFor(mode: DiffMode): string {
  return configDir(MODE[mode].utf8);
}

function configDir(utf8: boolean): string {
  if (!configRoot) {
    configRoot = mkdtempSync(join(tmpdir(), 'postmap-cf-'));
    for (const [sub, text] of [['u8', 'compatibility_level = 3.6\n'], ['ascii', '']]) {
      const d = join(configRoot, sub);
      mkdirSync(d);
      writeFileSync(join(d, 'main.cf'), text);
      // Postfix re-reads a just-written main.cf until it is a second old.
      utimesSync(join(d, 'main.cf'), 1_000_000_000, 1_000_000_000);
    }
    process.on('exit', () => rmSync(configRoot, { recursive: true, force: true }));
  }
  return join(configRoot, utf8 ? 'u8' : 'ascii');
}

export interface PostmapRun {
  status: number;
  stdout: Bytes;
  warnings: string[];
  fatal?: string;
}

/** A byte string as a bash $'...' word. */
function bashQuote(arg: Bytes): string {
  let out = "$'";
  for (let i = 0; i < arg.length; i++) {
    const c = arg.charCodeAt(i);
    out += c >= 0x20 && c < 0x7f && c !== 0x27 && c !== 0x5c ? arg[i] : '\\x' + c.toString(16).padStart(2, '0');
  }
  return out + "'";
}

/** Run postmap in a mode; stdout/stderr as byte strings, messages without their "postmap: x: " prefix. */
export async function runPostmap(mode: DiffMode, args: string[], input = '', env?: Record<string, string>): Promise<PostmapRun> {
  const m = MODE[mode];
  // Arguments are byte strings, which Node would UTF-8-encode: pass them through bash's $'...' quoting.
  // --norc: bash reads ~/.bashrc when stdin is a socket, as Node's pipes are.
  const argv = [POSTMAP!, '-c', configDir(m.utf8), ...m.args, ...args].map(bashQuote).join(' ');
  const child = spawn('/bin/bash', ['--norc', '-c', `exec ${argv}`], { env: env ?? process.env, timeout: 30_000 });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  child.stdin.on('error', () => {}); // postmap may exit before reading everything
  child.stdin.end(Buffer.from(input, 'latin1'));
  const [code] = (await once(child, 'close')) as [number | null];
  const stderr = Buffer.concat(err).toString('latin1').split('\n').filter(Boolean);
  // Warnings of postmap's own query/list layer ("table t:n: ...") are not the table's.
  const warnings = stderr
    .filter((l) => l.startsWith('postmap: warning: ') && !l.startsWith('postmap: warning: table '))
    .map((l) => l.slice(18));
  const fatal = stderr.find((l) => l.startsWith('postmap: fatal: '))?.slice(16);
  return { status: code ?? -1, stdout: Buffer.concat(out).toString('latin1'), warnings, fatal };
}

/** What Postfix's printable() makes of log text (bad bytes become '?'). */
export function postfixPrintable(s: string, utf8: boolean): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c < 0x7f) out += s[i];
    else if (utf8 && c >= 194 && c <= 254 && (s.charCodeAt(i + 1) & 0xc0) === 0x80) {
      let j = i + 1;
      while ((s.charCodeAt(j) & 0xc0) === 0x80) j++;
      out += s.slice(i, j);
      i = j - 1;
    } else out += '?';
  }
  return out;
}

export interface DiffScenario {
  title: string;
  /** Table name; "{path}" stands for the path of `file`. */
  name?: Bytes;
  /** Source file text (texthash); the name defaults to its path. "{dir}" stands for a scratch directory. */
  file?: Bytes;
  /** Files to create in the scratch directory first (name -> content). */
  files?: Record<string, Bytes>;
  keys: Bytes[];
  modes?: readonly DiffMode[];
  /** Extra postmap options and the open flags they stand for (e.g. ['-r'], DUP_REPLACE). */
  postmapArgs?: string[];
  openFlags?: number;
  /** Environment for postmap; our table sees it plus postmap's own additions. */
  env?: Record<string, string>;
  /** Compare `postmap -s` (entries, sorted) and the open-time warnings. */
  list?: boolean;
}

interface TheirResult {
  openError?: string;
  noSequence?: boolean;
  warnings?: string[];
  entries?: Array<[Bytes, Bytes]> | { error: number };
  lookups: Map<Bytes, Expect>;
}

/** Split postmap's "key\tvalue" output lines for the keys asked, in order. */
function parseQueryOutput(keys: Bytes[], stdout: Bytes): Map<Bytes, Expect> {
  const lines = stdout.split('\n');
  lines.pop();
  const res = new Map<Bytes, Expect>();
  let li = 0;
  for (const key of keys) {
    if (li < lines.length && lines[li].startsWith(key + '\t')) res.set(key, { value: lines[li++].slice(key.length + 1) });
    else res.set(key, 'notfound');
  }
  assert.equal(li, lines.length, 'unparsed postmap output');
  return res;
}

function sortEntries(e: Array<[Bytes, Bytes]> | Bytes[][]): Array<[Bytes, Bytes]> {
  return (e as Array<[Bytes, Bytes]>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

const QUERY_ERROR = /^table [^ ]+: query error(: (.*))?$/;
const SEQUENCE_ERROR = /^table [^ ]+: sequence error/;

async function ask(mode: DiffMode, spec: Bytes, s: DiffScenario): Promise<TheirResult> {
  const extra = s.postmapArgs ?? [];
  const result: TheirResult = { lookups: new Map() };
  const keys = s.keys;
  const [list, batch] = await Promise.all([
    s.list ? runPostmap(mode, [...extra, '-s', spec], '', s.env) : undefined,
    runPostmap(mode, [...extra, '-q', '-', spec], keys.map((k) => k + '\n').join(''), s.env),
  ]);
  if (list) {
    const r = list;
    if (r.fatal !== undefined && SEQUENCE_ERROR.test(r.fatal)) result.entries = { error: DICT_ERR.RETRY };
    else if (r.fatal !== undefined && /sequence operation is not supported/.test(r.fatal)) result.noSequence = true;
    else if (r.fatal !== undefined) return { openError: r.fatal, lookups: result.lookups };
    else {
      const lines = r.stdout.split('\n');
      lines.pop();
      result.entries = sortEntries(lines.map((l) => [l.slice(0, l.indexOf('\t')), l.slice(l.indexOf('\t') + 1)]));
    }
    result.warnings = r.warnings;
  }
  if (batch.fatal === undefined) {
    result.lookups = parseQueryOutput(keys, batch.stdout);
    return result;
  }
  if (!QUERY_ERROR.test(batch.fatal)) return { openError: batch.fatal, lookups: result.lookups };
  // A lookup error ends postmap: ask key by key.
  await Promise.all(
    keys.map(async (key) => {
      const r = await runPostmap(mode, [...extra, '-q', '-', spec], key + '\n', s.env);
      const m = r.fatal === undefined ? undefined : QUERY_ERROR.exec(r.fatal);
      if (m) result.lookups.set(key, { error: m[2] === undefined ? DICT_ERR.CONFIG : DICT_ERR.RETRY });
      else result.lookups.set(key, parseQueryOutput([key], r.stdout).get(key)!);
    }),
  );
  return result;
}

/**
 * Register differential tests: each scenario in each mode is run through
 * postmap and through our table type; open errors, open-time warnings,
 * `-s` listings and every key's outcome must agree.
 */
export function runDifferential(
  typeName: string,
  scenarios: DiffScenario[],
  options: { opener?: (s: DiffScenario, mode: DiffMode) => TableOpener } = {},
): void {
  describe(`${typeName} vs postmap`, { skip: skipPostmap, concurrency: 8 }, () => {
    let dir = '';
    before(() => {
      dir = mkdtempSync(join(tmpdir(), `diff-${typeName}-`));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    scenarios.forEach((s, index) => {
      for (const mode of s.modes ?? ALL_MODES) {
        it(`${s.title} [${mode}]`, async () => {
          let name = s.name ?? '';
          // Modes run concurrently: each gets its own scratch directory.
          const scratch = join(dir, `${index}-${mode}`);
          mkdirSync(scratch);
          for (const [f, text] of Object.entries(s.files ?? {})) writeFileSync(join(scratch, f), Buffer.from(text, 'latin1'));
          if (s.file !== undefined) {
            const path = join(scratch, 'src');
            writeFileSync(path, Buffer.from(s.file.replaceAll('{dir}', scratch), 'latin1'));
            // An old mtime keeps Postfix from re-reading a "hot" file (and repeating warnings).
            utimesSync(path, 1_000_000_000, 1_000_000_000);
            name = (s.name ?? '{path}').replaceAll('{path}', path);
          }
          const spec = `${typeName}:${name}`;
          const theirs = await ask(mode, spec, s);

          const m = MODE[mode];
          const warnings: string[] = [];
          const openFlags = DICT_FLAG.DUP_WARN | (s.openFlags ?? 0) | (m.utf8 ? DICT_FLAG.UTF8_ACTIVE : 0);
          const opts = openOptions(typeName, name, { fold: m.fold, openFlags }, warnings);
          let table;
          try {
            table = await (options.opener ? options.opener(s, mode)(opts) : openTable(opts));
          } catch (err) {
            if (!(err instanceof TableOpenError)) throw err;
            assert.equal(postfixPrintable(err.message, m.utf8), theirs.openError, 'open error');
            return;
          }
          assert.equal(theirs.openError, undefined, 'postmap failed to open, we did not');
          if (theirs.warnings) {
            assert.deepEqual(warnings.map((w) => postfixPrintable(w, m.utf8)), theirs.warnings, 'open warnings');
          }
          // With -F postmap decodes the stored base64 when it prints.
          const decode = (v: Bytes) => (openFlags & DICT_FLAG.SRC_RHS_IS_FILE ? Buffer.from(v, 'base64').toString('latin1') : v);
          if (theirs.noSequence) assert.equal(table.sequence, undefined, 'sequence support');
          if (theirs.entries) {
            const ours = await sequenceAll(table);
            const want = Array.isArray(ours) ? sortEntries(ours.map(([k, v]) => [k, decode(v)])) : ours;
            assert.deepEqual(want, theirs.entries, 'sequence');
          }
          for (const key of s.keys) {
            const res = await dictLookup(table, key, opts);
            const got = outcome(res.found ? { found: true, value: decode(res.value) } : res);
            assert.deepEqual(got, theirs.lookups.get(key), `key ${JSON.stringify(key)}`);
          }
          await table.close?.();
        });
      }
    });
  });
}
