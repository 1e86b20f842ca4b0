/**
 * The lookup cache on real tables, in a server built from main.cf
 * (createServer):
 *
 *  - pgsql: repeated lookups reach the database once per key, counted on the
 *    database server (the query calls a VOLATILE plpgsql function that
 *    counts its calls in a table), and answers equal those of the same
 *    table uncached;
 *  - sqlite: the same, counted at the table object (a read-only SQLite
 *    database can count nothing itself: no trigger fires on SELECT, and the
 *    table opens the database read-only);
 *  - lmdb: an update or delete through proxywrite is seen by the very next
 *    lookup through proxymap, although the cache answered that key before;
 *  - the proxymapd_cache_* parameters: no cache unless a table is listed, a
 *    listed table that is not approved is warned about.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProxyConnection } from '../../src/client/client.js';
import { ProxyTable, type ClientResult } from '../../src/client/table.js';
import { Config } from '../../src/config/params.js';
import { loadSqlite } from '../../src/addon/sqlite.js';
import { setLogSink } from '../../src/log.js';
import { DICT_FLAG } from '../../src/protocol/flags.js';
import { createServer } from '../../src/server/daemon.js';
import type { ProxyServer } from '../../src/server/server.js';
import { buildLmdb } from '../../src/tables/indexed/lmdb.js';
import { defaultRegistry } from '../../src/tables/index.js';
import type { Table } from '../../src/tables/core/table.js';
import { credentials, writeCf } from '../sql/fixtures.js';
import { pgSkipReason, startPostgres, type DbServer } from '../sql/servers.js';

const ROWS: Array<[string, string]> = [
  ['someone@example.com', 'a@x.org'],
  ['someone@example.com', 'b@y.org'],
  ['k@example.com', 'kval'],
  ['caf\xc3\xa9@example.com', 'cafe'],
  ['empty@example.com', ''],
];
const KEYS = ['someone@example.com', 'SOMEONE@Example.COM', 'k@example.com', 'caf\xc3\xa9@example.com', 'CAF\xc3\x89@example.com', 'empty@example.com', 'nobody@example.com', 'k@example.co'];

interface Running {
  server: ProxyServer;
  proxymap: string;
  proxywrite: string;
  logs: string[];
  close(): Promise<void>;
}

/** A server from main.cf entries, listening in dir; log lines collected. */
async function serve(dir: string, entries: Record<string, string>, opener?: (t: Table, spec: string) => Table): Promise<Running> {
  const logs: string[] = [];
  const oldSink = setLogSink((l) => logs.push(l));
  const config = Config.fromEntries({ queue_directory: dir, ...entries }, { configDir: dir, warn: (w) => logs.push(w) });
  let server: ProxyServer;
  if (opener) {
    // the registry's tables, each wrapped (counting lookups); the same settings otherwise
    const registry = Object.create(defaultRegistry) as typeof defaultRegistry;
    Object.defineProperty(registry, 'open', { value: async (o: Parameters<typeof defaultRegistry.open>[0]) => opener(await defaultRegistry.open(o), `${o.type}:${o.name}`) });
    server = createServer({ config, registry });
  } else {
    server = createServer({ config });
  }
  const proxymap = path.join(dir, 'private', 'proxymap');
  const proxywrite = path.join(dir, 'private', 'proxywrite');
  await server.listenPath(proxymap, 'proxymap');
  await server.listenPath(proxywrite, 'proxywrite');
  return {
    server, proxymap, proxywrite, logs,
    async close() {
      await server.close();
      setLogSink(oldSink);
    },
  };
}

/** Ask every key `rounds` times through one client (postmap's flags, new dialect, smtputf8). */
async function ask(socket: string, table: string, rounds: number): Promise<ClientResult[]> {
  const c = await ProxyConnection.connect(socket);
  const t = new ProxyTable(c, table, { dialect: 'new', smtputf8: true });
  const out: ClientResult[] = [];
  try {
    for (let r = 0; r < rounds; r++) for (const k of KEYS) out.push(await t.lookup(k));
  } finally {
    c.close();
  }
  return out;
}

/** The answers of a lookup per distinct folded key: found and not found, once each. */
const DISTINCT = new Set(KEYS.map((k) => Buffer.from(Buffer.from(k, 'latin1').toString('utf8').toLowerCase(), 'utf8').toString('latin1'))).size;

