/**
 * Acceptance: an address-verify style cache in PostgreSQL, shared by two
 * proxymapd daemons (two hosts), written and read by the real Postfix
 * postmap:
 *
 *  - the protocol client writes address/value pairs through daemon A's
 *    proxywrite as verify(8) does (`postmap -i proxy:...` cannot: postmap
 *    refuses bulk-mode creation for proxy:); `postmap -q` reads them back
 *    through daemon A's proxymap, the client through A's proxywrite, and
 *    daemon B (its own main.cf, the same database) answers them too;
 *  - `postmap -d` deletes through proxywrite, and B no longer finds the key;
 *  - a postscreen-style cleanup (sequence, delete each entry) through A's
 *    proxywrite with the protocol client empties the table;
 *  - the same .cf without update_query, listed in proxy_write_maps: every
 *    proxywrite request answers as before the extension (an unavailable
 *    table: RETRY), and its lookups through proxymap are unchanged.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ProxyConnection } from '../../src/client/client.js';
import { ProxyTable } from '../../src/client/table.js';
import { DICT_FLAG, PROXY_STAT } from '../../src/protocol/flags.js';
import { postmap, skipReason, startProxymapd, type Instance } from '../interop/harness.js';
import { credentials, writeCf } from './fixtures.js';
import { pgSkipReason, startPostgres, type DbServer } from './servers.js';

const skip = skipReason() || pgSkipReason();
/** What verify(8) and postscreen open their caches with (dict_cache_open). */
const CACHE_FLAGS = DICT_FLAG.DUP_REPLACE | DICT_FLAG.SYNC_UPDATE | DICT_FLAG.FOLD_FIX | DICT_FLAG.UTF8_REQUEST | DICT_FLAG.LOCK;
const ENTRIES = 2000;

