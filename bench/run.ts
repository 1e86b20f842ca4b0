/**
 * `npm run bench`: proxymapd versus the real Postfix proxymap(8), same
 * machine, same table, same load generator, in one run.
 *
 *   npm run bench -- [--scenario texthash|regexp|pcre|cidr|cdb|lmdb|hash|proxywrite|all] [--duration SEC]
 *                    [--warmup SEC] [--keys N] [--conns 1,20] [--rounds N]
 *                    [--workers N] [--only proxymapd|postfix] [--cpu-prof DIR]
 *                    [--json FILE] [--strict] ...
 *
 * Per scenario (bench/scenarios.ts: a table and a key set), both servers are
 * started fresh and run side by side:
 *
 *  1. expected answers: one run of the real `postmap -q - TYPE:FILE` over
 *     the key set (found value, or not found);
 *  2. open time: on a connection that has opened a small other table and
 *     looked a key up in it, the `open` of the scenario's table is timed
 *     until its reply, on `--open-samples` identical copies of the table
 *     (each a fresh table instance; the first is the first open of that
 *     type in a fresh server);
 *  3. verification: every key once over one connection; any reply that
 *     differs from postmap's answer fails the run;
 *  4. load: each round runs every connection count against each target in
 *     turn (interleaved, so drifting background load hits both alike); the
 *     report shows the median over the rounds;
 *  5. memory: resident set of proxymapd (VmRSS, of it RssAnon = heap and
 *     RssFile = mapped file pages) before the table is opened and after the
 *     load, and of the real proxymap process(es).
 *
 * The `proxywrite` scenario instead measures updates/s through proxymapd's
 * proxywrite service and the real proxywrite (bench/updates.ts), into an
 * lmdb and a btree table (the default proxy_write_maps types).
 *
 * The mysql and pgsql scenarios (bench/sql.ts) start a throwaway database
 * server first; each target gets its own .cf files (same query, its own
 * database user), and during every load run the connections that user holds
 * are counted on the server (column `db conns`: the most seen).
 *
 * The ldap scenario (bench/ldap.ts) does the same with a throwaway slapd:
 * one .cf per target differing only in the bind DN, and the connections
 * bound as each DN counted on slapd's side (cn=Monitor) during every run
 * (column `ldap conns`). It runs at --sql-conns, with --sql-rows entries and
 * --sql-pool (proxymapd_sql_max_connections sizes the LDAP pool too).
 *
 * The redis scenario (bench/redis.ts) serves one key set from two tables of
 * the same proxymapd: an lmdb table built by postmap and a throwaway
 * redis-server loaded with the same entries (target pmd-redis), every redis
 * answer checked against postmap's answer from the lmdb table; the real
 * proxymap serves the lmdb table beside them. Then updates/s through
 * proxymapd's proxywrite into a redis: and an lmdb cache, at --conns.
 *
 * The socketmap scenario looks the texthash table up through proxymapd's
 * socketmap front-end (proxymapd_socketmap_listen on a UNIX socket and on
 * 127.0.0.1, targets pmd-sm-unix and pmd-sm-inet; the node client of
 * bench/socketmap-load.ts, and loadgen.c -m) and through the proxymap
 * protocol of the same process.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildLoadgen, runCLoad, writePlan } from './cload.js';
import { ANNOUNCEMENT, postmapOracle, runLoad, timeOpens, type LoadResult, type OpenTiming } from './load.js';
import { buildScenario, INDEXED_SCENARIOS, SCENARIOS, type ScenarioData, type ScenarioName as FileScenario } from './scenarios.js';
import { runUpdates, type UpdateLoadResult } from './updates.js';
import { startLdapScenario } from './ldap.js';
import { peakWhile, startSqlScenario, type ServerScenario, type SqlKind } from './sql.js';
import { startRedisScenario, type RedisScenario } from './redis.js';
import { runSocketmapLoad, type SocketmapAddress } from './socketmap-load.js';
import { freePort } from '../test/sql/servers.js';
import {
  postfixAvailable,
  postfixUnavailableReason,
  startPostfixInstance,
  type PostfixInstance,
} from '../test/interop/postfix-instance.js';

/**
 * pmd+metrics: a second proxymapd with proxymapd_metrics_listen set (--metrics), measured beside the first;
 * pmd-redis (redis scenario): the redis: table of the first proxymapd; pmd-sm-unix, pmd-sm-inet (socketmap
 * scenario): the first proxymapd's socketmap front-end
 */
type Target = 'proxymapd' | 'postfix' | 'pmd+metrics' | 'pmd-redis' | 'pmd-sm-unix' | 'pmd-sm-inet';
/** Targets that are another view of the first proxymapd process (its memory is reported once). */
const SAME_PROCESS: readonly Target[] = ['pmd-redis', 'pmd-sm-unix', 'pmd-sm-inet'];
/** The database user (SQL, ldap scenarios) a target's tables connect as: every proxymapd uses proxymapd's. */
const dbUser = (t: Target): 'proxymapd' | 'postfix' => (t === 'postfix' ? 'postfix' : 'proxymapd');
type LoadGen = 'node' | 'c';
const LOADGENS: readonly LoadGen[] = ['node', 'c'];
type ScenarioName = FileScenario | SqlKind | 'ldap' | 'redis' | 'socketmap';
const SQL_SCENARIOS: readonly SqlKind[] = ['mysql', 'pgsql'];
/** Not in `all`: redis needs redis-server; socketmap is the texthash table through another protocol. */
const OTHER_SCENARIOS = ['ldap', 'redis', 'socketmap'] as const;
/** Per scenario, the ratios printed under its load table: [numerator, denominator, label]. */
const COMPARISONS: Partial<Record<ScenarioName, Array<[Target, Target, string]>>> = {
  redis: [['pmd-redis', 'proxymapd', 'redis/lmdb']],
  socketmap: [['pmd-sm-unix', 'proxymapd', 'sm-unix/pmap'], ['pmd-sm-inet', 'proxymapd', 'sm-inet/pmap']],
};
const isSql = (n: ScenarioName): n is SqlKind => (SQL_SCENARIOS as readonly string[]).includes(n);
/** Scenarios on a throwaway server whose connections are counted: mysql, pgsql, ldap. */
const isServer = (n: ScenarioName): n is SqlKind | 'ldap' => isSql(n) || n === 'ldap';
/** The connection counts a scenario runs at. */
const connsFor = (name: ScenarioName, args: Args): number[] => (isServer(name) ? args.sqlConns : args.conns);

interface Args {
  scenarios: ScenarioName[];
  durationSec: number;
  warmupSec: number;
  keys: number;
  regexpRules: number;
  cidrRules: number;
  patternKeys: number;
  indexedEntries: number;
  indexedLookups: number;
  updateConns: number[];
  openSamples: number;
  conns: number[];
  sqlConns: number[];
  sqlRows: number;
  sqlPool?: number;
  /** entries in the redis scenario's tables */
  redisEntries: number;
  /** extra main.cf lines for proxymapd (--pmd-param NAME=VALUE, repeatable) */
  pmdParams: string[];
  rounds: number;
  workers: number;
  /** load generators to run, each against both targets: node (bench/load.ts) and c (bench/loadgen.c) */
  loadgens: LoadGen[];
  only?: Target;
  cpuProfDir?: string;
  cpuProfIntervalUs?: number;
  json?: string;
  strict: boolean;
  /** also run a proxymapd with metrics on (file scenarios) */
  metrics: boolean;
}

const USAGE = `usage: npm run bench -- [options]
  --scenario NAME    texthash (default) | regexp | pcre | cidr | cdb | lmdb | hash | proxywrite | all (all of
                     these) | mysql | pgsql | sql (mysql and pgsql), or a comma list; mysql/pgsql start a
                     throwaway server (root) | ldap (a throwaway slapd, root) | redis (redis: vs lmdb through
                     proxymapd, a throwaway redis-server; lookups and updates) | socketmap (texthash through the
                     socketmap front-end vs the proxymap protocol)
  --duration SEC     measured time per run (default 3)
  --warmup SEC       warm-up per run, not measured (default 1)
  --keys N           keys in the texthash table (default 10000)
  --regexp-rules N   rules in the regexp and pcre tables (default 1000)
  --cidr-rules N     lines in the cidr table (default 100000)
  --pattern-keys N   keys looked up in the regexp, pcre and cidr tables (default 2000)
  --indexed-entries N  entries in the cdb, lmdb and hash tables (default 1000000)
  --indexed-lookups N  keys looked up in them (and in the redis scenario's), spread over the table, 10% absent
                     (default 50000)
  --redis-entries N  entries in the redis scenario's redis and lmdb tables (default 100000)
  --update-conns LIST  connection counts of the proxywrite scenario (default 1,4)
  --open-samples N   copies of the table whose open is timed; the median is reported (default 3)
  --conns LIST       connection counts (default 1,20; also of the redis scenario's updates)
  --sql-conns LIST   connection counts of the mysql, pgsql and ldap scenarios (default 1,50)
  --sql-rows N       rows in the mysql and pgsql tables, entries in the ldap directory (default 10000)
  --sql-pool N       proxymapd_sql_max_connections for proxymapd, the SQL and LDAP pool size (default: not set,
                     proxymapd's default, 4)
  --rounds N         interleaved rounds; the median is reported (default 3)
  --workers N        node load generator worker threads, 0 = main thread (default 0)
  --loadgen LIST     node | c | node,c (default node,c): the project's generator (bench/load.ts) and the
                     independent C one (bench/loadgen.c: a blocking thread per connection, as Postfix's clients)
  --only TARGET      proxymapd | postfix
  --pmd-param N=V    an extra main.cf parameter for proxymapd (repeatable), e.g. proxymapd_busy_poll_usec=0
  --cpu-prof DIR     run proxymapd under node --cpu-prof, profiles in DIR/<scenario>/
  --cpu-prof-interval US  sampling interval for --cpu-prof (node's default: 1000)
  --metrics          also run a second proxymapd with proxymapd_metrics_listen set (target pmd+metrics, file
                     scenarios), interleaved with the first: the cost of metrics, as the ratio on/off
  --json FILE        also write all raw results as JSON
  --strict           exit 1 when a target check fails`;

