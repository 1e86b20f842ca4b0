/**
 * regexp:/pcre: tables off the main thread: the patterns of a table are
 * compiled on helper threads while it is parsed, and lookups that compete
 * are evaluated on the addon's evaluation threads. Everything a client can
 * see must be what the one-thread path gives: answers, $n substitution,
 * runtime match errors with their rule's line, open-time warnings in line
 * order (against the real postmap), and per-connection reply order.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NATIVE_ADDON_PATH, loadNative } from '../../../src/addon/index.js';
import { DICT_FLAG, PROXY_STAT } from '../../../src/protocol/flags.js';
import { encodeRecord, RecordDecoder } from '../../../src/protocol/codec.js';
import { ProxyServer } from '../../../src/server/server.js';
import { setLogSink } from '../../../src/log.js';
import { openTable, type LookupResult, type Table } from '../../../src/tables/index.js';
import { defaultPatternThreads, patternExecStats, patternThreads, setPatternThreads } from '../../../src/tables/pattern/threads.js';
import { warmUpPatterns } from '../../../src/tables/pattern/warmup.js';
import { pcreDialect } from '../../../src/tables/pattern/pcre.js';
import { regexpDialect } from '../../../src/tables/pattern/regexp.js';
import { Config } from '../../../src/config/params.js';
import { createServer } from '../../../src/server/daemon.js';
import { ProxyConnection } from '../../../src/client/client.js';
import { openOptions } from '../conformance.js';
import { runDifferential, type DiffScenario } from '../../support/postmap.js';

type Kind = 'regexp' | 'pcre';

/** mulberry32 */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A table of `n` rules of several shapes, with IF blocks; the same text works for both dialects. */
function bigTable(n: number): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    switch (i % 6) {
      case 0:
        lines.push(`/^k${i}-(x+)(y*)$/ v${i}:$1:$2`);
        break;
      case 1:
        lines.push(`/^m${i}@example\\.(com|net)$/ M${i}`);
        break;
      case 2:
        lines.push(`!/^[a-z]/ NOT-LOWER ${i}`);
        lines.push(`/^w${i}\\.(a|b)+z$/ W${i}`);
        break;
      case 3:
        lines.push(`if /^blk${i}/`, `/-(one|two)$/ B${i}-$1`, `/-three$/ B${i}-3`, 'endif');
        break;
      case 4:
        lines.push(`/^(C)ase${i}$/i CASE${i}:$1`);
        break;
      default:
        lines.push(`/^d${i}(.*)$/ D${i}[$1]`);
    }
  }
  return lines.join('\n') + '\n';
}

/** Keys that hit rules all over the table, keys that miss, and keys that stop at the NOT-LOWER rule. */
function keysFor(n: number, count: number, seed: number): string[] {
  const r = rng(seed);
  const keys: string[] = [];
  for (let k = 0; k < count; k++) {
    const i = Math.floor(r() * n);
    switch (Math.floor(r() * 8)) {
      case 0:
        keys.push(`k${i - (i % 6)}-${'x'.repeat(1 + (k % 4))}${'y'.repeat(k % 3)}`);
        break;
      case 1:
        keys.push(`m${i - (i % 6) + 1}@example.${k % 2 ? 'com' : 'net'}`);
        break;
      case 2:
        keys.push(`blk${i - (i % 6) + 3}-${['one', 'two', 'three', 'four'][k % 4]}`);
        break;
      case 3:
        keys.push(`case${i - (i % 6) + 4}`);
        break;
      case 4:
        keys.push(`d${i - (i % 6) + 5}tail${k}`);
        break;
      case 5:
        keys.push(`Upper${k}`);
        break;
      default:
        keys.push(`nomatch-${k}@example.org`);
    }
  }
  return keys;
}

