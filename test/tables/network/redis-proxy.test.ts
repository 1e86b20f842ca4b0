/**
 * redis: through proxymapd (Postfix has no redis table, so the only way
 * Postfix programs reach one is proxy:redis:...):
 *
 * - a standalone `proxymapd serve`: real `postmap -q KEY proxy:redis:CF`
 *   and `postmap -q - ...` against what is stored in Redis; updates through
 *   proxywrite with the project's client (both dialects), deletes with the
 *   real `postmap -d KEY proxy:redis:CF` (postmap -i cannot work: Postfix
 *   refuses bulk-mode creation of proxy: maps);
 * - the acceptance test of issue 14: two real Postfix instances, each with
 *   its own proxymapd as proxymap and proxywrite under its own master(8),
 *   share one redis-server: a verify-cache entry written through A's
 *   proxywrite is answered by B's proxymap (real postmap), and a
 *   postscreen-style cache of 100,000 entries written through A is cleaned
 *   up through A's proxywrite (sequence first/next + delete of the entries
 *   that look expired): what was deleted is gone on B, the rest is there.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ProxyConnection } from '../../../src/client/client.js';
import { ProxyTable } from '../../../src/client/table.js';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { CLI, postmap, skipReason, startProxymapd, writeTable, type Instance } from '../../interop/harness.js';
import { postfixAvailable, postfixUnavailableReason, startPostfixInstance, type PostfixInstance } from '../../interop/postfix-instance.js';
import { skipUnlessPresent } from '../../support/skip.js';
import { redisSkipReason, startRedis, type RedisServer } from './redis.js';

const skip = skipReason() || redisSkipReason();
const skipMaster = skip || skipUnlessPresent(!postfixAvailable() && `real Postfix instance not available: ${postfixUnavailableReason()}`);

/** What the verify/postscreen caches open proxywrite tables with (dict_cache_open). */
const CACHE_FLAGS = DICT_FLAG.DUP_REPLACE | DICT_FLAG.SYNC_UPDATE | DICT_FLAG.FOLD_FIX | DICT_FLAG.UTF8_REQUEST | DICT_FLAG.LOCK;

const out = (r: { stdout: Buffer }) => r.stdout.toString('latin1');

describe('redis through a standalone proxymapd', { skip, timeout: 300_000 }, () => {
  let rs: RedisServer;
  let inst: Instance;
  let dir = '';
  let spec = '';
  let plain = '';

  before(async () => {
    rs = await startRedis();
    dir = fs.mkdtempSync(path.join(rs.dir, 'pmd-'));
    const cf = path.join(dir, 'verify.cf');
    writeTable(cf, `hosts = ${rs.inet}\nkey_format = verify:%s\nttl = 3600\n`);
    const pcf = path.join(dir, 'plain.cf');
    writeTable(pcf, `hosts = ${rs.unix}\n`);
    spec = `redis:${cf}`;
    plain = `redis:${pcf}`;
    const r = rs.client();
    await r.set('verify:u@example.com', '0:1700000000:1700000000:1700000000:250 ok');
    await r.set('alias', 'user1, user2');
    inst = await startProxymapd({ proxy_read_maps: `proxy:${spec} proxy:${plain}`, proxy_write_maps: `proxy:${spec}` }, dir);
  });

  after(async () => {
    await inst?.stop();
    await rs?.stop();
  });

  it('real postmap -q through proxymap answers what Redis holds, keys folded', async () => {
    assert.equal(out(await postmap(['-c', inst.conf, '-q', 'u@example.com', `proxy:${spec}`])), '0:1700000000:1700000000:1700000000:250 ok\n');
    assert.equal(out(await postmap(['-c', inst.conf, '-q', 'U@Example.COM', `proxy:${spec}`])), '0:1700000000:1700000000:1700000000:250 ok\n');
    const miss = await postmap(['-c', inst.conf, '-q', 'nobody@example.com', `proxy:${spec}`]);
    assert.equal(miss.status, 1);
    assert.equal(out(miss), '');
    const many = await postmap(['-c', inst.conf, '-q', '-', `proxy:${plain}`], 'alias\nnothing\nALIAS\n');
    assert.equal(out(many), 'alias\tuser1, user2\nALIAS\tuser1, user2\n');
    // writes need proxy_write_maps
    const ro = await postmap(['-c', inst.conf, '-d', 'alias', `proxy:${plain}`]);
    assert.notEqual(ro.status, 0);
    assert.equal(await rs.client().get('alias'), 'user1, user2');
  });

  for (const dialect of ['legacy', 'new'] as const) {
    it(`updates through proxywrite (${dialect} dialect) and real postmap -d`, async () => {
      const conn = await ProxyConnection.connect(inst.proxywrite, { timeoutMs: 60_000 });
      try {
        const w = new ProxyTable(conn, spec, { dialect, smtputf8: true, openFlags: CACHE_FLAGS });
        const key = `Probe-${dialect}@Example.com`;
        assert.deepEqual(await w.update(key, `value-${dialect}`), { status: 'ok' });
        const folded = key.toLowerCase();
        const r = rs.client();
        assert.equal(await r.get(`verify:${folded}`), `value-${dialect}`);
        assert.ok((await r.ttl(`verify:${folded}`)) > 3500);
        assert.equal(out(await postmap(['-c', inst.conf, '-q', key, `proxy:${spec}`])), `value-${dialect}\n`);
        assert.deepEqual(await w.lookup(key), { status: 'found', value: `value-${dialect}` });
        const d = await postmap(['-c', inst.conf, '-d', key, `proxy:${spec}`]);
        assert.equal(d.status, 0, d.stderr);
        assert.equal(await r.exists(`verify:${folded}`), 0);
        assert.equal((await postmap(['-c', inst.conf, '-d', key, `proxy:${spec}`])).status, 1, 'nothing left to delete');
        assert.deepEqual(await w.delete(key), { status: 'notfound' });
      } finally {
        conn.close();
      }
    });
  }
});

