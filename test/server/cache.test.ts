/**
 * LookupCache on its own: LRU order, the entry and byte bounds (also under
 * 100,000 distinct keys), TTL expiry on an injected clock, negative TTLs,
 * purge, reconfiguration, the generation rule for answers read while a
 * table's entries were dropped; and the proxymapd_cache_maps syntax.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import {
  DEFAULT_CACHE_MAX_BYTES,
  DEFAULT_CACHE_MAX_ENTRIES,
  ENTRY_OVERHEAD_BYTES,
  LookupCache,
  cacheSettings,
  parseCacheMaps,
  type CacheMaps,
} from '../../src/server/cache.js';

const T = 'mem:t';
const U = 'mem:u';
const maps = (...specs: Array<[string, number, number]>): CacheMaps => new Map(specs.map(([s, p, n]) => [s, { posTtlMs: p, negTtlMs: n }]));

/** A cache on a clock the test moves. */
function clocked(m: CacheMaps, maxEntries = 1000, maxBytes = 1 << 20) {
  const clock = { t: 1000 };
  const cache = new LookupCache({ maps: m, maxEntries, maxBytes, now: () => clock.t });
  return { cache, clock };
}

function put(cache: LookupCache, spec: string, key: string, value: string | null): void {
  const t = cache.table(spec)!;
  cache.set(t, key, value, t.generation);
}

const get = (cache: LookupCache, spec: string, key: string) => cache.get(cache.table(spec)!, key);
const tableStats = (cache: LookupCache, spec: string) => cache.stats().tables.find((t) => t.table === spec)!;

test('a table not listed has no cache; a listed one answers what was stored, and counts hits and misses', () => {
  const { cache } = clocked(maps([T, 60_000, 0]));
  assert.equal(cache.table('mem:other'), undefined);
  assert.equal(get(cache, T, 'a'), undefined);
  put(cache, T, 'a', '1');
  assert.equal(get(cache, T, 'a'), '1');
  assert.equal(get(cache, T, 'a'), '1');
  assert.equal(get(cache, T, 'b'), undefined);
  const s = tableStats(cache, T);
  assert.deepEqual([s.hits, s.misses, s.entries, s.bytes], [2, 2, 1, 'a'.length + '1'.length + ENTRY_OVERHEAD_BYTES]);
  assert.deepEqual([s.posTtlMs, s.negTtlMs], [60_000, 0]);
});

test('LRU: the least recently used entry goes first, and a hit makes an entry recent', () => {
  const { cache } = clocked(maps([T, 60_000, 0], [U, 60_000, 0]), 3);
  put(cache, T, 'a', '1');
  put(cache, U, 'b', '2');
  put(cache, T, 'c', '3');
  assert.equal(get(cache, T, 'a'), '1'); // order now b, c, a
  put(cache, T, 'd', '4'); // evicts b (table U: one LRU for every table)
  assert.equal(get(cache, U, 'b'), undefined);
  assert.equal(get(cache, T, 'a'), '1');
  put(cache, U, 'e', '5'); // evicts c
  assert.equal(get(cache, T, 'c'), undefined);
  assert.deepEqual([get(cache, T, 'a'), get(cache, T, 'd'), get(cache, U, 'e')], ['1', '4', '5']);
  assert.equal(cache.stats().entries, 3);
  // storing a key again replaces its entry, it does not add one
  put(cache, T, 'a', 'again');
  assert.equal(get(cache, T, 'a'), 'again');
  assert.equal(cache.stats().entries, 3);
  assert.deepEqual(
    cache.stats().tables.map((t) => [t.table, t.entries]),
    [[T, 2], [U, 1]],
  );
});

test('byte bound: large values evict older entries; an entry larger than the bound is not stored', () => {
  const overhead = ENTRY_OVERHEAD_BYTES;
  const { cache } = clocked(maps([T, 60_000, 0]), 1000, 3 * (overhead + 101));
  for (const k of ['a', 'b', 'c']) put(cache, T, k, 'x'.repeat(100));
  assert.equal(cache.stats().bytes, 3 * (overhead + 101));
  put(cache, T, 'd', 'x'.repeat(100));
  assert.equal(get(cache, T, 'a'), undefined);
  assert.equal(cache.stats().entries, 3);
  put(cache, T, 'e', 'x'.repeat(300)); // needs the room of two: b and c go
  assert.deepEqual([get(cache, T, 'b'), get(cache, T, 'c'), get(cache, T, 'd')?.length, get(cache, T, 'e')?.length], [undefined, undefined, 100, 300]);
  assert.ok(cache.stats().bytes <= 3 * (overhead + 101));
  put(cache, T, 'huge', 'x'.repeat(4 * (overhead + 101)));
  assert.equal(get(cache, T, 'huge'), undefined);
  assert.deepEqual([get(cache, T, 'd')?.length, get(cache, T, 'e')?.length], [100, 300], 'a refused entry evicts nothing');
});