function parseArgs(argv: string[]): Args {
  const a: Args = {
    scenarios: ['texthash'],
    pmdParams: [],
    durationSec: 3,
    warmupSec: 1,
    keys: 10_000,
    regexpRules: 1000,
    cidrRules: 100_000,
    patternKeys: 2000,
    indexedEntries: 1_000_000,
    indexedLookups: 50_000,
    updateConns: [1, 4],
    openSamples: 3,
    conns: [1, 20],
    sqlConns: [1, 50],
    sqlRows: 10_000,
    redisEntries: 100_000,
    rounds: 3,
    workers: 0,
    loadgens: ['node', 'c'],
    strict: false,
    metrics: false,
  };
  const num = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min) throw new Error(`${name}: expected a number >= ${min}, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let opt = argv[i]!;
    let val: string | undefined;
    const eq = opt.indexOf('=');
    if (opt.startsWith('--') && eq > 0) {
      val = opt.slice(eq + 1);
      opt = opt.slice(0, eq);
    }
    const next = () => (val !== undefined ? val : argv[++i]);
    switch (opt) {
      case '--scenario': {
        const v = next() ?? '';
        const names = v.split(',').map((s) => s.trim()).flatMap((n) => (n === 'all' ? [...SCENARIOS] : n === 'sql' ? [...SQL_SCENARIOS] : [n]));
        for (const n of names) {
          if (!([...SCENARIOS, ...SQL_SCENARIOS, ...OTHER_SCENARIOS] as readonly string[]).includes(n)) {
            throw new Error(`--scenario: expected ${[...SCENARIOS, ...SQL_SCENARIOS, ...OTHER_SCENARIOS].join(', ')}, all or sql, got ${n}`);
          }
        }
        a.scenarios = [...new Set(names as ScenarioName[])];
        break;
      }
      case '--duration': a.durationSec = num(opt, next(), 0.1); break;
      case '--warmup': a.warmupSec = num(opt, next(), 0); break;
      case '--keys': a.keys = Math.floor(num(opt, next(), 1)); break;
      case '--regexp-rules': a.regexpRules = Math.floor(num(opt, next(), 10)); break;
      case '--cidr-rules': a.cidrRules = Math.floor(num(opt, next(), 10)); break;
      case '--pattern-keys': a.patternKeys = Math.floor(num(opt, next(), 1)); break;
      case '--indexed-entries': a.indexedEntries = Math.floor(num(opt, next(), 10)); break;
      case '--indexed-lookups': a.indexedLookups = Math.floor(num(opt, next(), 1)); break;
      case '--update-conns': {
        const v = next() ?? '';
        a.updateConns = v.split(',').map((x) => Math.floor(num(opt, x.trim(), 1)));
        break;
      }
      case '--open-samples': a.openSamples = Math.floor(num(opt, next(), 1)); break;
      case '--rounds': a.rounds = Math.floor(num(opt, next(), 1)); break;
      case '--workers': a.workers = Math.floor(num(opt, next(), 0)); break;
      case '--loadgen': {
        const names = (next() ?? '').split(',').filter(Boolean);
        for (const n of names) if (!(LOADGENS as readonly string[]).includes(n)) throw new Error(`--loadgen: expected node, c or node,c, got ${n}`);
        if (!names.length) throw new Error('--loadgen: expected node, c or node,c');
        a.loadgens = [...new Set(names as LoadGen[])];
        break;
      }
      case '--conns': {
        const v = next() ?? '';
        a.conns = v.split(',').map((s) => Math.floor(num(opt, s.trim(), 1)));
        break;
      }
      case '--sql-conns': {
        const v = next() ?? '';
        a.sqlConns = v.split(',').map((s) => Math.floor(num(opt, s.trim(), 1)));
        break;
      }
      case '--sql-rows': a.sqlRows = Math.floor(num(opt, next(), 10)); break;
      case '--sql-pool': a.sqlPool = Math.floor(num(opt, next(), 1)); break;
      case '--redis-entries': a.redisEntries = Math.floor(num(opt, next(), 10)); break;
      case '--pmd-param': {
        const v = next();
        if (!/^[A-Za-z0-9_]+ *= *[^\n]*$/.test(v)) throw new Error(`--pmd-param: expected NAME=VALUE, got ${v}`);
        a.pmdParams.push(v);
        break;
      }
      case '--only': {
        const v = next();
        if (v !== 'proxymapd' && v !== 'postfix') throw new Error(`--only: expected proxymapd or postfix, got ${v}`);
        a.only = v;
        break;
      }
      case '--cpu-prof': a.cpuProfDir = path.resolve(next() ?? ''); break;
      case '--cpu-prof-interval': a.cpuProfIntervalUs = Math.floor(num(opt, next(), 1)); break;
      case '--json': a.json = path.resolve(next() ?? ''); break;
      case '--strict': a.strict = true; break;
      case '--metrics': a.metrics = true; break;
      case '-h':
      case '--help':
        console.log(USAGE);
        process.exit(0);
      default:
        throw new Error(`unknown argument ${opt}\n${USAGE}`);
    }
  }
  return a;
}

// ---- processes, cleanup ---------------------------------------------------

const cleanups: Array<() => Promise<void>> = [];
let cleaning: Promise<void> | undefined;
function cleanupAll(): Promise<void> {
  if (!cleaning) {
    cleaning = (async () => {
      for (const c of cleanups.splice(0).reverse()) {
        try {
          await c();
        } catch (e) {
          console.error(`cleanup: ${(e as Error).message}`);
        }
      }
    })();
  }
  return cleaning;
}

/** Run (newest first) and drop the cleanups registered after `mark` = cleanups.length at some earlier point. */
async function unwindTo(mark: number): Promise<void> {
  while (cleanups.length > mark) {
    const c = cleanups.pop()!;
    try {
      await c();
    } catch (e) {
      console.error(`cleanup: ${(e as Error).message}`);
    }
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Connect, expect the proxymap announcement; bounded. */
function probe(sockPath: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    let done = false;
    const s = net.connect({ path: sockPath });
    const fin = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => fin(false), timeoutMs);
    s.on('error', () => fin(false));
    s.on('close', () => fin(false));
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= ANNOUNCEMENT.length) fin(got.subarray(0, ANNOUNCEMENT.length).equals(ANNOUNCEMENT));
    });
  });
}

interface Proxymapd {
  pid: number;
  socket: string;
  stderrTail(): string;
  stop(): Promise<void>;
}

async function startProxymapd(repo: string, confDir: string, socket: string, cpuProfDir?: string, cpuProfIntervalUs?: number): Promise<Proxymapd> {
  const main = path.join(repo, 'dist', 'cli', 'main.js');
  // as the README runs it (npm start, the master(8) wrapper): a small young generation
  const nodeArgs = ['--max-semi-space-size=2', ...(cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] : [])];
  if (cpuProfDir && cpuProfIntervalUs) nodeArgs.push('--cpu-prof-interval', String(cpuProfIntervalUs));
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, main, 'serve', '-c', confDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: repo,
  });
  let tail = '';
  const keep = (d: Buffer) => {
    tail = (tail + d.toString('utf8')).slice(-16_384);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let exited: string | undefined;
  const exitP = new Promise<void>((resolve) =>
    child.once('exit', (code, sig) => {
      exited = sig ? `signal ${sig}` : `exit status ${code}`;
      resolve();
    }),
  );
  child.once('error', (e) => {
    exited = e.message;
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (exited !== undefined || child.pid === undefined) return;
      child.kill('SIGTERM');
      await Promise.race([exitP, sleep(5000)]);
      if (exited === undefined) {
        child.kill('SIGKILL');
        await Promise.race([exitP, sleep(2000)]);
      }
    })();
    return stopping;
  };
  cleanups.push(stop);
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited !== undefined) throw new Error(`proxymapd exited during start (${exited}):\n${tail}`);
    if (fs.existsSync(socket) && (await probe(socket, 2000))) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`proxymapd did not answer on ${socket} within 20 s:\n${tail}`);
    }
    await sleep(50);
  }
  return { pid: child.pid!, socket, stderrTail: () => tail, stop };
}

/** GET /metrics over proxymapd_metrics_listen's UNIX socket. */
function scrapeMetrics(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: '/metrics', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics: HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('/metrics: timed out')));
  });
}

// ---- CPU accounting (/proc) -------------------------------------------------

const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 });
  const n = Number(r.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

/**
 * CPU ticks of a process and of its children that it has reaped: utime +
 * stime + cutime + cstime (fields 14-17). Counting the reaped children keeps
 * a sum over a process tree right when a child exits during a run (Postfix's
 * master replaces a proxymap process that reached max_use): the gone child
 * then reads 0 and its ticks reappear in master's cutime/cstime.
 */
function procTicks(pid: number): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  } catch {
    return 0;
  }
}

/** Busy ticks of the whole machine (all CPUs). */
function machineTicks(): number {
  try {
    const line = fs.readFileSync('/proc/stat', 'latin1').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    return v[0]! + v[1]! + v[2]! + v[5]! + v[6]! + (v[7] ?? 0);
  } catch {
    return 0;
  }
}

type Snapshot = { at: bigint; server: Map<number, number>; backend: Map<number, number>; self: number; machine: number };

/** `backendPids`: the database / directory server behind the tables (slapd), counted apart from "other". */
function snapshot(serverPids: number[], backendPids: number[] = []): Snapshot {
  return {
    at: process.hrtime.bigint(),
    server: new Map(serverPids.map((p) => [p, procTicks(p)])),
    backend: new Map(backendPids.map((p) => [p, procTicks(p)])),
    self: procTicks(process.pid),
    machine: machineTicks(),
  };
}

/** CPU use between two snapshots, in % of one core: server, load generator, backend, everything else. */
function cpuBetween(a: Snapshot, b: Snapshot): { server: number; client: number; backend: number; other: number } {
  const wallSec = Number(b.at - a.at) / 1e9;
  let server = 0;
  for (const [pid, t] of b.server) server += t - (a.server.get(pid) ?? 0);
  let backend = 0;
  for (const [pid, t] of b.backend) backend += t - (a.backend.get(pid) ?? 0);
  const client = b.self - a.self;
  const other = Math.max(0, b.machine - a.machine - server - client - backend);
  const pct = (ticks: number) => (ticks / CLK_TCK / wallSec) * 100;
  return { server: pct(server), client: pct(client), backend: pct(backend), other: pct(other) };
}

// ---- memory (/proc) ---------------------------------------------------------------

interface Memory {
  /** kB */
  rss: number;
  anon: number;
  file: number;
}

function memoryOf(pid: number): Memory | undefined {
  try {
    const st = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? NaN);
    return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') + kb('RssShmem') };
  } catch {
    return undefined;
  }
}

/** Summed over processes (the real proxymap may run several). */
function memorySum(pids: number[]): Memory | undefined {
  const ms = pids.map(memoryOf).filter((m): m is Memory => m !== undefined);
  if (!ms.length) return undefined;
  return ms.reduce((a, m) => ({ rss: a.rss + m.rss, anon: a.anon + m.anon, file: a.file + m.file }));
}

/** The proxymap(8) processes among a Postfix instance's processes. */
function proxymapPids(pids: number[]): number[] {
  return pids.filter((p) => {
    try {
      return fs.readFileSync(`/proc/${p}/comm`, 'latin1').trim() === 'proxymap';
    } catch {
      return false;
    }
  });
}

// ---- running ------------------------------------------------------------------

interface RunResult extends LoadResult {
  target: Target;
  loadgen: LoadGen;
  round: number;
  serverCpuPct: number;
  clientCpuPctProc: number;
  otherCpuPct: number;
  /** ldap: slapd's CPU (then not in otherCpuPct) */
  backendCpuPct?: number;
  /** SQL and ldap scenarios: the most database (LDAP) connections the target held during the run (counted on the server) */
  dbConns?: number;
}

interface TargetInfo {
  target: Target;
  /** the measured table and its copies for the open timing (SQL: per target, differing in the database user) */
  table: string;
  tables: string[];
  socket: string;
  pids: () => number[];
  /** the processes that hold the tables (proxymapd; the real proxymap processes) */
  tablePids: () => number[];
  /** looked up through the socketmap front-end (request name `name`) instead of the proxymap protocol */
  socketmap?: { address: SocketmapAddress; name: string };
}

interface MemoryResult {
  target: Target;
  /** before the scenario's table was opened (proxymapd: after serving the small table) */
  before?: Memory;
  /** after the load */
  after?: Memory;
}

interface OpenResult extends OpenTiming {
  target: Target;
}

interface VerifyResult {
  target: Target;
  lookups: number;
  errors: number;
  errorSamples: string[];
  lookupsPerSec: number;
}

interface ScenarioResult {
  name: ScenarioName;
  describe: string;
  table: string;
  keys: number;
  /** keys found according to postmap */
  found: number;
  targets: Target[];
  open: OpenResult[];
  verify: VerifyResult[];
  results: RunResult[];
  memory?: MemoryResult[];
  /** proxywrite scenario */
  updates?: Array<UpdateLoadResult & { target: Target; table: string; round: number }>;
  /** why a target (or the whole scenario) could not be measured */
  failures: string[];
  /** SQL: database connections each target opened during the whole scenario (counted on the server); ldap: those the samples saw */
  dbOpened?: Partial<Record<Target, number>>;
}

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((p, q) => p - q);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-');
const ratio = (a: number, b: number) => (Number.isFinite(a / b) ? (a / b).toFixed(2) + 'x' : '-');

function pad(cells: string[], widths: number[]): string {
  return cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
}

interface Ctx {
  args: Args;
  repo: string;
  tmp: string;
  /** configuration directory for postmap (compatibility_level only) */
  postmapConf: string;
  wantProxymapd: boolean;
  wantPostfix: boolean;
  notes: string[];
  /** the compiled C load generator, when --loadgen includes c */
  loadgenBin?: string;
}

async function runScenario(ctx: Ctx, name: ScenarioName): Promise<ScenarioResult> {
  const { args } = ctx;
  // Files readable by user postfix: the table, identical copies for the open
  // timing (each one a fresh table instance), and a small table for warming
  // up the connection.
  const dir = path.join(ctx.tmp, name);
  fs.mkdirSync(dir);
  fs.chmodSync(dir, 0o755);
  const mark = cleanups.length;
  let data: Pick<ScenarioData, 'describe' | 'keys'>;
  let sql: ServerScenario | undefined;
  let redis: RedisScenario | undefined;
  const tablesOf: Record<'proxymapd' | 'postfix', string[]> = { proxymapd: [], postfix: [] };
  if (isServer(name)) {
    process.stderr.write(`[${name}] starting a throwaway ${name === 'ldap' ? 'slapd' : `${name} server`} ... `);
    const starting = name === 'ldap' ? startLdapScenario(dir, args.sqlRows, args.openSamples) : startSqlScenario(name, dir, args.sqlRows, args.openSamples);
    cleanups.push(async () => (await starting.catch(() => undefined))?.stop());
    sql = await starting;
    process.stderr.write('ready\n');
    data = sql;
    tablesOf.proxymapd = sql.tables.proxymapd;
    tablesOf.postfix = sql.tables.postfix;
  } else {
    // redis: the lmdb table (built by postmap below) and a redis-server loaded with its entries; socketmap: texthash
    const file = buildScenario(name === 'redis' ? 'lmdb' : name === 'socketmap' ? 'texthash' : name, {
      texthashKeys: args.keys,
      regexpRules: args.regexpRules,
      cidrRules: args.cidrRules,
      patternKeys: args.patternKeys,
      indexedEntries: name === 'redis' ? args.redisEntries : args.indexedEntries,
      indexedKeys: args.indexedLookups,
    });
    data = file;
    if (name === 'redis') data = { ...file, describe: `${file.entries} keys in redis-server (UNIX socket) and in lmdb (built by postmap), both through proxymapd` };
    if (name === 'socketmap') data = { ...file, describe: `${file.describe} through the socketmap front-end and the proxymap protocol of one proxymapd` };
    // (indexed tables are built by postmap below)
    for (let i = 0; i < args.openSamples && !file.indexed; i++) {
      const f = path.join(dir, i === 0 ? `table.${file.type}` : `table-${i + 1}.${file.type}`);
      fs.writeFileSync(f, file.text, { mode: 0o644 });
      tablesOf.proxymapd.push(`${file.type}:${f}`);
    }
    tablesOf.postfix = tablesOf.proxymapd;
  }
  const small = path.join(dir, 'small');
  fs.writeFileSync(small, 'probe@example.com probe-ok\n', { mode: 0o644 });
  const smallTable = `texthash:${small}`;
  if (!isServer(name) && (data as ScenarioData).indexed) {
    // Built once by the real postmap; the other open samples are copies of the built file.
    const file = data as ScenarioData;
    tablesOf.proxymapd = [];
    const src = path.join(dir, 'table');
    fs.writeFileSync(src, file.text, { mode: 0o644 });
    process.stderr.write(`[${name}] postmap ${file.type}:${src} ... `);
    const t0 = Date.now();
    const b = spawnSync('postmap', ['-c', ctx.postmapConf, `${file.type}:${src}`], { encoding: 'utf8', timeout: 600_000 });
    if (b.status !== 0) throw new Error(`postmap ${file.type}:${src}: ${b.stderr || b.error?.message}`);
    const suffix = file.type === 'hash' || file.type === 'btree' ? '.db' : `.${file.type}`;
    process.stderr.write(`${fmt((Date.now() - t0) / 1000, 1)} s, ${fmt(fs.statSync(src + suffix).size / 1048576, 1)} MiB\n`);
    tablesOf.proxymapd.push(`${file.type}:${src}`);
    for (let i = 1; i < args.openSamples; i++) {
      const f = path.join(dir, `table-${i + 1}`);
      fs.copyFileSync(src + suffix, f + suffix);
      tablesOf.proxymapd.push(`${file.type}:${f}`);
    }
    tablesOf.postfix = tablesOf.proxymapd;
  }
  const table = tablesOf.proxymapd[0]!;
  /** main.cf lines of the first proxymapd that the scenario needs, and its own targets on that process */
  let scenarioCf = '';
  let writeTables: string[] = [];
  const ownTargets: Array<Pick<TargetInfo, 'target' | 'table' | 'tables' | 'socketmap'>> = [];
  if (name === 'redis') {
    process.stderr.write(`[${name}] starting a throwaway redis-server, loading ${(data as ScenarioData).entries} entries ... `);
    const starting = startRedisScenario(dir, (data as ScenarioData).text, args.openSamples);
    cleanups.push(async () => (await starting.catch(() => undefined))?.stop());
    redis = await starting;
    process.stderr.write('ready\n');
    ownTargets.push({ target: 'pmd-redis', table: redis.lookupTables[0]!, tables: redis.lookupTables });
    fs.mkdirSync(path.join(dir, 'cache'));
    writeTables = [redis.updateTable, `lmdb:${path.join(dir, 'cache', 'verify_cache')}`];
    scenarioCf = `proxy_write_maps = ${writeTables.map((t) => `proxy:${t}`).join(' ')}\n`;
  }
  if (name === 'socketmap') {
    const port = await freePort();
    const unix = path.join(dir, 'socketmap.sock');
    scenarioCf = `proxymapd_socketmap_listen = unix:${unix} inet:127.0.0.1:${port}\nproxymapd_socketmap_maps = bench=${table}\n`;
    ownTargets.push(
      { target: 'pmd-sm-unix', table, tables: [], socketmap: { address: { path: unix }, name: 'bench' } },
      { target: 'pmd-sm-inet', table, tables: [], socketmap: { address: { host: '127.0.0.1', port }, name: 'bench' } },
    );
  }
  const readMaps = [...new Set([smallTable, ...tablesOf.proxymapd, ...tablesOf.postfix, ...(redis?.lookupTables ?? [])])].map((t) => `proxy:${t}`).join(' ');
  const sr: ScenarioResult = {
    name,
    describe: data.describe,
    table,
    keys: data.keys.length,
    found: 0,
    targets: [],
    open: [],
    verify: [],
    results: [],
    memory: [],
    failures: [],
  };

  // 1. expected answers
  process.stderr.write(`[${name}] ${data.describe}, ${data.keys.length} keys; postmap -q - ... `);
  const oracle = postmapOracle(table, data.keys, { configDir: ctx.postmapConf });
  sr.found = oracle.found;
  process.stderr.write(`${oracle.found} found (${fmt(oracle.elapsedMs)} ms)\n`);
  if (oracle.stderr.trim()) {
    const lines = oracle.stderr.trim().split('\n');
    ctx.notes.push(`${name}: postmap warned about the table: ${lines.slice(0, 3).join(' | ')}${lines.length > 3 ? ` (+${lines.length - 3} more)` : ''}`);
  }
  const expected = oracle.expected;

  try {
    // 2. fresh servers
    const targets: TargetInfo[] = [];
    let metricsSocket: string | undefined;
    /** redis: the first proxymapd's proxywrite socket and the tables the update runs write */
    let writer: { socket: string; tables: string[] } | undefined;
    const variants: Array<{ target: Target; extra: (base: string) => string }> = [];
    if (ctx.wantProxymapd) {
      variants.push({ target: 'proxymapd', extra: () => '' });
      if (args.metrics && !sql) variants.push({ target: 'pmd+metrics', extra: (base) => `proxymapd_metrics_listen = ${path.join(base, 'metrics.sock')}\n` });
    }
    for (const v of variants) {
      const base = path.join(dir, v.target === 'proxymapd' ? 'proxymapd' : 'proxymapd-metrics');
      const conf = path.join(base, 'conf');
      const queue = path.join(base, 'queue');
      fs.mkdirSync(conf, { recursive: true });
      fs.mkdirSync(queue, { recursive: true });
      const pool = sql && args.sqlPool ? `proxymapd_sql_max_connections = ${args.sqlPool}\n` : '';
      const own = v.target === 'proxymapd' ? scenarioCf : '';
      fs.writeFileSync(path.join(conf, 'main.cf'), `queue_directory = ${queue}\nproxy_read_maps = ${readMaps}\ncompatibility_level = 3.6\n${pool}${own}${v.extra(base)}${args.pmdParams.map((l) => `${l}\n`).join('')}`);
      const profDir = args.cpuProfDir ? path.join(args.cpuProfDir, name, v.target) : undefined;
      if (profDir) fs.mkdirSync(profDir, { recursive: true });
      process.stderr.write(`[${name}] starting ${v.target} ... `);
      const pmd = await startProxymapd(ctx.repo, conf, path.join(queue, 'private', 'proxymap'), profDir, args.cpuProfIntervalUs);
      process.stderr.write(`pid ${pmd.pid}\n`);
      targets.push({ target: v.target, table: tablesOf.proxymapd[0]!, tables: tablesOf.proxymapd, socket: pmd.socket, pids: () => [pmd.pid], tablePids: () => [pmd.pid] });
      if (v.target === 'proxymapd') {
        for (const o of ownTargets) targets.push({ ...o, socket: pmd.socket, pids: () => [pmd.pid], tablePids: () => [pmd.pid] });
        if (writeTables.length) writer = { socket: path.join(queue, 'private', 'proxywrite'), tables: writeTables };
      }
      if (v.target === 'pmd+metrics') metricsSocket = path.join(base, 'metrics.sock');
      cleanups.push(async () => {
        // surface warnings/errors proxymapd logged during the run
        const bad = pmd
          .stderrTail()
          .split('\n')
          .filter((l) => /(warning|error|fatal|panic):/.test(l));
        if (bad.length) console.error(`[${name}] ${v.target} logged:\n  ${bad.slice(-10).join('\n  ')}`);
      });
    }
    if (ctx.wantPostfix) {
      process.stderr.write(`[${name}] starting real Postfix instance ... `);
      const starting = startPostfixInstance({ mainCf: { proxy_read_maps: readMaps } });
      // registered before the start completes, so an interrupt during the start still stops it
      cleanups.push(async () => (await starting.catch(() => undefined))?.stop());
      const inst: PostfixInstance = await starting;
      if (interrupted) throw new Error('interrupted');
      process.stderr.write(`master pid ${inst.masterPid} (${inst.dir})\n`);
      targets.push({
        target: 'postfix',
        table: tablesOf.postfix[0]!,
        tables: tablesOf.postfix,
        socket: inst.proxymapSocket,
        pids: () => inst.processes(),
        tablePids: () => proxymapPids(inst.processes()),
      });
    }

    // 3. open time, on a connection that has served a lookup on the small table
    const live: TargetInfo[] = [];
    for (const t of targets) {
      if (interrupted) throw new Error('interrupted');
      if (!SAME_PROCESS.includes(t.target)) sr.memory!.push({ target: t.target, before: t.target !== 'postfix' ? memorySum(t.tablePids()) : undefined });
      if (t.socketmap) {
        // socketmap has no open request: the table is the proxymapd target's, opened by the time it is measured
        live.push(t);
        continue;
      }
      try {
        const o = await timeOpens({
          socketPath: t.socket,
          warmTable: smallTable,
          warmKey: 'probe@example.com',
          tables: t.tables,
          check: { key: data.keys[0]!, expected: expected[0]! },
        });
        sr.open.push({ target: t.target, ...o });
        console.error(
          `[${name}] ${t.target.padEnd(9)} open ${o.openMs.map((x) => fmt(x, 1)).join(', ')} ms; first lookup after it ${o.firstLookupMs.map((x) => fmt(x, 2)).join(', ')} ms`,
        );
        live.push(t);
      } catch (e) {
        const msg = `${name}: ${t.target}: opening ${t.table} failed: ${(e as Error).message}`;
        sr.failures.push(msg);
        console.error(`[${name}] ${t.target}: ${(e as Error).message}; not measured`);
      }
    }
    sr.targets = live.map((t) => t.target);

    /** The node load generator on a target, over its protocol; every reply checked against postmap's answer. */
    const nodeLoad = (t: TargetInfo, o: { connections: number; durationMs?: number; warmupMs: number; requests?: number; workers: number; requestTimeoutMs?: number }) => {
      const { workers, ...rest } = o;
      return t.socketmap
        ? runSocketmapLoad({ address: t.socketmap.address, name: t.socketmap.name, keys: data.keys, expected, ...rest })
        : runLoad({ socketPath: t.socket, table: t.table, keys: data.keys, expected, workers, ...rest });
    };

    // 4. every key once, every reply checked against postmap's answer
    for (const t of live) {
      if (interrupted) throw new Error('interrupted');
      const r = await nodeLoad(t, { connections: 1, requests: data.keys.length, warmupMs: 0, workers: 0, requestTimeoutMs: 30_000 });
      sr.verify.push({ target: t.target, lookups: r.lookups, errors: r.errors, errorSamples: r.errorSamples, lookupsPerSec: r.lookupsPerSec });
      console.error(
        `[${name}] ${t.target.padEnd(9)} verified ${r.lookups} keys (${fmt(r.lookupsPerSec)}/s): ` +
          (r.errors ? `${r.errors} MISMATCHES: ${r.errorSamples.join('; ')}` : 'all as postmap answers'),
      );
    }

    // 5. load
    const plan = path.join(dir, 'loadgen.plan');
    if (ctx.loadgenBin) writePlan(plan, data.keys, expected);
    for (let round = 1; round <= args.rounds; round++) {
      for (const conns of connsFor(name, args)) {
        for (const gen of args.loadgens) {
        for (const t of live) {
          if (interrupted) throw new Error('interrupted');
          const backendPids = sql?.serverPids?.() ?? redis?.pid() ?? [];
          const before = snapshot(t.pids(), backendPids);
          const counting = sql ? peakWhile(() => sql!.connections(dbUser(t.target))) : undefined;
          const r =
            gen === 'c'
              ? await runCLoad({
                  binary: ctx.loadgenBin!,
                  plan,
                  socketPath: !t.socketmap ? t.socket : 'path' in t.socketmap.address ? t.socketmap.address.path : `inet:${t.socketmap.address.host}:${t.socketmap.address.port}`,
                  table: t.table,
                  connections: conns,
                  durationMs: args.durationSec * 1000,
                  warmupMs: args.warmupSec * 1000,
                  socketmap: t.socketmap?.name,
                })
              : await nodeLoad(t, { connections: conns, durationMs: args.durationSec * 1000, warmupMs: args.warmupSec * 1000, workers: args.workers });
          const after = snapshot([...new Set([...before.server.keys(), ...t.pids()])], backendPids);
          const dbConns = await counting?.stop();
          const cpu = cpuBetween(before, after);
          if (interrupted) throw new Error('interrupted');
          sr.results.push({ ...r, target: t.target, loadgen: gen, round, serverCpuPct: cpu.server, clientCpuPctProc: cpu.client, otherCpuPct: cpu.other, dbConns,
            ...(backendPids.length ? { backendCpuPct: cpu.backend } : {}) });
          const mem = sr.memory?.find((m) => m.target === t.target);
          if (mem) mem.after = memorySum(t.tablePids());
          console.error(
            `[${name}] round ${round}: ${gen.padEnd(4)} ${t.target.padEnd(9)} ${String(conns).padStart(3)} conn  ${fmt(r.lookupsPerSec).padStart(7)}/s  ` +
              `p50 ${fmt(r.p50Us, 1)} µs  p99 ${fmt(r.p99Us, 1)} µs  cpu server ${fmt(cpu.server)}% client ${fmt(cpu.client)}%${backendPids.length ? ` ${redis ? 'redis' : 'slapd'} ${fmt(cpu.backend)}%` : ''} other ${fmt(cpu.other)}%` +
              (dbConns !== undefined ? `  db connections ${dbConns}` : '') +
              (r.errors ? `  ERRORS ${r.errors}: ${r.errorSamples.join('; ')}` : ''),
          );
        }
        }
      }
    }
    // redis: updates/s through the same proxymapd's proxywrite, redis vs lmdb
    if (writer) {
      sr.updates = [];
      await updateRounds(ctx, sr, [{ target: 'proxymapd', ...writer }], args.conns);
      // what was written is there: counted on redis-server, listed by the real postmap from the lmdb file
      const inRedis = await redis!.written();
      const lmdb = writer.tables.find((t) => t.startsWith('lmdb:'))!;
      const q = spawnSync('postmap', ['-c', ctx.postmapConf, '-s', lmdb], { encoding: 'latin1', timeout: 60_000, maxBuffer: 1 << 28 });
      const inLmdb = q.stdout.split('\n').filter(Boolean).length;
      console.error(`[${name}] written: ${inRedis} keys in redis-server, ${inLmdb} entries listed by postmap -s ${lmdb}`);
      if (inRedis === 0) sr.failures.push(`${writer.tables[0]}: no keys written to redis-server`);
      if (q.status !== 0 || inLmdb === 0) sr.failures.push(`${lmdb}: postmap -s: status ${q.status}, ${inLmdb} entries: ${q.stderr}`);
    }
    if (metricsSocket) {
      const t0 = performance.now();
      const text = await scrapeMetrics(metricsSocket);
      const lookups = [...text.matchAll(/^proxymapd_requests_total\{[^}]*request="lookup"[^}]*\} (\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
      const made = sr.results.filter((r) => r.target === 'pmd+metrics').reduce((a, r) => a + r.lookups, 0);
      console.error(`[${name}] pmd+metrics: /metrics scraped in ${fmt(performance.now() - t0, 1)} ms, ${text.length} bytes; lookups counted ${lookups} (measured ${made}, plus verification and warm-up)`);
    }
    if (sql) {
      sr.dbOpened = {};
      for (const t of live) sr.dbOpened[t.target] = await sql.opened(dbUser(t.target));
    }
  } finally {
    await unwindTo(mark);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return sr;
}

// ---- report -------------------------------------------------------------------

interface Agg {
  rate: number;
  p50: number;
  p99: number;
  server: number;
  client: number;
  other: number;
  /** ldap: slapd's CPU */
  backend?: number;
  errors: number;
  /** SQL: the most database connections held in any run */
  dbConns?: number;
}

function agg(sr: ScenarioResult, target: Target, conns: number, gen: LoadGen): Agg | undefined {
  const rs = sr.results.filter((r) => r.target === target && r.connections === conns && r.loadgen === gen);
  if (!rs.length) return undefined;
  return {
    rate: median(rs.map((r) => r.lookupsPerSec)),
    p50: median(rs.map((r) => r.p50Us)),
    p99: median(rs.map((r) => r.p99Us)),
    server: median(rs.map((r) => r.serverCpuPct)),
    client: median(rs.map((r) => r.clientCpuPctProc)),
    other: median(rs.map((r) => r.otherCpuPct)),
    backend: rs.some((r) => r.backendCpuPct !== undefined) ? median(rs.map((r) => r.backendCpuPct ?? NaN)) : undefined,
    errors: rs.reduce((a, r) => a + r.errors, 0),
    dbConns: rs.some((r) => r.dbConns !== undefined) ? Math.max(...rs.map((r) => r.dbConns ?? 0)) : undefined,
  };
}

function openOf(sr: ScenarioResult, target: Target): { first: number; median: number; firstLookup: number } | undefined {
  const o = sr.open.find((x) => x.target === target);
  if (!o) return undefined;
  return { first: o.openMs[0]!, median: median(o.openMs), firstLookup: o.firstLookupMs[0] ?? NaN };
}

function printScenario(sr: ScenarioResult, args: Args): void {
  console.log('');
  console.log(`== ${sr.name}: ${sr.describe}; ${sr.keys} keys, ${sr.found} found by postmap (${fmt((100 * sr.found) / sr.keys)}%), the rest expected not found`);
  for (const f of sr.failures) console.log(`   FAILED: ${f}`);
  if (sr.open.length) {
    const w = [10, 14, 16, 16];
    console.log(pad(['open', 'first (ms)', `median of ${args.openSamples}`, '1st lookup ms'], w));
    for (const t of sr.targets) {
      const o = openOf(sr, t);
      if (o) console.log(pad([t, fmt(o.first, 1), fmt(o.median, 1), fmt(o.firstLookup, 2)], w));
    }
    const m = openOf(sr, 'proxymapd');
    const p = openOf(sr, 'postfix');
    if (m && p) console.log(pad(['ratio', ratio(m.first, p.first), ratio(m.median, p.median), ratio(m.firstLookup, p.firstLookup)], w));
  }
  if (sr.dbOpened) {
    console.log(
      sr.name === 'ldap'
        ? `LDAP connections seen by the 100 ms samples during the load runs (distinct slapd connection numbers): ${Object.entries(sr.dbOpened).map(([t, n]) => `${t} ${n}`).join(', ')}`
        : `database connections opened during the scenario (all runs): ${Object.entries(sr.dbOpened).map(([t, n]) => `${t} ${n}`).join(', ')}`,
    );
  }
  for (const v of sr.verify) {
    if (v.errors) console.log(`   ${v.target}: ${v.errors} replies differ from postmap's answers: ${v.errorSamples.join('; ')}`);
  }
  if (!sr.results.length) return;
  for (const gen of args.loadgens) printLoad(sr, args, gen);
  printMemory(sr);
  printUpdates(sr, false);
}

