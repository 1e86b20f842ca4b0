/**
 * tcp: the shared conformance suite against a test server, and the
 * protocol cases of tables-network.md T1-T6 in process (time limits and
 * the pause between attempts shortened through NET_LIMITS).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, openTable } from '../../../src/tables/index.js';
import { NET_LIMITS } from '../../../src/tables/network/client.js';
import { hexQuote, hexUnquote } from '../../../src/tables/network/tcp.js';
import { openOptions, outcome, runConformance } from '../conformance.js';
import { tcpResponder } from './fixtures.js';
import { lineFramer, startServer, type TestServer } from './servers.js';

let server: TestServer;
before(async () => {
  server = await startServer(lineFramer, tcpResponder);
});
after(() => server.stop());

const addr = () => `127.0.0.1:${server.port}`;

runConformance('tcp', [
  {
    title: 'found, empty, not found, errors',
    get name() {
      return addr();
    },
    implFlags: DICT_FLAG.PATTERN,
    lookups: [
      { key: 'ok', expect: { value: 'value with space' } },
      { key: 'a b%c', expect: { value: 'spaced' } },
      { key: 'caf\xc3\xa9', expect: { value: 'caf\xc3\xa9-value' } },
      { key: 'tab', expect: { value: 'val' } },
      { key: 'crlf', expect: { value: 'val\r' } },
      { key: 'empty', expect: { value: '' } },
      { key: 'comma', expect: { value: 'a b,c' } },
      { key: 'lowerhex', expect: { value: '\xc3\xa9' } },
      { key: 'nf', expect: 'notfound' },
      { key: 'temp', expect: { error: DICT_ERR.RETRY } },
      { key: 'bad', expect: { error: DICT_ERR.RETRY } },
      { key: 'short', expect: { error: DICT_ERR.RETRY } },
      { key: 'mal', expect: { error: DICT_ERR.RETRY } },
      { key: 'nul', expect: { value: 'a' } },
      { key: 'unknown', expect: 'notfound' },
    ],
    sequence: 'unsupported',
  },
  { title: 'writable open', name: '127.0.0.1:1', writable: true, openError: 'tcp:127.0.0.1:1 map requires O_RDONLY access mode' },
  { title: 'NO_UNAUTH', name: '127.0.0.1:1', openFlags: DICT_FLAG.NO_UNAUTH, openError: 'tcp:127.0.0.1:1 map is not allowed for security sensitive data' },
  { title: 'no port', name: '127.0.0.1:', openError: '127.0.0.1:: missing service information' },
  { title: 'bad host', name: 'a b:25', openError: 'a b:25: valid hostname or network address required' },
]);

async function open(name: string, warnings: string[] = []) {
  return openTable(openOptions('tcp', name, {}, warnings));
}

describe('tcp protocol', () => {
  it('hex_quote: %, white space, control and 8-bit bytes as upper-case %XX (T6)', () => {
    assert.equal(hexQuote('a b%c'), 'a%20b%25c');
    assert.equal(hexQuote('x\ty'), 'x%09y');
    assert.equal(hexQuote('caf\xc3\xa9'), 'caf%C3%A9');
    assert.equal(hexQuote('Foo@Example.COM'), 'Foo@Example.COM');
    assert.equal(hexQuote('\x7f\r\n\v\f'), '%7F%0D%0A%0B%0C');
    assert.equal(hexUnquote('%4a%4B'), 'JK');
    assert.equal(hexUnquote('%4'), undefined);
    assert.equal(hexUnquote('%g0'), undefined);
  });

  it('requests, one reused connection; 5xx keeps it, 4xx closes it (T1, T2)', async () => {
    const t = await open(addr());
    const before = server.connections;
    server.requests.length = 0;
    for (const k of ['ok', 'a b%c', 'nf', 'ok']) await t.lookup(k, 0);
    assert.deepEqual(server.requests, ['get ok', 'get a%20b%25c', 'get nf', 'get ok']);
    assert.equal(server.connections - before, 1);
    await t.lookup('temp', 0);
    await t.lookup('ok', 0);
    assert.equal(server.connections - before, 2);
    await t.lookup('Foo@Example.COM', DICT_FLAG.FOLD_MUL);
    assert.equal(server.requests.at(-1), 'get foo@example.com');
    await t.close?.();
  });

  it("bad replies: Postfix's warnings (T3)", async () => {
    const w: string[] = [];
    const t = await open(addr(), w);
    for (const k of ['bad', 'short', 'mal', 'ctl', 'temp']) assert.deepEqual(outcome(await t.lookup(k, 0)), { error: DICT_ERR.RETRY });
    const p = `read TCP map reply from ${addr()}`;
    assert.deepEqual(w, [`${p}: bad status code: 300 what`, `${p}: malformed reply: 200`, `${p}: malformed reply: 200 %zz`, `${p}: bad status code: 300 _x_`]);
    await t.close?.();
  });

  it('no complete line: 10 attempts 1 s apart (here shortened), then RETRY (T5)', async () => {
    const saved = { ...NET_LIMITS };
    NET_LIMITS.tcpRetryPauseMs = 10;
    try {
      for (const [reply, warning] of [
        ['x'.repeat(5000), 'text longer than 4096'],
        [{ close: true } as const, 'unexpected EOF (Operation now in progress)'],
        [{ reply: '200 abc', thenClose: true } as const, 'text longer than 4096'],
      ] as const) {
        const s = await startServer(lineFramer, () => reply);
        const w: string[] = [];
        const t = await open(`127.0.0.1:${s.port}`, w);
        assert.deepEqual(outcome(await t.lookup('k', 0)), { error: DICT_ERR.RETRY });
        assert.equal(s.connections, 10);
        assert.deepEqual(w, Array(10).fill(`read TCP map reply from 127.0.0.1:${s.port}: ${warning}`));
        await t.close?.();
        await s.stop();
      }
      const w: string[] = [];
      const t = await open('127.0.0.1:1', w);
      assert.deepEqual(outcome(await t.lookup('k', 0)), { error: DICT_ERR.RETRY });
      assert.deepEqual(w, Array(10).fill('connect to TCP map 127.0.0.1:1: Connection refused'));
      await t.close?.();
    } finally {
      Object.assign(NET_LIMITS, saved);
    }
  });

  it('a silent server: each attempt times out ("Connection timed out"), then RETRY', async () => {
    const saved = { ...NET_LIMITS };
    NET_LIMITS.tcpRetryPauseMs = 10;
    NET_LIMITS.timeoutMs = 50;
    try {
      const s = await startServer(lineFramer, () => ({ silent: true }));
      const w: string[] = [];
      const t = await open(`127.0.0.1:${s.port}`, w);
      assert.deepEqual(outcome(await t.lookup('k', 0)), { error: DICT_ERR.RETRY });
      assert.equal(s.requests.length, 10);
      assert.deepEqual(w, Array(10).fill(`read TCP map reply from 127.0.0.1:${s.port}: unexpected EOF (Connection timed out)`));
      await t.close?.();
      await s.stop();
    } finally {
      Object.assign(NET_LIMITS, saved);
    }
  });

  it('a server that closes after every reply: the next lookup reconnects (after one failed attempt if it did not notice)', async () => {
    const s = await startServer(lineFramer, (r) => ({ reply: `200 ${r.slice(4)}\n`, thenClose: true }));
    const w: string[] = [];
    const t = await open(`127.0.0.1:${s.port}`, w);
    for (let i = 0; i < 4; i++) {
      assert.deepEqual(outcome(await t.lookup(`k${i}`, 0)), { value: `k${i}` });
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(w, []);
    assert.equal(s.connections, 4);
    await t.close?.();
    await s.stop();
  });

  it('concurrent lookups: at most 4 connections, each answer its own', async () => {
    const s = await startServer(lineFramer, (r) => ({ delayMs: 20, reply: `200 ${r.slice(4)}\n` }));
    const t = await open(`127.0.0.1:${s.port}`);
    const res = await Promise.all(Array.from({ length: 30 }, (_, i) => t.lookup(`k${i}`, 0)));
    res.forEach((r, i) => assert.deepEqual(outcome(r), { value: `k${i}` }));
    assert.ok(s.connections <= 4);
    await t.close?.();
    await s.stop();
  });
});
