/**
 * sqlite:, mysql: and pgsql: tables through a running proxymapd, with the
 * real Postfix postmap as client and oracle, on throwaway MariaDB and
 * PostgreSQL servers:
 *
 *  - `postmap -q - proxy:TYPE:CF` (through proxymapd) prints what the direct
 *    `postmap -q - TYPE:CF` prints, for a range of .cf files;
 *  - 100 concurrent clients never make proxymapd hold more database
 *    connections than proxymapd_sql_max_connections (counted on the server:
 *    processlist / pg_stat_activity), although every table shares the pool;
 *  - the database server stopped under load and started again: lookups get
 *    RETRY (never a wrong answer, never "not found") during the outage and
 *    succeed again afterwards, without restarting proxymapd;
 *  - sqlite: a missing or locked database is a temporary error, never a crash.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ProxyConnection } from '../../src/client/client.js';
import { ProxyTable, type ClientResult } from '../../src/client/table.js';
import { loadSqlite } from '../../src/addon/sqlite.js';
import { PROXY_STAT } from '../../src/protocol/flags.js';
import { answerOf, sampleWhile } from '../support/load.js';
import { postmap, skipReason, startProxymapd, type Instance } from '../interop/harness.js';
import { KEYS, credentials, loadData, writeCf } from './fixtures.js';
import { mariadbSkipReason, pgSkipReason, startMariadb, startPostgres, type DbServer } from './servers.js';

const skip = skipReason() || mariadbSkipReason() || pgSkipReason();
const POOL_SIZE = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const PLAIN = "query = SELECT dest FROM aliases WHERE mailbox='%s'\n";
const BOOM = 'boom@example.com';
/** .cf bodies (after the credentials) checked for every type; `kinds` limits a case. */
const CASES: { name: string; cf: string; kinds?: ('mysql' | 'pgsql' | 'sqlite')[] }[] = [
  { name: 'plain', cf: PLAIN },
  { name: 'columns', cf: "query = SELECT dest, extra FROM aliases WHERE mailbox='%s'\n" },
  { name: 'templates', cf: "query = SELECT '%s|%u|%d|%1|%2|%S|%U|%D|%%'\n" },
  { name: 'user-domain', cf: "query = SELECT dest FROM aliases WHERE mailbox='%u@%d'\n" },
  { name: 'labels', cf: "query = SELECT dest FROM aliases WHERE mailbox=concat('k@', '%2', '.', '%1')\n", kinds: ['mysql', 'pgsql'] },
  { name: 'domain', cf: `${PLAIN}domain = example.com, !bad.example.com\n` },
  { name: 'format-u', cf: `${PLAIN}result_format = <%u>\n` },
  { name: 'format-d', cf: `${PLAIN}result_format = <%d> key=%S user=%U dom=%D\n` },
  { name: 'like', cf: "query = SELECT dest FROM aliases WHERE mailbox LIKE '%s'\n" },
  { name: 'legacy', cf: "table = aliases\nselect_field = dest\nwhere_field = mailbox\nadditional_conditions = AND dest LIKE 'm%%'\n" },
  { name: 'limit', cf: `${PLAIN}expansion_limit = 2\n` },
];

/** The aliases rows as an SQLite script (the same data as the servers get). */
function sqliteScript(): string {
  return `CREATE TABLE aliases (mailbox text, dest text, extra text);
INSERT INTO aliases VALUES
('someone@example.com', 'a@x.org', 'col2a'), ('someone@example.com', 'b@y.org', NULL), ('someone@example.com', '', 'col2c'),
('o''neil@example.com', 'quoted', 'q2'), ('back\\slash@example.com', 'bs', NULL), ('SomeOne2@example.com', 'mixed', NULL),
('k@%', 'pct', NULL), ('k_example.com', 'us', NULL), ('fmt@example.com', 'plain', NULL), ('fmt@example.com', '@dom.org', NULL),
('fmt@example.com', 'user@dom.org', NULL), ('fmt@example.com', 'u2@', NULL), ('multi@example.com', 'm1', NULL),
('multi@example.com', 'm2', NULL), ('multi@example.com', 'm3', NULL), ('multi@example.com', 'm4', NULL),
('k@example.com', 'kval', NULL), ('k@sub.example.com', 'sub', NULL), ('k@other.com', 'other', NULL),
('someone@mail.example.com', 'mail', NULL), ('nul@example.com', NULL, NULL);
`;
}

