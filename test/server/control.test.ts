/**
 * The control socket (src/server/control.ts): status sections after real
 * lookups, the robustness rules (bad JSON, oversize lines, unknown
 * commands, failing handlers), and the CLI (`proxymapd status`, `proxymapd
 * cache purge`) run as child processes against a `proxymapd serve` child.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ProxyConnection } from '../../src/client/client.js';
import { ControlServer, addServerSections, controlRequest, registerCachePurge, CONTROL_MAX_LINE, type TableStatus } from '../../src/server/control.js';
import { b } from '../support/bytes.js';
import { CLI, run, startProxymapd, writeMainCf } from '../interop/harness.js';
import { startTestServer } from './helpers.js';
import { LookupCache } from '../../src/server/cache.js';
import { POOL_RETRY, poolLabel } from '../../src/tables/dbcommon/pool.js';
import { holdPool, testPool } from '../support/pool.js';

const lookup = (table: string, key: string) => b(`request|lookup|table|${table}|flags|0|key|${key}||`);

/** Lines a raw client gets back for what it sends (until the server closes or `replies` lines came). */
async function rawExchange(sockPath: string, data: string | Buffer, replies: number): Promise<{ lines: string[]; closed: boolean }> {
  const s = net.createConnection(sockPath);
  await once(s, 'connect');
  let buf = '';
  let closed = false;
  s.setEncoding('utf8');
  s.on('data', (d: string) => (buf += d));
  s.on('error', () => undefined);
  s.write(data);
  await new Promise<void>((resolve) => {
    const check = () => {
      if (buf.split('\n').length - 1 >= replies) resolve();
    };
    s.on('data', check);
    s.on('close', () => {
      closed = true;
      resolve();
    });
    check();
  });
  s.destroy();
  return { lines: buf.split('\n').filter((l) => l !== ''), closed };
}

async function withControl(fn: (ctx: { control: ControlServer; sock: string; t: Awaited<ReturnType<typeof startTestServer>> }) => Promise<void>): Promise<void> {
  const t = await startTestServer(['mem:a=1,b=2', 'broken:x'], ['mem:w=1']);
  const control = new ControlServer();
  addServerSections(control, t.server, { configDir: '/etc/postfix-test', mode: 'standalone' });
  const sock = path.join(t.dir, 'private', 'proxymapd-control');
  await control.listen(sock);
  try {
    await fn({ control, sock, t });
  } finally {
    await control.close();
    await t.close();
  }
}

test('status: tables, connections and process after lookups', async () => {
  await withControl(async ({ sock, t }) => {
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    const c = await ProxyConnection.connect(t.proxymap);
    assert.deepEqual(await c.exchangeRaw(lookup('mem:a=1,b=2', 'a')), [['status', '0'], ['value', '1']]);
    assert.deepEqual(await c.exchangeRaw(lookup('broken:x', 'a')), [['status', '2'], ['value', '']]);
    const w = await ProxyConnection.connect(t.proxywrite);
    assert.deepEqual(await w.exchangeRaw(lookup('mem:w=1', 'w')), [['status', '0'], ['value', '1']]);
    w.close();
    const reply = await controlRequest(sock, 'status');
    assert.ok('result' in reply, JSON.stringify(reply));
    const st = reply.result as {
      process: { pid: number; configDir: string; mode: string; uptimeSeconds: number };
      connections: { open: Record<string, number>; accepted: Record<string, number> };
      tables: { approved: Record<string, number>; open: TableStatus[]; errors: Array<{ table: string; message: string }> };
    };
    assert.equal(st.process.pid, process.pid);
    assert.equal(st.process.configDir, '/etc/postfix-test');
    assert.equal(st.process.mode, 'standalone');
    assert.deepEqual(st.connections.accepted, { proxymap: 1, proxywrite: 1 });
    // the proxywrite client has gone; wait until the server has seen it
    for (let i = 0; i < 100 && t.server.openConnectionsBy().proxywrite > 0; i++) await new Promise((r) => setImmediate(r));
    const st2 = ((await controlRequest(sock, 'status')) as { result: typeof st }).result;
    assert.deepEqual(st2.connections.open, { proxymap: 1, proxywrite: 0 });
    assert.deepEqual(st.tables.approved, { proxymap: 2, proxywrite: 1 });
    const byTable = new Map(st.tables.open.map((o) => [`${o.service} ${o.table}`, o]));
    assert.deepEqual([...byTable.keys()].sort(), ['proxymap broken:x', 'proxymap mem:a=1,b=2', 'proxywrite mem:w=1']);
    const mem = byTable.get('proxymap mem:a=1,b=2')!;
    assert.equal(mem.type, 'mem');
    assert.equal(mem.name, 'a=1,b=2');
    assert.equal(mem.ok, true);
    assert.equal(mem.instances, 1);
    assert.equal(mem.reloads, 0);
    assert.ok(Date.parse(mem.openedAt!) <= Date.now());
    const broken = byTable.get('proxymap broken:x')!;
    assert.equal(broken.ok, false);
    assert.match(broken.lastError!.message, /broken:x: cannot open/);
    assert.deepEqual(st.tables.errors.map((e) => e.table), ['broken:x']);
    c.close();
  });
});

