/**
 * Writable SQL tables (update_query, delete_query, sequence_query; a
 * proxymapd extension) on pgsql, mysql and sqlite, opened as proxywrite
 * opens them, against throwaway PostgreSQL and MariaDB servers and a
 * scratch SQLite file:
 *
 *  - update inserts and overwrites, lookups see it; delete found / not found;
 *  - hostile keys and values (quotes, backslashes, control and high bytes)
 *    round-trip through update, lookup, sequence and delete;
 *  - a sequence walk over 100,000 rows that deletes each row as it goes
 *    sees every row once and leaves none;
 *  - the server down: writes and walks answer RETRY, and work again after;
 *  - without update_query / delete_query a writable open fails as before,
 *    and the read-only table has no write methods; template errors fail the open.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadSqlite } from '../../src/addon/sqlite.js';
import { DICT_ERR, TableOpenError, openTable, type Bytes, type Table } from '../../src/tables/index.js';
import { openOptions } from '../tables/conformance.js';
import { credentials, writeCf } from './fixtures.js';
import { mariadbSkipReason, pgSkipReason, startMariadb, startPostgres, type DbServer } from './servers.js';

type Kind = 'pgsql' | 'mysql' | 'sqlite';
/**
 * Rows of the walk-with-deletes test: 20,000 in `npm test` (the walk is keyset-paginated, so memory and the number
 * of queries per row do not depend on it); `npm run test:walks` runs it over 100,000.
 */
const ROWS = Number(process.env.PROXYMAPD_WALK_ROWS ?? 20_000);

/** What each backend needs: the table DDL, the .cf queries, bulk-loading SQL. */
const SQL: Record<Kind, { ddl: string; update: string; bulk: string }> = {
  pgsql: {
    ddl: 'CREATE TABLE cache (k text COLLATE "C" PRIMARY KEY, v text NOT NULL)',
    update: "INSERT INTO cache (k, v) VALUES ('%s', '%v') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
    bulk: `INSERT INTO cache SELECT 'bulk' || lpad(i::text, 6, '0'), 'v' || i FROM generate_series(1, ${ROWS}) AS i`,
  },
  mysql: {
    ddl: 'CREATE TABLE cache (k varbinary(255) PRIMARY KEY, v blob NOT NULL)',
    update: "INSERT INTO cache (k, v) VALUES ('%s', '%v') ON DUPLICATE KEY UPDATE v = VALUES(v)",
    bulk: `SET SESSION max_recursive_iterations = ${2 * ROWS};\nINSERT INTO cache WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ${ROWS}) SELECT concat('bulk', lpad(i, 6, '0')), concat('v', i) FROM s`,
  },
  sqlite: {
    ddl: 'CREATE TABLE cache (k text PRIMARY KEY, v text NOT NULL)',
    update: "INSERT INTO cache (k, v) VALUES ('%s', '%v') ON CONFLICT (k) DO UPDATE SET v = excluded.v",
    bulk: `INSERT INTO cache WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ${ROWS}) SELECT 'bulk' || substr('000000' || i, -6), 'v' || i FROM s`,
  },
};

const QUERIES =
  "query = SELECT v FROM cache WHERE k = '%s'\n" +
  "delete_query = DELETE FROM cache WHERE k = '%s'\n" +
  "sequence_query = SELECT k, v FROM cache WHERE k > '%s' ORDER BY k LIMIT 1000\n";

/** Hostile keys; sqlite keys must be UTF-8 (its lookups skip others, as Postfix's do). */
function hostileKeys(kind: Kind): Bytes[] {
  const keys = ["o'neil@example.com", "x' OR '1'='1", "x\\' OR 1=1 -- ", 'back\\slash', 'dq"x', "'; DROP TABLE cache; --", '%s%v%%', 'ctl\x01\x09\x0a\x0d\x1a\x1f.', "\\\\''\\"];
  keys.push(kind === 'sqlite' ? 'caf\xc3\xa9@example.com' : 'high\x80\x9f\xa0\xc3\xa9\xff');
  return keys;
}
const HOSTILE_VALUE = "v'al\\ue \"q\" \x01\x0a\x0d\x1a \x80\xc3\xa9\xff %s %v %%";

