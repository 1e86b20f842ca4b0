/**
 * The socketmap front-end against test-double tables: replies for found,
 * missing, failing, slow and unapproved tables, key folding as a direct
 * lookup folds, the allow-list, the connection bound, idle and request
 * deadlines on a controllable clock, and hostile netstrings answered with
 * PERM or a closed connection while another client keeps getting answers.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SocketmapServer, RateLimitedWarning } from '../../src/server/socketmap-server.js';
import { parseListen, parseMaps, socketmapSettings } from '../../src/server/socketmap-settings.js';
import { AllowList } from '../../src/server/allowlist.js';
import { DICT_FLAG } from '../../src/protocol/flags.js';
import type { TableOpenOptions } from '../../src/tables/core/table.js';
import { startTestServer, testOpener, type TestServer } from './helpers.js';
import { FakeClock, SmClient, settings } from './socketmap-helpers.js';

const MAPS = {
  virtual: 'mem:alice=alice@example.com,bob=b,key=caf\xc3\xa9',
  pat: 'pat:Mixed=yes',
  broken: 'broken:x',
  slow: 'slow:50',
  stuck: 'stuck:x',
  throws: 'throws:x',
  rejects: 'rejects:x',
  unapproved: 'mem:secret=1',
  badvalue: 'mem:k=\xe9t\xe9',
};
const APPROVED = Object.entries(MAPS).filter(([n]) => n !== 'unapproved').map(([, s]) => s);

let ts: TestServer;
before(async () => {
  // stuck:x never answers (and holds no timer that would keep the process alive)
  const opener = (o: TableOpenOptions) =>
    o.type === 'stuck' ? { type: 'stuck', name: o.name, implFlags: DICT_FLAG.FIXED, lookup: () => new Promise<never>(() => undefined) } : testOpener(o);
  ts = await startTestServer(APPROVED, [], { opener });
});
after(async () => ts.close());

async function start(over: Parameters<typeof settings>[1] = {}, clock?: FakeClock): Promise<{ sm: SocketmapServer; where: string; close(): Promise<void> }> {
  const sm = new SocketmapServer(ts.server, settings(MAPS, over), clock);
  const [where] = await sm.listen();
  assert.ok(where, 'listening');
  return { sm, where: where!, close: () => sm.close() };
}

/** A client that asks `virtual alice` over and over, checking every answer, until stopped. */
function steadyClient(where: string): { stop(): Promise<number> } {
  let running = true;
  const done = (async () => {
    const c = await SmClient.connect(where);
    let n = 0;
    while (running) {
      assert.equal(await c.ask('virtual alice'), 'OK alice@example.com');
      n++;
    }
    c.close();
    return n;
  })();
  return {
    async stop() {
      await new Promise((r) => setImmediate(r));
      running = false;
      return done;
    },
  };
}

