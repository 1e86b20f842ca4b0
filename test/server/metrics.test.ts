/**
 * Metrics: a real HTTP client scrapes /metrics of a real server after a
 * known workload; the counts per service, request, table and status equal
 * the requests made, every latency histogram counts its requests, the text
 * parses with a Prometheus text-format parser. Also: pool gauges without
 * passwords, the cache collector (fake provider), proxywrite commits of an
 * lmdb table, the bound on table labels, metrics off by default.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import parse, { type Family } from 'parse-prometheus-text-format';
import { ProxyConnection } from '../../src/client/client.js';
import { Metrics, MAX_TABLE_LABELS, OTHER_TABLE, type CacheStats } from '../../src/server/metrics.js';
import { startMetricsListener } from '../../src/server/http.js';
import { POOL_RETRY, livePools, poolLabel } from '../../src/tables/dbcommon/pool.js';
import { holdPool, testPool } from '../support/pool.js';
import { openTable } from '../../src/tables/index.js';
import type { TableOpenOptions } from '../../src/tables/core/table.js';
import { startTestServer, testOpener } from './helpers.js';
import { b } from '../support/bytes.js';

async function scrape(address: string): Promise<{ text: string; type: string | null }> {
  const res = await fetch(`http://${address}/metrics`);
  assert.equal(res.status, 200);
  return { text: await res.text(), type: res.headers.get('content-type') };
}

const key = (labels: Record<string, string> | undefined, names: string[]) => names.map((n) => `${n}=${labels?.[n] ?? '?'}`).join(' ');

/** Samples of one family as "label=value ..." -> number. */
function samples(fams: Family[], name: string, names: string[]): Map<string, number> {
  const f = fams.find((x) => x.name === name);
  assert.ok(f, `${name} in the output`);
  return new Map(f.metrics.map((m) => [key(m.labels, names), Number(m.value)]));
}

/** `_count` samples of a labelled histogram (the parser folds labelled histograms together, so they are read as plain samples). */
function histogramCounts(text: string, name: string, names: string[]): Map<string, number> {
  const lines = text.split('\n').filter((l) => l.startsWith(`${name}_count{`));
  return samples(parse(lines.join('\n') + '\n'), `${name}_count`, names);
}

const REQ = ['service', 'request', 'table', 'status'];