/** The SQL of a DbServer run as its administrator, or the SQLite file's. */
interface Backend {
  kind: Kind;
  cf(body: string): string;
  exec(sql: string): Promise<string>;
  count(): Promise<number>;
  server?: DbServer;
}

async function open(b: Backend, body: string, writable = true): Promise<{ table: Table; warnings: string[] }> {
  const warnings: string[] = [];
  const table = await openTable(openOptions(b.kind, b.cf(body), { writable, fold: 'none' }, warnings));
  return { table, warnings };
}

async function lookup(t: Table, key: Bytes): Promise<Bytes | null | 'retry'> {
  const r = await t.lookup(key, 0);
  if (r.found) return r.value;
  return r.error === DICT_ERR.NONE ? null : 'retry';
}

for (const kind of ['pgsql', 'mysql', 'sqlite'] as const) {
  const skip = kind === 'pgsql' ? pgSkipReason() : kind === 'mysql' ? mariadbSkipReason() : false;
  describe(`${kind}: writable table`, { skip, timeout: 600_000 }, () => {
    let dir = '';
    let b: Backend;
    const tables: Table[] = [];
    let n = 0;
    const table = async (body: string, writable = true) => {
      const t = (await open(b, body, writable)).table;
      tables.push(t);
      return t;
    };

    before(async () => {
      dir = fs.mkdtempSync('/tmp/pmd-wsql-');
      fs.chmodSync(dir, 0o755);
      if (kind === 'sqlite') {
        const db = path.join(dir, 'cache.db');
        const native = loadSqlite();
        const exec = async (sql: string) => {
          const err = native.sqliteExec(db, sql);
          if (err) throw new Error(err.error);
          return '';
        };
        await exec(`${SQL.sqlite.ddl};\nPRAGMA journal_mode = WAL;`);
        b = {
          kind,
          cf: (body) => writeCf(path.join(dir, `t${n++}.cf`), `dbpath = ${db}\n${body}`),
          exec,
          count: async () => {
            const h = native.sqliteOpen(db, 1000);
            assert.ok('handle' in h);
            const r = await native.sqliteQuery(h.handle, 'SELECT count(*) FROM cache');
            native.sqliteClose(h.handle);
            return Number(r.rows[0]![0]);
          },
        };
        return;
      }
      const server = kind === 'pgsql' ? await startPostgres() : await startMariadb();
      const grant = kind === 'pgsql' ? `GRANT SELECT, INSERT, UPDATE, DELETE ON cache TO ${server.user}` : `GRANT SELECT, INSERT, UPDATE, DELETE ON ${server.db}.cache TO '${server.user}'@'%'`;
      await server.sql(`${SQL[kind].ddl};\n${grant};\n`);
      const creds = credentials(server, `inet:127.0.0.1:${server.port}`);
      b = {
        kind,
        server,
        cf: (body) => writeCf(path.join(dir, `t${n++}.cf`), `${creds}retry_interval = 1\n${body}`),
        exec: (sql) => server.sql(`${sql};\n`),
        count: async () => Number((await server.sql('SELECT count(*) FROM cache;\n')).trim()),
      };
    });

    after(async () => {
      for (const t of tables) await t.close?.();
      await b?.server?.stop();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('update inserts and overwrites; lookups see it; delete: found, then not found', async () => {
      const t = await table(`update_query = ${SQL[kind].update}\n${QUERIES}`);
      assert.equal(await lookup(t, 'a@example.com'), null);
      assert.deepEqual(await t.update!('a@example.com', '1', 0), { status: 0, error: 0 });
      assert.equal(await lookup(t, 'a@example.com'), '1');
      assert.deepEqual(await t.update!('a@example.com', '2:overwritten', 0), { status: 0, error: 0 });
      assert.equal(await lookup(t, 'a@example.com'), '2:overwritten');
      // the same value again (mysql reports 0 affected rows): still a success
      assert.deepEqual(await t.update!('a@example.com', '2:overwritten', 0), { status: 0, error: 0 });
      assert.deepEqual(await t.delete!('a@example.com', 0), { status: 0, error: 0 });
      assert.equal(await lookup(t, 'a@example.com'), null);
      assert.deepEqual(await t.delete!('a@example.com', 0), { status: 1, error: 0 }, 'no row deleted: not found');
      assert.equal(await b.count(), 0);
    });

    it('hostile keys and values round-trip through update, lookup, sequence and delete', async () => {
      const t = await table(`update_query = ${SQL[kind].update}\n${QUERIES}`);
      const keys = hostileKeys(kind);
      for (const k of keys) assert.deepEqual(await t.update!(k, `${HOSTILE_VALUE}|${k}`, 0), { status: 0, error: 0 }, JSON.stringify(k));
      for (const k of keys) assert.equal(await lookup(t, k), `${HOSTILE_VALUE}|${k}`, JSON.stringify(k));
      assert.equal(await b.count(), keys.length, 'no quoting escaped into another statement');
      const seen = new Map<Bytes, Bytes>();
      for (let r = await t.sequence!(0, 0); r.found; r = await t.sequence!(1, 0)) seen.set(r.key, r.value);
      assert.deepEqual([...seen.keys()].sort(), [...keys].sort());
      for (const k of keys) assert.equal(seen.get(k), `${HOSTILE_VALUE}|${k}`);
      for (const k of keys) assert.deepEqual(await t.delete!(k, 0), { status: 0, error: 0 }, JSON.stringify(k));
      assert.equal(await b.count(), 0);
    });

    it(`a sequence walk over ${ROWS} rows, deleting each row during the walk: every row seen once, none left`, async () => {
      await b.exec(SQL[kind].bulk);
      assert.equal(await b.count(), ROWS);
      const t = await table(`update_query = ${SQL[kind].update}\n${QUERIES}`);
      const started = Date.now();
      const seen = new Set<Bytes>();
      let wrong = 0;
      for (let r = await t.sequence!(0, 0); r.found; r = await t.sequence!(1, 0)) {
        if (seen.has(r.key) || r.value !== `v${Number(r.key.slice(4))}`) wrong++;
        seen.add(r.key);
        const d = await t.delete!(r.key, 0);
        if (d.status !== 0) wrong++;
      }
      const secs = (Date.now() - started) / 1000;
      assert.equal(wrong, 0);
      assert.equal(seen.size, ROWS);
      assert.equal(await b.count(), 0);
      assert.ok(secs < 300, `the walk took ${secs} s`);
    });

    it('a sequence_query that does not advance ends the walk with an error instead of looping', async () => {
      const t = await table(`update_query = ${SQL[kind].update}\n${QUERIES.replace(/^sequence_query.*$/m, "sequence_query = SELECT k, v FROM cache WHERE k >= '%s' ORDER BY k LIMIT 1")}`);
      await t.update!('x1', '1', 0);
      await t.update!('x2', '2', 0);
      const first = await t.sequence!(0, 0);
      assert.ok(first.found && first.key === 'x1');
      const again = await t.sequence!(1, 0);
      assert.deepEqual(again, { found: false, error: DICT_ERR.CONFIG });
      for (const k of ['x1', 'x2']) await t.delete!(k, 0);
    });

    if (kind !== 'sqlite') {
      it('the server down: updates, deletes and walks answer RETRY; they work again once it is back', async () => {
        const t = await table(`update_query = ${SQL[kind].update}\n${QUERIES}`);
        assert.deepEqual(await t.update!('down@example.com', 'before', 0), { status: 0, error: 0 });
        await b.server!.halt();
        try {
          assert.deepEqual(await t.update!('down@example.com', 'during', 0), { status: -1, error: DICT_ERR.RETRY });
          assert.deepEqual(await t.delete!('down@example.com', 0), { status: -1, error: DICT_ERR.RETRY });
          assert.deepEqual(await t.sequence!(0, 0), { found: false, error: DICT_ERR.RETRY });
          assert.equal(await lookup(t, 'down@example.com'), 'retry');
        } finally {
          await b.server!.start();
        }
        // back after the host's retry_interval (1 s), without reopening the table
        const deadline = Date.now() + 30_000;
        let r = await t.update!('down@example.com', 'after', 0);
        while (r.status !== 0 && Date.now() < deadline) {
          await new Promise((res) => setTimeout(res, 200));
          r = await t.update!('down@example.com', 'after', 0);
        }
        assert.deepEqual(r, { status: 0, error: 0 });
        assert.equal(await lookup(t, 'down@example.com'), 'after', 'the write during the outage was not applied');
        assert.deepEqual(await t.delete!('down@example.com', 0), { status: 0, error: 0 });
      });
    }

    it('without update_query and delete_query: a writable open fails as before; read-only opens have no writes', async () => {
      const body = "query = SELECT v FROM cache WHERE k = '%s'\n";
      const name = b.cf(body);
      await assert.rejects(openTable(openOptions(kind, name, { writable: true })), (e: Error) => {
        assert.ok(e instanceof TableOpenError);
        assert.equal(e.message, `${kind}:${name} map requires O_RDONLY access mode`);
        return true;
      });
      // a parameter file that cannot be read: the same refusal, as before
      const missing = path.join(dir, 'missing.cf');
      await assert.rejects(openTable(openOptions(kind, missing, { writable: true })), { message: `${kind}:${missing} map requires O_RDONLY access mode` });
      const ro = await table(body, false);
      assert.equal(ro.update, undefined);
      assert.equal(ro.delete, undefined);
      assert.equal(ro.sequence, undefined);
      // update_query in a read-only open writes nothing; sequence_query alone gives a read-only table a walk
      const seqOnly = await table(`update_query = ${SQL[kind].update}\n${QUERIES}`, false);
      assert.equal(seqOnly.update, undefined);
      assert.equal(seqOnly.delete, undefined);
      assert.equal(typeof seqOnly.sequence, 'function');
      await assert.rejects(openTable(openOptions(kind, b.cf(`${body}sequence_query = SELECT k, v FROM cache\n`), { writable: true })), { message: /O_RDONLY/ });
    });

    it('template errors fail the open: %v outside update_query, other specifiers in sequence_query', async () => {
      const body = "query = SELECT v FROM cache WHERE k = '%s'\n";
      await assert.rejects(openTable(openOptions(kind, b.cf(`${body}delete_query = DELETE FROM cache WHERE v = '%v'\n`), { writable: true })), { message: /Invalid query template/ });
      await assert.rejects(openTable(openOptions(kind, b.cf(`${body}update_query = UPDATE cache SET v = '%x'\n`), { writable: true })), { message: /Invalid query template/ });
      await assert.rejects(openTable(openOptions(kind, b.cf(`${body}delete_query = DELETE FROM cache WHERE k = '%s'\nsequence_query = SELECT k, v FROM cache WHERE k > '%u'\n`), { writable: true })), { message: /Invalid sequence_query template/ });
    });

    it('a key that lacks what the write templates need is not written; lookups are not affected by them', async () => {
      const t = await table(`update_query = ${SQL[kind].update.replace("'%s'", "'%u@%d'")}\n${QUERIES}`);
      assert.deepEqual(await t.update!('nodomain', 'x', 0), { status: 1, error: 0 });
      assert.deepEqual(await t.update!('u@d.example', 'x', 0), { status: 0, error: 0 });
      assert.equal(await lookup(t, 'u@d.example'), 'x');
      assert.equal(await lookup(t, 'nodomain'), null);
      assert.deepEqual(await t.delete!('u@d.example', 0), { status: 0, error: 0 });
    });
  });
}