describe('socketmap front-end: answers', () => {
  let s: Awaited<ReturnType<typeof start>>;
  let c: SmClient;
  before(async () => {
    s = await start();
    c = await SmClient.connect(s.where);
  });
  after(async () => {
    c.close();
    await s.close();
  });

  it('found, not found, and the value bytes as the table has them', async () => {
    assert.equal(await c.ask('virtual alice'), 'OK alice@example.com');
    assert.equal(await c.ask('virtual nobody'), 'NOTFOUND ');
    assert.equal(await c.ask('virtual key'), 'OK caf\xc3\xa9');
    assert.equal(await c.ask('slow k'), 'OK slow:k');
  });

  it('folds keys of a FIXED table as a direct lookup does, leaves pattern tables alone', async () => {
    assert.equal(await c.ask('virtual ALICE'), 'OK alice@example.com');
    assert.equal(await c.ask('virtual KEY'), 'OK caf\xc3\xa9');
    assert.equal(await c.ask('pat Mixed'), 'OK yes');
    assert.equal(await c.ask('pat mixed'), 'NOTFOUND ');
  });

  it('the key is everything after the first space (spaces and % included)', async () => {
    assert.equal(await c.ask('slow a b%c '), 'OK slow:a b%c ');
    assert.equal(await c.ask('slow '), 'OK slow:');
  });

  it('a key that is not UTF-8 is not found (the UTF-8 layer, smtputf8 on)', async () => {
    assert.equal(await c.ask('virtual caf\xe9'), 'NOTFOUND ');
  });

  it('failing tables answer TEMP; unknown, unapproved and malformed requests PERM; the connection stays usable', async () => {
    assert.match(await c.ask('broken x'), /^TEMP broken: /);
    assert.match(await c.ask('throws x'), /^TEMP throws: /);
    assert.match(await c.ask('rejects x'), /^TEMP rejects: /);
    assert.match(await c.ask('unapproved secret'), /^PERM unapproved: table not approved/);
    assert.match(await c.ask('badvalue k'), /^PERM badvalue: table configuration error$/, 'a value that fails the UTF-8 check');
    assert.match(await c.ask('nosuch key'), /^PERM unknown map name: nosuch/);
    assert.match(await c.ask('nospace'), /^PERM malformed request/);
    assert.match(await c.ask(' key'), /^PERM malformed request/);
    assert.match(await c.ask(''), /^PERM malformed request/);
    assert.equal(await c.ask('virtual bob'), 'OK b');
    assert.ok(c.isOpen);
  });

  it('warns at start about a mapped table that proxy_read_maps does not approve', () => {
    assert.ok(ts.logs.some((l) => /table "mem:secret=1" of name "unapproved" is not listed in proxy_read_maps/.test(l)), ts.logs.join('\n'));
  });

  it('pipelined requests are answered in order, slow ones included', async () => {
    c.send(['slow 1', 'virtual bob', 'slow 2', 'virtual nobody'].map((p) => `${p.length}:${p},`).join(''));
    assert.deepEqual([await c.next(), await c.next(), await c.next(), await c.next()], ['OK slow:1', 'OK b', 'OK slow:2', 'NOTFOUND ']);
  });

  it('a UNIX-socket listener answers the same', async () => {
    const p = path.join(ts.dir, 'sm', 'socketmap');
    const u = await start({ listen: [{ kind: 'unix', path: p }] });
    assert.equal(u.where, `unix:${p}`);
    assert.equal(fs.statSync(p).mode & 0o777, 0o666);
    const uc = await SmClient.connect(u.where);
    assert.equal(await uc.ask('virtual Alice'), 'OK alice@example.com');
    uc.close();
    await u.close();
    assert.equal(fs.existsSync(p), false);
  });
});

describe('socketmap front-end: access control', () => {
  it('an inet client outside the allow-list is closed at accept, with a rate-limited warning', async () => {
    const clock = new FakeClock();
    const s = await start({ clients: '10.0.0.0/8 [2001:db8::]/32' }, clock);
    const before = ts.logs.length;
    const refusedOnce = async () => {
      const c = await SmClient.connect(s.where);
      c.send('13:virtual alice,');
      await c.closed;
      await assert.rejects(c.next());
    };
    await refusedOnce();
    await refusedOnce();
    let warnings = ts.logs.slice(before).filter((l) => /refusing connection from 127\.0\.0\.1: not in proxymapd_socketmap_clients/.test(l));
    assert.equal(warnings.length, 1);
    clock.advance(10_000);
    await refusedOnce();
    warnings = ts.logs.slice(before).filter((l) => /refusing connection from 127\.0\.0\.1/.test(l));
    assert.equal(warnings.length, 2);
    assert.match(warnings[1]!, /\(1 more like this since the last warning\)/);
    assert.equal(s.sm.refusedCount, 3);
    assert.equal(s.sm.accepted, 0);
    await s.close();
  });

  it('a client inside the allow-list is served; a reconfiguration applies the allow-list to new connections, the maps at once', async () => {
    const s = await start({ clients: '127.0.0.1' });
    const c = await SmClient.connect(s.where);
    assert.equal(await c.ask('virtual alice'), 'OK alice@example.com');
    s.sm.configure(settings({ ...MAPS, renamed: MAPS.virtual }, { clients: '192.0.2.0/24' }));
    const d = await SmClient.connect(s.where);
    await d.closed;
    assert.equal(await c.ask('virtual bob'), 'OK b', 'an open connection stays');
    assert.equal(await c.ask('renamed bob'), 'OK b', 'and sees the new maps');
    c.close();
    await s.close();
  });

  it('proxymapd_socketmap_max_connections: connections beyond it are closed at once', async () => {
    const s = await start({ maxConnections: 2 });
    const a = await SmClient.connect(s.where);
    const b = await SmClient.connect(s.where);
    assert.equal(await a.ask('virtual alice'), 'OK alice@example.com');
    assert.equal(await b.ask('virtual alice'), 'OK alice@example.com');
    const c = await SmClient.connect(s.where);
    await c.closed;
    a.close();
    await a.closed;
    await waitFor(() => s.sm.openConnections === 1);
    const d = await SmClient.connect(s.where);
    assert.equal(await d.ask('virtual bob'), 'OK b');
    b.close();
    d.close();
    await s.close();
  });
});