/** A daemon_directory with Postfix's daemons and a `proxymapd` wrapper running the built CLI. */
function makeDaemonDir(): string {
  const real = spawnSync('postconf', ['-dh', 'daemon_directory'], { encoding: 'utf8' }).stdout.trim() || '/usr/lib/postfix/sbin';
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-sbin-'));
  fs.chmodSync(d, 0o755);
  for (const f of fs.readdirSync(real)) fs.symlinkSync(path.join(real, f), path.join(d, f));
  fs.writeFileSync(path.join(d, 'proxymapd'), `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@"\n`, { mode: 0o755 });
  return d;
}

const PROXYMAPD_SERVICES = [
  'proxymap  unix  -       -       n       -       -       proxymapd',
  'proxywrite unix -       -       n       -       1       proxymapd',
];

describe('acceptance: two Postfix instances share one Redis through their own proxymapd', { skip: skipMaster, timeout: 900_000, concurrency: 1 }, () => {
  let rs: RedisServer;
  let daemonDir = '';
  let a: PostfixInstance;
  let b: PostfixInstance;
  const verifySpec = (i: PostfixInstance) => `redis:${i.dir}/verify.cf`;
  const pscSpec = (i: PostfixInstance) => `redis:${i.dir}/psc.cf`;

  before(async () => {
    rs = await startRedis();
    daemonDir = makeDaemonDir();
    const start = () =>
      startPostfixInstance({
        mainCf: {
          daemon_directory: daemonDir,
          address_verify_map: 'proxy:redis:$DIR/verify.cf',
          postscreen_cache_map: 'proxy:redis:$DIR/psc.cf',
          proxy_read_maps: 'proxy:redis:$DIR/verify.cf proxy:redis:$DIR/psc.cf',
          proxy_write_maps: 'proxy:redis:$DIR/verify.cf proxy:redis:$DIR/psc.cf',
        },
        masterCfEdits: { remove: ['proxymap', 'proxywrite'], append: PROXYMAPD_SERVICES },
        files: {
          'verify.cf': `hosts = ${rs.inet}\nkey_format = verify:%s\n`,
          'psc.cf': `hosts = ${rs.inet}\nkey_format = psc:%s\n`,
        },
      });
    a = await start();
    b = await start();
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    await rs?.stop();
    if (daemonDir) fs.rmSync(daemonDir, { recursive: true, force: true });
  });

  it('a verify-cache entry written through A\'s proxywrite is answered by B\'s proxymap', async () => {
    const conn = await ProxyConnection.connect(a.proxywriteSocket, { timeoutMs: 60_000 });
    try {
      const w = new ProxyTable(conn, verifySpec(a), { dialect: 'new', smtputf8: true, openFlags: CACHE_FLAGS });
      const value = `0:${Math.floor(Date.now() / 1000)}:0:0:250 2.1.5 Ok`;
      assert.deepEqual(await w.update('Rcpt@Example.ORG', value), { status: 'ok' });
      const fromB = await postmap(['-c', b.confDir, '-q', 'rcpt@example.org', `proxy:${verifySpec(b)}`]);
      assert.equal(fromB.status, 0, fromB.stderr + b.maillog());
      assert.equal(out(fromB), `${value}\n`);
      assert.equal(await rs.client().get('verify:rcpt@example.org'), value);
      // and B's proxywrite deletes it for A
      const d = await postmap(['-c', b.confDir, '-d', 'rcpt@example.org', `proxy:${verifySpec(b)}`]);
      assert.equal(d.status, 0, d.stderr);
      assert.equal((await postmap(['-c', a.confDir, '-q', 'rcpt@example.org', `proxy:${verifySpec(a)}`])).status, 1);
    } finally {
      conn.close();
    }
  });

  it('a postscreen cache of 100,000 entries: cleanup through A (sequence + delete), the result seen on B', { timeout: 600_000 }, async () => {
    const N = 100_000;
    const key = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    // "expired-looking": every third entry has an old time stamp
    const value = (i: number) => (i % 3 === 0 ? `1:1:1:1` : `${2_000_000_000 + i}:0:0:0`);
    const WRITERS = 8;
    await Promise.all(
      Array.from({ length: WRITERS }, async (_, wi) => {
        const conn = await ProxyConnection.connect(a.proxywriteSocket, { timeoutMs: 120_000 });
        try {
          const w = new ProxyTable(conn, pscSpec(a), { dialect: 'new', smtputf8: true, openFlags: CACHE_FLAGS });
          for (let i = wi; i < N; i += WRITERS) {
            const r = await w.update(key(i), value(i));
            assert.deepEqual(r, { status: 'ok' }, key(i));
          }
        } finally {
          conn.close();
        }
      }),
    );
    const r = rs.client();
    assert.equal((await r.call('DBSIZE')) as number >= N, true);
    // the cleanup: dict_cache walks with first/next and deletes expired entries on the same handle
    const conn = await ProxyConnection.connect(a.proxywriteSocket, { timeoutMs: 120_000 });
    let seen = 0;
    let deleted = 0;
    const started = Date.now();
    try {
      const w = new ProxyTable(conn, pscSpec(a), { dialect: 'new', smtputf8: true, openFlags: CACHE_FLAGS });
      for (let s = await w.sequence(0); ; s = await w.sequence(1)) {
        if (s.status === 'end') break;
        assert.equal(s.status, 'found', JSON.stringify(s));
        if (s.status !== 'found') break;
        seen++;
        if (s.value.startsWith('1:1:')) {
          assert.deepEqual(await w.delete(s.key), { status: 'ok' }, s.key);
          deleted++;
        }
      }
    } finally {
      conn.close();
    }
    const elapsed = Date.now() - started;
    const expired = Math.ceil(N / 3);
    assert.ok(seen >= N, `every entry visited at least once (${seen})`);
    assert.equal(deleted, expired);
    assert.ok(elapsed < 400_000, `cleanup took ${elapsed} ms`);
    // on B: deleted entries are gone, the others answer (real postmap, a sample of both kinds)
    const sample = Array.from({ length: 300 }, (_, j) => (j * 331) % N);
    const fromB = await postmap(['-c', b.confDir, '-q', '-', `proxy:${pscSpec(b)}`], sample.map(key).join('\n') + '\n');
    const answered = new Map(out(fromB).trim().split('\n').filter(Boolean).map((l) => l.split('\t') as [string, string]));
    for (const i of sample) assert.equal(answered.get(key(i)), i % 3 === 0 ? undefined : value(i), key(i));
    let left = 0;
    let cursor = '0';
    do {
      const [next, keys] = (await r.scan(cursor, 'MATCH', 'psc:*', 'COUNT', 5000)) as [string, string[]];
      left += keys.length;
      cursor = next;
    } while (cursor !== '0');
    assert.equal(left, N - expired);
  });
});