describe('pattern tables: evaluation threads', () => {
  let dir = '';
  const saved = patternThreads();
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'pattern-threads-'));
    loadNative();
  });
  after(() => {
    setPatternThreads(saved);
    rmSync(dir, { recursive: true, force: true });
  });

  async function open(kind: Kind, text: string, warnings: string[] = []): Promise<Table> {
    const path = join(dir, `${kind}-${Math.random().toString(36).slice(2)}`);
    writeFileSync(path, text);
    return openTable(openOptions(kind, path, { fold: 'none' }, warnings));
  }

  /** Every key one after the other (each lookup alone: the main-thread path). */
  async function oneByOne(t: Table, keys: string[], flags: number): Promise<LookupResult[]> {
    const out: LookupResult[] = [];
    for (const k of keys) {
      out.push(await t.lookup(k, flags));
      await new Promise((r) => setImmediate(r));
    }
    return out;
  }

  for (const kind of ['regexp', 'pcre'] as const) {
    test(`${kind}: concurrent lookups on the threads answer as the main thread does`, async () => {
      const t = await open(kind, bigTable(600));
      const keys = keysFor(600, 1500, kind === 'regexp' ? 1 : 2);
      for (const flags of [0, DICT_FLAG.NO_REGSUB, DICT_FLAG.FOLD_MUL]) {
        setPatternThreads(0);
        const before0 = patternExecStats();
        const sequential = await oneByOne(t, keys, flags);
        assert.equal(patternExecStats().async, before0.async, 'threads off: nothing runs on the threads');

        setPatternThreads(2);
        const before2 = patternExecStats();
        // All at once: the first runs here, the others queue for the threads.
        const concurrent = await Promise.all(keys.map((k) => t.lookup(k, flags)));
        const after2 = patternExecStats();
        assert.ok(after2.async - before2.async >= keys.length - 1, `evaluated on the threads: ${after2.async - before2.async}`);
        assert.deepEqual(concurrent, sequential, `flags ${flags}`);
        // The test is not vacuous: hits with $n substitution, plain hits and misses.
        const hits = sequential.filter((r) => r.found);
        const substituted = hits.some((r) => r.found && /^v\d+:x+:y*$/.test(r.value));
        assert.equal(substituted, flags !== DICT_FLAG.NO_REGSUB, '$n substitution among the hits (none with NO_REGSUB)');
        assert.ok(hits.length > 100 && hits.length < keys.length, `${hits.length} hits`);
      }
      // A single lookup on an idle server stays on the main thread.
      setPatternThreads(2);
      await new Promise((r) => setImmediate(r));
      const s0 = patternExecStats();
      const one = t.lookup(keys[0], 0);
      assert.ok(!(one instanceof Promise), 'an idle lookup is answered synchronously');
      assert.equal(patternExecStats().sync, s0.sync + 1);
    });

    test(`${kind}: runtime match errors on the threads are reported like on the main thread`, async () => {
      // The match limit: PCRE2's "match limit exceeded"; glibc's regexec gives "Memory exhausted"-style errors only
      // under memory pressure, so regexp checks a back-reference-heavy rule's plain answers instead.
      const filler = Array.from({ length: 40 }, (_, i) => `/^filler${i}$/ F${i}`);
      const rules = kind === 'pcre' ? [...filler, '/^(a|aa)+$/ LIMIT', '/^a/ FALLBACK'] : [...filler, '/^(a+)\\1$/ BACKREF:$1', '/^a/ FALLBACK'];
      const key = kind === 'pcre' ? 'a'.repeat(40) + 'b' : 'aaaa';
      const keys = Array.from({ length: 6 }, () => key);
      setPatternThreads(0);
      const seqWarn: string[] = [];
      const path = join(dir, `errors.${kind}`);
      writeFileSync(path, rules.join('\n') + '\n');
      const t1 = await openTable(openOptions(kind, path, { fold: 'none' }, seqWarn));
      const sequential = await oneByOne(t1, keys, 0);
      setPatternThreads(2);
      const parWarn: string[] = [];
      const t2 = await openTable(openOptions(kind, path, { fold: 'none' }, parWarn));
      const base = patternExecStats().async;
      const concurrent = await Promise.all(keys.map((k) => t2.lookup(k, 0)));
      assert.ok(patternExecStats().async - base >= keys.length - 1);
      assert.deepEqual(concurrent, sequential);
      assert.deepEqual(parWarn, seqWarn);
      if (kind === 'pcre') {
        assert.deepEqual(sequential[0], { found: true, value: 'FALLBACK' });
        assert.equal(seqWarn.length, keys.length);
        assert.match(seqWarn[0], /^pcre map .*, line 41: match limit exceeded$/);
      } else {
        assert.deepEqual(sequential[0], { found: true, value: 'BACKREF:aa' });
      }
    });
  }

  test('replies come back in request order on every connection while lookups run on the threads', async () => {
    const text = bigTable(600);
    const path = join(dir, 'order.pcre');
    writeFileSync(path, text);
    const spec = `pcre:${path}`;
    const keys = keysFor(600, 400, 7);
    setPatternThreads(0);
    const ref = await open('pcre', text);
    const expected = await oneByOne(ref, keys, 0);

    setPatternThreads(2);
    const logs: string[] = [];
    const oldSink = setLogSink((l) => logs.push(l));
    const server = new ProxyServer({
      opener: openTable,
      authorized: { proxymap: new Set([spec]), proxywrite: new Set() },
      smtputf8: false,
      param: () => undefined,
      busyPollUsec: 0,
    });
    const sock = join(dir, 'proxymap');
    await server.listenPath(sock, 'proxymap');
    try {
      const base = patternExecStats().async;
      // 12 connections, each pipelining its share of the keys in one write.
      const clients = Array.from({ length: 12 }, (_, c) => keys.map((k, i) => [k, i] as const).filter(([, i]) => i % 12 === c));
      await Promise.all(
        clients.map(
          (mine) =>
            new Promise<void>((resolve, reject) => {
              const s = net.createConnection(sock);
              const dec = new RecordDecoder();
              let announced = false;
              let n = 0;
              s.on('connect', () => {
                s.write(Buffer.concat(mine.map(([k]) => encodeRecord([['request', 'lookup'], ['table', spec], ['flags', 0], ['key', k]]))));
              });
              s.on('data', (d) => {
                dec.push(d);
                for (let r = dec.next(); r; r = dec.next()) {
                  if (!announced) {
                    announced = true; // the protocol announcement
                    continue;
                  }
                  const [key, i] = mine[n++];
                  const want = expected[i];
                  const status = r.find(([a]) => a === 'status')?.[1];
                  const value = r.find(([a]) => a === 'value')?.[1];
                  try {
                    if (want.found) assert.deepEqual([status, value], [String(PROXY_STAT.OK), want.value], `key ${key}`);
                    else assert.equal(status, String(PROXY_STAT.NOKEY), `key ${key}`);
                  } catch (e) {
                    s.destroy();
                    reject(e);
                    return;
                  }
                  if (n === mine.length) {
                    s.end();
                    resolve();
                  }
                }
              });
              s.on('error', reject);
            }),
        ),
      );
      assert.ok(patternExecStats().async - base > 0, 'some lookups ran on the threads');
      assert.deepEqual(logs.filter((l) => /warning|error/.test(l)), []);
    } finally {
      await server.close();
      setLogSink(oldSink);
    }
  });
});