describe('socketmap front-end: deadlines (controllable clock)', () => {
  it('an idle connection is closed after idle_timeout; activity restarts the count', async () => {
    const clock = new FakeClock();
    const s = await start({ idleTimeoutMs: 100_000 }, clock);
    const c = await SmClient.connect(s.where);
    await waitFor(() => s.sm.openConnections === 1);
    clock.advance(99_000);
    assert.equal(await c.ask('virtual alice'), 'OK alice@example.com');
    clock.advance(99_000);
    assert.ok(c.isOpen);
    clock.advance(1_000);
    await c.closed;
    await s.close();
  });

  it('a request not received completely within request_timeout closes the connection', async () => {
    const clock = new FakeClock();
    const s = await start({ requestTimeoutMs: 10_000 }, clock);
    const c = await SmClient.connect(s.where);
    c.send('20:virtual al');
    await waitFor(() => clock.pendingFor(10_000) === 1);
    clock.advance(9_999);
    assert.ok(c.isOpen);
    clock.advance(1);
    await c.closed;
    await s.close();
  });

  it('a table that does not answer within request_timeout gets TIMEOUT; the late answer is dropped; the next request works', async () => {
    const clock = new FakeClock();
    const s = await start({ requestTimeoutMs: 10_000 }, clock);
    const c = await SmClient.connect(s.where);
    c.send('9:stuck key,13:virtual alice,');
    await waitFor(() => clock.pendingFor(10_000) === 1);
    clock.advance(10_000);
    assert.equal(await c.next(), 'TIMEOUT stuck: no answer within 10s');
    assert.equal(await c.next(), 'OK alice@example.com');
    c.close();
    await s.close();
  });
});

describe('socketmap front-end: hostile netstrings, while another client keeps getting answers', () => {
  let s: Awaited<ReturnType<typeof start>>;
  before(async () => {
    s = await start({ maxRequest: 1000 });
  });
  after(async () => s.close());

  const cases: Array<[string, string, RegExp]> = [
    ['oversized length', '99999999999999999999:x', /^PERM netstring length exceeds 1000 bytes$/],
    ['length over the limit by one', '1001:', /^PERM netstring length exceeds 1000 bytes$/],
    ['non-digit in the length', '1x:ab,', /^PERM malformed netstring: non-digit in length$/],
    ['no length', ':ab,', /^PERM malformed netstring: expected a length$/],
    ['whitespace before the length', ' 3:abc,', /^PERM malformed netstring: expected a length$/],
    ['missing comma', '3:abc;', /^PERM malformed netstring: missing "," after the data$/],
    ['endless leading zeros', '0'.repeat(30), /^PERM malformed netstring: length too long$/],
  ];
  for (const [what, bytes, reply] of cases) {
    it(`${what}: PERM, then the connection closes`, async () => {
      const other = steadyClient(s.where);
      const c = await SmClient.connect(s.where);
      c.send(bytes);
      assert.match(await c.next(), reply);
      await c.closed;
      assert.ok((await other.stop()) > 0);
    });
  }

  it('requests before a malformed netstring are answered first', async () => {
    const c = await SmClient.connect(s.where);
    c.send('6:slow 1,13:virtual alice,x');
    assert.equal(await c.next(), 'OK slow:1');
    assert.equal(await c.next(), 'OK alice@example.com');
    assert.match(await c.next(), /^PERM malformed netstring/);
    await c.closed;
  });

  it('truncated requests and clients that vanish mid-request or mid-lookup never disturb the server', async () => {
    const other = steadyClient(s.where);
    for (const bytes of ['5', '5:', '5:abc', '13:virtual alice', '6:slow 1,']) {
      const c = await SmClient.connect(s.where);
      c.send(bytes);
      await new Promise((r) => setTimeout(r, 5));
      c.close();
      await c.closed;
    }
    const c = await SmClient.connect(s.where);
    c.send('6:slow 2,');
    c.sock.end();
    assert.equal(await c.next(), 'OK slow:2', 'a half-closed client still gets its answer');
    await c.closed;
    assert.ok((await other.stop()) > 0);
    await waitFor(() => s.sm.openConnections === 0);
  });

  it('a request in many tiny pieces and one at the size limit are served', async () => {
    const c = await SmClient.connect(s.where);
    const req = '13:virtual alice,';
    for (const ch of req) {
      c.send(ch);
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(await c.next(), 'OK alice@example.com');
    const key = 'k'.repeat(1000 - 'slow '.length);
    assert.equal(await c.ask(`slow ${key}`), `OK slow:${key}`);
    c.close();
  });

  it('random bytes never crash the server', async () => {
    let seed = 12345;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) & 0xff;
    const other = steadyClient(s.where);
    for (let i = 0; i < 50; i++) {
      const c = await SmClient.connect(s.where);
      let bytes = '';
      const n = 1 + (rnd() % 64);
      for (let j = 0; j < n; j++) bytes += String.fromCharCode(i % 2 ? rnd() : '0123456789:, '.charCodeAt(rnd() % 13));
      c.send(bytes);
      c.sock.end();
      await c.closed;
    }
    assert.ok((await other.stop()) > 0);
  });
});