function makeSqliteDb(file: string): void {
  const err = loadSqlite().sqliteExec(file, sqliteScript());
  if (err) throw new Error(`${file}: ${err.error}`);
  fs.chmodSync(file, 0o644);
}

/** Answers of the direct postmap for keys (one batch; the keys' values by key). */
async function oracle(conf: string, table: string, keys: string[]): Promise<Map<string, string | null>> {
  const r = await postmap(['-c', conf, '-q', '-', table], keys.join('\n') + '\n');
  assert.ok(r.stderr === '' || !/fatal/.test(r.stderr), `${table}: ${r.stderr}`);
  const out = new Map<string, string | null>(keys.map((k) => [k, null]));
  for (const line of r.stdout.toString('latin1').split('\n').filter(Boolean)) {
    const tab = line.indexOf('\t');
    out.set(line.slice(0, tab), line.slice(tab + 1));
  }
  return out;
}

/** Lookups on one proxied table from `clients` connections at once, each running `body`. */
async function withClients<T>(socket: string, table: string, clients: number, body: (t: ProxyTable, i: number, conn: ProxyConnection) => Promise<T>): Promise<T[]> {
  const conns = await Promise.all(Array.from({ length: clients }, () => ProxyConnection.connect(socket, { timeoutMs: 60_000 })));
  try {
    return await Promise.all(conns.map((c, i) => body(new ProxyTable(c, table, { dialect: 'legacy', smtputf8: true }), i, c)));
  } finally {
    for (const c of conns) c.close();
  }
}

/**
 * A UNIX-socket front for a database's TCP port that the test can cut: a
 * "host" that dies (every connection through it dropped, new ones refused)
 * and comes back.
 */
class Forwarder {
  private server?: net.Server;
  private readonly live = new Set<net.Socket>();
  /** connections accepted so far */
  accepted = 0;

  constructor(readonly socketPath: string, private readonly port: number) {}

  get open(): number {
    return this.live.size;
  }

  async up(): Promise<void> {
    fs.rmSync(this.socketPath, { force: true });
    const server = net.createServer((down) => {
      this.accepted++;
      const up = net.connect(this.port, '127.0.0.1');
      for (const [a, b] of [[down, up], [up, down]] as const) {
        this.live.add(a);
        a.on('error', () => b.destroy());
        a.on('close', () => {
          this.live.delete(a);
          b.destroy();
        });
        a.pipe(b);
      }
    });
    server.listen(this.socketPath);
    await once(server, 'listening');
    fs.chmodSync(this.socketPath, 0o777);
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = once(server, 'close');
    server.close();
    for (const s of this.live) s.destroy();
    await closed;
  }
}

