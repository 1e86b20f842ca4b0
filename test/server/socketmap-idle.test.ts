/**
 * Many idle socketmap connections (10,000 when the descriptor limit allows;
 * the client process raises its own limit, this process needs one
 * descriptor per connection for the server side) are held while 20
 * clients are served: every answer right, and the server's memory per idle
 * connection measured and printed. The idle clients run in a child
 * process, so the memory measured is the server's alone.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { after, before, it } from 'node:test';
import { SocketmapServer } from '../../src/server/socketmap-server.js';
import { startTestServer, type TestServer } from './helpers.js';
import { SmClient, connectOptions, settings } from './socketmap-helpers.js';

const WANTED = 10_000;
const CLIENTS = 20;
const LOOKUPS = 200;

/** This process's soft limit on open files. */
function openFileLimit(): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return !m || m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
}

/** Idle clients in the child: open `n` connections, say "ready N", hold them until stdin closes. */
const CHILD = `
const net = require('net');
const [host, port, n] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const socks = [];
let opened = 0, failed = 0, started = 0;
function more() {
  while (started < n && started - opened - failed < 100) {
    started++;
    const s = net.createConnection({ host, port });
    s.on('connect', () => { opened++; socks.push(s); if (opened + failed === n) done(); else more(); });
    s.on('error', () => { failed++; if (opened + failed === n) done(); else more(); });
  }
}
function done() { process.stdout.write('ready ' + opened + '\\n'); }
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
more();
`;

let ts: TestServer;
let sm: SocketmapServer;
let where: string;
before(async () => {
  ts = await startTestServer(['mem:alice=a,bob=b']);
  sm = new SocketmapServer(ts.server, settings({ virtual: 'mem:alice=a,bob=b' }));
  [where] = (await sm.listen()) as [string];
});
after(async () => {
  await sm.close();
  await ts.close();
});

async function serveClients(): Promise<number> {
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, i) => {
      const c = await SmClient.connect(where);
      for (let j = 0; j < LOOKUPS; j++) {
        const key = (i + j) % 3 === 0 ? 'nobody' : (i + j) % 3 === 1 ? 'ALICE' : 'bob';
        assert.equal(await c.ask(`virtual ${key}`), key === 'nobody' ? 'NOTFOUND ' : key === 'ALICE' ? 'OK a' : 'OK b');
      }
      c.close();
    }),
  );
  return (CLIENTS * LOOKUPS) / ((performance.now() - t0) / 1000);
}

it(`holds ${WANTED} idle connections while ${CLIENTS} clients are served`, { timeout: 180_000 }, async () => {
  const limit = openFileLimit();
  const n = Math.min(WANTED, limit - 300);
  if (n < WANTED) console.log(`descriptor limit ${limit}: holding ${n} idle connections instead of ${WANTED}`);
  assert.ok(n >= 1000, `descriptor limit ${limit} is too low for this test`);
  const alone = await serveClients();
  const before = process.memoryUsage();
  const { host, port } = connectOptions(where) as { host: string; port: number };
  const child = spawn('/bin/bash', ['-c', `ulimit -n ${n + 200} 2>/dev/null; exec "$0" -e "$1" "$2" "$3" "$4"`, process.execPath, CHILD, host, String(port), String(n)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  try {
    const ready = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        const m = /ready (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.once('exit', (code) => reject(new Error(`idle clients exited with ${code}`)));
    });
    assert.equal(ready, n, 'every idle connection was accepted');
    const end = Date.now() + 60_000;
    while (sm.openConnections < n) {
      assert.ok(Date.now() < end, `${sm.openConnections} of ${n} connections seen by the server`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const held = process.memoryUsage();
    const busy = await serveClients();
    // the served clients' connections close; the idle ones stay
    while (sm.openConnections > n) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(sm.openConnections, n, 'the idle connections are still open');
    const perConn = (k: 'rss' | 'heapUsed') => ((held[k] - before[k]) / n / 1024).toFixed(1);
    console.log(`${n} idle socketmap connections: ${perConn('rss')} KiB RSS and ${perConn('heapUsed')} KiB JS heap per connection`);
    console.log(`${CLIENTS} clients: ${alone.toFixed(0)} lookups/s alone, ${busy.toFixed(0)} lookups/s beside the idle connections`);
  } finally {
    child.stdin.end();
    await new Promise((r) => child.once('exit', r));
  }
  const end = Date.now() + 30_000;
  while (sm.openConnections > 0) {
    assert.ok(Date.now() < end, 'the server sees the idle clients go');
    await new Promise((r) => setTimeout(r, 20));
  }
});