test('100,000 distinct keys: the entry and byte bounds hold after every store, and the newest entries stay', () => {
  const maxEntries = 20_000;
  const maxBytes = 2_000_000;
  const { cache } = clocked(maps([T, 60_000, 60_000]), maxEntries, maxBytes);
  const t = cache.table(T)!;
  const value = (i: number) => (i % 7 === 0 ? null : `v${i}-${'y'.repeat(i % 300)}`);
  const size = (i: number) => `key-${i}`.length + (value(i)?.length ?? 0) + ENTRY_OVERHEAD_BYTES;
  let maxSeenBytes = 0;
  let maxSeenEntries = 0;
  for (let i = 0; i < 100_000; i++) {
    cache.set(t, `key-${i}`, value(i), t.generation);
    const s = cache.stats();
    assert.ok(s.entries <= maxEntries && s.bytes <= maxBytes, `after ${i + 1} keys: ${s.entries} entries, ${s.bytes} bytes`);
    maxSeenBytes = Math.max(maxSeenBytes, s.bytes);
    maxSeenEntries = Math.max(maxSeenEntries, s.entries);
  }
  // the bound was reached (the test tests something), and the bytes counted are those of the entries kept
  assert.ok(maxSeenBytes > maxBytes - 500, `bytes reached ${maxSeenBytes}`);
  const s = cache.stats();
  let expectBytes = 0;
  let kept = 0;
  for (let i = 99_999; i >= 0 && expectBytes + size(i) <= maxBytes && kept < maxEntries; i--) {
    expectBytes += size(i);
    kept++;
  }
  assert.deepEqual([s.entries, s.bytes], [kept, expectBytes]);
  assert.equal(s.tables[0]!.bytes, expectBytes);
  // exactly the newest `kept` keys are there
  assert.equal(cache.get(t, `key-${100_000 - kept - 1}`), undefined);
  for (let i = 100_000 - kept; i < 100_000; i++) assert.equal(cache.get(t, `key-${i}`), value(i));
  assert.ok(maxSeenEntries <= maxEntries);
});

test('TTL: an entry is answered until its TTL has passed on the clock, then it is gone', () => {
  const { cache, clock } = clocked(maps([T, 300_000, 30_000]));
  put(cache, T, 'a', '1');
  put(cache, T, 'missing', null);
  clock.t += 29_999;
  assert.equal(get(cache, T, 'missing'), null, 'a negative answer within its TTL');
  clock.t += 1;
  assert.equal(get(cache, T, 'missing'), undefined, 'negative TTL passed');
  assert.equal(get(cache, T, 'a'), '1');
  clock.t += 300_000 - 30_000 - 1;
  assert.equal(get(cache, T, 'a'), '1');
  clock.t += 1;
  assert.equal(get(cache, T, 'a'), undefined);
  assert.deepEqual([cache.stats().entries, cache.stats().bytes], [0, 0], 'expired entries are removed when seen');
});

test('negative TTL 0: "not found" is not cached', () => {
  const { cache } = clocked(maps([T, 60_000, 0]));
  put(cache, T, 'missing', null);
  assert.equal(get(cache, T, 'missing'), undefined);
  assert.equal(cache.stats().entries, 0);
});

test('purge: everything or one table (proxy: prefix allowed); counters survive', () => {
  const { cache } = clocked(maps([T, 60_000, 60_000], [U, 60_000, 0]));
  put(cache, T, 'a', '1');
  put(cache, T, 'b', null);
  put(cache, U, 'c', '3');
  get(cache, T, 'a');
  assert.equal(cache.purge('proxy:mem:t'), 2);
  assert.equal(get(cache, T, 'a'), undefined);
  assert.equal(get(cache, U, 'c'), '3');
  assert.equal(cache.purge('mem:not-cached'), 0);
  put(cache, T, 'a', '1');
  assert.equal(cache.purge(), 2);
  assert.deepEqual([cache.stats().entries, cache.stats().bytes], [0, 0]);
  const s = tableStats(cache, T);
  assert.deepEqual([s.hits, s.misses], [1, 1]);
});