describe('socketmap settings', () => {
  it('parses listen addresses, maps (proxy: stripped, braces kept) and the defaults; warns about bad entries', () => {
    const warnings: string[] = [];
    const params: Record<string, string> = {
      proxymapd_socketmap_listen: 'inet:127.0.0.1:9000, inet:[::1]:9001 unix:/run/p/s inet:nope unix:rel tcp:1',
      proxymapd_socketmap_maps: 'virtual=proxy:texthash:/etc/postfix/virtual inl=inline:{ a=1, b=2 } bad =x:',
      proxymapd_socketmap_idle_timeout: '2m',
      proxymapd_socketmap_max_request: 'lots',
    };
    const s = socketmapSettings({ param: (n) => params[n], warn: (w) => warnings.push(w) });
    assert.deepEqual(s.listen, [
      { kind: 'inet', host: '127.0.0.1', port: 9000 },
      { kind: 'inet', host: '::1', port: 9001 },
      { kind: 'unix', path: '/run/p/s' },
    ]);
    assert.deepEqual([...s.maps], [['virtual', 'texthash:/etc/postfix/virtual'], ['inl', 'inline:{ a=1, b=2 }']]);
    assert.equal(s.clients, '127.0.0.0/8 [::1]/128');
    assert.equal(s.idleTimeoutMs, 120_000);
    assert.equal(s.requestTimeoutMs, 10_000);
    assert.equal(s.maxRequest, 100_000);
    assert.equal(s.maxConnections, 0);
    assert.equal(s.tls, undefined);
    assert.equal(warnings.length, 6, warnings.join('\n'));
    assert.ok(warnings.some((w) => /invalid proxymapd_socketmap_max_request value "lots"/.test(w)));
  });

  it('off by default: no listen address', () => {
    const s = socketmapSettings({ param: () => undefined, warn: () => assert.fail('no warning expected') });
    assert.deepEqual(s.listen, []);
    assert.equal(s.maps.size, 0);
    assert.deepEqual(parseListen('', assert.fail), []);
    assert.equal(parseMaps('', assert.fail).size, 0);
  });

  it('the allow-list: addresses, networks, brackets, IPv4-mapped peers; bad entries skipped', () => {
    const warnings: string[] = [];
    const a = new AllowList('127.0.0.0/8, [::1]/128 192.0.2.7 [2001:db8::]/32 10.0.0.0/33 bogus 1.2.3.4/x', (w) => warnings.push(w));
    assert.deepEqual(a.entries, ['127.0.0.0/8', '[::1]/128', '192.0.2.7/32', '[2001:db8::]/32']);
    assert.equal(warnings.length, 3);
    for (const ok of ['127.1.2.3', '::1', '192.0.2.7', '2001:db8:1::5', '::ffff:127.0.0.1']) assert.ok(a.allows(ok), ok);
    for (const no of ['192.0.2.8', '::2', '10.0.0.1', '2001:db9::1', undefined, 'x']) assert.ok(!a.allows(no), String(no));
  });

  it('RateLimitedWarning counts what it left out', () => {
    const clock = new FakeClock();
    const w = new RateLimitedWarning(clock, 1000);
    const before = ts.logs.length;
    w.warn('w1');
    w.warn('w2');
    w.warn('w3');
    clock.advance(1000);
    w.warn('w4');
    assert.deepEqual(
      ts.logs.slice(before).map((l) => l.replace(/^.*warning: /, '')),
      ['w1', 'w4 (2 more like this since the last warning)'],
    );
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 2));
  }
}

