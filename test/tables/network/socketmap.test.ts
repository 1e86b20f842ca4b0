/**
 * socketmap: the shared conformance suite against a test server, and the
 * protocol cases of tables-network.md S1-S7 in process (time limits
 * shortened through NET_LIMITS).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, TableOpenError, openTable } from '../../../src/tables/index.js';
import { NET_LIMITS } from '../../../src/tables/network/client.js';
import { openOptions, outcome, runConformance } from '../conformance.js';
import { sockmapResponder } from './fixtures.js';
import { netstringFramer, ns, startServer, type TestServer } from './servers.js';

const dir = mkdtempSync(join(tmpdir(), 'sockmap-'));
let server: TestServer;
let unixServer: TestServer;
before(async () => {
  server = await startServer(netstringFramer, sockmapResponder);
  unixServer = await startServer(netstringFramer, sockmapResponder, { path: join(dir, 'sock') });
});
after(async () => {
  await server.stop();
  await unixServer.stop();
  rmSync(dir, { recursive: true, force: true });
});

const inet = (map = 'mymap') => `inet:127.0.0.1:${server.port}:${map}`;

runConformance('socketmap', [
  {
    title: 'inet server: found, empty, not found, errors',
    get name() {
      return inet();
    },
    implFlags: DICT_FLAG.PATTERN,
    lookups: [
      { key: 'ok', expect: { value: 'value with spaces' } },
      { key: 'a b%c', expect: { value: 'spaced' } },
      { key: 'caf\xc3\xa9', expect: { value: 'caf\xc3\xa9-value' } },
      { key: 'empty', expect: { value: '' } },
      { key: 'bare', expect: 'notfound' },
      { key: 'nf', expect: 'notfound' },
      { key: 'nf2', expect: 'notfound' },
      { key: 'temp', expect: { error: DICT_ERR.RETRY } },
      { key: 'perm', expect: { error: DICT_ERR.CONFIG } },
      { key: 'what', expect: { error: DICT_ERR.RETRY } },
      { key: 'nul', expect: { value: 'a' } },
      { key: 'unknown', expect: 'notfound' },
    ],
    sequence: 'unsupported',
  },
  {
    title: 'unix server',
    get name() {
      return `unix:${dir}/sock:other`;
    },
    lookups: [{ key: 'ok', expect: { value: 'value with spaces' } }],
  },
  { title: 'writable open', name: 'inet:127.0.0.1:1:m', writable: true, openError: 'socketmap:inet:127.0.0.1:1:m map requires O_RDONLY access mode' },
  { title: 'NO_UNAUTH', name: 'inet:127.0.0.1:1:m', openFlags: DICT_FLAG.NO_UNAUTH, openError: 'socketmap:inet:127.0.0.1:1:m map is not allowed for security-sensitive data' },
  { title: 'no map name', name: 'nocolon', openError: 'socketmap requires server:socketmap argument' },
  { title: 'no transport', name: '127.0.0.1:9101:m', openError: 'invalid transport name: 127.0.0.1 in service: 127.0.0.1:9101' },
  { title: 'no endpoint', name: 'inet:m', openError: 'need service transport:endpoint instead of "inet"' },
  { title: 'bad port', name: 'inet:127.0.0.1:9x:m', openError: '127.0.0.1:9x: garbage after numerical service' },
]);

async function open(name: string, warnings: string[] = [], param: Record<string, string> = {}) {
  return openTable(openOptions('socketmap', name, { param: (n) => param[n] }, warnings));
}

describe('socketmap protocol', () => {
  it('sends "name key" as one netstring, raw (S1, S4), on one reused connection (S6)', async () => {
    const t = await open(inet());
    const before = server.connections;
    server.requests.length = 0;
    for (const k of ['ok', 'Foo@Example.COM', 'a b%c']) await t.lookup(k, 0);
    assert.deepEqual(server.requests, ['mymap ok', 'mymap Foo@Example.COM', 'mymap a b%c']);
    assert.equal(server.connections - before, 1);
    // FOLD_MUL lowercases
    await t.lookup('Foo@Example.COM', DICT_FLAG.FOLD_MUL);
    assert.equal(server.requests.at(-1), 'mymap foo@example.com');
    await t.close?.();
  });

  it("error replies: Postfix's warnings (S3), reason trimmed, made printable, cut at 200", async () => {
    const w: string[] = [];
    const t = await open(inet(), w);
    const n = `socketmap:${inet()}`;
    for (const k of ['temp', 'timeout', 'perm', 'what', 'lower', 'ctl']) await t.lookup(k, 0);
    assert.deepEqual(w, [
      `${n} socketmap server temporary error: db down`,
      `${n} socketmap server timeout error: slow backend`,
      `${n} socketmap server permanent error: broken`,
      `${n} socketmap server unknown error: ever`,
      `${n} socketmap server unknown error: lowercase status`,
      `${n} socketmap server temporary error: ?bad?bytes`,
    ]);
    await t.close?.();
  });

  it('reply limit: 100000 bytes accepted, more is "input exceeds size limit"; socketmap_max_reply_size (S5)', async () => {
    const w: string[] = [];
    const t = await open(inet(), w);
    assert.equal((await t.lookup('exact', 0) as { value: string }).value.length, 99_997);
    assert.deepEqual(outcome(await t.lookup('big', 0)), { error: DICT_ERR.RETRY });
    assert.deepEqual(w, [`table socketmap:${inet()} lookup error: input exceeds size limit`]);
    // the connection is usable again (a fresh one)
    assert.deepEqual(outcome(await t.lookup('ok', 0)), { value: 'value with spaces' });
    await t.close?.();
    const w2: string[] = [];
    const small = await open(inet('m2'), w2, { socketmap_max_reply_size: '10' });
    assert.deepEqual(outcome(await small.lookup('ok', 0)), { error: DICT_ERR.RETRY });
    assert.deepEqual(outcome(await small.lookup('nf2', 0)), 'notfound');
    assert.deepEqual(w2, [`table socketmap:${inet('m2')} lookup error: input exceeds size limit`]);
    await small.close?.();
  });

  it('malformed netstrings: "input format error", RETRY, no retry', async () => {
    const w: string[] = [];
    const t = await open(inet(), w);
    server.requests.length = 0;
    assert.deepEqual(outcome(await t.lookup('malformed', 0)), { error: DICT_ERR.RETRY });
    assert.deepEqual(outcome(await t.lookup('badlen', 0)), { error: DICT_ERR.RETRY });
    assert.deepEqual(w, [`table socketmap:${inet()} lookup error: input format error`, `table socketmap:${inet()} lookup error: input format error`]);
    assert.equal(server.requests.length, 2);
    assert.deepEqual(outcome(await t.lookup('ok', 0)), { value: 'value with spaces' });
    await t.close?.();
  });

  it('connect refused: Postfix\'s two warnings, RETRY (S7)', async () => {
    const w: string[] = [];
    const t = await open('inet:127.0.0.1:1:m', w);
    assert.deepEqual(outcome(await t.lookup('k', 0)), { error: DICT_ERR.RETRY });
    assert.deepEqual(w, ['connect to 127.0.0.1:1: Connection refused', 'table socketmap:inet:127.0.0.1:1:m lookup error: Connection refused']);
    await t.close?.();
  });

  it('server closes without replying: one resend on a new connection, then "unexpected disconnect" (S6)', async () => {
    const s = await startServer(netstringFramer, () => ({ close: true }));
    const w: string[] = [];
    const t = await open(`inet:127.0.0.1:${s.port}:m`, w);
    assert.deepEqual(outcome(await t.lookup('k', 0)), { error: DICT_ERR.RETRY });
    assert.deepEqual(s.requests, ['m k', 'm k']);
    assert.equal(s.connections, 2);
    assert.deepEqual(w, [`table socketmap:inet:127.0.0.1:${s.port}:m lookup error: unexpected disconnect`]);
    await t.close?.();
    await s.stop();
  });

  it('server closes after every reply: the next lookup reconnects and succeeds', async () => {
    const s = await startServer(netstringFramer, (r) => ({ reply: ns('OK ' + r), thenClose: true }));
    const w: string[] = [];
    const t = await open(`inet:127.0.0.1:${s.port}:m`, w);
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(outcome(await t.lookup(`k${i}`, 0)), { value: `m k${i}` });
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(w, []);
    assert.equal(s.connections, 5);
    await t.close?.();
    await s.stop();
  });

  it('a silent server: "time limit exceeded", RETRY, not resent', async () => {
    const saved = { ...NET_LIMITS };
    NET_LIMITS.timeoutMs = 300;
    try {
      const s = await startServer(netstringFramer, () => ({ silent: true }));
      const w: string[] = [];
      const t = await open(`inet:127.0.0.1:${s.port}:m`, w);
      const t0 = Date.now();
      assert.deepEqual(outcome(await t.lookup('k', 0)), { error: DICT_ERR.RETRY });
      assert.ok(Date.now() - t0 >= 250);
      assert.deepEqual(s.requests, ['m k']);
      assert.deepEqual(w, [`table socketmap:inet:127.0.0.1:${s.port}:m lookup error: time limit exceeded`]);
      await t.close?.();
      await s.stop();
    } finally {
      Object.assign(NET_LIMITS, saved);
    }
  });

  it('idle connections close after the idle limit; concurrent lookups never share a connection', async () => {
    const saved = { ...NET_LIMITS };
    NET_LIMITS.sockmapIdleMs = 100;
    try {
      let inFlight = 0;
      let maxInFlightPerConn = 0;
      const s = await startServer(netstringFramer, (r) => {
        inFlight++;
        maxInFlightPerConn = Math.max(maxInFlightPerConn, inFlight);
        setTimeout(() => inFlight--, 30);
        return { delayMs: 30, reply: ns('OK ' + r) };
      });
      const t = await open(`inet:127.0.0.1:${s.port}:m`);
      const keys = Array.from({ length: 40 }, (_, i) => `key${i}`);
      const res = await Promise.all(keys.map((k) => t.lookup(k, 0)));
      res.forEach((r, i) => assert.deepEqual(outcome(r), { value: `m key${i}` }));
      assert.ok(s.connections <= 4, `${s.connections} connections`);
      await new Promise((r) => setTimeout(r, 250));
      const before = s.connections;
      assert.deepEqual(outcome(await t.lookup('again', 0)), { value: 'm again' });
      assert.equal(s.connections, before + 1, 'a new connection after the idle limit');
      await t.close?.();
      await s.stop();
    } finally {
      Object.assign(NET_LIMITS, saved);
    }
  });

  it('tables on the same server share its connections', async () => {
    const s = await startServer(netstringFramer, (r) => ns('OK ' + r));
    const a = await open(`inet:127.0.0.1:${s.port}:one`);
    const b = await open(`inet:127.0.0.1:${s.port}:two`);
    assert.deepEqual(outcome(await a.lookup('k', 0)), { value: 'one k' });
    assert.deepEqual(outcome(await b.lookup('k', 0)), { value: 'two k' });
    assert.equal(s.connections, 1);
    await a.close?.();
    assert.deepEqual(outcome(await b.lookup('k', 0)), { value: 'two k' });
    await b.close?.();
    await s.stop();
  });

  it('open errors are TableOpenErrors', async () => {
    await assert.rejects(open('x'), TableOpenError);
  });
});