const GEN_TITLE: Record<LoadGen, string> = {
  node: 'node load generator (bench/load.ts)',
  c: 'C load generator (bench/loadgen.c, a blocking thread per connection)',
};

function printLoad(sr: ScenarioResult, args: Args, gen: LoadGen): void {
  if (!sr.results.some((r) => r.loadgen === gen)) return;
  console.log(`-- ${GEN_TITLE[gen]}`);
  const sqlCols = isServer(sr.name);
  const backCol = sr.results.some((r) => r.backendCpuPct !== undefined);
  const w = [11, 6, 10, 9, 9, 11, 11, 11, ...(backCol ? [10] : []), 9, 7, ...(sqlCols ? [10] : [])];
  console.log(pad(['target', 'conns', 'lookups/s', 'p50 µs', 'p99 µs', 'server CPU', 'µs CPU/lkp', 'client CPU', ...(backCol ? [sr.name === 'redis' ? 'redis CPU' : 'slapd CPU'] : []), 'other CPU', 'errors',
    ...(sqlCols ? [sr.name === 'ldap' ? 'ldap conns' : 'db conns'] : [])], w));
  for (const conns of connsFor(sr.name, args)) {
    for (const t of sr.targets) {
      const a = agg(sr, t, conns, gen);
      if (!a) continue;
      console.log(
        pad(
          [t, String(conns), fmt(a.rate), fmt(a.p50, 1), fmt(a.p99, 1), fmt(a.server) + '%', fmt(((a.server / 100) * 1e6) / a.rate, 1), fmt(a.client) + '%',
            ...(backCol ? [fmt(a.backend ?? NaN) + '%'] : []), fmt(a.other) + '%', String(a.errors),
            ...(sqlCols ? [a.dbConns === undefined ? '-' : String(a.dbConns)] : [])],
          w,
        ),
      );
    }
  }
  for (const [num, den, label] of COMPARISONS[sr.name] ?? []) {
    if (!sr.targets.includes(num) || !sr.targets.includes(den) || !agg(sr, num, connsFor(sr.name, args)[0]!, gen)) continue;
    console.log(pad([label, 'conns', 'lookups/s', 'p50', 'p99', 'µs CPU/lkp'], [12, 6, 10, 9, 9, 11]));
    for (const conns of connsFor(sr.name, args)) {
      const a = agg(sr, num, conns, gen)!;
      const b = agg(sr, den, conns, gen)!;
      console.log(pad(['', String(conns), ratio(a.rate, b.rate), ratio(a.p50, b.p50), ratio(a.p99, b.p99), ratio(a.server / a.rate, b.server / b.rate)], [12, 6, 10, 9, 9, 11]));
    }
  }
  if (sr.targets.includes('proxymapd') && sr.targets.includes('pmd+metrics')) {
    console.log(pad(['metrics on/off', 'conns', 'lookups/s', 'p50', 'p99', 'µs CPU/lkp'], [14, 6, 10, 9, 9, 11]));
    for (const conns of connsFor(sr.name, args)) {
      const on = agg(sr, 'pmd+metrics', conns, gen)!;
      const off = agg(sr, 'proxymapd', conns, gen)!;
      console.log(pad(['', String(conns), ratio(on.rate, off.rate), ratio(on.p50, off.p50), ratio(on.p99, off.p99), ratio(on.server / on.rate, off.server / off.rate)], [14, 6, 10, 9, 9, 11]));
    }
  }
  if (sr.targets.includes('proxymapd') && sr.targets.includes('postfix')) {
    console.log(pad(['pmd/pfx', 'conns', 'lookups/s', 'p50', 'p99'], [10, 6, 10, 9, 9]));
    for (const conns of connsFor(sr.name, args)) {
      const m = agg(sr, 'proxymapd', conns, gen)!;
      const p = agg(sr, 'postfix', conns, gen)!;
      console.log(pad(['', String(conns), ratio(m.rate, p.rate), ratio(m.p50, p.p50), ratio(m.p99, p.p99)], [10, 6, 10, 9, 9]));
    }
  }
}