test('no busy polling while work runs on other threads', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pattern-spin-'));
  const path = join(dir, 't.regexp');
  writeFileSync(path, '/^a$/ A\n');
  let asked = 0;
  const server = new ProxyServer({
    opener: openTable,
    authorized: { proxymap: new Set([`regexp:${path}`]), proxywrite: new Set() },
    smtputf8: false,
    param: () => undefined,
    busyPollUsec: 10_000, // a wide window: without the check the server would spin after every reply
    offThreadWork: () => (asked++, true),
  });
  const sock = join(dir, 'proxymap');
  await server.listenPath(sock, 'proxymap');
  try {
    const c = await ProxyConnection.connect(sock);
    let spun = false;
    for (let i = 0; i < 30; i++) {
      const r = await c.request({ kind: 'lookup', dialect: 'legacy', table: `regexp:${path}`, flags: 0, key: 'a' } as never);
      assert.equal((r as { value?: string }).value, 'A');
      await new Promise((res) => setImmediate(res));
      spun ||= server.busyPolling;
    }
    c.close();
    assert.equal(spun, false);
    assert.ok(asked > 0, 'the server asked');
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the start-up warm-up runs on the main thread and leaves the thread setting alone', async () => {
  const saved = patternThreads();
  setPatternThreads(2);
  try {
    const before = patternExecStats();
    assert.equal(await warmUpPatterns([regexpDialect, pcreDialect]), true);
    const after = patternExecStats();
    assert.equal(after.async, before.async, 'nothing queued for the threads');
    assert.ok(after.sync - before.sync >= 4 * 2 * 2 * 25, 'the lookups ran here');
    assert.equal(patternThreads(), 2);
  } finally {
    setPatternThreads(saved);
  }
});

