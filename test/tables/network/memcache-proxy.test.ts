/**
 * memcache through a real proxymapd: `postmap -q - proxy:memcache:CF`
 * against `postmap -q - memcache:CF` for several .cf variants and the
 * main.cf form; updates and deletes through proxywrite, seen by the direct
 * postmap and in the lmdb backup; memcached stopped under 20 concurrent
 * clients and started again.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ProxyConnection } from '../../../src/client/client.js';
import { ProxyTable, type ClientResult } from '../../../src/client/table.js';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { postmap, skipReason, startProxymapd, writeTable, type Instance } from '../../interop/harness.js';
import { memcachedSkipReason, startMemcached, type Memcached } from './memcached.js';

const skip = skipReason() || memcachedSkipReason();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the verify/postscreen caches open proxywrite tables with. */
const CACHE_FLAGS = DICT_FLAG.DUP_REPLACE | DICT_FLAG.SYNC_UPDATE | DICT_FLAG.FOLD_FIX | DICT_FLAG.UTF8_REQUEST | DICT_FLAG.LOCK;

const KEYS = ['hit', 'HIT', 'miss', 'a b', 'u@example.com', 'U@Example.COM', 'u@other.com', 'bk@example.com', 'six', 'x@a.b.example.com', 'user@', '@example.com'];

