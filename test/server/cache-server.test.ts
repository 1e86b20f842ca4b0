/**
 * The lookup cache through a running server (test-double tables): replies
 * from the cache equal those of an uncached server byte for byte in both
 * dialects, with the same warnings; RETRY, CONFIG and surrogate answers are
 * never cached; proxywrite updates and deletes are seen by the very next
 * lookup, also when a lookup that read the old value finishes after the
 * write; a reload drops the table's answers; TTLs on a test clock.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { ProxyConnection } from '../../src/client/client.js';
import { ProxyTable } from '../../src/client/table.js';
import { DICT_FLAG } from '../../src/protocol/flags.js';
import { LookupCache, type CacheMaps } from '../../src/server/cache.js';
import type { Opener } from '../../src/server/instances.js';
import { found, NOT_FOUND, RETRY, type LookupResult, type TableOpenOptions } from '../../src/tables/core/table.js';
import { b } from '../support/bytes.js';
import { startTestServer, testOpener } from './helpers.js';

const show = (r: ReadonlyArray<readonly [string, string]>) => r.map(([n, v]) => `${n}|${v}`).join('|');
const raw = (c: ProxyConnection, s: string) => c.exchangeRaw(b(s)).then(show);

/** Table lookups by spec, counted on the table side. */
type Counts = Map<string, number>;

function countingOpener(counts: Counts, extra: (o: TableOpenOptions) => ReturnType<Opener> | undefined = () => undefined): Opener {
  return async (o) => {
    const t = (await extra(o)) ?? testOpener(o);
    const spec = `${o.type}:${o.name}`;
    const lookup = t.lookup.bind(t);
    return {
      ...t,
      lookup: (key: string, flags: number) => {
        counts.set(spec, (counts.get(spec) ?? 0) + 1);
        return lookup(key, flags);
      },
      update: t.update?.bind(t),
      delete: t.delete?.bind(t),
      sequence: t.sequence?.bind(t),
    };
  };
}

const ttl = (specs: string[], posTtlMs = 60_000, negTtlMs = 60_000): CacheMaps => new Map(specs.map((s) => [s, { posTtlMs, negTtlMs }]));

test('replies from the cache are those of an uncached server, byte for byte, in both dialects, with the same warnings', async () => {
  const MEM = 'mem:a=1,Upper=casevalue,bad=\xff,empty=,caf\xc3\xa9=utf8';
  const PAT = 'pat:x=1,X=2';
  const counts: Counts = new Map();
  const cache = new LookupCache({ maps: ttl([MEM, PAT]), maxEntries: 1000, maxBytes: 1 << 20 });
  const plain = await startTestServer([MEM, PAT]);
  const cached = await startTestServer([MEM, PAT], [], { cache, opener: countingOpener(counts) });
  // startTestServer's log sink: the last one started gets every line
  const logs = cached.logs;
  try {
    const cp = await ProxyConnection.connect(plain.proxymap);
    const cc = await ProxyConnection.connect(cached.proxymap);
    const keys = ['a', 'A', 'upper', 'UPPER', 'Upper', 'bad', 'empty', 'zz', '\xff\xfe', 'caf\xc3\xa9', 'CAF\xc3\x89', 'x', 'X'];
    const { FOLD_FIX, FOLD_MUL, UTF8_REQUEST, FIXED, TRY0NULL, TRY1NULL } = DICT_FLAG;
    const legacyFlags = [0, FOLD_FIX, FOLD_FIX | UTF8_REQUEST, 524353, FOLD_MUL | UTF8_REQUEST, TRY0NULL | TRY1NULL | FOLD_FIX];
    const newFlags: Array<[number, number]> = [
      [540737, 1589329], [540737, 0], [540737, 16400], [0, 0], [FOLD_FIX, FOLD_FIX], [UTF8_REQUEST | FOLD_FIX, FOLD_MUL | FIXED],
      [UTF8_REQUEST, FOLD_FIX | UTF8_REQUEST | 0x100000],
    ];
    const requests: string[] = [];
    for (const table of [MEM, PAT]) {
      for (const key of keys) {
        for (const f of legacyFlags) requests.push(`request|lookup|table|${table}|flags|${f}|key|${key}||`);
        for (const [i, f] of newFlags) requests.push(`request|lookup|table|${table}|instance_flags|${i}|flags|${f}|key|${key}||`);
      }
    }
    const total = () => {
      const t = cache.stats().tables;
      return { hits: t.reduce((n, x) => n + x.hits, 0), misses: t.reduce((n, x) => n + x.misses, 0) };
    };
    const tableCalls = () => (counts.get(MEM) ?? 0) + (counts.get(PAT) ?? 0);
    let round1 = total();
    let badValues = 0;
    for (let round = 0; round < 2; round++) {
      if (round === 1) round1 = total();
      for (const r of requests) {
        const l0 = logs.length;
        const want = await raw(cp, r);
        const l1 = logs.length;
        const got = await raw(cc, r);
        assert.equal(got, want, `round ${round}: ${JSON.stringify(r)}`);
        const warned = logs.slice(l1);
        assert.deepEqual(warned, logs.slice(l0, l1), `warnings of ${JSON.stringify(r)}`);
        if (round === 1) badValues += warned.filter((l) => l.includes('non-UTF-8 value')).length;
      }
    }
    const end = total();
    assert.equal(tableCalls(), end.misses, 'every miss, and only a miss, reached a table');
    assert.ok(round1.misses > 100, `${round1.misses} different answers in the first round`);
    // the second round came from the cache, except the values that failed the UTF-8 check (never cached)
    assert.ok(badValues > 0, 'some values failed the UTF-8 check');
    assert.equal(end.misses - round1.misses, badValues);
    cp.close();
    cc.close();
  } finally {
    await cached.close();
    await plain.close();
  }
});