describe('pgsql: a cached table reaches the database once per key (counted on the server)', { skip: pgSkipReason() }, () => {
  let db: DbServer;
  let dir: string;
  let srv: Running;
  let cached: string;
  let plain: string;
  const calls = async (tag: string) => Number((await db.sql(`SELECT coalesce(sum(n), 0) FROM lk_count WHERE tag = '${tag}';`)).trim());

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-cache-pg-'));
    fs.chmodSync(dir, 0o755);
    db = await startPostgres();
    const rows = ROWS.map(([m, d]) => `(convert_from('\\x${Buffer.from(m, 'latin1').toString('hex')}', 'UTF8'), '${d}')`).join(', ');
    await db.sql(`CREATE TABLE users (mailbox text, dest text);
INSERT INTO users VALUES ${rows};
CREATE TABLE lk_count (tag text, n int);
CREATE FUNCTION counted(k text, t text) RETURNS SETOF text AS $$
BEGIN
  INSERT INTO lk_count VALUES (t, 1);
  RETURN QUERY SELECT dest FROM users WHERE mailbox = k;
END $$ LANGUAGE plpgsql VOLATILE;
GRANT SELECT ON users TO ${db.user};
GRANT SELECT, INSERT ON lk_count TO ${db.user};
`);
    const creds = credentials(db, `inet:127.0.0.1:${db.port}`);
    cached = `pgsql:${writeCf(path.join(dir, 'cached.cf'), `${creds}query = SELECT counted('%s', 'cached')\n`)}`;
    plain = `pgsql:${writeCf(path.join(dir, 'plain.cf'), `${creds}query = SELECT counted('%s', 'plain')\n`)}`;
    srv = await serve(dir, {
      proxy_read_maps: `proxy:${cached} proxy:${plain}`,
      proxymapd_cache_maps: `proxy:${cached}=60s/30s`,
    });
  });
  after(async () => {
    await srv?.close();
    await db?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('three rounds of lookups: the same answers as uncached; the uncached table is asked every time, the cached one once per key', async () => {
    const want = await ask(srv.proxymap, plain, 3);
    const got = await ask(srv.proxymap, cached, 3);
    assert.deepEqual(got, want);
    assert.deepEqual(want.slice(0, 3), [
      { status: 'found', value: 'a@x.org,b@y.org' },
      { status: 'found', value: 'a@x.org,b@y.org' },
      { status: 'found', value: 'kval' },
    ]);
    assert.equal(await calls('plain'), 3 * KEYS.length);
    assert.equal(await calls('cached'), DISTINCT);
    const s = srv.server.cache!.stats().tables[0]!;
    assert.deepEqual([s.table, s.misses, s.hits], [cached, DISTINCT, 3 * KEYS.length - DISTINCT]);
    // a purge sends the next lookups to the database again
    assert.equal(srv.server.cache!.purge(cached), DISTINCT);
    await ask(srv.proxymap, cached, 1);
    assert.equal(await calls('cached'), 2 * DISTINCT);
  });
});

