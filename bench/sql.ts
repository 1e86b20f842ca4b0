/**
 * SQL benchmark scenarios (`--scenario mysql,pgsql`): a throwaway MariaDB or
 * PostgreSQL server (test/sql/servers.ts) holding N rows
 * `userI@example.com -> userI@mailstoreJ.example.net` (primary key on the
 * address), and one .cf file per target that differ only in the database
 * user, so that the connections each side holds can be counted on the
 * server (processlist / pg_stat_activity, per user) while it is measured.
 * Keys: every row's address, plus 10% addresses that are not in the table.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type mysql from 'mysql2';
import type pg from 'pg';
import { startMariadb, startPostgres, type DbServer } from '../test/sql/servers.js';

export type SqlKind = 'mysql' | 'pgsql';
export type BenchTarget = 'proxymapd' | 'postfix';

/** A scenario on a throwaway server (SQL here, LDAP in bench/ldap.ts): one table per target, connections counted on the server. */
export interface ServerScenario {
  kind: string;
  describe: string;
  keys: string[];
  /** per target: the .cf copies (the first is the measured table), as `TYPE:FILE` */
  tables: Record<BenchTarget, string[]>;
  /** the server's processes, whose CPU the report shows apart from the rest of the machine's (when known) */
  serverPids?(): number[];
  /** connections the target's database user holds now (counted on the server) */
  connections(target: BenchTarget): Promise<number>;
  /** connections the target's database user has opened so far (MariaDB: USER_STATISTICS; PostgreSQL: log_connections) */
  opened(target: BenchTarget): Promise<number>;
  stop(): Promise<void>;
}

export interface SqlScenario extends ServerScenario {
  kind: SqlKind;
}

const USERS: Record<BenchTarget, string> = { proxymapd: 'bench_pmd', postfix: 'bench_pfx' };
const PASSWORD = 'bench-pw';
/** the user of the bench's own counting connection (it counts itself out) */
const COUNTER = 'bench_count';

/**
 * One connection of the bench's own, kept open for counting the targets' connections while they are measured: the
 * count runs every 100 ms, and starting the mysql/psql client for each (10-20 ms of CPU apiece) took a tenth of a
 * CPU from the machine being measured.
 */
async function counterConnection(kind: SqlKind, port: number, db: string): Promise<{ query(q: string): Promise<number>; close(): void }> {
  const req = createRequire(import.meta.url);
  if (kind === 'mysql') {
    const c = (req('mysql2') as typeof mysql).createConnection({ host: '127.0.0.1', port, user: COUNTER, password: PASSWORD, database: db });
    await new Promise<void>((resolve, reject) => c.connect((e) => (e ? reject(e) : resolve())));
    c.on('error', () => undefined);
    return {
      query: (q) => new Promise((resolve, reject) => c.query({ sql: q, rowsAsArray: true }, (e, rows) => (e ? reject(e) : resolve(Number((rows as unknown[][])[0]![0]))))),
      close: () => c.destroy(),
    };
  }
  const c = new (req('pg') as typeof pg).Client({ host: '127.0.0.1', port, user: COUNTER, password: PASSWORD, database: db });
  await c.connect();
  c.on('error', () => undefined);
  return {
    query: async (q) => Number((await c.query({ text: q, rowMode: 'array' })).rows[0][0]),
    close: () => void c.end().catch(() => undefined),
  };
}

/** Start the server, load the rows, write the .cf files (copies: `copies` per target). */
export async function startSqlScenario(kind: SqlKind, dir: string, rows: number, copies: number): Promise<SqlScenario> {
  const db: DbServer = kind === 'mysql' ? await startMariadb() : await startPostgres();
  try {
    const keys: string[] = [];
    const values: string[] = [];
    for (let i = 0; i < rows; i++) {
      keys.push(`user${i}@example.com`);
      values.push(`('user${i}@example.com', 'user${i}@mailstore${i % 17}.example.net')`);
    }
    for (let i = 0; i < Math.max(1, Math.floor(rows / 10)); i++) keys.push(`nobody${i}@example.org`);
    const text = kind === 'mysql' ? 'varchar(200)' : 'text';
    let sql = `CREATE TABLE virtual (address ${text} PRIMARY KEY, destination ${text});\n`;
    for (let i = 0; i < values.length; i += 1000) sql += `INSERT INTO virtual VALUES ${values.slice(i, i + 1000).join(',\n')};\n`;
    for (const u of Object.values(USERS)) {
      sql += kind === 'mysql'
        ? `CREATE USER '${u}'@'%' IDENTIFIED BY '${PASSWORD}'; GRANT SELECT ON ${db.db}.* TO '${u}'@'%';\n`
        : `CREATE USER ${u} PASSWORD '${PASSWORD}'; GRANT SELECT ON virtual TO ${u};\n`;
    }
    sql += kind === 'mysql'
      ? `CREATE USER '${COUNTER}'@'%' IDENTIFIED BY '${PASSWORD}'; GRANT PROCESS ON *.* TO '${COUNTER}'@'%'; GRANT SELECT ON ${db.db}.* TO '${COUNTER}'@'%';\n`
      : `CREATE USER ${COUNTER} PASSWORD '${PASSWORD}'; GRANT pg_read_all_stats TO ${COUNTER};\n`;
    await db.sql(sql);
    // count every connection made from now on, per user
    if (kind === 'mysql') await db.sql('SET GLOBAL userstat = 1;');
    else await db.sql('ALTER SYSTEM SET log_connections = on;\nSELECT pg_reload_conf();');
    const counter = await counterConnection(kind, db.port, db.db);
    const tables = { proxymapd: [] as string[], postfix: [] as string[] };
    for (const target of ['proxymapd', 'postfix'] as const) {
      for (let i = 0; i < copies; i++) {
        const f = path.join(dir, `${target}-${i}.cf`);
        fs.writeFileSync(
          f,
          `hosts = inet:127.0.0.1:${db.port}\nuser = ${USERS[target]}\npassword = ${PASSWORD}\ndbname = ${db.db}\n` +
            `query = SELECT destination FROM virtual WHERE address = '%s'\n`,
          { mode: 0o644 },
        );
        // Postfix re-reads a parameter file younger than a second
        fs.utimesSync(f, 1_000_000_000, 1_000_000_000);
        tables[target].push(`${kind}:${f}`);
      }
    }
    return {
      kind,
      describe: `${kind} (${kind === 'mysql' ? 'MariaDB' : 'PostgreSQL'} on 127.0.0.1), ${rows} rows, primary-key lookups`,
      keys,
      tables,
      async connections(target) {
        const u = USERS[target];
        return counter.query(
          kind === 'mysql'
            ? `select count(*) from information_schema.processlist where user='${u}'`
            : `select count(*) from pg_stat_activity where usename='${u}'`,
        );
      },
      async opened(target) {
        const u = USERS[target];
        if (kind === 'mysql') {
          return Number((await db.sql(`select coalesce(sum(total_connections), 0) from information_schema.user_statistics where user='${u}';`)).trim());
        }
        const log = fs.readFileSync(path.join(db.dir, 'run', 'log'), 'utf8');
        return log.split('\n').filter((l) => l.includes(`connection authorized: user=${u} `)).length;
      },
      stop: async () => {
        counter.close();
        await db.stop();
      },
    };
  } catch (e) {
    await db.stop();
    throw e;
  }
}

/** Poll a count while something runs; the peak. */
export function peakWhile(count: () => Promise<number>, everyMs = 100): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        peak = Math.max(peak, await count());
      } catch {
        /* a failed sample is skipped */
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peak;
    },
  };
}
