/**
 * A throwaway redis-server (and redis-sentinel) for the redis: table tests
 * (shared/spec/test-servers.md): listens on a free 127.0.0.1 port and on a
 * UNIX socket in its own temporary directory, keeps nothing on disk unless
 * halted with a save, and can be stopped and started again on the same
 * port and socket (outage tests). Every wait is bounded. Outside CI a
 * missing redis-server makes the tests skip; in CI (CI=true) it is a
 * failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../../sql/servers.js';
import { skipUnlessPresent } from '../../support/skip.js';

const REDIS_SERVER = ['/usr/bin/redis-server', '/usr/sbin/redis-server'].find((p) => fs.existsSync(p));
const REDIS_SENTINEL = ['/usr/bin/redis-sentinel', '/usr/sbin/redis-sentinel'].find((p) => fs.existsSync(p));

/** Why redis tests must skip (outside CI), or false. */
export function redisSkipReason(): string | false {
  return skipUnlessPresent(!REDIS_SERVER && 'redis-server is not installed (apt-get install redis-server)');
}

/** Why Sentinel tests must skip (outside CI), or false. */
export function sentinelSkipReason(): string | false {
  return skipUnlessPresent((!REDIS_SERVER || !REDIS_SENTINEL) && 'redis-sentinel is not installed (apt-get install redis-sentinel)');
}

export interface RedisServer {
  readonly dir: string;
  readonly port: number;
  readonly socket: string;
  /** `inet:127.0.0.1:PORT` */
  readonly inet: string;
  /** `unix:PATH` */
  readonly unix: string;
  /** A client of our own (database 0 unless given), closed by stop(). */
  client(db?: number): Redis;
  /** Kill the server; with save, SAVE first so that start() brings the data back. */
  halt(save?: boolean): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly running: boolean;
}

export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

export async function until(what: string, ms: number, probe: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function kill(p: ChildProcess | null): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = once(p, 'exit');
  p.kill('SIGKILL');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
}

/** A client that fails fast instead of queueing while the server is away. */
function quickClient(o: { port: number; db?: number }): Redis {
  return new Redis({ host: '127.0.0.1', port: o.port, db: o.db ?? 0, maxRetriesPerRequest: 1, connectTimeout: 5000, lazyConnect: false });
}

/** Start a redis-server; `args` are extra command-line settings (`--requirepass x`, `--replicaof ...`). */
export async function startRedis(args: string[] = [], opts: { dir?: string } = {}): Promise<RedisServer> {
  if (!REDIS_SERVER) throw new Error('redis-server is not installed');
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-redis-'));
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, 0o777);
  const port = await freePort();
  const socket = path.join(dir, `redis-${port}.sock`);
  const clients: Redis[] = [];
  let child: ChildProcess | null = null;
  let stderr = '';

  const start = async () => {
    if (child) return;
    const argv = [
      '--port', String(port), '--bind', '127.0.0.1', '--unixsocket', socket, '--unixsocketperm', '777',
      '--save', '', '--appendonly', 'no', '--dir', dir, '--dbfilename', `dump-${port}.rdb`, '--daemonize', 'no',
      '--protected-mode', 'no', '--loglevel', 'warning', ...args,
    ];
    const c = spawn(REDIS_SERVER, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    c.stdout!.on('data', (b: Buffer) => (stderr += b.toString()));
    c.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    child = c;
    await until(`redis-server on port ${port} (${stderr.slice(-300)})`, 15_000, async () => {
      if (c.exitCode !== null) throw new Error(`redis-server exited ${c.exitCode}: ${stderr.slice(-500)}`);
      return canConnect(port);
    });
  };
  const halt = async (save = false) => {
    if (save && child) {
      const r = quickClient({ port });
      try {
        await r.call('SAVE');
      } finally {
        r.disconnect();
      }
    }
    const c = child;
    child = null;
    await kill(c);
    await until('redis-server to stop', 10_000, async () => !(await canConnect(port)));
  };
  await start();
  return {
    dir,
    port,
    socket,
    inet: `inet:127.0.0.1:${port}`,
    unix: `unix:${socket}`,
    client(db = 0) {
      const r = quickClient({ port, db });
      r.on('error', () => undefined);
      clients.push(r);
      return r;
    },
    halt,
    start,
    async stop() {
      for (const r of clients) r.disconnect();
      await halt();
      if (!opts.dir) fs.rmSync(dir, { recursive: true, force: true });
    },
    get running() {
      return child !== null;
    },
  };
}

export interface Sentinel {
  readonly port: number;
  stop(): Promise<void>;
}

/** A redis-sentinel watching `master` on 127.0.0.1:masterPort with quorum 1 and quick failovers. */
export async function startSentinel(dir: string, master: string, masterPort: number): Promise<Sentinel> {
  if (!REDIS_SENTINEL) throw new Error('redis-sentinel is not installed');
  const port = await freePort();
  const conf = path.join(dir, `sentinel-${port}.conf`);
  // Sentinel rewrites its configuration file: it must be writable
  fs.writeFileSync(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      'protected-mode no',
      `dir ${dir}`,
      `sentinel monitor ${master} 127.0.0.1 ${masterPort} 1`,
      `sentinel down-after-milliseconds ${master} 1000`,
      `sentinel failover-timeout ${master} 5000`,
      `sentinel parallel-syncs ${master} 1`,
      '',
    ].join('\n'),
  );
  let out = '';
  const c = spawn(REDIS_SENTINEL, [conf, '--loglevel', 'warning'], { stdio: ['ignore', 'pipe', 'pipe'] });
  c.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  c.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  await until(`redis-sentinel on port ${port}`, 15_000, async () => {
    if (c.exitCode !== null) throw new Error(`redis-sentinel exited ${c.exitCode}: ${out.slice(-500)}`);
    return canConnect(port);
  });
  return {
    port,
    async stop() {
      await kill(c);
    },
  };
}