test('RETRY is not cached: a table that answers RETRY and then OK is asked again; failures and surrogates too', async () => {
  const counts: Counts = new Map();
  const answers = new Map<string, LookupResult[]>([['k', [RETRY, RETRY, found('v')]]]);
  const flaky = (o: TableOpenOptions) =>
    o.type === 'flaky'
      ? { type: 'flaky', name: o.name, implFlags: DICT_FLAG.FIXED, lookup: (key: string) => answers.get(key)?.shift() ?? NOT_FOUND }
      : undefined;
  const specs = ['flaky:t', 'throws:t', 'rejects:t', 'broken:t'];
  const cache = new LookupCache({ maps: ttl(specs), maxEntries: 1000, maxBytes: 1 << 20 });
  const ts = await startTestServer(specs, [], { cache, opener: countingOpener(counts, flaky) });
  try {
    const c = await ProxyConnection.connect(ts.proxymap);
    const q = (table: string) => raw(c, `request|lookup|table|${table}|instance_flags|540737|flags|1589329|key|k||`);
    assert.equal(await q('flaky:t'), 'status|2|flags|1589329|value|');
    assert.equal(await q('flaky:t'), 'status|2|flags|1589329|value|');
    assert.equal(await q('flaky:t'), 'status|0|flags|1589329|value|v');
    assert.equal(await q('flaky:t'), 'status|0|flags|1589329|value|v');
    assert.equal(counts.get('flaky:t'), 3, 'two RETRYs reached the table, then one OK, then the cache answered');
    for (const t of ['throws:t', 'rejects:t', 'broken:t']) {
      for (let i = 0; i < 3; i++) assert.equal(await q(t), 'status|2|flags|1589329|value|', t);
    }
    assert.equal(counts.get('throws:t'), 3);
    assert.equal(counts.get('rejects:t'), 3);
    assert.equal(cache.stats().entries, 1);
    c.close();
  } finally {
    await ts.close();
  }
});