function printMemory(sr: ScenarioResult): void {
  if (!sr.memory?.some((m) => m.after)) return;
  const mb = (kb: number | undefined) => (kb === undefined ? '-' : fmt(kb / 1024, 1));
  const w = [10, 13, 13, 13, 13];
  console.log(pad(['memory MiB', 'RSS before', 'RSS after', 'anon after', 'file after'], w));
  for (const m of sr.memory) {
    console.log(pad([m.target, mb(m.before?.rss), mb(m.after?.rss), mb(m.after?.anon), mb(m.after?.file)], w));
  }
  console.log('  (before = server started, small table served, scenario table not yet opened; file = mapped file pages, shared with the page cache;');
  console.log('   postfix = the sum over its proxymap processes)');
}

// ---- proxywrite: updates/s ------------------------------------------------------

async function runUpdateScenario(ctx: Ctx): Promise<ScenarioResult> {
  const { args } = ctx;
  const name: ScenarioName = 'proxywrite';
  const dir = path.join(ctx.tmp, name);
  fs.mkdirSync(dir);
  fs.chmodSync(dir, 0o755);
  const sr: ScenarioResult = {
    name,
    describe: 'updates/s through proxywrite into lmdb and btree caches (verify(8) flags)',
    table: '',
    keys: 10_000,
    found: 0,
    targets: [],
    open: [],
    verify: [],
    results: [],
    updates: [],
    failures: [],
  };
  // Each target writes its own files; the real proxywrite runs as postfix and needs a directory it may write.
  const tablesFor = (who: string) => {
    const d = path.join(dir, who);
    fs.mkdirSync(d);
    if (who === 'postfix') {
      const uid = Number(spawnSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).stdout.trim());
      fs.chownSync(d, uid, -1);
    }
    return [`lmdb:${d}/verify_cache`, `btree:${d}/verify_cache`];
  };
  const mark = cleanups.length;
  try {
    const targets: Array<{ target: Target; socket: string; tables: string[] }> = [];
    if (ctx.wantProxymapd) {
      const tables = tablesFor('proxymapd');
      const base = path.join(dir, 'proxymapd-srv');
      const conf = path.join(base, 'conf');
      const queue = path.join(base, 'queue');
      fs.mkdirSync(conf, { recursive: true });
      fs.mkdirSync(queue, { recursive: true });
      fs.writeFileSync(
        path.join(conf, 'main.cf'),
        `queue_directory = ${queue}\nproxy_write_maps = ${tables.map((t) => `proxy:${t}`).join(' ')}\ncompatibility_level = 3.6\n` +
          args.pmdParams.map((l) => `${l}\n`).join(''),
      );
      process.stderr.write(`[${name}] starting proxymapd ... `);
      const profDir = args.cpuProfDir ? path.join(args.cpuProfDir, name) : undefined;
      const pmd = await startProxymapd(ctx.repo, conf, path.join(queue, 'private', 'proxymap'), profDir, args.cpuProfIntervalUs);
      process.stderr.write(`pid ${pmd.pid}\n`);
      targets.push({ target: 'proxymapd', socket: path.join(queue, 'private', 'proxywrite'), tables });
    }
    if (ctx.wantPostfix) {
      const tables = tablesFor('postfix');
      process.stderr.write(`[${name}] starting real Postfix instance ... `);
      const starting = startPostfixInstance({ mainCf: { proxy_write_maps: tables.map((t) => `proxy:${t}`).join(' ') } });
      cleanups.push(async () => (await starting.catch(() => undefined))?.stop());
      const inst = await starting;
      process.stderr.write(`master pid ${inst.masterPid}\n`);
      targets.push({ target: 'postfix', socket: inst.proxywriteSocket, tables });
    }
    sr.targets = targets.map((t) => t.target);
    await updateRounds(ctx, sr, targets, args.updateConns);
    // Servers stopped (the real proxywrite holds an exclusive lock on a btree from its open on), what was
    // written must read back through the real postmap.
    await unwindTo(mark);
    for (const t of targets) {
      for (const table of t.tables) {
        const q = spawnSync('postmap', ['-c', ctx.postmapConf, '-s', table], { encoding: 'latin1', timeout: 60_000, maxBuffer: 1 << 28 });
        const n = q.stdout.split('\n').filter(Boolean).length;
        if (q.status !== 0 || n === 0) sr.failures.push(`${t.target} ${table}: postmap -s: status ${q.status}, ${n} entries: ${q.stderr}`);
        else console.error(`[${name}] ${t.target.padEnd(9)} ${table}: postmap -s lists ${n} entries`);
      }
    }
  } finally {
    await unwindTo(mark);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return sr;
}

