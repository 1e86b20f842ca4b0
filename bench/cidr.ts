/**
 * cidr table open time and lookup rate, ours versus Postfix's postmap.
 *
 *   node --import tsx bench/cidr.ts [--rules N] [--keys N] [--random | --ifs] [--warm] [--write FILE]
 *
 * --warm runs warmUpCidr() first (what a daemon can do when idle); without
 * it the first open runs largely unoptimized code.
 *
 * Postfix: open time = wall time of `postmap -q x cidr:FILE` (process start,
 * parse, no match since "x" is no address); lookup rate from
 * `postmap -q - cidr:FILE` over the key list, less that open time.
 * Ours: openTable() and table.lookup() in this process.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { warmUpCidr } from '../src/tables/pattern/cidr.js';
import { openTable } from '../src/tables/index.js';
import { inetNtop } from '../src/tables/pattern/inet.js';
import { gen, randomKeys, randomTable, type Gen } from '../test/tables/pattern/cidrgen.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

const rules = arg('rules', 100_000);
const nkeys = arg('keys', 20_000);
const ifs = process.argv.includes('--ifs');
const synthetic = process.argv.includes('--random');

/**
 * A realistic access table: distinct networks, mostly IPv4 /32 and /24,
 * some /16 and IPv6, no negations or IF blocks, no invalid lines; keys are
 * addresses with about a third inside some network.
 */
function accessTable(g: Gen, n: number, nkeys: number): { text: string; keys: string[] } {
  const lines: string[] = [];
  const seen = new Set<string>();
  const nets: Array<[Uint8Array, number]> = [];
  while (lines.length < n) {
    const v6 = g.chance(0.05);
    const b = new Uint8Array(v6 ? 16 : 4);
    if (v6) {
      b[0] = 0x20;
      b[1] = 0x01;
      for (let i = 2; i < 16; i++) b[i] = g.int(256);
    } else for (let i = 0; i < 4; i++) b[i] = g.int(256);
    const r = g.int(100);
    const prefix = v6 ? g.pick([48, 64, 128]) : r < 70 ? 32 : r < 90 ? 24 : 16;
    for (let bit = prefix; bit < b.length * 8; bit++) b[bit >> 3] &= ~(0x80 >> (bit & 7));
    const text = inetNtop(b) + (prefix === b.length * 8 ? '' : `/${prefix}`);
    if (seen.has(text)) continue;
    seen.add(text);
    nets.push([b, prefix]);
    lines.push(`${text}\t${g.pick(['REJECT listed', 'OK', 'DUNNO', '550 go away'])}`);
  }
  const keys: string[] = [];
  while (keys.length < nkeys) {
    if (g.chance(0.33)) {
      const [net, prefix] = g.pick(nets);
      const b = Uint8Array.from(net);
      for (let bit = prefix; bit < b.length * 8; bit++) if (g.chance(0.5)) b[bit >> 3] |= 0x80 >> (bit & 7);
      keys.push(inetNtop(b));
    } else {
      keys.push(`${g.int(256)}.${g.int(256)}.${g.int(256)}.${g.int(256)}`);
    }
  }
  return { text: `# generated access table\n${lines.join('\n')}\n`, keys };
}

const dir = mkdtempSync(join(tmpdir(), 'bench-cidr-'));
try {
  const g = gen(12345);
  let text: string;
  let keys: string[];
  if (synthetic || ifs) {
    text = randomTable(g, rules, { ifs });
    keys = randomKeys(g, nkeys, text);
  } else {
    ({ text, keys } = accessTable(g, rules, nkeys));
  }
  const out = process.argv.indexOf('--write');
  if (out >= 0) {
    // Only write the table (for profiling or manual timing).
    writeFileSync(process.argv[out + 1], text);
    process.exit(0);
  }
  const file = join(dir, 'table.cidr');
  writeFileSync(file, text);
  utimesSync(file, 1_000_000_000, 1_000_000_000);
  const conf = join(dir, 'conf');
  mkdirSync(conf);
  writeFileSync(join(conf, 'main.cf'), 'compatibility_level = 3.6\n');
  utimesSync(join(conf, 'main.cf'), 1_000_000_000, 1_000_000_000);
  const kind = ifs ? 'random rules with IF blocks' : synthetic ? 'random rules' : 'access table';
  console.log(`table: ${rules} lines (${kind}), ${(text.length / 1e6).toFixed(1)} MB; ${keys.length} keys`);

  // Ours.
  if (process.argv.includes('--warm')) {
    const t = performance.now();
    warmUpCidr();
    console.log(`warm-up: ${(performance.now() - t).toFixed(0)} ms`);
    await new Promise((r) => setTimeout(r, 300)); // let background compilation finish
  }
  const opens: number[] = [];
  let table;
  let first = 0;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    table = await openTable({ type: 'cidr', name: file, openFlags: 0, fold: 'none', writable: false, param: () => undefined, warn: () => {} });
    opens.push(performance.now() - t0);
    if (i === 0) first = opens[0];
  }
  opens.sort((a, b) => a - b);
  let n = 0;
  let hits = 0;
  const t1 = performance.now();
  while (performance.now() - t1 < 2000) {
    for (const k of keys) {
      const r = table!.lookup(k, 0) as { found: boolean };
      n++;
      if (r.found) hits++;
    }
  }
  const ourRate = n / ((performance.now() - t1) / 1000);
  console.log(`ours:    open ${first.toFixed(0)} ms first, ${opens[2].toFixed(0)} ms median of 5, ${Math.round(ourRate).toLocaleString('en')} lookups/s (${((hits / n) * 100).toFixed(0)}% found)`);

  // Postfix.
  const postmap = ['/usr/sbin/postmap', '/usr/bin/postmap'].find((p) => existsSync(p));
  if (!postmap) {
    console.log('postfix: postmap not installed');
  } else {
    const timeRun = (args: string[], input = '') => {
      const t0 = performance.now();
      const r = spawnSync(postmap, ['-c', conf, ...args], { input, maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'ignore'] });
      const ms = performance.now() - t0;
      if (r.status !== 0 && r.status !== 1) throw new Error(`postmap exited ${r.status}`);
      return ms;
    };
    const popens: number[] = [];
    for (let i = 0; i < 5; i++) popens.push(timeRun(['-q', 'x', `cidr:${file}`]));
    popens.sort((a, b) => a - b);
    const empty = timeRun(['-q', 'x', 'static:x']);
    const total = timeRun(['-q', '-', `cidr:${file}`], keys.join('\n') + '\n');
    const rate = keys.length / ((total - popens[2]) / 1000);
    console.log(
      `postmap: open ${popens[2].toFixed(0)} ms (median of 5 runs of "postmap -q x cidr:FILE"; process alone ${empty.toFixed(0)} ms), ` +
        `${Math.round(rate).toLocaleString('en')} lookups/s ("postmap -q -" over the keys: ${total.toFixed(0)} ms)`,
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