test('configure: a table no longer listed loses its entries, a new TTL applies to new entries, smaller limits evict', () => {
  const { cache, clock } = clocked(maps([T, 60_000, 0], [U, 60_000, 0]));
  put(cache, T, 'old', '1');
  put(cache, U, 'u', '2');
  get(cache, T, 'old');
  cache.configure(maps([T, 10_000, 5_000]));
  assert.equal(cache.table(U), undefined);
  assert.deepEqual(cache.stats().tables.map((t) => t.table), [T]);
  assert.equal(cache.stats().entries, 1);
  assert.equal(tableStats(cache, T).hits, 1, 'a table still listed keeps its counters');
  put(cache, T, 'new', '3');
  put(cache, T, 'neg', null);
  clock.t += 10_000;
  assert.equal(get(cache, T, 'new'), undefined, 'the new TTL');
  assert.equal(get(cache, T, 'neg'), undefined);
  assert.equal(get(cache, T, 'old'), '1', 'the TTL it was stored with');
  for (const k of ['p', 'q', 'r']) put(cache, T, k, k);
  cache.configure(maps([T, 10_000, 5_000]), { maxEntries: 2, maxBytes: 1 << 20 });
  assert.equal(cache.stats().entries, 2);
  assert.deepEqual([get(cache, T, 'q'), get(cache, T, 'r')], ['q', 'r']);
  cache.configure(maps([T, 10_000, 5_000]), { maxEntries: 2, maxBytes: ENTRY_OVERHEAD_BYTES + 2 });
  assert.deepEqual([cache.stats().entries, cache.stats().maxBytes], [1, ENTRY_OVERHEAD_BYTES + 2]);
  // a table listed again starts empty
  cache.configure(maps([T, 10_000, 5_000], [U, 1000, 0]));
  assert.equal(get(cache, U, 'u'), undefined);
});

test('an answer read while the entries were dropped, or while a write is in progress, is not stored', () => {
  const { cache } = clocked(maps([T, 60_000, 60_000]));
  const t = cache.table(T)!;
  // a lookup starts, the table is reloaded, the lookup's (old) answer arrives
  let gen = t.generation;
  cache.invalidate(T);
  cache.set(t, 'a', 'old', gen);
  assert.equal(cache.get(t, 'a'), undefined);
  // a write is in progress: what a lookup reads now may be from before or after it
  put(cache, T, 'a', 'before');
  cache.writeStarted(t);
  assert.equal(cache.get(t, 'a'), undefined, 'the write dropped the entry');
  gen = t.generation;
  cache.set(t, 'a', 'during', gen);
  assert.equal(cache.get(t, 'a'), undefined);
  cache.writeDone(t);
  cache.set(t, 'a', 'during', gen);
  assert.equal(cache.get(t, 'a'), undefined, 'a lookup that overlapped the write stores nothing');
  put(cache, T, 'a', 'after');
  assert.equal(cache.get(t, 'a'), 'after');
  // a table removed by configure: its handle stores nothing
  cache.configure(new Map());
  cache.set(t, 'b', 'x', t.generation);
  assert.equal(cache.stats().entries, 0);
});

test('parseCacheMaps: blanks and commas, units, /negative, names with = and /, proxy: prefixes, braces', () => {
  const warnings: string[] = [];
  const m = parseCacheMaps(
    'ldap:/etc/postfix/users.cf=300s/30s, pgsql:/etc/postfix/aliases.cf=60\n proxy:proxy:mysql:/etc/postfix/m.cf=2m/1h ' +
      'inline:{ a=1, b=2 }=1d mem:x=y=1w/0 texthash:/a/b=c/d=5m/10s',
    (w) => warnings.push(w),
  );
  assert.deepEqual(warnings, []);
  assert.deepEqual([...m], [
    ['ldap:/etc/postfix/users.cf', { posTtlMs: 300_000, negTtlMs: 30_000 }],
    ['pgsql:/etc/postfix/aliases.cf', { posTtlMs: 60_000, negTtlMs: 0 }],
    ['mysql:/etc/postfix/m.cf', { posTtlMs: 120_000, negTtlMs: 3_600_000 }],
    ['inline:{ a=1, b=2 }', { posTtlMs: 86_400_000, negTtlMs: 0 }],
    ['mem:x=y', { posTtlMs: 604_800_000, negTtlMs: 0 }],
    ['texthash:/a/b=c/d', { posTtlMs: 300_000, negTtlMs: 10_000 }],
  ]);
  assert.equal(parseCacheMaps('', () => assert.fail('no warning')).size, 0);
});

