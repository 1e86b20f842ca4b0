/**
 * redis: against a real redis-server: lookup, update, delete, sequence
 * (SCAN), key_format, ttl, database, UNIX socket, password and ACL user,
 * domain, host failover, the shared pool as metrics see it, a walk over
 * 100,000 keys deleting as it goes, and an outage under concurrent
 * lookups (RETRY, never a wrong answer, recovery without reopening).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { DICT_ERR, openTable, type LookupResult, type Table, type WriteResult } from '../../../src/tables/index.js';
import { CfParser } from '../../../src/tables/dbcommon/cf.js';
import { livePools } from '../../../src/tables/dbcommon/pool.js';
import { keyAffixes, parseRedisHost, readRedisSettings, scanPattern } from '../../../src/tables/network/redis-cf.js';
import { Throttle } from '../../../src/tables/network/redis-pool.js';
import { openOptions } from '../conformance.js';
import { freePort } from '../../sql/servers.js';
import { makeCerts } from './slapd.js';
import { redisSkipReason, startRedis, until, type RedisServer } from './redis.js';

const skip = redisSkipReason();
const rs: RedisServer | null = skip ? null : await startRedis();
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'redis-test-'));
const opened: Table[] = [];
after(async () => {
  for (const t of opened) await t.close?.();
  await rs?.stop();
  fs.rmSync(scratch, { recursive: true, force: true });
});

function writeFile(text: string): string {
  const p = path.join(scratch, `cf-${Math.random().toString(36).slice(2)}.cf`);
  fs.writeFileSync(p, Buffer.from(text, 'latin1'));
  fs.utimesSync(p, 1_000_000_000, 1_000_000_000);
  return p;
}

async function open(cf: string, o: { writable?: boolean; warnings?: string[]; param?: (n: string) => string | undefined } = {}): Promise<Table> {
  const t = await openTable(
    openOptions('redis', writeFile(cf), { fold: 'ascii', writable: o.writable ?? true, ...(o.param ? { param: o.param } : {}) }, o.warnings ?? []),
  );
  opened.push(t);
  return t;
}

const FOUND = (value: string): LookupResult => ({ found: true, value });
const NOTFOUND: LookupResult = { found: false, error: DICT_ERR.NONE };
const RETRY: LookupResult = { found: false, error: DICT_ERR.RETRY };

describe('redis pieces', () => {
  it('host forms', () => {
    assert.deepEqual(parseRedisHost('inet:127.0.0.1:7000', 'w'), { label: 'inet:127.0.0.1:7000', kind: 'inet', host: '127.0.0.1', port: 7000 });
    assert.deepEqual(parseRedisHost('db.example:7001', 'w'), { label: 'db.example:7001', kind: 'inet', host: 'db.example', port: 7001 });
    assert.equal(parseRedisHost('db.example', 'w').port, 6379);
    assert.deepEqual(parseRedisHost('inet:[::1]:7002', 'w'), { label: 'inet:[::1]:7002', kind: 'inet', host: '::1', port: 7002 });
    assert.deepEqual(parseRedisHost('unix:/run/r.sock', 'w'), { label: 'unix:/run/r.sock', kind: 'unix', path: '/run/r.sock' });
    assert.deepEqual(parseRedisHost('/run/r.sock', 'w'), { label: '/run/r.sock', kind: 'unix', path: '/run/r.sock' });
    assert.deepEqual(parseRedisHost('redis://u:p%40ss@h:7003/4', 'w'), {
      label: 'redis://u:***@h:7003/4', kind: 'inet', host: 'h', port: 7003, tls: false, username: 'u', password: 'p@ss', database: 4,
    });
    assert.deepEqual(parseRedisHost('rediss://h', 'w'), { label: 'rediss://h', kind: 'inet', host: 'h', port: 6379, tls: true });
    for (const bad of ['inet:h:0', 'h:99999', 'h:x', 'unix:', 'redis://h/x', 'inet:']) {
      assert.throws(() => parseRedisHost(bad, 'redis:t'), new RegExp(`^TableOpenError: redis:t: invalid redis host "${bad.replace(/[.*]/g, '\\$&')}"$`));
    }
  });

  it('key_format affixes and the SCAN pattern', () => {
    assert.deepEqual(keyAffixes('verify:%s'), { prefix: 'verify:', suffix: '' });
    assert.deepEqual(keyAffixes('a%s:b'), { prefix: 'a', suffix: ':b' });
    assert.equal(keyAffixes('%u-%d'), null);
    assert.equal(keyAffixes('%s%%'), null);
    assert.equal(keyAffixes('x:%s:%s'), null);
    assert.equal(scanPattern({ prefix: 'a*b?[c]\\:', suffix: '' }), 'a\\*b\\?\\[c\\]\\\\:*');
  });

  it('settings: unknown parameters warned about, sentinels need a master, bad values refused', () => {
    const warnings: string[] = [];
    const s = readRedisSettings(CfParser.fromText('/x.cf', 'hosts = a:1, unix:/s\nttl = 60\nttl_seconds = 5\ndatabase = 2\n'), 'redis:/x.cf', (t) => warnings.push(t));
    assert.deepEqual(warnings, ['redis:/x.cf: unknown parameter "ttl_seconds" ignored']);
    assert.equal(s.connect.hosts.length, 2);
    assert.equal(s.ttl, 60);
    assert.equal(s.connect.database, 2);
    assert.equal(s.connect.timeoutMs, 2000);
    assert.equal(s.keyFormat, '%s');
    assert.equal(s.connect.tls, null);
    const rd = (t: string) => readRedisSettings(CfParser.fromText('/x.cf', t), 'redis:/x.cf', () => {});
    assert.throws(() => rd('sentinels = 127.0.0.1:26379\n'), /bad string length 0 < 1: sentinel_master/);
    assert.deepEqual(rd('sentinels = a, b:26400\nsentinel_master = mymaster\n').connect.sentinels, [{ host: 'a', port: 26379 }, { host: 'b', port: 26400 }]);
    assert.throws(() => rd('ttl = -1\n'), /invalid ttl parameter value -1 < 0/);
    assert.throws(() => rd('database = x\n'), /bad numerical configuration: database = x/);
    assert.throws(() => rd('tls_CAfile = /nonexistent/ca.pem\n'), /tls_CAfile \/nonexistent\/ca.pem: ENOENT/);
    // the main.cf form: prefix_hosts ...
    const m = readRedisSettings(CfParser.fromMainCf('rc', (n) => ({ rc_hosts: 'h:9', rc_key_format: 'v:%s' })[n]), 'redis:rc', () => {});
    assert.equal(m.connect.hosts[0]!.port, 9);
    assert.equal(m.keyFormat, 'v:%s');
  });

  it('warnings are rate limited, with the count of those left out', () => {
    let now = 0;
    const out: string[] = [];
    const th = new Throttle((t) => out.push(t), 10_000, () => now);
    th.say('a');
    th.say('b');
    th.say('c');
    now = 9_999;
    th.say('d');
    now = 10_000;
    th.say('e');
    now = 20_000;
    th.say('f');
    assert.deepEqual(out, ['a', 'e (3 similar warnings not logged)', 'f']);
  });
});

describe('redis against redis-server', { skip }, () => {
  it('lookup, update, delete; values are C strings; read-only tables have no update', async () => {
    const r = rs!.client();
    await r.set('hit', 'hello');
    await r.set(Buffer.from('nul'), Buffer.from('ab\0cd', 'latin1'));
    await r.set(Buffer.from('k\xe9y', 'latin1'), Buffer.from('v\xe4l', 'latin1'));
    const t = await open(`hosts = ${rs!.inet}\n`);
    assert.deepEqual(await t.lookup('hit', 0), FOUND('hello'));
    assert.deepEqual(await t.lookup('nul', 0), FOUND('ab'));
    assert.deepEqual(await t.lookup('k\xe9y', 0), FOUND('v\xe4l'));
    assert.deepEqual(await t.lookup('miss', 0), NOTFOUND);
    assert.deepEqual(await t.lookup('', 0), NOTFOUND);
    assert.deepEqual(await t.update!('new', 'v1', 0), { status: 0, error: 0 });
    assert.equal(await r.get('new'), 'v1');
    assert.equal(await r.ttl('new'), -1, 'no ttl by default');
    assert.deepEqual(await t.update!('new', 'v2', 0), { status: 0, error: 0 });
    assert.deepEqual(await t.lookup('new', 0), FOUND('v2'));
    assert.deepEqual(await t.delete!('new', 0), { status: 0, error: 0 });
    assert.deepEqual(await t.delete!('new', 0), { status: 1, error: 0 });
    assert.equal(await r.exists('new'), 0);
    const ro = await open(`hosts = ${rs!.inet}\n`, { writable: false });
    assert.equal(ro.update, undefined);
    assert.equal(ro.delete, undefined);
    assert.deepEqual(await ro.lookup('hit', 0), FOUND('hello'));
  });

  it('key_format prefix, ttl on every update, and the database', async () => {
    const r3 = rs!.client(3);
    const warnings: string[] = [];
    const t = await open(`hosts = ${rs!.inet}\nkey_format = verify:%s\nttl = 120\ndatabase = 3\n`, { warnings });
    assert.deepEqual(await t.update!('u@example.com', 'ok', 0), { status: 0, error: 0 });
    assert.equal(await r3.get('verify:u@example.com'), 'ok');
    assert.equal(await rs!.client(0).exists('verify:u@example.com'), 0, 'written in database 3 only');
    const ttl = await r3.ttl('verify:u@example.com');
    assert.ok(ttl > 100 && ttl <= 120, `ttl ${ttl}`);
    await r3.persist('verify:u@example.com');
    await t.update!('u@example.com', 'again', 0);
    assert.ok((await r3.ttl('verify:u@example.com')) > 100, 'ttl set again by the next update');
    assert.deepEqual(await t.lookup('u@example.com', 0), FOUND('again'));
    await r3.set('u@example.com', 'unprefixed');
    assert.deepEqual(await t.lookup('nobody@example.com', 0), NOTFOUND);
    // a template with parts: no sequence, keys without what it needs are skipped (an update with a warning)
    const parts = await open(`hosts = ${rs!.inet}\nkey_format = %d/%u\ndatabase = 3\n`, { warnings });
    assert.equal(parts.sequence, undefined);
    assert.deepEqual(await parts.update!('a@b.example', 'x', 0), { status: 0, error: 0 });
    assert.equal(await r3.get('b.example/a'), 'x');
    assert.deepEqual(await parts.lookup('no-domain', 0), NOTFOUND);
    assert.deepEqual(await parts.update!('no-domain', 'x', 0), { status: 1, error: 0 });
    assert.ok(warnings.some((w) => /skipping update for name "no-domain": empty lookup key expansion/.test(w)), warnings.join('\n'));
  });

  it('domain: keys outside it are not asked', async () => {
    const r = rs!.client();
    await r.set('d:x@example.com', 'in');
    await r.set('d:x@other.com', 'out');
    const t = await open(`hosts = ${rs!.inet}\nkey_format = d:%s\ndomain = example.com\n`);
    assert.deepEqual(await t.lookup('x@example.com', 0), FOUND('in'));
    assert.deepEqual(await t.lookup('x@other.com', 0), NOTFOUND);
    assert.deepEqual(await t.delete!('x@other.com', 0), { status: 1, error: 0 });
    assert.equal(await r.get('d:x@other.com'), 'out');
  });

  it('UNIX socket, and a redis:// URI with its database', async () => {
    await rs!.client(5).set('sock', 'via-socket');
    const t = await open(`hosts = ${rs!.unix}\ndatabase = 5\n`);
    assert.deepEqual(await t.lookup('sock', 0), FOUND('via-socket'));
    const u = await open(`hosts = redis://127.0.0.1:${rs!.port}/5\n`);
    assert.deepEqual(await u.lookup('sock', 0), FOUND('via-socket'));
  });

  it('an ACL user with a password; a wrong password is RETRY, never not found', async () => {
    const r = rs!.client();
    await r.call('ACL', 'SETUSER', 'pmd', 'on', '>s3cret', '~acl:*', '+@all');
    await r.set('acl:k', 'secret-value');
    const t = await open(`hosts = ${rs!.inet}\nuser = pmd\npassword = s3cret\n`);
    assert.deepEqual(await t.lookup('acl:k', 0), FOUND('secret-value'));
    // outside the user's key pattern: an error reply, so RETRY
    assert.deepEqual(await t.lookup('other', 0), RETRY);
    const warnings: string[] = [];
    const bad = await open(`hosts = ${rs!.inet}\nuser = pmd\npassword = wrong\ntimeout = 1\n`, { warnings });
    assert.deepEqual(await bad.lookup('acl:k', 0), RETRY);
    assert.ok(warnings.some((w) => /WRONGPASS|not available/.test(w)), warnings.join('\n'));
    // the pool label names the user, never the password
    const labels = livePools().map((p) => p.label);
    assert.ok(labels.includes(`redis:${rs!.inet} database=0 user=pmd`), labels.join('\n'));
    assert.ok(!labels.some((l) => l.includes('s3cret') || l.includes('wrong')));
  });

  it('a password on the default user (requirepass)', async () => {
    const secured = await startRedis(['--requirepass', 'pw1']);
    try {
      const t = await open(`hosts = ${secured.inet}\npassword = pw1\n`);
      assert.deepEqual(await t.update!('k', 'v', 0), { status: 0, error: 0 });
      assert.deepEqual(await t.lookup('k', 0), FOUND('v'));
      const none = await open(`hosts = ${secured.inet}\n`);
      assert.deepEqual(await none.lookup('k', 0), RETRY);
      await t.close?.();
      await none.close?.();
      opened.splice(opened.indexOf(t), 1);
      opened.splice(opened.indexOf(none), 1);
    } finally {
      await secured.stop();
    }
  });

  it('TLS: rediss:// and tls_CAfile; a server the CA did not sign is RETRY unless tls_verify_cert = no', { skip: !fs.existsSync('/usr/bin/openssl') && 'openssl is not installed' }, async () => {
    const certDir = fs.mkdtempSync(path.join(scratch, 'tls-'));
    const tlsPort = await freePort();
    const certs = await makeCerts(certDir, tlsPort);
    const secure = await startRedis(['--tls-port', String(tlsPort), '--tls-cert-file', certs.certFile, '--tls-key-file', certs.keyFile,
      '--tls-ca-cert-file', certs.caFile, '--tls-auth-clients', 'no']);
    try {
      await secure.client().set('tls-key', 'over-tls');
      const good = await open(`hosts = rediss://127.0.0.1:${tlsPort}\ntls_CAfile = ${certs.caFile}\n`);
      assert.deepEqual(await good.lookup('tls-key', 0), FOUND('over-tls'));
      const byName = await open(`hosts = inet:localhost:${tlsPort}\ntls_CAfile = ${certs.caFile}\n`);
      assert.deepEqual(await byName.lookup('tls-key', 0), FOUND('over-tls'));
      const warnings: string[] = [];
      const wrongCa = await open(`hosts = rediss://127.0.0.1:${tlsPort}\ntls_CAfile = ${certs.otherCaFile}\ntimeout = 1\n`, { warnings });
      assert.deepEqual(await wrongCa.lookup('tls-key', 0), RETRY);
      assert.ok(warnings.some((w) => /certificate/i.test(w)), warnings.join('\n'));
      const noVerify = await open(`hosts = rediss://127.0.0.1:${tlsPort}\ntls_CAfile = ${certs.otherCaFile}\ntls_verify_cert = no\n`);
      assert.deepEqual(await noVerify.lookup('tls-key', 0), FOUND('over-tls'));
      for (const t of [good, byName, wrongCa, noVerify]) {
        await t.close?.();
        opened.splice(opened.indexOf(t), 1);
      }
    } finally {
      await secure.stop();
    }
  });

  it('tables that connect the same way share one pool; hosts are tried in order', async () => {
    const before = livePools().length;
    const a = await open(`hosts = ${rs!.inet}\ndatabase = 7\nkey_format = a:%s\n`);
    const b = await open(`hosts = ${rs!.inet}\ndatabase = 7\nkey_format = b:%s\n`);
    assert.equal(livePools().length, before + 1);
    await a.update!('k', '1', 0);
    await b.update!('k', '2', 0);
    const pool = livePools().find((p) => p.label === `redis:${rs!.inet} database=7`)!;
    assert.ok(pool, livePools().map((p) => p.label).join('\n'));
    assert.equal(await pool.probe(Date.now() + 5000), null);
    const st = pool.stats();
    assert.equal(st.max, 4);
    assert.ok(st.open >= 1 && st.hosts[0]!.state === 'active', JSON.stringify(st));
    // a dead first host: the client moves on to the next one
    const f = await open(`hosts = inet:127.0.0.1:1 ${rs!.inet}\ndatabase = 7\nkey_format = a:%s\ntimeout = 1\n`, { param: (n) => (n === 'proxymapd_sql_max_connections' ? '1' : undefined) });
    assert.deepEqual(await f.lookup('k', 0), RETRY, 'the first lookup goes to the dead host');
    let answer: LookupResult = RETRY;
    await until('the second host to answer', 10_000, async () => {
      answer = await f.lookup('k', 0);
      assert.ok(!answer.found ? answer.error === DICT_ERR.RETRY : answer.value === '1', JSON.stringify(answer));
      return answer.found;
    });
  });

  it('sequence over 100,000 keys, deleting each one as the walk goes', { timeout: 240_000 }, async () => {
    const r = rs!.client(9);
    const N = 100_000;
    for (let i = 0; i < N; i += 5000) {
      const p = r.pipeline();
      for (let j = i; j < i + 5000; j++) p.set(`psc:10.${j >> 16}.${(j >> 8) & 255}.${j & 255}`, `T:${j}`);
      await p.exec();
    }
    await r.set('other:1', 'kept');
    await r.set('psc:*literal', 'glob chars in the key');
    const t = await open(`hosts = ${rs!.inet}\ndatabase = 9\nkey_format = psc:%s\n`);
    const seen = new Map<string, string>();
    const started = Date.now();
    let pending: (WriteResult | Promise<WriteResult>)[] = [];
    let dupes = 0;
    for (let res = await t.sequence!(0, 0); ; res = await t.sequence!(1, 0)) {
      if (!res.found) {
        assert.equal(res.error, DICT_ERR.NONE);
        break;
      }
      if (seen.has(res.key)) dupes++;
      seen.set(res.key, res.value);
      pending.push(t.delete!(res.key, 0));
      if (pending.length >= 200) {
        for (const d of await Promise.all(pending)) assert.ok(d.status >= 0);
        pending = [];
      }
    }
    await Promise.all(pending);
    const elapsed = Date.now() - started;
    assert.equal(seen.size, N + 1, `every key seen (${dupes} seen twice)`);
    assert.equal(seen.get('10.0.1.2'), `T:${258}`);
    assert.equal(seen.get('*literal'), 'glob chars in the key');
    assert.deepEqual(await r.keys('psc:*'), [], 'none left');
    assert.equal(await r.get('other:1'), 'kept');
    assert.ok(elapsed < 180_000, `walk took ${elapsed} ms`);
    // a walk of an empty table ends at once; next without first starts a walk
    assert.deepEqual(await t.sequence!(1, 0), { found: false, error: DICT_ERR.NONE });
    await r.set('psc:a', '1');
    assert.deepEqual(await t.sequence!(1, 0), { found: true, key: 'a', value: '1' });
    assert.deepEqual(await t.sequence!(1, 0), { found: false, error: DICT_ERR.NONE });
  });

  it('server stopped under concurrent lookups: RETRY, never a wrong answer; recovery without reopening', { timeout: 120_000 }, async () => {
    const r = rs!.client(11);
    const keys = Array.from({ length: 20 }, (_, i) => `out${i}`);
    for (const k of keys) await r.set(k, `val-${k}`);
    const warnings: string[] = [];
    const t = await open(`hosts = ${rs!.inet}\ndatabase = 11\ntimeout = 1\n`, { warnings });
    const tally = { found: 0, retry: 0, wrong: [] as string[] };
    let phase: 'up' | 'down' | 'back' = 'up';
    const retryWhile = { down: 0 };
    let stop = false;
    const worker = async (w: number) => {
      for (let i = 0; !stop; i++) {
        const k = keys[(i + w) % keys.length]!;
        const a = await t.lookup(k, 0);
        if (a.found && a.value === `val-${k}`) tally.found++;
        else if (!a.found && a.error === DICT_ERR.RETRY) {
          tally.retry++;
          if (phase === 'down') retryWhile.down++;
        } else tally.wrong.push(`${k}: ${JSON.stringify(a)} (${phase})`);
        if (phase === 'down') await new Promise((res) => setTimeout(res, 5));
        else await new Promise((res) => setImmediate(res));
      }
    };
    const workers = Array.from({ length: 8 }, (_, w) => worker(w));
    await until('lookups to run', 10_000, () => tally.found > 100);
    await rs!.halt(true);
    phase = 'down';
    const downAt = Date.now();
    await until('RETRY answers', 10_000, () => retryWhile.down > 50);
    assert.deepEqual(await t.update!('during', 'x', 0), { status: -1, error: DICT_ERR.RETRY });
    assert.deepEqual(await t.delete!('out1', 0), { status: -1, error: DICT_ERR.RETRY });
    assert.deepEqual(await t.sequence!(0, 0), { found: false, error: DICT_ERR.RETRY });
    const downFor = Date.now() - downAt;
    await rs!.start();
    phase = 'back';
    const foundBefore = tally.found;
    await until('recovery', 20_000, () => tally.found > foundBefore + 200);
    stop = true;
    await Promise.all(workers);
    assert.deepEqual(tally.wrong, []);
    assert.ok(downFor < 10_000);
    // one warning per 10 s per pool, however many lookups failed
    assert.ok(warnings.length >= 1 && warnings.length <= 3, warnings.join('\n'));
    assert.deepEqual(await t.update!('after', 'x', 0), { status: 0, error: 0 });
    assert.equal(await r.get('out1'), 'val-out1', 'the delete during the outage did nothing');
  });
});
