/**
 * Connection transport: the native socket set (native/sockset.c) and the
 * net.Socket fallback must behave alike on what the byte-level tests do not
 * reach: output larger than the socket buffer, reading paused under a flood
 * of pipelined requests, clients that vanish mid-reply, and descriptor reuse
 * while other connections are being served.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { encodeRecord } from '../../src/protocol/codec.js';
import { loopSpin } from '../../src/server/sockset.js';
import { startTestServer } from './helpers.js';
import { skipUnlessPresent } from '../support/skip.js';

const lookup = (table: string, key: string) =>
  encodeRecord([['request', 'lookup'], ['table', table], ['flags', 0], ['key', key]]);
const ANNOUNCEMENT = 'protocol\0proxymap_protocol\0\0';
const reply = (value: string) => `status\x000\x00value\x00${value}\x00\x00`;

/** Connect, send `data` (optionally in pieces with pauses), collect everything until `want` bytes or close. */
function exchange(
  sock: string,
  data: Buffer,
  want: number,
  opts: { readDelayMs?: number } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(sock);
    const chunks: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`timeout: ${got} of ${want} bytes`));
    }, 20_000);
    s.on('connect', () => {
      s.write(data);
      if (opts.readDelayMs) {
        // do not read for a while: the server's replies pile up in its output queue
        s.pause();
        setTimeout(() => s.resume(), opts.readDelayMs);
      }
    });
    s.on('data', (d) => {
      chunks.push(d);
      got += d.length;
      if (got >= want) {
        clearTimeout(timer);
        s.end();
        resolve(Buffer.concat(chunks).toString('latin1'));
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
  });
}

for (const nativeSockets of [true, false]) {
  const label = nativeSockets ? 'native socket set' : 'net.Socket';

  test(`${label}: replies larger than the socket buffer reach a slow reader intact, in order`, async () => {
    const ts = await startTestServer(['big:3000000', 'mem:a=1'], [], { nativeSockets, ioDeadlineMs: 5000 });
    try {
      const reqs = Buffer.concat([lookup('big:3000000', 'k1'), lookup('mem:a=1', 'a'), lookup('big:3000000', 'k2')]);
      const v1 = ('k1' + 'x'.repeat(3_000_000)).slice(0, 3_000_000);
      const v2 = ('k2' + 'x'.repeat(3_000_000)).slice(0, 3_000_000);
      const expected = ANNOUNCEMENT + reply(v1) + reply('1') + reply(v2);
      const got = await exchange(ts.proxymap, reqs, expected.length, { readDelayMs: 300 });
      assert.equal(got.length, expected.length);
      assert.ok(got === expected, 'bytes differ');
      // the server is still serving
      assert.equal(await exchange(ts.proxymap, lookup('mem:a=1', 'a'), ANNOUNCEMENT.length + reply('1').length), ANNOUNCEMENT + reply('1'));
      assert.equal(ts.server.nativeSockets, nativeSockets);
    } finally {
      await ts.close();
    }
  });

  test(`${label}: 500 pipelined requests in one write (reading pauses and resumes) are all answered in order`, async () => {
    const ts = await startTestServer(['mem:a=1,b=2'], [], { nativeSockets });
    try {
      const keys = Array.from({ length: 500 }, (_, i) => (i % 3 === 0 ? 'a' : i % 3 === 1 ? 'b' : 'zz'));
      const reqs = Buffer.concat(keys.map((k) => lookup('mem:a=1,b=2', k)));
      const expected =
        ANNOUNCEMENT + keys.map((k) => (k === 'a' ? reply('1') : k === 'b' ? reply('2') : 'status\x001\x00value\x00\x00\x00')).join('');
      const got = await exchange(ts.proxymap, reqs, expected.length);
      assert.ok(got === expected, `got ${got.length} bytes, expected ${expected.length}`);
    } finally {
      await ts.close();
    }
  });

  test(`${label}: clients that vanish mid-reply or mid-request do not disturb the others; descriptors are reused safely`, async () => {
    const ts = await startTestServer(['big:2000000', 'mem:a=1'], [], { nativeSockets });
    try {
      // a steady client, asking throughout
      const steady = net.createConnection(ts.proxymap);
      let steadyBuf = '';
      steady.on('data', (d) => (steadyBuf += d.toString('latin1')));
      await new Promise((r) => steady.once('connect', r));
      let asked = 0;
      const ask = () => {
        asked++;
        steady.write(lookup('mem:a=1', 'a'));
      };
      for (let round = 0; round < 30; round++) {
        ask();
        // one that asks for a large value and closes without reading it (the server's write fails: EPIPE)
        const gone = net.createConnection(ts.proxymap);
        gone.on('error', () => undefined);
        gone.on('connect', () => {
          gone.write(lookup('big:2000000', `r${round}`));
          setTimeout(() => gone.destroy(), 5);
        });
        // one that sends half a request and closes
        const half = net.createConnection(ts.proxymap);
        half.on('error', () => undefined);
        half.on('connect', () => half.end(lookup('mem:a=1', 'a').subarray(0, 10)));
        await new Promise((r) => setTimeout(r, 10));
      }
      ask();
      const want = ANNOUNCEMENT.length + asked * reply('1').length;
      const deadline = Date.now() + 10_000;
      while (steadyBuf.length < want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(steadyBuf, ANNOUNCEMENT + reply('1').repeat(asked));
      steady.destroy();
      // and new clients are still served
      assert.equal(await exchange(ts.proxymap, lookup('mem:a=1', 'a'), ANNOUNCEMENT.length + reply('1').length), ANNOUNCEMENT + reply('1'));
    } finally {
      await ts.close();
    }
  });
}

test('loopSpin: returns as soon as the event loop has an event ready, and leaves it to the loop', { skip: skipUnlessPresent(loopSpin(0) === null && 'the addon is not built') }, async () => {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const client = net.createConnection(port, '127.0.0.1');
  await new Promise<void>((r) => client.once('connect', () => r()));
  const peer = await accepted;
  const got = new Promise<string>((r) => client.once('data', (b) => r(b.toString())));
  peer.write('ping');
  // the bytes are on their way; the spin ends when the client's socket is readable, far before 2 s
  const t0 = performance.now();
  let r = 0;
  while (r === 0 && performance.now() - t0 < 2000) r = loopSpin(2_000_000)!;
  assert.equal(r, 1);
  assert.ok(performance.now() - t0 < 1000, `took ${performance.now() - t0} ms`);
  // not consumed: the loop still delivers the data
  assert.equal(await got, 'ping');
  client.destroy();
  peer.destroy();
  srv.close();
  // with a deadline: returns 0 no earlier than asked when nothing is ready, 1 when something is
  const t1 = performance.now();
  const v = loopSpin(20_000)!;
  assert.ok(v === 1 || performance.now() - t1 >= 19, `${v} after ${performance.now() - t1} ms`);
});