/**
 * Update runs into sr.updates: each round, for each table position, each connection count, each target in turn
 * (interleaved, as the lookup rounds). A target's tables are `TYPE:NAME`, one type per position.
 */
async function updateRounds(ctx: Ctx, sr: ScenarioResult, targets: Array<{ target: Target; socket: string; tables: string[] }>, connsList: number[]): Promise<void> {
  const { args } = ctx;
  const kinds = Math.max(...targets.map((t) => t.tables.length));
  for (let round = 1; round <= args.rounds; round++) {
    for (let kind = 0; kind < kinds; kind++) {
      for (const conns of connsList) {
        for (const t of targets) {
          if (interrupted) throw new Error('interrupted');
          const table = t.tables[kind];
          if (!table) continue;
          const type = table.slice(0, table.indexOf(':'));
          const r = await runUpdates({ socketPath: t.socket, table, connections: conns, durationMs: args.durationSec * 1000, warmupMs: args.warmupSec * 1000 });
          sr.updates!.push({ ...r, target: t.target, table: type, round });
          console.error(
            `[${sr.name}] round ${round}: ${t.target.padEnd(9)} ${type.padEnd(5)} ${String(conns).padStart(2)} conn  ${fmt(r.updatesPerSec).padStart(6)} updates/s  ` +
              `p50 ${fmt(r.p50Us, 0)} µs  p99 ${fmt(r.p99Us, 0)} µs` +
              (r.errors ? `  ERRORS ${r.errors}: ${r.errorSamples.join('; ')}` : ''),
          );
          if (r.errors) sr.failures.push(`${t.target} ${table}: ${r.errors} failed updates: ${r.errorSamples.join('; ')}`);
        }
      }
    }
  }
}

