/**
 * Differential test runner: generated pattern tables and keys, answered by
 * the real `postmap -q - TYPE:FILE` and by proxymapd through the real
 * `postmap -q - proxy:TYPE:FILE`. A difference is reported with a minimal
 * case (rules and keys removed while the difference stays).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { postmap, startProxymapd, writeTable, type Instance } from '../interop/harness.js';
import { generateCase, type GeneratedCase, type PatternKind } from './generate.js';
import { isValidUtf8, openTable } from '../../src/tables/index.js';

export interface Difference {
  kind: PatternKind;
  seed: number;
  lines: string[];
  keys: string[];
  direct: string;
  proxied: string;
  minimal?: { lines: string[]; keys: string[]; direct: string; ours: string };
}

export interface DifftestOptions {
  kinds: PatternKind[];
  cases: number;
  /** first seed; case i of a kind uses seed + i */
  seed: number;
  /** main.cf compatibility_level (3.6: smtputf8 and UTF-8 checks; 0: bytes) */
  compatibilityLevel: string;
  batch?: number;
  log?: (s: string) => void;
}

const asInput = (keys: string[]) => Buffer.from(keys.map((k) => k + '\n').join(''), 'latin1');
const outText = (r: { stdout: Buffer; status: number; stderr: string }) => {
  const fatal = r.stderr.split('\n').find((l) => l.includes('fatal:'));
  return `${r.stdout.toString('latin1')}[exit ${r.status}${fatal ? ' fatal' : ''}]`;
};

/** What postmap -q - would print for our table implementation, in-process (for minimizing). */
export async function ours(kind: PatternKind, file: string, keys: string[], utf8: boolean): Promise<string> {
  let table;
  try {
    table = await openTable({
      type: kind, name: file, openFlags: 0x84041, fold: utf8 ? 'utf8' : 'ascii', writable: false,
      param: () => undefined, warn: () => undefined,
    });
  } catch {
    return '[exit 1 fatal]';
  }
  let out = '';
  let any = false;
  for (const k of keys) {
    if (utf8 && !isValidUtf8(k)) continue;
    const r = await table.lookup(k, 0x80041);
    if (!r.found) {
      if (r.error !== 0) return `${out}[exit 1 fatal]`;
      continue;
    }
    if (utf8 && !isValidUtf8(r.value)) return `${out}[exit 1 fatal]`;
    out += `${k}\t${r.value}\n`;
    any = true;
  }
  return `${out}[exit ${any ? 0 : 1}]`;
}

/** What the real postmap -q - prints for the table (conf: its config directory). */
export async function direct(conf: string, kind: PatternKind, file: string, keys: string[]): Promise<string> {
  return outText(await postmap(['-c', conf, '-q', '-', `${kind}:${file}`], asInput(keys)));
}

/** Shrink a failing case: drop rules, then keys, while our in-process answer still differs. */
async function minimize(d: Difference, conf: string, dir: string, utf8: boolean): Promise<Difference['minimal']> {
  let n = 0;
  const differs = async (lines: string[], keys: string[]) => {
    const f = path.join(dir, `min-${d.seed}-${n++}`);
    writeTable(f, Buffer.from(lines.join('\n') + '\n', 'latin1'));
    const a = await direct(conf, d.kind, f, keys);
    const b = await ours(d.kind, f, keys, utf8);
    return a !== b ? { a, b } : null;
  };
  let lines = d.lines.slice();
  let keys = d.keys.slice();
  let last = await differs(lines, keys);
  if (!last) return undefined; // the difference is not in the table code: report the case as it is
  for (const what of ['keys', 'lines'] as const) {
    for (let i = (what === 'keys' ? keys : lines).length - 1; i >= 0; i--) {
      const cand = what === 'keys' ? { lines, keys: keys.filter((_, j) => j !== i) } : { lines: lines.filter((_, j) => j !== i), keys };
      if (cand.keys.length === 0) continue;
      const r = await differs(cand.lines, cand.keys);
      if (r) {
        lines = cand.lines;
        keys = cand.keys;
        last = r;
      }
    }
  }
  return { lines, keys, direct: last.a, ours: last.b };
}

export async function runDifftest(o: DifftestOptions): Promise<{ cases: number; differences: Difference[] }> {
  const log = o.log ?? (() => undefined);
  const batch = o.batch ?? 150;
  const utf8 = Number(o.compatibilityLevel) >= 1;
  const differences: Difference[] = [];
  let cases = 0;
  const all: GeneratedCase[] = [];
  for (const kind of o.kinds) for (let i = 0; i < o.cases; i++) all.push(generateCase(kind, o.seed + i));
  for (let start = 0; start < all.length; start += batch) {
    const chunk = all.slice(start, start + batch);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-difftest-'));
    const files = chunk.map((c, i) => {
      const f = path.join(dir, `${c.kind}-${c.seed}-${i}`);
      writeTable(f, Buffer.from(c.lines.join('\n') + '\n', 'latin1'));
      return f;
    });
    let inst: Instance | undefined;
    try {
      inst = await startProxymapd(
        { compatibility_level: o.compatibilityLevel, proxy_read_maps: chunk.map((c, i) => `proxy:${c.kind}:${files[i]}`).join(' ') },
        dir,
      );
      const conf = inst.conf;
      // Two cases at a time: postmap runs are mostly waiting.
      for (let i = 0; i < chunk.length; i += 2) {
        await Promise.all(
          chunk.slice(i, i + 2).map(async (c, j) => {
            const f = files[i + j];
            const [a, b] = await Promise.all([
              direct(conf, c.kind, f, c.keys),
              postmap(['-c', conf, '-q', '-', `proxy:${c.kind}:${f}`], asInput(c.keys)).then(outText),
            ]);
            cases++;
            if (a !== b) {
              const d: Difference = { kind: c.kind, seed: c.seed, lines: c.lines, keys: c.keys, direct: a, proxied: b };
              d.minimal = await minimize(d, conf, dir, utf8);
              differences.push(d);
              log(formatDifference(d));
            }
          }),
        );
      }
    } finally {
      await inst?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    log(`${Math.min(start + batch, all.length)}/${all.length} cases, ${differences.length} differences`);
  }
  return { cases, differences };
}

export function formatDifference(d: Difference): string {
  const j = (x: unknown) => JSON.stringify(x);
  let s = `DIFFERENCE ${d.kind} seed ${d.seed}\n  table: ${j(d.lines)}\n  keys: ${j(d.keys)}\n  postmap direct: ${j(d.direct)}\n  through proxymapd: ${j(d.proxied)}`;
  if (d.minimal) {
    s += `\n  minimal table: ${j(d.minimal.lines)}\n  minimal keys: ${j(d.minimal.keys)}\n  direct: ${j(d.minimal.direct)}\n  ours: ${j(d.minimal.ours)}`;
  }
  return s;
}
