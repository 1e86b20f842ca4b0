/**
 * Throwaway PostgreSQL and MariaDB servers for the SQL table tests
 * (shared/spec/test-servers.md): each lives in its own temporary directory,
 * listens on 127.0.0.1 and on a UNIX socket, and is stopped and removed by
 * stop(). A server can be stopped and started again on the same data
 * (outage tests). Every wait is bounded.
 *
 * Outside CI a missing server binary makes the tests skip; in CI (CI=true)
 * it is a failure.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { skipUnlessPresent } from '../support/skip.js';

function pgBinDir(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (!fs.existsSync(base)) return undefined;
  const majors = fs.readdirSync(base).filter((d) => fs.existsSync(path.join(base, d, 'bin', 'initdb')));
  majors.sort((a, b) => Number(b) - Number(a));
  return majors.length ? path.join(base, majors[0]!, 'bin') : undefined;
}

const PG_BIN = pgBinDir();
const MARIADBD = ['/usr/sbin/mariadbd', '/usr/sbin/mysqld'].find((p) => fs.existsSync(p));
const MARIADB_INSTALL = ['/usr/bin/mariadb-install-db', '/usr/bin/mysql_install_db'].find((p) => fs.existsSync(p));
const MARIADB_CLIENT = ['/usr/bin/mariadb', '/usr/bin/mysql'].find((p) => fs.existsSync(p));
const PSQL = ['/usr/bin/psql'].find((p) => fs.existsSync(p)) ?? (PG_BIN ? path.join(PG_BIN, 'psql') : undefined);

function userExists(name: string): boolean {
  return spawnSync('id', ['-u', name]).status === 0;
}

/** Why PostgreSQL tests must skip (outside CI), or false. */
export function pgSkipReason(): string | false {
  const missing =
    !PG_BIN || !PSQL ? 'PostgreSQL server is not installed (apt-get install postgresql)'
    : process.getuid?.() !== 0 ? 'PostgreSQL test servers need root'
    : !userExists('postgres') ? 'no postgres user'
    : '';
  return skipUnlessPresent(missing);
}

/** Why MariaDB tests must skip (outside CI), or false. */
export function mariadbSkipReason(): string | false {
  const missing =
    !MARIADBD || !MARIADB_INSTALL || !MARIADB_CLIENT ? 'MariaDB server is not installed (apt-get install mariadb-server)'
    : process.getuid?.() !== 0 ? 'MariaDB test servers need root'
    : !userExists('mysql') ? 'no mysql user'
    : '';
  return skipUnlessPresent(missing);
}

/** A TCP port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  srv.close();
  await once(srv, 'close');
  return port;
}

interface CmdResult {
  status: number;
  stdout: string;
  stderr: string;
}

async function runCmd(cmd: string, args: string[], input = '', timeoutMs = 60_000): Promise<CmdResult> {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  child.stdin.on('error', () => undefined);
  child.stdin.end(input);
  const [code] = (await once(child, 'close')) as [number | null];
  return { status: code ?? -1, stdout, stderr };
}

async function mustRun(cmd: string, args: string[], input = '', timeoutMs = 60_000): Promise<string> {
  const r = await runCmd(cmd, args, input, timeoutMs);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

async function until(what: string, ms: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function makeTempDir(prefix: string, owner: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  for (const sub of ['data', 'run']) {
    fs.mkdirSync(path.join(dir, sub));
    spawnSync('chown', [`${owner}:`, path.join(dir, sub)]);
  }
  return dir;
}

export interface DbServer {
  readonly kind: 'pgsql' | 'mysql';
  /** the temporary directory holding everything */
  readonly dir: string;
  readonly port: number;
  /** pgsql: the socket directory; mysql: the socket path */
  readonly socket: string;
  /** the database and the password user tables connect as */
  readonly db: string;
  readonly user: string;
  readonly password: string;
  /** Run SQL as the administrator; returns the output (tab-separated, no headers). */
  sql(text: string): Promise<string>;
  /** Connections the client user holds right now (counted on the server). */
  connections(): Promise<number>;
  /** Stop the server (keeps its data) / start it again on the same port and socket. */
  halt(): Promise<void>;
  start(): Promise<void>;
  /** Stop for good and remove the directory. */
  stop(): Promise<void>;
}

const DB = 'pfx';
const USER = 'pfuser';
const PASSWORD = "pw'x\\y";