test('proxywrite: an update or delete is seen by the very next lookup (both dialects, through the client library)', async () => {
  const MEM = 'mem:a=1,b=2';
  const counts: Counts = new Map();
  const cache = new LookupCache({ maps: ttl([MEM]), maxEntries: 1000, maxBytes: 1 << 20 });
  const ts = await startTestServer([MEM], [MEM], { cache, opener: countingOpener(counts) });
  try {
    let value = '1';
    for (const dialect of ['legacy', 'new'] as const) {
      const wc = await ProxyConnection.connect(ts.proxywrite);
      const rc = await ProxyConnection.connect(ts.proxywrite);
      const opts = { dialect, smtputf8: true, openFlags: DICT_FLAG.DUP_REPLACE | DICT_FLAG.SYNC_UPDATE | DICT_FLAG.FOLD_FIX | DICT_FLAG.UTF8_REQUEST | DICT_FLAG.LOCK };
      const writer = new ProxyTable(wc, MEM, opts);
      const reader = new ProxyTable(rc, MEM, opts);
      for (let i = 0; i < 5; i++) {
        assert.deepEqual(await reader.lookup('a'), { status: 'found', value });
        const before = counts.get(MEM);
        assert.deepEqual(await reader.lookup('a'), { status: 'found', value });
        assert.equal(counts.get(MEM), before, 'answered from the cache');
        value = `${dialect}${i}`;
        assert.equal((await writer.update('a', value)).status, 'ok');
        assert.deepEqual(await reader.lookup('a'), { status: 'found', value });
        assert.deepEqual(await reader.lookup('A'), { status: 'found', value });
      }
      assert.deepEqual(await reader.lookup('b'), { status: 'found', value: '2' });
      assert.equal((await writer.delete('b')).status, 'ok');
      assert.deepEqual(await reader.lookup('b'), { status: 'notfound' });
      assert.equal((await writer.update('b', '2')).status, 'ok');
      assert.deepEqual(await reader.lookup('b'), { status: 'found', value: '2' });
      wc.close();
      rc.close();
    }
  } finally {
    await ts.close();
  }
});

test('a lookup that overlaps a write (started before it, or during it) does not put an old value in the cache', async () => {
  const counts: Counts = new Map();
  /** held operations, released by the test in the order it chooses */
  const held: Array<() => void> = [];
  let holdLookups = false;
  let holdUpdates = false;
  const store = new Map([['k', 'v0']]);
  const hold = <T>(on: boolean, answer: () => T): T | Promise<T> => (on ? new Promise<T>((r) => held.push(() => r(answer()))) : answer());
  const gate = (o: TableOpenOptions) =>
    o.type === 'gate'
      ? {
          type: 'gate', name: o.name, implFlags: DICT_FLAG.FIXED,
          // a lookup reads when it is called and answers when released
          lookup: (key: string): LookupResult | Promise<LookupResult> => {
            const v = store.get(key);
            return hold(holdLookups, () => (v === undefined ? NOT_FOUND : found(v)));
          },
          // an update commits and answers when released
          update: (key: string, value: string) => hold(holdUpdates, () => (store.set(key, value), { status: 0 as const, error: 0 as const })),
        }
      : undefined;
  const cache = new LookupCache({ maps: ttl(['gate:t']), maxEntries: 1000, maxBytes: 1 << 20 });
  const ts = await startTestServer([], ['gate:t'], { cache, opener: countingOpener(counts, gate) });
  /** the next held operation (bounded wait) */
  const next = async () => {
    const t0 = Date.now();
    while (held.length === 0) {
      assert.ok(Date.now() - t0 < 5000, 'no operation reached the table');
      await new Promise((r) => setImmediate(r));
    }
    return held.shift()!;
  };
  try {
    const [c1, c2, c3] = await Promise.all([1, 2, 3].map(() => ProxyConnection.connect(ts.proxywrite)));
    const lk = (c: ProxyConnection) => raw(c, 'request|lookup|table|gate:t|instance_flags|0|flags|0|key|k||');
    const up = (c: ProxyConnection, v: string) => raw(c, `request|update|table|gate:t|instance_flags|0|flags|0|key|k|value|${v}||`);
    assert.equal(await lk(c1), 'status|0|flags|0|value|v0');
    assert.equal(await lk(c1), 'status|0|flags|0|value|v0');
    assert.equal(counts.get('gate:t'), 1);

    // 1. a lookup reads v0, the update to v1 is made and acknowledged, then the lookup answers
    cache.purge();
    holdLookups = true;
    const before = lk(c2);
    const releaseBefore = await next();
    holdLookups = false;
    assert.equal(await up(c3, 'v1'), 'status|0|flags|384');
    releaseBefore();
    assert.equal(await before, 'status|0|flags|0|value|v0');
    assert.equal(await lk(c1), 'status|0|flags|0|value|v1', 'the very next lookup');

    // 2. the update to v2 is in progress, a lookup reads v1, the update commits and is acknowledged, the lookup answers
    cache.purge();
    holdUpdates = true;
    const update = up(c3, 'v2');
    const commit = await next();
    holdUpdates = false;
    holdLookups = true;
    const during = lk(c2);
    const releaseDuring = await next();
    holdLookups = false;
    commit();
    assert.equal(await update, 'status|0|flags|384');
    releaseDuring();
    assert.equal(await during, 'status|0|flags|0|value|v1');
    assert.equal(await lk(c1), 'status|0|flags|0|value|v2', 'the very next lookup');

    // the new value is cached as usual
    const n = counts.get('gate:t');
    assert.equal(await lk(c1), 'status|0|flags|0|value|v2');
    assert.equal(counts.get('gate:t'), n);
    for (const c of [c1, c2, c3]) c.close();
  } finally {
    await ts.close();
  }
});