describe('SQL tables through proxymapd, against the real postmap and real servers', { skip, timeout: 600_000 }, () => {
  let dir = '';
  let inst: Instance;
  const dbs: Partial<Record<'mysql' | 'pgsql', DbServer>> = {};
  const tables: { kind: string; name: string; table: string }[] = [];
  /** table names by purpose, per server kind */
  const slow: Record<string, string> = {};
  const outage: Record<string, string> = {};
  /** a table whose query fails (an SQL error on the server) for BOOM only */
  const boom: Record<string, string> = {};
  const failover: Record<string, { table: string; fwd: Forwarder }> = {};
  let sqliteDb = '';
  let sqliteMissing = '';
  let sqlitePlain = '';

  before(async () => {
    dir = fs.mkdtempSync('/tmp/pmd-sqlproxy-');
    fs.chmodSync(dir, 0o755);
    const [my, pg] = await Promise.all([startMariadb(), startPostgres()]);
    dbs.mysql = my;
    dbs.pgsql = pg;
    await Promise.all([loadData(my), loadData(pg)]);
    await pg.sql(`GRANT EXECUTE ON FUNCTION pg_sleep(double precision) TO ${pg.user};`);
    for (const db of [my, pg]) {
      const creds = credentials(db, `inet:127.0.0.1:${db.port}`);
      for (const c of CASES.filter((x) => !x.kinds || x.kinds.includes(db.kind))) {
        const f = writeCf(path.join(dir, `${db.kind}-${c.name}.cf`), creds + c.cf);
        tables.push({ kind: db.kind, name: c.name, table: `${db.kind}:${f}` });
      }
      // one query of about 10 ms, to keep connections busy
      slow[db.kind] = `${db.kind}:${writeCf(path.join(dir, `${db.kind}-slow.cf`), `${creds}query = SELECT dest FROM aliases, (SELECT ${db.kind === 'mysql' ? 'SLEEP' : 'pg_sleep'}(0.01)) AS s WHERE mailbox='%s'\n`)}`;
      // a UNIX host (preferred) that the test can kill, and the server's TCP port
      const fwdDir = path.join(dir, `${db.kind}-fwd`);
      fs.mkdirSync(fwdDir);
      const fwd = new Forwarder(db.kind === 'mysql' ? path.join(fwdDir, 'mysqld.sock') : path.join(fwdDir, '.s.PGSQL.5432'), db.port);
      await fwd.up();
      const fwdHost = db.kind === 'mysql' ? `unix:${fwd.socketPath}` : `unix:${fwdDir}`;
      const fcf = writeCf(path.join(dir, `${db.kind}-failover.cf`),
        `${credentials(db, `${fwdHost}, inet:127.0.0.1:${db.port}`)}${PLAIN}retry_interval = 2\nidle_interval = 3\n`);
      failover[db.kind] = { table: `${db.kind}:${fcf}`, fwd };
      outage[db.kind] = `${db.kind}:${writeCf(path.join(dir, `${db.kind}-outage.cf`), `${creds}${PLAIN}retry_interval = 1\n`)}`;
      // MySQL: "Subquery returns more than 1 row"; PostgreSQL: division by zero (in a subquery, so not folded at plan time)
      const failing = db.kind === 'mysql' ? '(SELECT 1 UNION SELECT 2)' : "(SELECT (1/count(*))::text FROM aliases WHERE mailbox='no such')";
      boom[db.kind] = `${db.kind}:${writeCf(path.join(dir, `${db.kind}-boom.cf`),
        `${creds}query = SELECT CASE WHEN '%s' = '${BOOM}' THEN ${failing} ELSE (SELECT dest FROM aliases WHERE mailbox='%s' ORDER BY dest LIMIT 1) END\nretry_interval = 1\n`)}`;
    }
    sqliteDb = path.join(dir, 'aliases.db');
    makeSqliteDb(sqliteDb);
    for (const c of CASES.filter((x) => !x.kinds || x.kinds.includes('sqlite'))) {
      const f = writeCf(path.join(dir, `sqlite-${c.name}.cf`), `dbpath = ${sqliteDb}\n${c.cf}`);
      tables.push({ kind: 'sqlite', name: c.name, table: `sqlite:${f}` });
    }
    sqlitePlain = tables.find((t) => t.kind === 'sqlite' && t.name === 'plain')!.table;
    sqliteMissing = `sqlite:${writeCf(path.join(dir, 'sqlite-missing.cf'), `dbpath = ${dir}/later.db\n${PLAIN}`)}`;
    // the main.cf form: TYPE:PREFIX reads PREFIX_hosts, PREFIX_query, ... from main.cf, with $name expansion
    const mainCf: Record<string, string> = { sql_test_db: 'pfx' };
    for (const db of [my, pg]) {
      const prefix = `${db.kind}prefix`;
      Object.assign(mainCf, {
        [`${prefix}_hosts`]: `inet:127.0.0.1:${db.port}`,
        [`${prefix}_user`]: db.user,
        [`${prefix}_password`]: db.password,
        [`${prefix}_dbname`]: '${sql_test_db}',
        [`${prefix}_query`]: "SELECT dest FROM aliases WHERE mailbox='%s'",
        [`${prefix}_result_format`]: 'via-main.cf:%s',
      });
      tables.push({ kind: db.kind, name: 'main.cf', table: `${db.kind}:${prefix}` });
    }
    const all = [...tables.map((t) => t.table), ...Object.values(slow), ...Object.values(outage), ...Object.values(boom), ...Object.values(failover).map((f) => f.table), sqliteMissing];
    inst = await startProxymapd({
      ...mainCf,
      compatibility_level: '3.6',
      proxy_read_maps: all.map((t) => `proxy:${t}`).join(' '),
      proxymapd_sql_max_connections: String(POOL_SIZE),
      proxymapd_sql_timeout: '5s',
    }, dir);
  });

  after(async () => {
    await inst?.stop();
    for (const f of Object.values(failover)) await f.fwd.down();
    await Promise.all(Object.values(dbs).map((db) => db.stop()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('postmap -q - proxy:TYPE:CF prints what postmap -q - TYPE:CF prints', async () => {
    const input = KEYS.join('\n') + '\n';
    let found = 0;
    for (const t of tables) {
      const direct = await postmap(['-c', inst.conf, '-q', '-', t.table], input);
      const proxied = await postmap(['-c', inst.conf, '-q', '-', `proxy:${t.table}`], input);
      const d = direct.stdout.toString('latin1');
      assert.equal(proxied.stdout.toString('latin1'), d, `${t.table}\n${proxied.stderr}\n${inst.log()}`);
      assert.equal(proxied.status, direct.status, `${t.table}\n${direct.stderr}\n${proxied.stderr}`);
      // a query error ends postmap on both paths
      assert.equal(/query error/.test(proxied.stderr), /query error/.test(direct.stderr), `${t.table}\n${direct.stderr}\n${proxied.stderr}`);
      if (t.name === 'limit') assert.match(direct.stderr, /query error/, `${t.table}: the expansion limit is reached`);
      if (t.name === 'main.cf') {
        for (const table of [t.table, `proxy:${t.table}`]) {
          const one = await postmap(['-c', inst.conf, '-q', 'k@example.com', table]);
          assert.equal(one.stdout.toString(), 'via-main.cf:kval\n', `${table}: main.cf parameters are used\n${one.stderr}`);
        }
      }
      found += d.split('\n').filter(Boolean).length;
    }
    assert.ok(found > 100, `the tables answer (${found} values)`);
  });

  for (const kind of ['mysql', 'pgsql'] as const) {
    it(`${kind}: 100 concurrent clients on several tables never exceed ${POOL_SIZE} server connections`, async () => {
      const db = dbs[kind]!;
      const keys = ['someone@example.com', 'k@example.com', 'multi@example.com', "o'neil@example.com", 'nobody@example.com'];
      const want = await oracle(inst.conf, slow[kind]!, keys);
      assert.equal(want.get('k@example.com'), 'kval');
      const plain = tables.find((t) => t.kind === kind && t.name === 'plain')!.table;
      const { result: rounds, peak, samples } = await sampleWhile(() => db.connections(), () =>
      withClients(inst.proxymap, slow[kind]!, 100, async (t, i, conn) => {
        // a quarter of the clients use another table of the same database: one pool for both
        const other = i % 4 === 0 ? new ProxyTable(conn, plain, { dialect: 'legacy', smtputf8: true }) : undefined;
        const bad: string[] = [];
        for (let n = 0; n < 6; n++) {
          const key = keys[(i + n) % keys.length]!;
          const r: ClientResult = await (other && n % 2 ? other : t).lookup(key);
          const got = answerOf(r);
          if (got !== want.get(key)) bad.push(`${key}: ${got} (want ${want.get(key)})`);
        }
        return bad;
      }), 25);
      const wrong = rounds.flat();
      assert.deepEqual(wrong, [], inst.log().slice(-2000));
      assert.ok(samples >= 5, `connections counted ${samples} times`);
      assert.ok(peak >= 1, 'the server saw proxymapd connect');
      assert.ok(peak <= POOL_SIZE, `peak ${peak} server connections > pool size ${POOL_SIZE}`);
    });

    it(`${kind}: a query that fails among pipelined ones: every other lookup gets its own answer or RETRY, never another's`, async () => {
      const keys = ['someone@example.com', 'k@example.com', 'multi@example.com', "o'neil@example.com", 'nobody@example.com', 'fmt@example.com'];
      const want = await oracle(inst.conf, boom[kind]!, keys);
      assert.equal(want.get('k@example.com'), 'kval');
      const direct = await postmap(['-c', inst.conf, '-q', BOOM, boom[kind]!]);
      assert.match(direct.stderr, /query/, `the direct lookup of ${BOOM} fails: ${direct.stderr}`);
      const seen = { found: 0, retry: 0, boomFound: 0 };
      const wrong = (
        await withClients(inst.proxymap, boom[kind]!, 60, async (t, i) => {
          const bad: string[] = [];
          for (let n = 0; n < 8; n++) {
            // a tenth of the clients send the failing key, in the middle of everyone's lookups
            const key = i % 10 === 0 && n === 4 ? BOOM : keys[(i + n) % keys.length]!;
            const r: ClientResult = await t.lookup(key);
            if (key === BOOM) {
              if (r.status === 'found') seen.boomFound++;
              continue;
            }
            if (r.status === 'error') {
              seen.retry++;
              continue;
            }
            const got = r.status === 'found' ? r.value : null;
            if (got !== want.get(key)) bad.push(`${key}: ${got} (want ${want.get(key)})`);
            else seen.found++;
          }
          return bad;
        })
      ).flat();
      assert.deepEqual(wrong, [], inst.log().slice(-2000));
      assert.equal(seen.boomFound, 0);
      assert.ok(seen.found > 100, `lookups answered (${JSON.stringify(seen)})`);
      assert.match(inst.log(), /query failed/);
    });

    it(`${kind}: a host that dies under load: the next host serves without an error; retry_interval and idle_interval as Postfix`, async () => {
      const { table, fwd } = failover[kind]!;
      const keys = ["o'neil@example.com", 'k@example.com', 'multi@example.com', 'fmt@example.com', 'nobody@example.com'];
      const want = await oracle(inst.conf, table, keys);
      const bad: string[] = [];
      let n = 0;
      let stop = false;
      const load = withClients(inst.proxymap, table, 10, async (t, i) => {
        for (let j = 0; !stop; j++) {
          const key = keys[(i + j) % keys.length]!;
          const r = await t.lookup(key);
          const got = answerOf(r);
          if (got !== want.get(key)) bad.push(`${key}: ${got}`);
          n++;
        }
      });
      let afterCut = 0;
      try {
        await sleep(700);
        // the UNIX host is preferred while it works
        assert.ok(fwd.accepted > 0 && fwd.open > 0, `connections go to the UNIX host first (${fwd.accepted})`);
        const cutAt = n;
        await fwd.down();
        await sleep(1000);
        afterCut = n - cutAt;
      } finally {
        stop = true;
        await load;
      }
      assert.deepEqual(bad, [], `no lookup fails or differs when a host dies (the next host is tried at once)\n${inst.log().slice(-1500)}`);
      assert.ok(afterCut > 50, `lookups go on through the TCP host (${afterCut})`);
      await fwd.up();
      const accepted = fwd.accepted;
      // the TCP host is ACTIVE now and keeps being used, while its connections are in use
      for (let i = 0; i < 5; i++) assert.equal((await postmap(['-c', inst.conf, '-q', 'k@example.com', `proxy:${table}`])).stdout.toString(), 'kval\n');
      assert.equal(fwd.accepted, accepted, 'an ACTIVE host is kept');
      // idle_interval (3 s) closes them; then the UNIX host, out of its retry_interval (2 s), is preferred again
      await sleep(4500);
      const r = await postmap(['-c', inst.conf, '-q', 'k@example.com', `proxy:${table}`]);
      assert.equal(r.stdout.toString(), 'kval\n', r.stderr);
      assert.ok(fwd.accepted > accepted, 'after the idle connections closed, the UNIX host is used again');
    });

    it(`${kind}: server stopped under load and restarted: RETRY meanwhile, no wrong answer, recovery without restart`, async () => {
      const db = dbs[kind]!;
      const keys = ["o'neil@example.com", 'k@example.com', 'multi@example.com', 'fmt@example.com'];
      const want = await oracle(inst.conf, outage[kind]!, keys);
      for (const k of keys) assert.notEqual(want.get(k), null, `${k} is found directly`);
      let phase: 'before' | 'down' | 'restarting' | 'up' = 'before';
      const counts = { before: { ok: 0, retry: 0 }, down: { ok: 0, retry: 0 }, restarting: { ok: 0, retry: 0 }, up: { ok: 0, retry: 0 } };
      const wrong: string[] = [];
      let stop = false;
      const load = withClients(inst.proxymap, outage[kind]!, 20, async (t, i) => {
        for (let n = 0; !stop; n++) {
          const key = keys[(i + n) % keys.length]!;
          const started = phase;
          const r = await t.lookup(key);
          // a lookup in flight when the server is killed belongs to the outage
          const p = started === 'before' && phase !== 'before' ? 'down' : started;
          if (r.status === 'found' && r.value === want.get(key)) counts[p].ok++;
          else if (r.status === 'error' && r.code === PROXY_STAT.RETRY) counts[p].retry++;
          else wrong.push(`${p}: ${key}: ${JSON.stringify(r)}`);
          if (r.status === 'error') await sleep(5);
        }
      });
      try {
        await sleep(1000);
        phase = 'down';
        await db.halt();
        await sleep(3000);
        phase = 'restarting';
        await db.start();
        // back within a few retry intervals (1 s) without any action on proxymapd
        const deadline = Date.now() + 20_000;
        const okBefore = counts.restarting.ok;
        while (counts.restarting.ok < okBefore + 50 && Date.now() < deadline) await sleep(100);
        phase = 'up';
        await sleep(1500);
      } finally {
        stop = true;
        await load;
      }
      assert.deepEqual(wrong, [], 'no lookup gets a wrong answer or "not found"');
      assert.ok(counts.before.ok > 0 && counts.before.retry === 0, `before: ${JSON.stringify(counts.before)}\n${inst.log().slice(-3000)}`);
      assert.ok(counts.down.retry > 0, `during the outage lookups get RETRY: ${JSON.stringify(counts.down)}`);
      assert.ok(counts.restarting.ok >= 50, `service resumes by itself: ${JSON.stringify(counts.restarting)}`);
      assert.ok(counts.up.ok > 0 && counts.up.retry === 0, `after recovery every lookup succeeds: ${JSON.stringify(counts.up)}`);
      assert.ok((await db.connections()) <= POOL_SIZE);
    });
  }

  it('sqlite: a locked database answers RETRY after the busy timeout, then recovers', async () => {
    const key = 'k@example.com';
    const before = await postmap(['-c', inst.conf, '-q', key, `proxy:${sqlitePlain}`]);
    assert.equal(before.stdout.toString(), 'kval\n');
    // another process holds an exclusive lock (readers are shut out in rollback-journal mode)
    const holder = spawn('python3', ['-c', `import sqlite3,sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('BEGIN EXCLUSIVE')
print('locked', flush=True)
sys.stdin.read()`, sqliteDb], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const [line] = (await once(holder.stdout!, 'data')) as [Buffer];
      assert.equal(line.toString().trim(), 'locked');
      const locked = await postmap(['-c', inst.conf, '-q', key, `proxy:${sqlitePlain}`]);
      assert.notEqual(locked.status, 0);
      assert.equal(locked.stdout.toString(), '');
      assert.match(locked.stderr, /query error/, 'a temporary error, not "not found"');
      assert.match(inst.log(), /database is locked/);
    } finally {
      holder.stdin!.end();
      await once(holder, 'exit');
    }
    const after = await postmap(['-c', inst.conf, '-q', key, `proxy:${sqlitePlain}`]);
    assert.equal(after.stdout.toString(), 'kval\n', after.stderr);
  });

  it('sqlite: a missing database is a temporary error, is not created, and is used once it appears', async () => {
    const file = path.join(dir, 'later.db');
    const key = 'k@example.com';
    const r = await postmap(['-c', inst.conf, '-q', key, `proxy:${sqliteMissing}`]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /query error/, r.stderr);
    assert.equal(fs.existsSync(file), false, 'the database is not created');
    assert.match(inst.log(), /open database .*later\.db/);
    // the daemon goes on serving other tables
    assert.equal((await postmap(['-c', inst.conf, '-q', key, `proxy:${sqlitePlain}`])).stdout.toString(), 'kval\n');
    const tmp = `${file}.tmp`;
    makeSqliteDb(tmp);
    fs.renameSync(tmp, file);
    const deadline = Date.now() + 30_000;
    let last = '';
    for (;;) {
      const q = await postmap(['-c', inst.conf, '-q', key, `proxy:${sqliteMissing}`]);
      last = q.stdout.toString();
      if (last === 'kval\n' || Date.now() > deadline) break;
      assert.match(q.stderr, /query error/);
      await sleep(500);
    }
    assert.equal(last, 'kval\n', 'the table is opened again once the database exists');
  });
});