describe('sqlite: a cached table reaches the database once per key (counted at the table object)', () => {
  let dir: string;
  let srv: Running;
  let cached: string;
  let plain: string;
  const calls = new Map<string, number>();
  const counting = (t: Table, spec: string): Table => {
    const lookup = t.lookup.bind(t);
    return Object.assign(Object.create(t) as Table, {
      lookup: (key: string, flags: number) => {
        calls.set(spec, (calls.get(spec) ?? 0) + 1);
        return lookup(key, flags);
      },
    });
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-cache-sqlite-'));
    const dbfile = path.join(dir, 'users.db');
    const q = (s: string) => `'${s.replace(/'/g, "''")}'`;
    const err = loadSqlite().sqliteExec(dbfile, `CREATE TABLE users (mailbox text, dest text);
INSERT INTO users VALUES ${ROWS.map(([m, d]) => `(${q(m)}, ${q(d)})`).join(', ')};`);
    if (err) throw new Error(err.error);
    cached = `sqlite:${writeCf(path.join(dir, 'cached.cf'), `dbpath = ${dbfile}\nquery = SELECT dest FROM users WHERE mailbox='%s'\n`)}`;
    plain = `sqlite:${writeCf(path.join(dir, 'plain.cf'), `dbpath = ${dbfile}\nquery = SELECT dest FROM users WHERE mailbox='%s'\n`)}`;
    srv = await serve(dir, { proxy_read_maps: `proxy:${cached} proxy:${plain}`, proxymapd_cache_maps: `${cached}=1h/1h` }, counting);
  });
  after(async () => {
    await srv?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('three rounds: the same answers as uncached; the cached table is asked once per key', async () => {
    const want = await ask(srv.proxymap, plain, 3);
    const got = await ask(srv.proxymap, cached, 3);
    assert.deepEqual(got, want);
    assert.equal(want.filter((r) => r.status === 'found').length, 3 * 5);
    assert.equal(calls.get(plain), 3 * KEYS.length);
    assert.equal(calls.get(cached), DISTINCT);
  });
});

describe('lmdb: an update or delete through proxywrite is seen by the very next lookup through proxymap', () => {
  let dir: string;
  let srv: Running;
  let spec: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-cache-lmdb-'));
    const file = path.join(dir, 'users');
    buildLmdb(file, ROWS.slice(2).map(([key, value], i) => ({ key, value, lineNo: i + 1 })), { dictFlags: DICT_FLAG.DUP_WARN, warn: () => {} });
    spec = `lmdb:${file}`;
    srv = await serve(dir, { proxy_read_maps: `proxy:${spec}`, proxy_write_maps: `proxy:${spec}`, proxymapd_cache_maps: `${spec}=1h/1h` });
  });
  after(async () => {
    await srv?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lookups between writes come from the cache; each write is seen at once, in both dialects', async () => {
    const cache = srv.server.cache!;
    for (const dialect of ['new', 'legacy'] as const) {
      const rc = await ProxyConnection.connect(srv.proxymap);
      const wc = await ProxyConnection.connect(srv.proxywrite);
      const reader = new ProxyTable(rc, spec, { dialect, smtputf8: true });
      const writer = new ProxyTable(wc, spec, {
        dialect, smtputf8: true,
        openFlags: DICT_FLAG.DUP_REPLACE | DICT_FLAG.SYNC_UPDATE | DICT_FLAG.FOLD_FIX | DICT_FLAG.UTF8_REQUEST | DICT_FLAG.LOCK,
      });
      try {
        for (let i = 0; i < 10; i++) {
          const value = `${dialect}-${i}`;
          const hits = cache.stats().tables[0]!.hits;
          await reader.lookup('k@example.com');
          await reader.lookup('K@EXAMPLE.COM');
          await reader.lookup('new@example.com');
          // from the cache: the folded key again, and (after the first round) the "not found" of the last round
          assert.equal(cache.stats().tables[0]!.hits, hits + (i === 0 ? 1 : 2));
          assert.equal((await writer.update('k@example.com', value)).status, 'ok');
          assert.equal((await writer.update('new@example.com', value)).status, 'ok');
          assert.deepEqual(await reader.lookup('K@Example.com'), { status: 'found', value });
          assert.deepEqual(await reader.lookup('new@example.com'), { status: 'found', value });
          assert.equal((await writer.delete('new@example.com')).status, 'ok');
          assert.deepEqual(await reader.lookup('new@example.com'), { status: 'notfound' });
        }
      } finally {
        rc.close();
        wc.close();
      }
    }
  });
});

describe('proxymapd_cache_* parameters', () => {
  it('no cache unless a table is listed; limits read; a listed table that is not approved is warned about', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-cache-params-'));
    try {
      const off = await serve(dir, { proxy_read_maps: 'proxy:inline:{a=1}' });
      assert.equal(off.server.cache, undefined);
      await off.close();
      const on = await serve(dir, {
        proxy_read_maps: 'proxy:inline:{a=1}',
        proxymapd_cache_maps: 'proxy:inline:{a=1}=5m, hash:/etc/postfix/other=1h',
        proxymapd_cache_max_entries: '500',
        proxymapd_cache_max_bytes: '65536',
      });
      try {
        const s = on.server.cache!.stats();
        assert.deepEqual([s.maxEntries, s.maxBytes, s.tables.map((t) => [t.table, t.posTtlMs, t.negTtlMs])], [
          500, 65536, [['inline:{a=1}', 300_000, 0], ['hash:/etc/postfix/other', 3_600_000, 0]],
        ]);
        assert.ok(
          on.logs.some((l) => l.includes('warning: proxymapd_cache_maps: table "hash:/etc/postfix/other" is not listed in proxy_read_maps or proxy_write_maps')),
          on.logs.join('\n'),
        );
        const c = await ProxyConnection.connect(on.proxymap);
        const t = new ProxyTable(c, 'inline:{a=1}', { dialect: 'new', smtputf8: true });
        assert.deepEqual([await t.lookup('A'), await t.lookup('A'), await t.lookup('b')], [
          { status: 'found', value: '1' }, { status: 'found', value: '1' }, { status: 'notfound' },
        ]);
        assert.deepEqual(on.server.cache!.stats().tables[0]!.hits, 1);
        c.close();
      } finally {
        await on.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