test('the warm-up resolves false, never rejects, when it cannot write its temporary table', async () => {
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = '/nonexistent/proxymapd-test';
  try {
    assert.equal(await warmUpPatterns([regexpDialect, pcreDialect]), false);
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
});

test('proxymapd_pattern_threads: default, explicit values, bad values', () => {
  const saved = patternThreads();
  const logs: string[] = [];
  const oldSink = setLogSink((l) => logs.push(l));
  try {
    const threads = (value: string | undefined) => {
      const entries: Record<string, string> = { proxy_read_maps: '' };
      if (value !== undefined) entries.proxymapd_pattern_threads = value;
      createServer({ config: Config.fromEntries(entries, { warn: () => {} }) });
      return patternThreads();
    };
    assert.equal(threads(undefined), defaultPatternThreads());
    assert.ok(defaultPatternThreads() >= 1 && defaultPatternThreads() <= 8);
    assert.equal(threads('0'), 0);
    assert.equal(threads('3'), 3);
    assert.deepEqual(logs, []);
    assert.equal(threads('-1'), defaultPatternThreads());
    assert.equal(threads('many'), defaultPatternThreads());
    assert.equal(threads('65'), defaultPatternThreads());
    assert.equal(logs.length, 3);
    assert.match(logs[0], /warning: invalid proxymapd_pattern_threads value "-1": using the default \(\d+\)/);
  } finally {
    setLogSink(oldSink);
    setPatternThreads(saved);
  }
});

// Open-time warnings when the compile errors are spread over the compiler threads: the same
// warnings, in the same (line) order, as the real postmap. IF rules whose pattern does not
// compile are no IFs, so their ENDIFs are warned about as unmatched.
function brokenTable(kind: Kind): string {
  const lines: string[] = [];
  for (let i = 0; i < 400; i++) {
    if (i % 13 === 5) lines.push(kind === 'pcre' ? `/^bad${i}(/ BAD` : `/^bad${i}(/ BAD`);
    else if (i % 17 === 3) lines.push(`/^r${i}(x)$/ $1$2`);
    else if (i % 29 === 7) lines.push(`if /^ib${i}[/`, `/^ib${i}z$/ IN${i}`, 'endif');
    else if (i % 31 === 11) lines.push(`if /^ok${i}/`, `/x$/ OKX${i}`, 'endif');
    else lines.push(`/^n${i}(a|b)$/ N${i}:$1`);
  }
  return lines.join('\n') + '\n';
}

function brokenScenario(kind: Kind): DiffScenario {
  return {
    title: `${kind}: 400 rules with compile errors spread over the compiler threads`,
    file: brokenTable(kind),
    list: true,
    modes: ['ascii'],
    keys: ['n0a', 'n399b', 'n200a', 'ib36z', 'ok11x', 'ok42x', 'r3x', 'bad5', 'nothing'],
  };
}

runDifferential('regexp', [brokenScenario('regexp')]);
runDifferential('pcre', [brokenScenario('pcre')]);

describe('native compile jobs and rule sets from batches', () => {
  test('patterns compiled on the helpers report groups and errors by index; misuse throws', () => {
    const n = loadNative();
    const job = n.patternsCompileStart(2, 300);
    const pats: string[] = [];
    for (let i = 0; i < 300; i++) pats.push(i % 50 === 7 ? `bad${i}(` : `^p${i}(a)(b)?$`);
    for (let i = 0; i < 300; i += 30) {
      assert.equal(n.patternsCompileAdd(job, pats.slice(i, i + 30).join('\0'), new Uint32Array(30).fill(n.PCRE2.CASELESS)), i);
    }
    assert.throws(() => n.patternsCompileAdd(job, 'x', new Uint32Array(1)), /capacity/);
    const r = n.patternsCompileFinish(job);
    assert.equal(r.groups.length, 300);
    for (let i = 0; i < 300; i++) assert.equal(r.groups[i], i % 50 === 7 ? -1 : 2, `pattern ${i}`);
    assert.deepEqual(
      r.errors.map(([i]) => i),
      pats.map((_, i) => i).filter((i) => i % 50 === 7),
    );
    assert.deepEqual(r.errors[0], [7, 'missing closing parenthesis', 114, 5]);
    assert.throws(() => n.patternsCompileFinish(job), /already finished/);
    assert.throws(() => n.patternsCompileAdd(job, 'a', new Uint32Array(1)), /already finished/);
    const j2 = n.patternsCompileStart(1, 4);
    assert.throws(() => n.patternsCompileAdd(j2, 'a\0b', new Uint32Array(1)), /differ/);
    assert.throws(() => n.patternsCompileAdd(j2, 'a', new Uint32Array(2)), /differ/);
    // A rule set from the batch: rule 0 needs pattern 7, which did not compile.
    assert.throws(() => n.ruleSetFromBatch(r.batch, new Int32Array([1, 7, 1, -1, 1, 0, -1])), /compiled pattern/);
    // $3 in a pattern with two groups
    assert.throws(() => n.ruleSetFromBatch(r.batch, new Int32Array([1, 0, 1, -1, 1, 3, -1])), /groups/);
    const set = n.ruleSetFromBatch(r.batch, new Int32Array([1, 8, 1, -1, 1, 2, -1]));
    const off = new Int32Array(6);
    assert.equal(n.ruleSetExec(set, 'P8AB', false, off), 0);
    assert.deepEqual([...off], [0, 4, 2, 3, 3, 4]);
  });

  test('abandoned jobs, collected batches and queued evaluations do not crash or leak references', () => {
    const script = `
      const n = require(${JSON.stringify(NATIVE_ADDON_PATH)});
      // jobs dropped before finishing, while their helpers still compile
      for (let k = 0; k < 20; k++) {
        const job = n.patternsCompileStart(1, 2000);
        for (let i = 0; i < 2000; i += 100) n.patternsCompileAdd(job, Array.from({ length: 100 }, (_, j) => '^a' + (i + j) + '(b|c)+$').join('\\0'), new Uint32Array(100).fill(1));
      }
      global.gc();
      // a rule set outlives its batch; evaluations queued on the threads outlive the JS handle
      const job = n.patternsCompileStart(2, 64);
      n.patternsCompileAdd(job, Array.from({ length: 64 }, (_, i) => '^k' + i + '$').join('\\0'), new Uint32Array(64));
      let { batch } = n.patternsCompileFinish(job);
      const prog = new Int32Array(64 * 7);
      for (let i = 0; i < 64; i++) prog.set([1, i, 1, -1, 1, 0, -1], 7 * i);
      let set = n.ruleSetFromBatch(batch, prog);
      batch = null;
      n.execThreads(2);
      const results = [];
      for (let i = 0; i < 200; i++) n.ruleSetExecAsync(set, 'k' + (i % 80), false, (idx) => results.push(idx));
      set = null;
      global.gc();
      setTimeout(() => { global.gc(); console.log(JSON.stringify([results.length, results.filter((x) => x >= 0).length])); }, 200);`;
    const out = execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    // k0..k63 match (rule i), k64..k79 do not; 200 lookups cycle through k0..k79
    assert.deepEqual(JSON.parse(out), [200, 64 + 64 + 40]);
  });

  test('worker threads get their own evaluation threads; ending a worker with evaluations queued is clean', async () => {
    const script = `
      const { Worker } = require('node:worker_threads');
      const body = \`
        const { parentPort } = require('node:worker_threads');
        const n = require(\${JSON.stringify(${JSON.stringify(NATIVE_ADDON_PATH)})});
        const job = n.patternsCompileStart(2, 40);
        n.patternsCompileAdd(job, Array.from({ length: 40 }, (_, i) => '^w' + i + '(x+)$').join('\\\\0'), new Uint32Array(40));
        const { batch } = n.patternsCompileFinish(job);
        const prog = new Int32Array(40 * 7);
        for (let i = 0; i < 40; i++) prog.set([1, i, 1, -1, 1, 1, -1], 7 * i);
        const set = n.ruleSetFromBatch(batch, prog);
        n.execThreads(2);
        let done = 0;
        const first = [];
        for (let i = 0; i < 40; i++) n.ruleSetExecAsync(set, 'w' + i + 'xxx', false, (idx, off) => {
          if (first.length < 3) first.push([idx, off && Array.from(off.subarray(0, 4))]);
          if (++done === 40) {
            parentPort.postMessage(first);
            // more work queued when the worker is terminated
            for (let k = 0; k < 500; k++) n.ruleSetExecAsync(set, 'nomatch' + k, false, () => {});
          }
        });
      \`;
      const ws = [0, 1].map(() => new Worker(body, { eval: true }));
      Promise.all(ws.map((w) => new Promise((res) => w.once('message', res)))).then(async (msgs) => {
        await Promise.all(ws.map((w) => w.terminate()));
        console.log(JSON.stringify(msgs[0]));
      });`;
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    const first = JSON.parse(out) as Array<[number, number[]]>;
    assert.equal(first.length, 3);
    for (const [idx, off] of first) assert.deepEqual(off, [0, String(idx).length + 4, String(idx).length + 1, String(idx).length + 4]);
  });
});