test('scrape after a known workload: requests by service, request, table and status; histograms; connections', async () => {
  const ts = await startTestServer(['mem:a=1', 'broken:x', 'slow:1'], ['mem:w=1'], { metricsListen: '127.0.0.1:0' });
  try {
    const c = await ProxyConnection.connect(ts.proxymap);
    const ex = async (r: string) => (await c.exchangeRaw(b(r)))[0]![1];
    assert.equal(await ex('request|open|table|mem:a=1|flags|0||'), '0');
    for (let i = 0; i < 3; i++) assert.equal(await ex('request|lookup|table|mem:a=1|flags|0|key|a||'), '0');
    for (let i = 0; i < 2; i++) assert.equal(await ex('request|lookup|table|mem:a=1|flags|0|key|zz||'), '1');
    assert.equal(await ex('request|lookup|table|proxy:proxy:mem:a=1|flags|0|key|a||'), '0');
    assert.equal(await ex('request|lookup|table|mem:other|flags|0|key|a||'), '4');
    assert.equal(await ex('request|update|table|mem:a=1|flags|0|key|k|value|v||'), '4');
    assert.equal(await ex('request|frobnicate||'), '3');
    assert.equal(await ex('request|lookup|table|mem:a=1|key|k||'), '3');
    assert.equal(await ex('request|lookup|table|broken:x|flags|0|key|a||'), '2');
    assert.equal(await ex('request|sequence|table|slow:1|flags|0|function|0||'), '5');
    const w = await ProxyConnection.connect(ts.proxywrite);
    const wx = async (r: string) => (await w.exchangeRaw(b(r)))[0]![1];
    assert.equal(await wx('request|update|table|mem:w=1|flags|0|key|k9|value|v9||'), '0');
    assert.equal(await wx('request|update|table|mem:w=1|flags|0|key|k8|value|v8||'), '0');
    assert.equal(await wx('request|delete|table|mem:w=1|flags|0|key|k9||'), '0');
    assert.equal(await wx('request|delete|table|mem:w=1|flags|0|key|k9||'), '1');
    const extra = await ProxyConnection.connect(ts.proxymap);
    extra.close();

    const { text, type } = await scrape(ts.http!.address);
    assert.match(type ?? '', /^text\/plain; version=0\.0\.4/);
    const fams = parse(text);
    const got = new Map([...samples(fams, 'proxymapd_requests_total', REQ)].filter(([, v]) => v > 0));
    const want = new Map<string, number>([
      ['service=proxymap request=open table=mem:a=1 status=OK', 1],
      ['service=proxymap request=lookup table=mem:a=1 status=OK', 4],
      ['service=proxymap request=lookup table=mem:a=1 status=NOKEY', 2],
      ['service=proxymap request=lookup table=mem:other status=DENY', 1],
      ['service=proxymap request=update table=mem:a=1 status=DENY', 1],
      ['service=proxymap request= table= status=BAD', 1],
      ['service=proxymap request=lookup table= status=BAD', 1],
      ['service=proxymap request=lookup table=broken:x status=RETRY', 1],
      ['service=proxymap request=sequence table=slow:1 status=CONFIG', 1],
      ['service=proxywrite request=update table=mem:w=1 status=OK', 2],
      ['service=proxywrite request=delete table=mem:w=1 status=OK', 1],
      ['service=proxywrite request=delete table=mem:w=1 status=NOKEY', 1],
    ]);
    assert.deepEqual(Object.fromEntries(got), Object.fromEntries(want));
    // every series has all six statuses, and its histogram counts its requests
    const all = samples(fams, 'proxymapd_requests_total', REQ);
    const counts = histogramCounts(text, 'proxymapd_request_duration_seconds', ['service', 'request', 'table']);
    const perSeries = new Map<string, number>();
    for (const [k, v] of all) {
      const series = k.replace(/ status=\w+$/, '');
      perSeries.set(series, (perSeries.get(series) ?? 0) + v);
    }
    assert.equal(all.size, perSeries.size * 6);
    assert.deepEqual(Object.fromEntries(counts), Object.fromEntries(perSeries));
    assert.equal([...counts.values()].reduce((a, n) => a + n, 0), 17);
    assert.match(text, /proxymapd_request_duration_seconds_bucket\{service="proxymap",request="lookup",table="mem:a=1",le="\+Inf"\} 6\n/);

    const conns = samples(fams, 'proxymapd_client_connections', ['service']);
    assert.deepEqual(Object.fromEntries(conns), { 'service=proxymap': 1, 'service=proxywrite': 1 });
    const accepted = samples(fams, 'proxymapd_client_connections_accepted_total', ['service']);
    assert.deepEqual(Object.fromEntries(accepted), { 'service=proxymap': 2, 'service=proxywrite': 1 });
    // mem:a=1 twice (the test server splits every type per fold mode: the legacy open folds, flags 0 does not), slow:1, mem:w=1
    assert.equal(samples(fams, 'proxymapd_open_tables', []).get(''), 4);
    const inst = samples(fams, 'proxymapd_table_instances', ['table', 'mode', 'state']);
    assert.equal(inst.get('table=mem:a=1 mode=read state=ok'), 2);
    assert.equal(inst.get('table=broken:x mode=read state=failed'), 1);
    assert.equal(inst.get('table=mem:w=1 mode=write state=ok'), 1);
    assert.equal(samples(fams, 'proxymapd_table_reloads_total', []).get(''), 0);
    // process metrics, prefixed
    assert.ok(fams.some((f) => f.name === 'proxymapd_process_cpu_seconds_total'));
    assert.ok(fams.some((f) => f.name === 'proxymapd_nodejs_heap_size_used_bytes'));
    const gauge = (name: string) => Number(fams.find((f) => f.name === name)?.metrics[0]?.value);
    assert.ok(gauge('proxymapd_process_resident_memory_bytes') > 10 * 1024 * 1024, 'rss');
    assert.ok(gauge('proxymapd_process_open_fds') >= 3 && gauge('proxymapd_process_open_fds') <= gauge('proxymapd_process_max_fds'), 'descriptors');
    assert.ok(gauge('proxymapd_nodejs_eventloop_utilization_ratio') >= 0 && gauge('proxymapd_nodejs_eventloop_utilization_ratio') <= 1, 'utilization');
    assert.ok(Math.abs(gauge('proxymapd_process_start_time_seconds') - (Date.now() / 1000 - process.uptime())) < 5, 'start time');
    // the scrape was no client connection
    c.close();
    w.close();
  } finally {
    await ts.close();
  }
});