/** The update table; `header`: the scenario's title too (proxywrite; the redis scenario prints it with its lookups). */
function printUpdates(sr: ScenarioResult, header: boolean): void {
  if (!sr.updates?.length) return;
  console.log('');
  if (header) {
    console.log(`== ${sr.name}: ${sr.describe}`);
    for (const f of sr.failures) console.log(`   FAILED: ${f}`);
  } else {
    console.log('-- updates through proxywrite (bench/updates.ts, verify(8) flags)');
  }
  const w = [10, 6, 6, 10, 9, 9];
  console.log(pad(['target', 'table', 'conns', 'updates/s', 'p50 µs', 'p99 µs'], w));
  const med = (t: Target, table: string, conns: number) => {
    const rs = sr.updates!.filter((u) => u.target === t && u.table === table && u.connections === conns);
    return rs.length ? { rate: median(rs.map((u) => u.updatesPerSec)), p50: median(rs.map((u) => u.p50Us)), p99: median(rs.map((u) => u.p99Us)) } : undefined;
  };
  const tables = [...new Set(sr.updates.map((u) => u.table))];
  for (const conns of new Set(sr.updates.map((u) => u.connections))) {
    for (const table of tables) {
      for (const t of sr.targets) {
        const m = med(t, table, conns);
        if (m) console.log(pad([t, table, String(conns), fmt(m.rate), fmt(m.p50), fmt(m.p99)], w));
      }
      const a = med('proxymapd', table, conns);
      const b = med('postfix', table, conns);
      if (a && b) console.log(pad(['pmd/pfx', table, String(conns), ratio(a.rate, b.rate), ratio(a.p50, b.p50), ratio(a.p99, b.p99)], w));
    }
    const r = med('proxymapd', 'redis', conns);
    const l = med('proxymapd', 'lmdb', conns);
    if (r && l) console.log(pad(['redis/lmdb', '', String(conns), ratio(r.rate, l.rate), ratio(r.p50, l.p50), ratio(r.p99, l.p99)], w));
  }
}