describe('pgsql verify cache shared by two proxymapd daemons, driven by the real postmap', { skip, timeout: 300_000 }, () => {
  let dir = '';
  let db: DbServer;
  let a: Instance;
  let b: Instance;
  let spec = '';
  let readOnly = '';

  before(async () => {
    dir = fs.mkdtempSync('/tmp/pmd-vcache-');
    fs.chmodSync(dir, 0o755);
    db = await startPostgres();
    await db.sql(`CREATE TABLE verify (k text COLLATE "C" PRIMARY KEY, v text NOT NULL);\nGRANT SELECT, INSERT, UPDATE, DELETE ON verify TO ${db.user};\n`);
    const creds = credentials(db, `inet:127.0.0.1:${db.port}`);
    const query = "query = SELECT v FROM verify WHERE k = '%s'\n";
    spec = `pgsql:${writeCf(path.join(dir, 'verify.cf'), `${creds}${query}` +
      "update_query = INSERT INTO verify (k, v) VALUES ('%s', '%v') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v\n" +
      "delete_query = DELETE FROM verify WHERE k = '%s'\n" +
      "sequence_query = SELECT k, v FROM verify WHERE k > '%s' ORDER BY k LIMIT 500\n")}`;
    readOnly = `pgsql:${writeCf(path.join(dir, 'readonly.cf'), `${creds}${query}`)}`;
    const params = { compatibility_level: '3.6', proxy_read_maps: `proxy:${spec} proxy:${readOnly}`, proxy_write_maps: `proxy:${spec} proxy:${readOnly}` };
    [a, b] = await Promise.all([startProxymapd(params, path.join(dir, 'a')), startProxymapd(params, path.join(dir, 'b'))]);
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    await db?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const q = async (inst: Instance, key: string) => {
    const r = await postmap(['-c', inst.conf, '-q', key, `proxy:${spec}`]);
    return { out: r.stdout.toString('latin1'), status: r.status, err: r.stderr };
  };

  it('writes through proxywrite; both daemons answer from the database (postmap -q); postmap -d deletes', async () => {
    const pairs = Array.from({ length: 20 }, (_, i) => [`User${i}@Example.com`, `${1700000000 + i}:0:${1700000000 + i}:Recipient address resolved`]);
    const w = await ProxyConnection.connect(a.proxywrite);
    try {
      const t = new ProxyTable(w, spec, { dialect: 'legacy', smtputf8: true, openFlags: CACHE_FLAGS });
      for (const [k, v] of pairs) assert.deepEqual(await t.update(k!, v!), { status: 'ok' }, a.log());
    } finally {
      w.close();
    }
    // FOLD_FIX: the keys are stored folded, and found whatever their case
    pairs.forEach((p) => (p[0] = p[0]!.toLowerCase()));
    assert.equal(Number((await db.sql('SELECT count(*) FROM verify;\n')).trim()), pairs.length, 'the rows are in the database');
    for (const inst of [a, b]) {
      const r = await postmap(['-c', inst.conf, '-q', '-', `proxy:${spec}`], pairs.map(([k]) => k).join('\n') + '\nnobody@example.com\n');
      assert.equal(r.stdout.toString('latin1'), pairs.map(([k, v]) => `${k}\t${v}\n`).join(''), r.stderr);
    }
    // through proxywrite too, as verify(8) reads its cache
    const conn = await ProxyConnection.connect(a.proxywrite);
    try {
      const t = new ProxyTable(conn, spec, { dialect: 'new', smtputf8: true, openFlags: CACHE_FLAGS });
      assert.deepEqual(await t.lookup(pairs[3]![0]!), { status: 'found', value: pairs[3]![1] });
      assert.deepEqual(await t.update(pairs[3]![0]!, 'updated'), { status: 'ok' });
    } finally {
      conn.close();
    }
    assert.equal((await q(b, pairs[3]![0]!)).out, 'updated\n', 'daemon B sees the write of daemon A');
    const del = await postmap(['-c', a.conf, '-d', pairs[0]![0]!, `proxy:${spec}`]);
    assert.equal(del.status, 0, del.stderr);
    const gone = await q(b, pairs[0]![0]!);
    assert.equal(gone.out, '');
    assert.equal(gone.status, 1, 'not found');
    const again = await postmap(['-c', a.conf, '-d', pairs[0]![0]!, `proxy:${spec}`]);
    assert.equal(again.status, 1, `deleting an absent key: not found\n${again.stderr}`);
  });

  it(`a postscreen-style cleanup (sequence + delete) through proxywrite empties a cache of ${ENTRIES} entries`, async () => {
    await db.sql(`INSERT INTO verify SELECT 'c' || lpad(i::text, 5, '0') || '@example.com', 'v' || i FROM generate_series(1, ${ENTRIES}) AS i ON CONFLICT DO NOTHING;\n`);
    const total = Number((await db.sql('SELECT count(*) FROM verify;\n')).trim());
    const conn = await ProxyConnection.connect(a.proxywrite);
    let seen = 0;
    try {
      const t = new ProxyTable(conn, spec, { dialect: 'new', smtputf8: true, openFlags: CACHE_FLAGS });
      for (let r = await t.sequence(0); r.status !== 'end'; r = await t.sequence(1)) {
        assert.equal(r.status, 'found', JSON.stringify(r));
        if (r.status !== 'found') break;
        seen++;
        assert.deepEqual(await t.delete(r.key), { status: 'ok' });
      }
    } finally {
      conn.close();
    }
    assert.equal(seen, total);
    assert.equal(Number((await db.sql('SELECT count(*) FROM verify;\n')).trim()), 0);
    assert.equal((await q(b, 'c00001@example.com')).out, '');
  });

  it('a .cf without update_query in proxy_write_maps answers as before (unavailable: RETRY); proxymap lookups unchanged', async () => {
    await db.sql("INSERT INTO verify VALUES ('ro@example.com', 'ro-value');\n");
    const conn = await ProxyConnection.connect(a.proxywrite);
    try {
      const t = new ProxyTable(conn, readOnly, { dialect: 'new', smtputf8: true, openFlags: CACHE_FLAGS });
      const l = await t.lookup('ro@example.com');
      assert.equal(l.status, 'error');
      assert.equal(l.status === 'error' && l.code, PROXY_STAT.RETRY);
      const u = await t.update('ro@example.com', 'x');
      assert.equal(u.status === 'error' && u.code, PROXY_STAT.RETRY);
    } finally {
      conn.close();
    }
    assert.match(a.log(), /map requires O_RDONLY access mode/);
    const r = await postmap(['-c', b.conf, '-q', 'ro@example.com', `proxy:${readOnly}`]);
    assert.equal(r.stdout.toString(), 'ro-value\n', r.stderr);
    assert.equal((await db.sql("SELECT v FROM verify WHERE k = 'ro@example.com';\n")).trim(), 'ro-value', 'nothing written');
  });
});