test('pool gauges: size, in use, waiting, max; the label carries no password', async () => {
  const ts = await startTestServer([], [], { metricsListen: '127.0.0.1:0' });
  let release: (() => void) | undefined;
  try {
    const label = poolLabel('pgsql', ['postgresql://pfuser:s3cret@db1:5432/pfx?password=s3cret', 'inet:db2'], { dbname: 'pfx', user: 'pfuser' });
    const shared = testPool('metrics-test-pool', label);
    release = shared.release;
    const { first, second, finish } = await holdPool(shared.pool);
    const { text } = await scrape(ts.http!.address);
    assert.ok(!text.includes('s3cret'), 'no password in the output');
    assert.equal(label, 'pgsql:postgresql://pfuser:***@db1:5432/pfx?password=***,inet:db2 dbname=pfx user=pfuser');
    const fams = parse(text);
    const pool = (name: string) => samples(fams, name, ['pool']).get(`pool=${label}`);
    assert.equal(pool('proxymapd_pool_connections'), 1);
    assert.equal(pool('proxymapd_pool_connections_in_use'), 1);
    assert.equal(pool('proxymapd_pool_waiting'), 1);
    assert.equal(pool('proxymapd_pool_max_connections'), 1);
    finish();
    assert.equal(await first, 1);
    assert.equal(await second, 2);
    assert.notEqual(await first, POOL_RETRY);
    const after = parse((await scrape(ts.http!.address)).text);
    assert.equal(samples(after, 'proxymapd_pool_connections_in_use', ['pool']).get(`pool=${label}`), 0);
    assert.equal(samples(after, 'proxymapd_pool_waiting', ['pool']).get(`pool=${label}`), 0);
  } finally {
    release?.();
    await ts.close();
  }
  assert.ok(!livePools().some((p) => p.label.includes('db1')), 'a released pool is no longer listed');
});

test('cache collector: hits and misses per table, entries and bytes, from the provider', async () => {
  let stats: CacheStats | undefined;
  const m = new Metrics({ tables: () => [], reloads: () => ({ reloads: 2, failures: 1 }), pools: () => [], cacheStats: () => stats });
  const none = parse(await m.text());
  assert.equal(none.find((f) => f.name === 'proxymapd_cache_entries')?.metrics.length ?? 0, 0, 'no cache: no samples');
  stats = {
    entries: 7, bytes: 4096, maxEntries: 100_000, maxBytes: 64 << 20,
    tables: [{ table: 'ldap:/etc/postfix/users.cf', hits: 40, misses: 5, entries: 5, bytes: 3000 }, { table: 'pgsql:/etc/postfix/a.cf', hits: 1, misses: 2, entries: 2, bytes: 1096 }],
  };
  const fams = parse(await m.text());
  assert.deepEqual(Object.fromEntries(samples(fams, 'proxymapd_cache_hits_total', ['table'])), { 'table=ldap:/etc/postfix/users.cf': 40, 'table=pgsql:/etc/postfix/a.cf': 1 });
  assert.deepEqual(Object.fromEntries(samples(fams, 'proxymapd_cache_misses_total', ['table'])), { 'table=ldap:/etc/postfix/users.cf': 5, 'table=pgsql:/etc/postfix/a.cf': 2 });
  assert.equal(samples(fams, 'proxymapd_cache_entries', []).get(''), 7);
  assert.equal(samples(fams, 'proxymapd_cache_bytes', []).get(''), 4096);
  assert.equal(samples(fams, 'proxymapd_cache_max_bytes', []).get(''), 64 << 20);
  assert.equal(samples(fams, 'proxymapd_table_reloads_total', []).get(''), 2);
  assert.equal(samples(fams, 'proxymapd_table_reload_failures_total', []).get(''), 1);
});