describe('memcache through proxymapd', { skip, timeout: 600_000 }, () => {
  let mc: Memcached;
  let inst: Instance;
  let dir = '';
  const tables: Record<string, string> = {};
  let lmdb = '';

  const seed = async () => {
    for (const [k, v] of [['hit', 'hello'], ['pfx:u@example.com', 'pfx-value'], ['six', '123456']] as const) await mc.set(k, v);
  };

  before(async () => {
    mc = await startMemcached();
    await seed();
    dir = fs.mkdtempSync(path.join(mc.dir, 'pmd-'));
    const texthash = path.join(dir, 'backup.txt');
    writeTable(texthash, 'bk@example.com backup-value\nhit from-backup\n');
    lmdb = path.join(dir, 'wbackup');
    const cf = (name: string, text: string) => {
      const p = path.join(dir, `${name}.cf`);
      writeTable(p, text);
      tables[name] = `memcache:${p}`;
    };
    cf('plain', `memcache = ${mc.inet}\n`);
    cf('keyfmt', `memcache = ${mc.inet}\nkey_format = pfx:%s\n`);
    cf('parts', `memcache = ${mc.inet}\nkey_format = %u-%d-%2\n`);
    cf('domain', `memcache = ${mc.inet}\nkey_format = pfx:%s\ndomain = example.com\n`);
    cf('texthash', `memcache = ${mc.inet}\nbackup = texthash:${texthash}\n`);
    cf('limits', `memcache = ${mc.inet}\ndata_size_limit = 5\nline_size_limit = 100\nmax_try = 1\n`);
    cf('unix', `memcache = ${mc.unix}\n`);
    cf('write', `memcache = ${mc.inet}\nkey_format = w:%s\nbackup = lmdb:${lmdb}\n`);
    cf('writenb', `memcache = ${mc.inet}\nkey_format = nb:%s\n`);
    tables.maincf = 'memcache:mcmain';
    // the lmdb backup exists before proxywrite opens it (Postfix's O_RDWR open does not create it)
    fs.mkdirSync(path.join(dir, 'conf0'));
    fs.writeFileSync(path.join(dir, 'conf0', 'main.cf'), '');
    fs.writeFileSync(lmdb, 'seed@example.com seeded\n');
    const made = await postmap(['-c', path.join(dir, 'conf0'), `lmdb:${lmdb}`]);
    assert.equal(made.status, 0, made.stderr);
    const read = Object.values(tables).map((t) => `proxy:${t}`).join(' ');
    inst = await startProxymapd(
      {
        mcmain_memcache: mc.inet,
        mcmain_key_format: '${mcfmt}',
        mcfmt: 'pfx:%s',
        proxy_read_maps: read,
        proxy_write_maps: `proxy:${tables.write} proxy:${tables.writenb}`,
      },
      dir,
    );
  });

  after(async () => {
    await inst?.stop();
    await mc?.stop();
  });

  it('postmap -q - proxy:memcache:CF prints what postmap -q - memcache:CF prints, with the same exit status', async () => {
    const input = KEYS.join('\n') + '\n';
    let answers = 0;
    for (const [name, table] of Object.entries(tables)) {
      if (name.startsWith('write')) continue;
      const direct = await postmap(['-c', inst.conf, '-q', '-', table], input);
      const proxied = await postmap(['-c', inst.conf, '-q', '-', `proxy:${table}`], input);
      const d = direct.stdout.toString('latin1');
      assert.equal(proxied.stdout.toString('latin1'), d, `${table}\n${proxied.stderr}\n${inst.log()}`);
      assert.equal(proxied.status, direct.status, `${table}\n${direct.stderr}\n${proxied.stderr}`);
      for (const key of KEYS) {
        const one = await postmap(['-c', inst.conf, '-q', key, table]);
        const pone = await postmap(['-c', inst.conf, '-q', key, `proxy:${table}`]);
        assert.equal(pone.stdout.toString('latin1'), one.stdout.toString('latin1'), `${table} ${key}`);
        assert.equal(pone.status, one.status, `${table} ${key}: ${one.stderr} / ${pone.stderr}`);
      }
      answers += d.split('\n').filter(Boolean).length;
      if (name === 'maincf') assert.match(d, /^u@example\.com\tpfx-value$/m, 'main.cf parameters ($-expanded) are used');
      if (name === 'limits') assert.match(direct.stderr + proxied.stderr, /query error/, 'the 6-byte value is over data_size_limit');
    }
    assert.ok(answers >= 10, `the tables answer (${answers} values)`);
  });

  for (const DIALECTS of [['legacy'], ['new']] as const) {
  it(`updates and deletes through proxywrite reach memcache and the lmdb backup (${DIALECTS[0]} dialect)`, async () => {
    const conn = await ProxyConnection.connect(inst.proxywrite, { timeoutMs: 60_000 });
    try {
      for (const dialect of DIALECTS) {
        const w = new ProxyTable(conn, tables.write!, { dialect, smtputf8: true, openFlags: CACHE_FLAGS });
        const key = `Up-${dialect}@Example.com`;
        const folded = key.toLowerCase();
        assert.deepEqual(await w.update(key, `value-${dialect}`), { status: 'ok' });
        const direct = await postmap(['-c', inst.conf, '-q', key, tables.write!]);
        assert.equal(direct.stdout.toString(), `value-${dialect}\n`, direct.stderr);
        assert.equal(await mc.get(`w:${folded}`), `value-${dialect}`);
        const backup = await postmap(['-c', inst.conf, '-q', folded, `lmdb:${lmdb}`]);
        assert.equal(backup.stdout.toString(), `value-${dialect}\n`, backup.stderr);
        // the backup answers when memcache forgot, and memcache learns it again
        await mc.raw(`delete w:${folded}\r\n`);
        assert.equal(await mc.get(`w:${folded}`), undefined);
        const again = await w.lookup(key);
        assert.deepEqual(again, { status: 'found', value: `value-${dialect}` });
        assert.equal(await mc.get(`w:${folded}`), `value-${dialect}`);
        assert.deepEqual(await w.delete(key), { status: 'ok' });
        assert.equal(await mc.get(`w:${folded}`), undefined);
        const gone = await postmap(['-c', inst.conf, '-q', folded, `lmdb:${lmdb}`]);
        assert.equal(gone.status, 1, gone.stderr);
        assert.deepEqual(await w.delete(key), { status: 'notfound' });
        // without a backup: memcache alone
        const nb = new ProxyTable(conn, tables.writenb!, { dialect, smtputf8: true, openFlags: CACHE_FLAGS });
        assert.deepEqual(await nb.update(key, 'nb-value'), { status: 'ok' });
        assert.equal((await postmap(['-c', inst.conf, '-q', key, tables.writenb!])).stdout.toString(), 'nb-value\n');
        assert.deepEqual(await nb.update('has space', 'x'), { status: 'notfound' });
        assert.deepEqual(await nb.delete(key), { status: 'ok' });
        assert.deepEqual(await nb.delete(key), { status: 'notfound' });
      }
      // first/next go to the backup
      const seq = await postmap(['-c', inst.conf, '-s', tables.write!]);
      assert.match(seq.stdout.toString(), /^seed@example\.com\tseeded$/m, seq.stderr);
    } finally {
      conn.close();
    }
    assert.match(inst.log(), /skipping update for name "has space": name contains space/);
  });
  }

  it('memcached stopped under 20 concurrent clients: RETRY or the backup answer, never a wrong one; back after a restart', async () => {
    const plain = tables.plain!;
    const backed = tables.texthash!;
    const want: Record<string, Record<string, string | null>> = {
      [plain]: { hit: 'hello', six: '123456', miss: null },
      // memcache first, then the backup (same values): with memcache down the backup answers
      [backed]: { 'bk@example.com': 'backup-value', miss: null },
    };
    const conns = await Promise.all(Array.from({ length: 20 }, () => ProxyConnection.connect(inst.proxymap, { timeoutMs: 120_000 })));
    // up: memcached runs with its data; stopped: memcached is not running; else a transition
    let state: 'up' | 'stopping' | 'stopped' | 'starting' = 'up';
    let restarted = false;
    const bad: string[] = [];
    const counts = { retry: 0, retryWhileStopped: 0, backupWhileStopped: 0, afterRestart: 0 };
    let stop = false;
    const client = async (conn: ProxyConnection, i: number) => {
      const table = i % 2 ? backed : plain;
      const t = new ProxyTable(conn, table, { dialect: i % 4 < 2 ? 'legacy' : 'new', smtputf8: true });
      const keys = Object.keys(want[table]!);
      for (let n = 0; !stop; n++) {
        const key = keys[(i + n) % keys.length]!;
        const before = state;
        const r: ClientResult = await t.lookup(key);
        const after = state;
        const got = r.status === 'found' ? r.value : r.status === 'notfound' ? null : r.code === 2 ? 'RETRY' : `error ${r.code}`;
        const expect = want[table]![key];
        const label = `${table} ${key}: ${got} (want ${expect}) ${before}->${after}`;
        if (table === backed) {
          // Postfix falls back to the backup on any memcache failure: never RETRY, always the backup's answer
          if (got !== expect) bad.push(label);
          if (before === 'stopped' && after === 'stopped') counts.backupWhileStopped++;
        } else if (before === 'stopped' && after === 'stopped') {
          // no backup: an outage is RETRY, never "not found" and never a value
          if (got !== 'RETRY') bad.push(label);
          counts.retryWhileStopped++;
        } else if (before === 'up' && after === 'up') {
          if (got !== expect) bad.push(label);
        } else if (!(got === 'RETRY' || got === expect || (got === null && (before === 'starting' || after === 'starting')))) {
          // across a transition: RETRY, the right value, or (while it restarts empty) not found
          bad.push(label);
        }
        if (got === 'RETRY') counts.retry++;
        if (restarted && before === 'up' && got === expect) counts.afterRestart++;
        await sleep(5);
      }
    };
    const running = conns.map((c, i) => client(c, i));
    try {
      await sleep(1500);
      state = 'stopping';
      await mc.halt();
      state = 'stopped';
      await sleep(4000);
      state = 'starting';
      await mc.start();
      await seed();
      state = 'up';
      restarted = true;
      await sleep(3000);
    } finally {
      stop = true;
      await Promise.all(running);
      for (const c of conns) c.close();
    }
    assert.deepEqual(bad.slice(0, 20), [], `${bad.length} wrong answers\n${inst.log().slice(-3000)}`);
    assert.ok(counts.retryWhileStopped > 10, `the plain table answered RETRY during the outage (${counts.retryWhileStopped})`);
    assert.ok(counts.backupWhileStopped > 10, `the backed table answered from its backup during the outage (${counts.backupWhileStopped})`);
    assert.ok(counts.afterRestart > 20, `lookups succeed after the restart (${counts.afterRestart})`);
    assert.match(inst.log(), /connect to 127\.0\.0\.1:\d+: Connection refused/);
    // the same answers from the direct postmap afterwards
    const direct = await postmap(['-c', inst.conf, '-q', 'hit', plain]);
    const proxied = await postmap(['-c', inst.conf, '-q', 'hit', `proxy:${plain}`]);
    assert.equal(proxied.stdout.toString(), direct.stdout.toString());
    assert.equal(proxied.stdout.toString(), 'hello\n');
  });
});