test('status: extra sections, and a section that throws', async () => {
  await withControl(async ({ control, sock }) => {
    let n = 0;
    control.addSection('cache', () => ({ entries: ++n, bytes: 100 }));
    control.addSection('extra', async () => {
      throw new Error('stats unavailable');
    });
    const st = ((await controlRequest(sock, 'status')) as { result: Record<string, unknown> }).result;
    assert.deepEqual(st.cache, { entries: 1, bytes: 100 });
    assert.deepEqual(st.extra, { error: 'stats unavailable' });
    assert.deepEqual(Object.keys(st), ['process', 'connections', 'tables', 'pools', 'cache', 'extra']);
  });
});

test('status: the shared pools, with connections in use, lookups waiting and hosts down', async () => {
  await withControl(async ({ sock }) => {
    const label = poolLabel('pgsql', ['inet:db1', 'inet:db2'], { dbname: 'pfx', user: 'pfuser' });
    const shared = testPool('control-test-pool', label, ['inet:db1', 'inet:db2']);
    try {
      const pools = async () =>
        (((await controlRequest(sock, 'status')) as { result: { pools: Array<Record<string, unknown>> } }).result.pools).filter((p) => p.pool === label);
      assert.deepEqual(await pools(), [{ pool: label, open: 0, busy: 0, idle: 0, waiting: 0, peak: 0, max: 1, hostsDown: [] }]);
      const { first, second, finish } = await holdPool(shared.pool);
      assert.deepEqual(await pools(), [{ pool: label, open: 1, busy: 1, idle: 0, waiting: 1, peak: 1, max: 1, hostsDown: [] }]);
      finish();
      assert.equal(await first, 1);
      assert.equal(await second, 2);
      // A query that fails marks its host down (Postfix's rule); status names it.
      const failing = await shared.pool.use((_c, h) => ({ kind: 'host-error' as const, message: `query failed on ${h.label}` }), { deadline: Date.now() + 10_000, warn: () => undefined });
      assert.equal(failing, POOL_RETRY);
      const [st] = await pools();
      assert.equal(st.busy, 0);
      assert.equal((st.hostsDown as string[]).length >= 1, true, JSON.stringify(st));
    } finally {
      shared.release();
    }
    assert.deepEqual(await pools2(sock, label), [], 'a released pool is no longer listed');
  });
});

async function pools2(sock: string, label: string): Promise<unknown[]> {
  const st = ((await controlRequest(sock, 'status')) as { result: { pools: Array<{ pool: string }> } }).result;
  return st.pools.filter((p) => p.pool === label);
}

test('commands: arguments, unknown commands, bad requests, failing handlers', async () => {
  await withControl(async ({ control, sock }) => {
    control.register('echo', (args) => ({ args }));
    control.register('fails', () => {
      throw new Error('it broke');
    });
    control.register('refuses', () => ({ error: 'no cache configured' }));
    const lines = [
      '{"cmd":"echo","args":["x","y"]}',
      'not json',
      '[1,2]',
      '{"cmd":42}',
      '{"cmd":"echo","args":[1]}',
      '{"cmd":"nope"}',
      '{"cmd":"fails"}',
      '{"cmd":"refuses"}',
      '',
      '{"cmd":"echo"}',
    ];
    // all on one connection, pipelined: replies in order, one per non-empty line
    const { lines: replies, closed } = await rawExchange(sock, lines.join('\n') + '\n', 9);
    assert.equal(closed, false);
    assert.deepEqual(replies.map((l) => JSON.parse(l)), [
      { result: { args: ['x', 'y'] } },
      { error: 'request is not valid JSON' },
      { error: 'request must be an object with a "cmd" string' },
      { error: 'request must be an object with a "cmd" string' },
      { error: '"args" must be an array of strings' },
      { error: 'unknown command: nope' },
      { error: 'fails failed: it broke' },
      { error: 'no cache configured' },
      { result: { args: [] } },
    ]);
  });
});

