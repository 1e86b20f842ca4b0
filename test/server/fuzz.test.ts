import test from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { ProxyConnection } from '../../src/client/client.js';
import { encodeRecord } from '../../src/protocol/codec.js';
import { startTestServer } from './helpers.js';
import { b } from '../support/bytes.js';


/** Send bytes on a fresh connection, then close it; resolve when the server has answered or closed. */
function blast(path: string, bytes: Buffer, halfClose: boolean): Promise<void> {
  return new Promise((resolve) => {
    const s = net.createConnection(path);
    const done = () => {
      s.destroy();
      resolve();
    };
    s.on('connect', () => {
      s.write(bytes);
      if (halfClose) s.end();
      else setTimeout(done, 20);
    });
    s.on('data', () => undefined);
    s.on('close', done);
    s.on('error', done);
  });
}

const names = ['request', 'table', 'flags', 'instance_flags', 'key', 'value', 'function', 'status', '{', '}'];
const values = ['open', 'lookup', 'update', 'delete', 'sequence', 'mem:a=1', 'proxy:mem:a=1', 'nocolon', '0', '1', '524353',
  '4294967295', '99999999999999999999', '-1', 'abc', '', 'a'];

test('random and truncated byte streams never take the server down', async () => {
  const ts = await startTestServer(['mem:a=1'], ['mem:a=1'], { ioDeadlineMs: 100 });
  const check = await ProxyConnection.connect(ts.proxymap);
  try {
    const attr = fc.tuple(fc.oneof(fc.constantFrom(...names), fc.string()), fc.oneof(fc.constantFrom(...values), fc.string()));
    const structured = fc
      .array(fc.array(attr, { maxLength: 7 }), { minLength: 1, maxLength: 3 })
      .map((recs) => Buffer.concat(recs.map((r) => encodeRecord(r.map(([n, v]) => [n.replace(/\0/g, ''), v.replace(/\0/g, '')])))));
    const stream = fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      structured,
      structured.chain((buf) => fc.nat(buf.length).map((n) => buf.subarray(0, n))), // truncated
    );
    await fc.assert(
      fc.asyncProperty(stream, fc.boolean(), fc.boolean(), async (bytes, halfClose, toWriter) => {
        await blast(toWriter ? ts.proxywrite : ts.proxymap, bytes, halfClose);
        const r = await check.exchangeRaw(b('request|lookup|table|mem:a=1|flags|0|key|a||'));
        assert.deepEqual(r, [['status', '0'], ['value', '1']]);
      }),
      { numRuns: 300 },
    );
    // and new connections are still accepted
    const c = await ProxyConnection.connect(ts.proxymap);
    assert.deepEqual(await c.exchangeRaw(b('request|lookup|table|mem:a=1|flags|0|key|a||')), [['status', '0'], ['value', '1']]);
    c.close();
  } finally {
    check.close();
    await ts.close();
  }
});
