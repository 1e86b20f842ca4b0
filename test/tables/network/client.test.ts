/**
 * The connection pool shared by socketmap and tcp: a reply its reader cannot
 * take apart (the reader throws) fails that exchange and drops the
 * connection; the process and the next exchange are unharmed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConnPool, inetEndpoint } from '../../../src/tables/network/client.js';
import { lineFramer, startServer } from './servers.js';

test('a reader that throws fails its exchange (EOF, "Protocol error"), drops the connection, and the next exchange works', async () => {
  const server = await startServer(lineFramer, (req) => `200 ${req.trim()}\n`);
  const ep = inetEndpoint(`127.0.0.1:${server.port}`);
  assert.ok(!('error' in ep));
  const pool = new ConnPool(ep, { timeoutMs: () => 5000, warn: () => undefined });
  try {
    const bad = await pool.exchange(Buffer.from('get a\n'), () => {
      throw new TypeError('reader bug');
    });
    assert.deepEqual({ ok: bad.ok, kind: !bad.ok && bad.kind, errno: !bad.ok && bad.errno }, { ok: false, kind: 'eof', errno: 'Protocol error' });
    const line = (buf: Buffer) => {
      const nl = buf.indexOf(10);
      return nl < 0 ? undefined : { result: buf.subarray(0, nl).toString('latin1'), used: nl + 1, keep: true };
    };
    const good = await pool.exchange(Buffer.from('get b\n'), line);
    assert.deepEqual(good, { ok: true, result: '200 get b' });
    assert.equal(server.connections, 2, 'the failed exchange did not leave its connection for reuse');
  } finally {
    pool.close();
    await server.stop();
  }
});