test('cache-purge: no cache, or the purge of the cache with the table as the server names it', async () => {
  await withControl(async ({ control, sock, t }) => {
    registerCachePurge(control, t.server);
    assert.deepEqual(await controlRequest(sock, 'cache-purge', []), { error: 'no cache configured' });
    const vir = Buffer.from('mem:vírtual=1', 'utf8').toString('latin1');
    const hour = { posTtlMs: 3_600_000, negTtlMs: 3_600_000 };
    const cache = new LookupCache({ maps: new Map([['mem:a=1', hour], [vir, hour]]), maxEntries: 100, maxBytes: 1 << 20 });
    t.server.setCache(cache);
    const fill = () => {
      for (const [table, key] of [['mem:a=1', 'a'], ['mem:a=1', 'b'], [vir, 'vírtual'], [vir, 'x']]) cache.set(cache.table(table)!, key, 'v', cache.table(table)!.generation);
    };
    fill();
    assert.deepEqual(await controlRequest(sock, 'cache-purge', []), { result: { purged: 4 } });
    fill();
    // proxy: prefixes removed, UTF-8 text as the byte string tables are named by
    assert.deepEqual(await controlRequest(sock, 'cache-purge', ['proxy:proxy:mem:vírtual=1']), { result: { purged: 2 } });
    assert.equal(cache.stats().entries, 2);
  });
});

test('an oversize line closes the connection; the server goes on', async () => {
  await withControl(async ({ sock }) => {
    const { lines, closed } = await rawExchange(sock, Buffer.alloc(CONTROL_MAX_LINE + 10, 'x'), 1);
    assert.equal(closed, true);
    assert.deepEqual(lines, []);
    // a request line split across writes is fine as long as it stays under the limit
    const s = net.createConnection(sock);
    await once(s, 'connect');
    s.write('{"cmd":');
    await new Promise((r) => setImmediate(r));
    s.write('"status"}\n');
    const [data] = (await once(s, 'data')) as [Buffer];
    s.destroy();
    assert.ok('result' in JSON.parse(data.toString()));
    assert.ok('result' in (await controlRequest(sock, 'status')));
  });
});