interface Check {
  ok: boolean;
  text: string;
}

/** The issue's targets for one scenario (both targets measured). */
function checks(sr: ScenarioResult, args: Args): Check[] {
  const out: Check[] = [];
  if (sr.targets.includes('proxymapd') && sr.targets.includes('pmd+metrics')) {
    for (const gen of args.loadgens) {
      for (const conns of connsFor(sr.name, args)) {
        const on = agg(sr, 'pmd+metrics', conns, gen)!;
        const off = agg(sr, 'proxymapd', conns, gen)!;
        out.push({ ok: on.rate >= 0.95 * off.rate, text: `${sr.name}, ${conns} connection(s) (${gen}): metrics on cost < 5% of lookups/s (${ratio(on.rate, off.rate)}: ${fmt(on.rate)} vs ${fmt(off.rate)})` });
      }
    }
  }
  if (!(sr.targets.includes('proxymapd') && sr.targets.includes('postfix'))) return out;
  // no targets: their proxymapd-vs-postfix tables are the lmdb and texthash scenarios', checked there
  if (COMPARISONS[sr.name]) return out;
  if (sr.name === 'proxywrite') {
    for (const table of ['lmdb', 'btree']) {
      for (const conns of args.updateConns) {
        const rate = (t: Target) => median(sr.updates!.filter((u) => u.target === t && u.table === table && u.connections === conns).map((u) => u.updatesPerSec));
        const [m, p] = [rate('proxymapd'), rate('postfix')];
        out.push({ ok: m >= p, text: `proxywrite ${table}, ${conns} connection(s): updates/s >= postfix (${ratio(m, p)}: ${fmt(m)} vs ${fmt(p)})` });
      }
    }
    return out;
  }
  const mem = sr.memory?.find((x) => x.target === 'proxymapd');
  if ((INDEXED_SCENARIOS as readonly string[]).includes(sr.name) && mem?.before && mem.after) {
    const grew = (mem.after.anon - mem.before.anon) / 1024;
    out.push({ ok: grew < 32, text: `${sr.name}: proxymapd's heap (RssAnon) does not grow with the table (+${fmt(grew, 1)} MiB with ${sr.describe} open and looked up)` });
  }
  if (sr.name === 'texthash') {
    // at the highest connection count >= 1.6x the throughput; at 1 connection a p50 no worse than Postfix's and
    // at least its throughput; with each load generator
    for (const gen of args.loadgens) {
      const hi = Math.max(...args.conns);
      if (hi > 1) {
        const m = agg(sr, 'proxymapd', hi, gen)!;
        const p = agg(sr, 'postfix', hi, gen)!;
        out.push({ ok: m.rate >= 1.6 * p.rate, text: `texthash, ${hi} connections (${gen}): throughput >= 1.6x postfix (${ratio(m.rate, p.rate)}: ${fmt(m.rate)} vs ${fmt(p.rate)} lookups/s)` });
      }
      if (args.conns.includes(1)) {
        const m = agg(sr, 'proxymapd', 1, gen)!;
        const p = agg(sr, 'postfix', 1, gen)!;
        out.push({ ok: m.p50 <= p.p50, text: `texthash, 1 connection (${gen}): p50 latency no worse than postfix (${fmt(m.p50, 1)} vs ${fmt(p.p50, 1)} µs, ${ratio(m.p50, p.p50)})` });
        out.push({ ok: m.rate >= p.rate, text: `texthash, 1 connection (${gen}): lookups/s >= postfix (${ratio(m.rate, p.rate)}: ${fmt(m.rate)} vs ${fmt(p.rate)})` });
      }
    }
    return out;
  }
  for (const conns of connsFor(sr.name, args)) for (const gen of args.loadgens) {
    const m = agg(sr, 'proxymapd', conns, gen)!;
    const p = agg(sr, 'postfix', conns, gen)!;
    const want = isSql(sr.name) && conns > 1 ? 1.3 : sr.name === 'ldap' ? 1.2 : 1;
    // ldap: the 1-connection figures are reported, with no target (issue 12)
    if (sr.name !== 'ldap' || conns > 1) {
      out.push({ ok: m.rate >= want * p.rate, text: `${sr.name}, ${conns} connection(s) (${gen}): lookups/s >= ${want === 1 ? '' : `${want}x `}postfix (${ratio(m.rate, p.rate)}: ${fmt(m.rate)} vs ${fmt(p.rate)})` });
    }
    if (isServer(sr.name)) {
      const pool = args.sqlPool ?? 4;
      out.push({
        ok: (m.dbConns ?? Infinity) <= pool,
        text: `${sr.name}, ${conns} connection(s) (${gen}): proxymapd held <= ${pool} ${sr.name === 'ldap' ? 'LDAP' : 'database'} connections (${m.dbConns ?? '-'}; postfix ${p.dbConns ?? '-'})`,
      });
    }
  }
  const m = openOf(sr, 'proxymapd')!;
  const p = openOf(sr, 'postfix')!;
  out.push({ ok: m.first <= p.first, text: `${sr.name}: open time in a fresh server no worse than postfix (${fmt(m.first, 1)} vs ${fmt(p.first, 1)} ms, ${ratio(m.first, p.first)})` });
  if (args.openSamples > 1) {
    out.push({
      ok: m.median <= p.median,
      text: `${sr.name}: open time, median of ${args.openSamples} fresh tables, no worse than postfix (${fmt(m.median, 1)} vs ${fmt(p.median, 1)} ms, ${ratio(m.median, p.median)})`,
    });
  }
  return out;
}