test('parseCacheMaps: a bad entry is skipped with a warning, the others apply', () => {
  const warnings: string[] = [];
  const m = parseCacheMaps(
    'hash:/a hash:/b=10x mem:ok=10 =5 nocolon=5 hash:=5 hash:/c=5/6/7 hash:/d=0 hash:/e=/5 hash:/f=5/ hash:/g=-5 mem:ok=20',
    (w) => warnings.push(w),
  );
  assert.deepEqual([...m], [['mem:ok', { posTtlMs: 20_000, negTtlMs: 0 }]]);
  assert.deepEqual(warnings, [
    'proxymapd_cache_maps: ignoring entry "hash:/a": expected type:name=ttl or type:name=ttl/negative_ttl',
    'proxymapd_cache_maps: ignoring entry "hash:/b=10x": bad time value or unit (a number with an optional unit s, m, h, d or w)',
    'proxymapd_cache_maps: ignoring entry "=5": expected a table as type:name before the "="',
    'proxymapd_cache_maps: ignoring entry "nocolon=5": expected a table as type:name before the "="',
    'proxymapd_cache_maps: ignoring entry "hash:=5": expected a table as type:name before the "="',
    'proxymapd_cache_maps: ignoring entry "hash:/c=5/6/7": expected ttl or ttl/negative_ttl after the "="',
    'proxymapd_cache_maps: ignoring entry "hash:/d=0": the positive ttl must be greater than zero',
    'proxymapd_cache_maps: ignoring entry "hash:/e=/5": bad time value or unit (a number with an optional unit s, m, h, d or w)',
    'proxymapd_cache_maps: ignoring entry "hash:/f=5/": bad time value or unit (a number with an optional unit s, m, h, d or w)',
    'proxymapd_cache_maps: ignoring entry "hash:/g=-5": bad time value or unit (a number with an optional unit s, m, h, d or w)',
    'proxymapd_cache_maps: table "mem:ok" is listed more than once; using its last entry',
  ]);
});

test('cacheSettings: defaults, and bad limits warned and replaced by the defaults', () => {
  const params = (p: Record<string, string>) => ({ param: (n: string) => p[n], warn: (w: string) => warnings.push(w) });
  const warnings: string[] = [];
  const d = cacheSettings(params({}));
  assert.deepEqual([d.maps.size, d.maxEntries, d.maxBytes], [0, DEFAULT_CACHE_MAX_ENTRIES, DEFAULT_CACHE_MAX_BYTES]);
  assert.deepEqual(warnings, []);
  const s = cacheSettings(params({ proxymapd_cache_maps: 'mem:a=5', proxymapd_cache_max_entries: '10', proxymapd_cache_max_bytes: '4096' }));
  assert.deepEqual([[...s.maps.keys()], s.maxEntries, s.maxBytes], [['mem:a'], 10, 4096]);
  const bad = cacheSettings(params({ proxymapd_cache_max_entries: '0', proxymapd_cache_max_bytes: 'lots' }));
  assert.deepEqual([bad.maxEntries, bad.maxBytes], [DEFAULT_CACHE_MAX_ENTRIES, DEFAULT_CACHE_MAX_BYTES]);
  assert.deepEqual(warnings, [
    `invalid proxymapd_cache_max_entries value "0": using ${DEFAULT_CACHE_MAX_ENTRIES}`,
    `invalid proxymapd_cache_max_bytes value "lots": using ${DEFAULT_CACHE_MAX_BYTES}`,
  ]);
});

test('a stored key or value that is a slice of a large string does not keep that string alive', () => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const { cache } = clocked(maps([T, 60_000, 0]), 10_000, 1 << 30);
  const t = cache.table(T)!;
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < 200; i++) {
    // a 256 KiB "reply" of which the entry keeps 40 characters of key and of value
    const reply = `${i}:${'r'.repeat(1 << 18)}`;
    cache.set(t, `${i}/0/0\0${reply.slice(10, 50)}`, reply.slice(100, 140), t.generation);
  }
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  assert.equal(cache.stats().entries, 200);
  // kept whole, the replies would take 50 MiB
  assert.ok(grown < 5 * 1024 * 1024, `heap grew by ${grown} bytes`);
});