test('a reload of the table drops its cached answers; a TTL expires on the cache clock', async () => {
  const counts: Counts = new Map();
  let version = 1;
  let changed = false;
  const ver = (o: TableOpenOptions) => {
    if (o.type !== 'ver') return undefined;
    const mine = version;
    return {
      type: 'ver', name: o.name, implFlags: DICT_FLAG.FIXED,
      lookup: (key: string) => (key === 'k' ? found(`v${mine}`) : NOT_FOUND),
      changed: () => changed && mine !== version,
    };
  };
  const clock = { t: 0 };
  const cache = new LookupCache({ maps: ttl(['ver:t'], 300_000, 30_000), maxEntries: 1000, maxBytes: 1 << 20, now: () => clock.t });
  const ts = await startTestServer(['ver:t'], [], { cache, opener: countingOpener(counts, ver), reload: { checkIntervalMs: 0, settleMs: 0, graceMs: 0 } });
  try {
    const c = await ProxyConnection.connect(ts.proxymap);
    const q = (key: string) => raw(c, `request|lookup|table|ver:t|flags|0|key|${key}||`);
    assert.equal(await q('k'), 'status|0|value|v1');
    assert.equal(await q('nope'), 'status|1|value|');
    assert.equal(await q('k'), 'status|0|value|v1');
    assert.equal(await q('nope'), 'status|1|value|');
    assert.equal(counts.get('ver:t'), 2);
    version = 2;
    changed = true;
    await ts.server.instances.checkChanges();
    assert.equal(ts.server.instances.reloads, 1);
    assert.equal(cache.stats().entries, 0);
    assert.equal(await q('k'), 'status|0|value|v2');
    assert.equal(counts.get('ver:t'), 3);
    // TTLs: 30 s for "not found", 300 s for found, on the cache's clock
    assert.equal(await q('nope'), 'status|1|value|');
    clock.t += 29_999;
    assert.equal(await q('nope'), 'status|1|value|');
    assert.equal(counts.get('ver:t'), 4);
    clock.t += 1;
    assert.equal(await q('nope'), 'status|1|value|');
    assert.equal(counts.get('ver:t'), 5);
    clock.t += 300_000 - 30_000 - 1;
    assert.equal(await q('k'), 'status|0|value|v2');
    assert.equal(counts.get('ver:t'), 5);
    clock.t += 1;
    assert.equal(await q('k'), 'status|0|value|v2');
    assert.equal(counts.get('ver:t'), 6);
    c.close();
  } finally {
    await ts.close();
  }
});

test('without a cache, and for a table not listed, every lookup reaches the table', async () => {
  const counts: Counts = new Map();
  const cache = new LookupCache({ maps: ttl(['mem:cached=1']), maxEntries: 1000, maxBytes: 1 << 20 });
  const off = await startTestServer(['mem:a=1'], [], { opener: countingOpener(counts) });
  assert.equal(off.server.cache, undefined);
  await off.close();
  const ts = await startTestServer(['mem:a=1', 'mem:cached=1'], [], { cache, opener: countingOpener(counts) });
  try {
    assert.equal(ts.server.cache, cache);
    const c = await ProxyConnection.connect(ts.proxymap);
    for (let i = 0; i < 3; i++) {
      assert.equal(await raw(c, 'request|lookup|table|mem:a=1|flags|0|key|a||'), 'status|0|value|1');
      assert.equal(await raw(c, 'request|lookup|table|proxy:mem:cached=1|flags|0|key|cached||'), 'status|0|value|1');
    }
    assert.equal(counts.get('mem:a=1'), 3);
    assert.equal(counts.get('mem:cached=1'), 1);
    assert.deepEqual(cache.stats().tables.map((t) => [t.table, t.hits, t.misses]), [['mem:cached=1', 2, 1]]);
    c.close();
  } finally {
    await ts.close();
  }
});