function printSummary(all: ScenarioResult[], args: Args): void {
  const both = all.filter((s) => s.targets.includes('proxymapd') && s.targets.includes('postfix') && s.name !== 'proxywrite' && !COMPARISONS[s.name]);
  if (all.length < 2 || !both.length) return;
  console.log('');
  console.log('== summary (proxymapd vs postfix; medians over rounds)');
  const w = [14, 5, 10, 10, 6, 8, 8, 8, 8];
  console.log(pad(['scenario', 'conns', 'pmd lkp/s', 'pfx lkp/s', 'ratio', 'pmd p50', 'pfx p50', 'pmd p99', 'pfx p99'], w));
  for (const sr of both) {
    for (const conns of connsFor(sr.name, args)) {
      for (const gen of args.loadgens) {
      const m = agg(sr, 'proxymapd', conns, gen)!;
      const p = agg(sr, 'postfix', conns, gen)!;
      console.log(pad([`${sr.name}/${gen}`, String(conns), fmt(m.rate), fmt(p.rate), ratio(m.rate, p.rate), fmt(m.p50, 1), fmt(p.p50, 1), fmt(m.p99, 1), fmt(p.p99, 1)], w));
      }
    }
  }
  const wo = [9, 12, 12, 6, 14, 14, 6];
  console.log(pad(['open ms', 'pmd first', 'pfx first', 'ratio', `pmd median/${args.openSamples}`, `pfx median/${args.openSamples}`, 'ratio'], wo));
  for (const sr of both) {
    const m = openOf(sr, 'proxymapd')!;
    const p = openOf(sr, 'postfix')!;
    console.log(pad([sr.name, fmt(m.first, 1), fmt(p.first, 1), ratio(m.first, p.first), fmt(m.median, 1), fmt(p.median, 1), ratio(m.median, p.median)], wo));
  }
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const notes: string[] = [];

  let wantProxymapd = args.only !== 'postfix';
  let wantPostfix = args.only !== 'proxymapd';
  const cliMain = path.join(repo, 'dist', 'cli', 'main.js');
  if (wantProxymapd && !fs.existsSync(cliMain)) {
    notes.push(`proxymapd NOT benchmarked: ${path.relative(repo, cliMain)} does not exist (npm run build)`);
    wantProxymapd = false;
  }
  if (wantPostfix && !postfixAvailable()) {
    notes.push(`real Postfix NOT benchmarked: ${postfixUnavailableReason()}; proxymapd alone`);
    wantPostfix = false;
  }
  if (!wantProxymapd && !wantPostfix) {
    for (const n of notes) console.error(n);
    return 1;
  }

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-bench-'));
  fs.chmodSync(tmp, 0o755);
  cleanups.push(async () => fs.rmSync(tmp, { recursive: true, force: true }));
  const postmapConf = path.join(tmp, 'postmap-conf');
  fs.mkdirSync(postmapConf);
  fs.writeFileSync(path.join(postmapConf, 'main.cf'), 'compatibility_level = 3.6\n');
  if (args.cpuProfDir) fs.mkdirSync(args.cpuProfDir, { recursive: true });

  const version = spawnSync('postconf', ['-dh', 'mail_version'], { encoding: 'utf8', timeout: 5000 }).stdout?.trim() ?? '';
  console.log(
    `proxymap benchmark: ${args.scenarios.join(', ')}; legacy lookups, ${args.rounds} round(s) x ${args.warmupSec}s warm-up + ${args.durationSec}s per run, ` +
      `load generators: ${args.loadgens.map((g) => (g === 'node' ? `node (${args.workers ? `${args.workers} worker thread(s)` : 'main thread'})` : 'C')).join(', ')}; node ${process.version}, ` +
      `${os.cpus().length} CPUs${version ? `, Postfix ${version}` : ''}; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
  );

  const ctx: Ctx = { args, repo, tmp, postmapConf, wantProxymapd, wantPostfix, notes };
  if (args.loadgens.includes('c')) ctx.loadgenBin = buildLoadgen(tmp);
  const scenarios: ScenarioResult[] = [];
  for (const name of args.scenarios) {
    if (interrupted) throw new Error('interrupted');
    try {
      scenarios.push(name === 'proxywrite' ? await runUpdateScenario(ctx) : await runScenario(ctx, name));
    } catch (e) {
      if (interrupted) throw e;
      const msg = (e as Error).message;
      console.error(`[${name}] FAILED: ${msg}`);
      scenarios.push({ name, describe: '', table: '', keys: 0, found: 0, targets: [], open: [], verify: [], results: [], failures: [`${name}: ${msg}`] });
    }
  }

  // ---- report ----
  for (const sr of scenarios) {
    if (sr.name === 'proxywrite') printUpdates(sr, true);
    else printScenario(sr, args);
  }
  console.log('');
  console.log('(medians over rounds; CPU in % of one core over warm-up + measurement; "other" = rest of the machine (ldap: slapd apart);');
  console.log(' postfix server CPU = all of the instance\'s processes: master handles proxymap\'s busy/idle notices around every request;');
  console.log(' open = client-side time from the open request to its reply, on a connection that already served a lookup)');
  printSummary(scenarios, args);

  const all = scenarios.flatMap((s) => s.results);
  const busiest = Math.max(0, ...all.map((r) => r.otherCpuPct));
  if (busiest > 20) {
    notes.push(
      `other processes used up to ${fmt(busiest)}% of a core during the runs: absolute figures are unreliable ` +
        `(a busy machine also changes wake-up latency); compare "µs CPU/lkp", or rerun on a quiet machine`,
    );
  }

  let checksFailed = false;
  const cs = scenarios.flatMap((sr) => checks(sr, args));
  if (cs.length) {
    console.log('');
    console.log('targets:');
    for (const c of cs) {
      checksFailed ||= !c.ok;
      console.log(`  ${c.ok ? 'PASS' : 'FAIL'}  ${c.text}`);
    }
    if (args.rounds < 3) console.log('  (fewer than 3 rounds: single runs on a shared machine are noisy)');
  }
  for (const n of notes) console.log(`NOTE: ${n}`);

  if (args.json) {
    fs.writeFileSync(args.json, JSON.stringify({ args, notes, scenarios }, null, 2));
    console.log(`raw results: ${args.json}`);
  }
  let code = 0;
  const failures = scenarios.flatMap((s) => s.failures);
  if (failures.length) {
    console.log(`FAILED: ${failures.join('\n        ')}`);
    code = 1;
  }
  const mismatches = scenarios.flatMap((s) => s.verify).reduce((a, v) => a + v.errors, 0);
  if (mismatches) {
    console.log(`ERRORS: ${mismatches} replies differ from postmap's answers (see above)`);
    code = 1;
  }
  const errors = all.reduce((a, r) => a + r.errors, 0);
  if (errors) {
    console.log(`ERRORS: ${errors} failed lookups under load (see above)`);
    code = 1;
  }
  if (notes.some((n) => n.startsWith('proxymapd NOT'))) code = 1;
  if (code) return code;
  return args.strict && checksFailed ? 1 : 0;
}

// ---- entry: bounded, always cleaned up ----------------------------------------

let exitCode: number | undefined;
let interrupted = false;
/** Clean up (once; later callers wait for the same cleanup), then exit with the first code asked for. */
async function exitWith(code: number): Promise<never> {
  exitCode ??= code;
  setTimeout(() => process.exit(exitCode ?? 1), 30_000).unref();
  await cleanupAll();
  process.exit(exitCode);
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    interrupted = true;
    console.error(`\n${sig}: cleaning up`);
    void exitWith(130);
  });
}
process.on('unhandledRejection', (e) => {
  if (!interrupted) console.error('unhandled rejection:', e);
  void exitWith(1);
});

// Hard bound on the whole run, from the arguments (parsed again in main).
{
  let limitMs = 15 * 60_000;
  try {
    const a = parseArgs(process.argv.slice(2));
    // redis: three targets and the update runs; socketmap: four targets
    const targetRuns = (n: ScenarioName) => (n === 'redis' || n === 'socketmap' ? 5 : 2);
    const perScenario = (n: ScenarioName) => a.rounds * Math.max(a.conns.length, a.sqlConns.length) * targetRuns(n) * a.loadgens.length * (a.durationSec + a.warmupSec + 15) + 240;
    limitMs = (a.scenarios.reduce((sum, n) => sum + perScenario(n), 0) + 60) * 1000;
  } catch {
    /* main reports the error */
  }
  setTimeout(() => {
    console.error(`benchmark exceeded ${Math.round(limitMs / 1000)} s; aborting`);
    void exitWith(1);
  }, limitMs).unref();
}

main().then(
  (code) => exitWith(code),
  (e: unknown) => {
    if (!interrupted) console.error(e instanceof Error ? e.message : e);
    return exitWith(1);
  },
);
