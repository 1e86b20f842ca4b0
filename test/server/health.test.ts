/**
 * /healthz and /readyz on the metrics listener of a real server: healthy
 * while the listeners are open; ready only when every approved table opens
 * (a texthash file that appears later, the 'broken:' test double) and every
 * pool reaches its database (a throwaway PostgreSQL stopped and started);
 * the HTTP side: 404, 405, HEAD, malformed requests, a UNIX socket with %p.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { ProxyConnection } from '../../src/client/client.js';
import { openTable } from '../../src/tables/index.js';
import type { TableOpenOptions } from '../../src/tables/core/table.js';
import { parseListenAddress } from '../../src/server/http.js';
import { startTestServer, testOpener } from './helpers.js';
import { b } from '../support/bytes.js';
import { credentials, writeCf } from '../sql/fixtures.js';
import { pgSkipReason, startPostgres } from '../sql/servers.js';

interface Answer {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** One HTTP request over TCP ("host:port") or a UNIX socket ("/path"). */
function get(address: string, urlPath: string, method = 'GET'): Promise<Answer> {
  const where = address.startsWith('/') ? { socketPath: address } : { host: address.slice(0, address.lastIndexOf(':')), port: Number(address.slice(address.lastIndexOf(':') + 1)) };
  return new Promise((resolve, reject) => {
    const req = http.request({ ...where, path: urlPath, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

const texthashOpener = (o: TableOpenOptions) => (o.type === 'texthash' || o.type === 'pgsql' ? openTable(o) : testOpener(o));

test('/healthz: 200 while the listeners are open, 503 once they are closed', async () => {
  const ts = await startTestServer(['mem:a=1'], [], { metricsListen: '127.0.0.1:0' });
  try {
    const addr = ts.http!.address;
    const ok = await get(addr, '/healthz');
    assert.equal(ok.status, 200);
    assert.equal(ok.body, 'ok\n');
    assert.equal(ok.headers['content-type'], 'text/plain; charset=utf-8');
    await ts.server.stopListening();
    const down = await get(addr, '/healthz');
    assert.equal(down.status, 503);
    assert.equal(down.body, 'no listener is open\n');
    assert.equal((await get(addr, '/readyz')).status, 503, 'not healthy: not ready');
  } finally {
    await ts.close();
  }
});

test('HTTP: 404, 405, HEAD, query strings, malformed requests never hurt the server', async () => {
  const ts = await startTestServer(['mem:a=1'], [], { metricsListen: '127.0.0.1:0' });
  try {
    const addr = ts.http!.address;
    assert.equal((await get(addr, '/nothing')).status, 404);
    const post = await get(addr, '/metrics', 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
    const head = await get(addr, '/healthz', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal(head.headers['content-length'], '3');
    assert.equal((await get(addr, '/metrics?x=1')).status, 200);
    // garbage instead of HTTP: 400, connection closed
    const raw = await new Promise<string>((resolve) => {
      const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
      const s = net.connect({ host, port });
      let got = '';
      s.on('data', (d) => (got += d.toString('latin1')));
      s.on('close', () => resolve(got));
      s.on('error', () => resolve(got));
      s.write('\x00\x01GARBAGE\r\n\r\n');
    });
    assert.match(raw, /^HTTP\/1\.1 400 /);
    // still serving, HTTP and proxymap alike
    assert.equal((await get(addr, '/healthz')).status, 200);
    const c = await ProxyConnection.connect(ts.proxymap);
    assert.equal((await c.exchangeRaw(b('request|lookup|table|mem:a=1|flags|0|key|a||')))[0]![1], '0');
    c.close();
  } finally {
    await ts.close();
  }
});

test('/readyz: 503 while an approved table cannot be opened, 200 once it can', async () => {
  const dir = fs.mkdtempSync('/tmp/pmd-ready-');
  const file = path.join(dir, 'later');
  try {
    const ts = await startTestServer([`texthash:${file}`, 'mem:a=1'], ['mem:w=1'], { metricsListen: '127.0.0.1:0', opener: texthashOpener });
    try {
      const addr = ts.http!.address;
      const missing = await get(addr, '/readyz');
      assert.equal(missing.status, 503);
      assert.match(missing.body, new RegExp(`^table texthash:${file}: .*${file}.*\n$`));
      fs.writeFileSync(file, 'k v\n');
      const ready = await get(addr, '/readyz');
      assert.equal(ready.body, 'ok\n');
      assert.equal(ready.status, 200);
      // the instance the check opened serves the clients
      const c = await ProxyConnection.connect(ts.proxymap);
      assert.equal((await c.exchangeRaw(b(`request|lookup|table|texthash:${file}|flags|${0x4000 | 0x80000}|key|k||`)))[0]![1], '0');
      c.close();
    } finally {
      await ts.close();
    }
    const broken = await startTestServer(['broken:x'], [], { metricsListen: '127.0.0.1:0' });
    try {
      const r = await get(broken.http!.address, '/readyz');
      assert.equal(r.status, 503);
      assert.equal(r.body, 'table broken:x: broken:x: cannot open\n');
    } finally {
      await broken.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a UNIX socket path with %p: one socket per process, removed on close', async () => {
  assert.deepEqual(parseListenAddress('/run/pmd/metrics-%p.sock', 4242), { path: '/run/pmd/metrics-4242.sock' });
  assert.deepEqual(parseListenAddress('[::1]:9187'), { host: '::1', port: 9187 });
  assert.deepEqual(parseListenAddress(' 127.0.0.1:9187 '), { host: '127.0.0.1', port: 9187 });
  assert.equal(parseListenAddress(''), null);
  for (const bad of ['9187', 'host:', '[nothex]:1', 'a b:1', 'h:65536']) assert.throws(() => parseListenAddress(bad), /proxymapd_metrics_listen/);
  const ts = await startTestServer(['mem:a=1'], [], { metricsListen: '%d/metrics-%p.sock' });
  const sock = path.join(ts.dir, `metrics-${process.pid}.sock`);
  try {
    assert.equal(ts.http!.address, sock);
    assert.equal(fs.statSync(sock).mode & 0o777, 0o666);
    assert.equal((await get(sock, '/healthz')).status, 200);
    const m = await get(sock, '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.body, /^# HELP proxymapd_requests_total /m);
  } finally {
    await ts.close();
  }
  assert.equal(fs.existsSync(sock), false);
});

const pgSkip = pgSkipReason();

test('/readyz with a pgsql table: 503 while the database is down, 200 when it is up; no password in /metrics', { skip: pgSkip, timeout: 180_000 }, async () => {
  const db = await startPostgres();
  try {
    const cf = writeCf(path.join(db.dir, 'aliases.cf'), credentials(db, `inet:127.0.0.1:${db.port}`) + "query = SELECT '%s'\n");
    await db.halt();
    const ts = await startTestServer([`pgsql:${cf}`], [], { metricsListen: '127.0.0.1:0', opener: texthashOpener });
    try {
      const addr = ts.http!.address;
      const down = await get(addr, '/readyz');
      assert.equal(down.status, 503);
      assert.match(down.body, new RegExp(`^pool pgsql:inet:127\\.0\\.0\\.1:${db.port} dbname=${db.db} user=${db.user}: .*127\\.0\\.0\\.1`, 'm'));
      await db.start();
      const up = await get(addr, '/readyz');
      assert.equal(up.body, 'ok\n');
      assert.equal(up.status, 200);
      // the failed check took no host out of service for the table (retry_interval 60s): the next lookup is answered
      const c = await ProxyConnection.connect(ts.proxymap);
      assert.deepEqual(await c.exchangeRaw(b(`request|lookup|table|pgsql:${cf}|flags|0|key|x||`)), [['status', '0'], ['value', 'x']]);
      const m = await get(addr, '/metrics');
      assert.ok(!m.body.includes(db.password), 'no password in the metrics');
      assert.match(m.body, new RegExp(`proxymapd_pool_max_connections\\{pool="pgsql:inet:127\\.0\\.0\\.1:${db.port} dbname=${db.db} user=${db.user}"\\} 4`));
      c.close();
    } finally {
      await ts.close();
    }
  } finally {
    await db.stop();
  }
});