/** Start a PostgreSQL cluster (as the postgres user) in a temporary directory. */
export async function startPostgres(): Promise<DbServer> {
  const dir = makeTempDir('pmd-pg-', 'postgres');
  const data = path.join(dir, 'data');
  const run = path.join(dir, 'run');
  const log = path.join(dir, 'run', 'log');
  const port = await freePort();
  const asPg = (cmd: string) => mustRun('su', ['postgres', '-s', '/bin/sh', '-c', cmd], '', 90_000);
  const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const pgCtl = path.join(PG_BIN!, 'pg_ctl');
  let running = false;
  const server: DbServer = {
    kind: 'pgsql',
    dir,
    port,
    socket: run,
    db: DB,
    user: USER,
    password: PASSWORD,
    async sql(text) {
      return mustRun(PSQL!, ['-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-h', run, '-p', String(port), '-U', 'postgres', '-d', DB], `SET client_encoding TO 'UTF8';\n${text}`);
    },
    async connections() {
      const out = await server.sql(`select count(*) from pg_stat_activity where datname='${DB}' and usename='${USER}' and pid <> pg_backend_pid();`);
      return Number(out.trim());
    },
    async halt() {
      if (!running) return;
      await asPg(`${sh(pgCtl)} -D ${sh(data)} -m immediate -w -t 30 stop`);
      running = false;
    },
    async start() {
      if (running) return;
      const opts = `-p ${port} -k ${run} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c shared_buffers=16MB`;
      await asPg(`${sh(pgCtl)} -D ${sh(data)} -o ${sh(opts)} -l ${sh(log)} -w -t 60 start`);
      running = true;
    },
    async stop() {
      try {
        if (running) await asPg(`${sh(pgCtl)} -D ${sh(data)} -m immediate -w -t 30 stop`).catch(() => undefined);
        running = false;
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  try {
    await asPg(`${sh(path.join(PG_BIN!, 'initdb'))} -D ${sh(data)} -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync`);
    // passwords for TCP and socket connections of the table user; trust for the administrator
    fs.writeFileSync(
      path.join(data, 'pg_hba.conf'),
      'local all postgres trust\nhost all postgres 127.0.0.1/32 trust\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n',
    );
    await server.start();
    await mustRun(PSQL!, ['-X', '-q', '-h', run, '-p', String(port), '-U', 'postgres', '-d', 'postgres'],
      `CREATE DATABASE ${DB};\nCREATE USER ${USER} PASSWORD '${PASSWORD.replace(/'/g, "''")}';\n`);
    await server.sql(`GRANT ALL ON SCHEMA public TO ${USER};`);
    return server;
  } catch (e) {
    await server.stop();
    throw e;
  }
}

/** Start a MariaDB server (as the mysql user) in a temporary directory. */
export async function startMariadb(): Promise<DbServer> {
  const dir = makeTempDir('pmd-my-', 'mysql');
  const data = path.join(dir, 'data');
  const sock = path.join(dir, 'run', 'mysqld.sock');
  const log = path.join(dir, 'run', 'error.log');
  const port = await freePort();
  let child: ChildProcess | undefined;
  const cli = (text: string) => mustRun(MARIADB_CLIENT!, ['--no-defaults', '-S', sock, '-uroot', '-N', '-B', '-e', text], '', 30_000);
  const server: DbServer = {
    kind: 'mysql',
    dir,
    port,
    socket: sock,
    db: DB,
    user: USER,
    password: PASSWORD,
    sql: (text) => mustRun(MARIADB_CLIENT!, ['--no-defaults', '--default-character-set=utf8mb4', '-S', sock, '-uroot', '-N', '-B', DB], text, 30_000),
    async connections() {
      const out = await cli(`select count(*) from information_schema.processlist where user='${USER}'`);
      return Number(out.trim());
    },
    async halt() {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = once(c, 'exit');
      c.kill('SIGKILL');
      await exited;
      child = undefined;
    },
    async start() {
      if (child) return;
      const c = spawn(MARIADBD!, [
        '--no-defaults', `--datadir=${data}`, `--socket=${sock}`, `--port=${port}`, '--bind-address=127.0.0.1',
        '--user=mysql', '--skip-log-bin', '--character-set-server=utf8mb4', '--collation-server=utf8mb4_general_ci',
        '--max-connections=300', '--innodb-buffer-pool-size=16M', '--innodb-log-file-size=8M',
        '--skip-innodb-doublewrite', '--innodb-flush-log-at-trx-commit=0', `--log-error=${log}`,
        '--skip-name-resolve', '--performance-schema=OFF',
      ], { stdio: 'ignore' });
      child = c;
      await until('mariadbd to accept connections', 60_000, async () => {
        if (c.exitCode !== null) throw new Error(`mariadbd exited with ${c.exitCode}: ${fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : ''}`);
        return (await runCmd(MARIADB_CLIENT!, ['--no-defaults', '-S', sock, '-uroot', '-e', 'select 1'], '', 10_000)).status === 0;
      });
    },
    async stop() {
      try {
        await server.halt();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  try {
    await mustRun(MARIADB_INSTALL!, ['--no-defaults', `--datadir=${data}`, '--user=mysql', '--auth-root-authentication-method=normal',
      '--skip-test-db'], '', 90_000);
    await server.start();
    const pw = PASSWORD.replace(/\\/g, '\\\\').replace(/'/g, "\\'");
    await cli(`CREATE DATABASE ${DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
      CREATE USER '${USER}'@'%' IDENTIFIED BY '${pw}'; CREATE USER '${USER}'@'localhost' IDENTIFIED BY '${pw}';
      GRANT ALL ON ${DB}.* TO '${USER}'@'%'; GRANT ALL ON ${DB}.* TO '${USER}'@'localhost';`);
    return server;
  } catch (e) {
    await server.stop();
    throw e;
  }
}