test('CLI: proxymapd status and cache purge against a proxymapd serve child', async (t) => {
  if (!fs.existsSync(CLI)) return t.skip('dist/ is not built (npm run build)');
  const pm = await startProxymapd({ proxy_read_maps: 'proxy:inline:{a=1} proxy:texthash:/nonexistent/table', proxy_write_maps: '' });
  try {
    const sock = path.join(pm.queue, 'private', 'proxymapd-control');
    for (let i = 0; i < 100 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    const c = await ProxyConnection.connect(pm.proxymap);
    assert.deepEqual(await c.exchangeRaw(lookup('inline:{a=1}', 'a')), [['status', '0'], ['value', '1']]);
    assert.deepEqual(await c.exchangeRaw(lookup('texthash:/nonexistent/table', 'a')), [['status', '2'], ['value', '']]);
    const text = await run(process.execPath, [CLI, 'status', '-c', pm.conf]);
    assert.equal(text.status, 0, text.stderr);
    const out = text.stdout.toString();
    assert.match(out, new RegExp(`^proxymapd pid ${pm.pid} \\(standalone\\), up \\d+m\\d+s, config ${pm.conf.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    // (accepted: the harness's probe for the socket, then this client)
    assert.match(out, /connections: proxymap 1 open \(2 accepted\), proxywrite 0 open \(0 accepted\)/);
    assert.match(out, /tables: 2 read, 0 write approved; 2 open/);
    assert.match(out, /\n {2}proxymap +inline:\{a=1\} +1 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ +0 +- +ok\n/);
    assert.match(out, /\n {2}proxymap +texthash:\/nonexistent\/table +1 .* unavailable\n/);
    assert.match(out, /last errors:\n {4}texthash:\/nonexistent\/table at .*: open database \/nonexistent\/table: No such file or directory/);
    assert.ok(out.split('\n').length < 25, 'one screen');
    const json = await run(process.execPath, [CLI, 'status', '-c', pm.conf, '--json']);
    assert.equal(json.status, 0, json.stderr);
    const st = JSON.parse(json.stdout.toString());
    assert.equal(st.process.pid, pm.pid);
    assert.deepEqual(st.reload, { reloads: 0, failures: 0 });
    const purge = await run(process.execPath, [CLI, 'cache', 'purge', '-c', pm.conf, 'proxy:inline:{a=1}']);
    assert.equal(purge.status, 1);
    assert.equal(purge.stderr, 'proxymapd cache: fatal: no cache configured\n');
    c.close();
  } finally {
    assert.equal(await pm.stop(), 0, pm.log());
  }
});

test('CLI: proxymapd status without a running server exits 1 with a clear message', async (t) => {
  if (!fs.existsSync(CLI)) return t.skip('dist/ is not built (npm run build)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-status-'));
  try {
    writeMainCf(path.join(dir, 'conf'), { queue_directory: path.join(dir, 'queue') });
    const r = await run(process.execPath, [CLI, 'status', '-c', path.join(dir, 'conf')]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^proxymapd status: fatal: no proxymapd server is running for this configuration \(nothing listens on .*private\/proxymapd-control\)\n$/);
    // a leftover file where the socket was (a killed server) says the same
    fs.mkdirSync(path.join(dir, 'queue', 'private'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'queue', 'private', 'proxymapd-control'), '');
    const r2 = await run(process.execPath, [CLI, 'status', '-c', path.join(dir, 'conf')]);
    assert.equal(r2.status, 1);
    assert.match(r2.stderr, /no proxymapd server is running/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the control socket is removed when the server stops', async (t) => {
  if (!fs.existsSync(CLI)) return t.skip('dist/ is not built (npm run build)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-ctl-'));
  const conf = path.join(dir, 'conf');
  writeMainCf(conf, { queue_directory: path.join(dir, 'queue'), proxy_read_maps: '', proxymapd_control_service_name: 'ctl' });
  const child = spawn(process.execPath, [CLI, 'serve', '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d: Buffer) => (log += d));
  const sock = path.join(dir, 'queue', 'private', 'ctl');
  try {
    for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok('result' in (await controlRequest(sock, 'status')), log);
  } finally {
    child.kill('SIGTERM');
    await once(child, 'exit');
  }
  assert.equal(child.exitCode, 0, log);
  assert.equal(fs.existsSync(sock), false);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('cache through a proxymapd serve child: SIGHUP turns it on, status shows it, cache purge empties it, SIGHUP turns it off', async (t) => {
  if (!fs.existsSync(CLI)) return t.skip('dist/ is not built (npm run build)');
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-cache-cli-'));
  const table = path.join(base, 'virtual');
  fs.writeFileSync(table, 'a@example.com alice\n');
  const spec = `texthash:${table}`;
  const pm = await startProxymapd({ proxy_read_maps: `proxy:${spec}`, proxy_write_maps: '' }, base);
  const mainCf = (extra: Record<string, string>) =>
    writeMainCf(pm.conf, { queue_directory: pm.queue, proxy_read_maps: `proxy:${spec}`, proxy_write_maps: '', ...extra });
  const sock = path.join(pm.queue, 'private', 'proxymapd-control');
  const status = async () => {
    const r = await run(process.execPath, [CLI, 'status', '-c', pm.conf, '--json']);
    assert.equal(r.status, 0, r.stderr.toString());
    return JSON.parse(r.stdout.toString());
  };
  const reloaded = async (n: number) => {
    process.kill(pm.pid, 'SIGHUP');
    for (let i = 0; i < 200 && (await status()).reload.reloads < n; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal((await status()).reload.reloads, n, pm.log());
  };
  try {
    for (let i = 0; i < 100 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    const c = await ProxyConnection.connect(pm.proxymap);
    const ask = async (key: string) => c.exchangeRaw(lookup(spec, key));
    assert.deepEqual(await ask('a@example.com'), [['status', '0'], ['value', 'alice']]);
    assert.equal((await status()).cache, 'off');

    mainCf({ proxymapd_cache_maps: `${spec}=1h/1h` });
    await reloaded(1);
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await ask('a@example.com'), [['status', '0'], ['value', 'alice']]);
      assert.deepEqual(await ask('nobody@example.com'), [['status', '1'], ['value', '']]);
    }
    const st = (await status()).cache;
    assert.equal(st.entries, 2);
    assert.deepEqual(
      st.tables.map((x: { table: string; hits: number; misses: number }) => [x.table, x.hits, x.misses]),
      [[spec, 4, 2]],
    );
    const purge = await run(process.execPath, [CLI, 'cache', 'purge', '-c', pm.conf, `proxy:${spec}`]);
    assert.equal(purge.status, 0, purge.stderr.toString());
    assert.equal(purge.stdout.toString(), `purged 2 cache entries of proxy:${spec}\n`);
    assert.equal((await status()).cache.entries, 0);

    mainCf({});
    await reloaded(2);
    assert.equal((await status()).cache, 'off');
    assert.deepEqual(await ask('a@example.com'), [['status', '0'], ['value', 'alice']]);
    c.close();
  } finally {
    assert.equal(await pm.stop(), 0, pm.log());
  }
});