test('table labels are bounded: names beyond MAX_TABLE_LABELS count as (other)', async () => {
  const m = new Metrics({ tables: () => [], reloads: () => ({ reloads: 0, failures: 0 }), pools: () => [] });
  for (let i = 0; i < MAX_TABLE_LABELS + 50; i++) m.record('proxymap', 'lookup', `hash:/t/${i}`, 4, 0.01);
  m.record('proxymap', 'lookup', 'proxy:hash:/t/3', 0, 0.01);
  const all = samples(parse(await m.text()), 'proxymapd_requests_total', REQ);
  assert.equal(all.get(`service=proxymap request=lookup table=${OTHER_TABLE} status=DENY`), 50);
  assert.equal(all.get('service=proxymap request=lookup table=hash:/t/3 status=OK'), 1);
  assert.equal(all.size, (MAX_TABLE_LABELS + 1) * 6);
});

test('proxywrite commits of an lmdb table: batches, writes, commit time', async (t) => {
  const opener = (o: TableOpenOptions) => (o.type === 'lmdb' ? openTable(o) : testOpener(o));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-metrics-'));
  const table = `lmdb:${path.join(dir, 'verify')}`;
  const ts = await startTestServer([], [table], { metricsListen: '127.0.0.1:0', opener });
  try {
    const conns = await Promise.all([1, 2, 3, 4].map(() => ProxyConnection.connect(ts.proxywrite)));
    let n = 0;
    for (let round = 0; round < 5; round++) {
      const replies = await Promise.all(conns.map((c, i) => c.exchangeRaw(b(`request|update|table|${table}|flags|0|key|k${round}-${i}|value|v||`))));
      for (const r of replies) assert.equal(r[0]![1], '0');
      n += conns.length;
    }
    for (const c of conns) c.close();
    const { text } = await scrape(ts.http!.address);
    const fams = parse(text);
    const batches = samples(fams, 'proxymapd_write_batches_total', ['table']).get(`table=${table}`)!;
    assert.equal(samples(fams, 'proxymapd_writes_total', ['table']).get(`table=${table}`), n);
    assert.ok(batches >= 5 && batches <= n, `${batches} commits for ${n} writes`);
    assert.equal(histogramCounts(text, 'proxymapd_write_commit_seconds', ['table']).get(`table=${table}`), batches);
    t.diagnostic(`${n} writes in ${batches} commits`);
  } finally {
    await ts.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('metrics are off unless proxymapd_metrics_listen is set; a bad value is a warning', async () => {
  const off = await startTestServer(['mem:a=1']);
  try {
    assert.equal(off.server.metrics, null);
    assert.equal(await startMetricsListener(off.server, ''), null);
  } finally {
    await off.close();
  }
  const on = await startTestServer(['mem:a=1'], [], { metrics: true });
  try {
    assert.equal(await startMetricsListener(on.server, 'localhost:99999'), null);
    assert.ok(on.logs.some((l) => /warning: proxymapd_metrics_listen: expected host:port.*metrics and health checks are off/.test(l)), on.logs.join('\n'));
    const h = await startMetricsListener(on.server, '127.0.0.1:0');
    assert.ok(h);
    const busy = await startMetricsListener(on.server, h.address);
    assert.equal(busy, null, 'an address in use: metrics off in this process');
    assert.ok(on.logs.some((l) => /warning: cannot listen on 127\.0\.0\.1:\d+ for metrics: .*EADDRINUSE/.test(l)), on.logs.join('\n'));
    await h.close();
  } finally {
    await on.close();
  }
});
