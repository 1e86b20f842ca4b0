/**
 * The connections of the redis: tables: a small round-robin set of ioredis
 * clients, shared (through dbcommon/pool.ts sharedPool) by every redis
 * table that connects the same way, and seen by metrics, /readyz and the
 * control socket's status like the SQL pools.
 *
 * ioredis pipelines any number of commands on one connection and answers
 * them in order, so unlike SqlPool a lookup never waits for a free
 * connection: it takes the next client in turn. A client is made on first
 * use and keeps its connection; ioredis reconnects on its own with a
 * back-off (RECONNECT_MAX_MS at most), so a Redis that comes back is used
 * again without a restart.
 *
 * Outages answer "try again", never "not found", and quickly: no offline
 * queue (a command while disconnected fails at once), no resend of
 * commands after a reconnect, `timeout` for a connect and for each command.
 * A lookup finding its client still connecting waits for it up to the
 * timeout; one finding it between reconnect attempts fails at once.
 * Several `hosts` are tried in the order written: a client whose server is
 * down moves to the next host. With `sentinels` ioredis asks Sentinel for
 * the master and follows failovers (it also subscribes to +switch-master);
 * a READONLY reply (a demoted master) makes the client reconnect.
 *
 * Warnings (connection errors, failed commands) are rate limited: one line
 * per WARN_INTERVAL_MS per pool, the next one saying how many were left out.
 */
import type { Redis, RedisOptions } from 'ioredis';
import type { ConnectionOptions } from 'node:tls';
import type { PoolStats, SharedPool } from '../dbcommon/pool.js';
import { log } from '../../log.js';
import type { RedisConnect, RedisTarget } from './redis-cf.js';

/** The longest pause between reconnect attempts. */
export const RECONNECT_MAX_MS = 1000;
/** At most one warning per this long per pool. */
export const WARN_INTERVAL_MS = 10_000;

/** The client class. */
export type RedisClient = typeof Redis;

let ioredis: Promise<RedisClient> | undefined;

/**
 * ioredis, loaded when the first redis table opens: loading it costs tens
 * of milliseconds, which every proxymapd process start would pay otherwise.
 */
export function loadRedisClient(): Promise<RedisClient> {
  ioredis ??= import('ioredis').then((m) => m.Redis);
  return ioredis;
}

/** Returned by `run` when the command must answer RETRY. */
export const REDIS_RETRY: unique symbol = Symbol('REDIS_RETRY');

/** One warning line per interval, counting the ones left out. */
export class Throttle {
  private last = -Infinity;
  private dropped = 0;

  constructor(
    private readonly warn: (text: string) => void,
    private readonly intervalMs = WARN_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  say(text: string): void {
    const t = this.now();
    if (t - this.last < this.intervalMs) {
      this.dropped++;
      return;
    }
    this.last = t;
    const more = this.dropped > 0 ? ` (${this.dropped} similar warning${this.dropped === 1 ? '' : 's'} not logged)` : '';
    this.dropped = 0;
    this.warn(text + more);
  }
}

interface Slot {
  client: Redis;
  /** index into hosts (0 with sentinels) */
  host: number;
  inFlight: number;
  /** the wait for this client's connection, shared by the lookups that found it connecting */
  pending: Promise<boolean> | undefined;
  /** the client's last connection error since it was last ready */
  failed: boolean;
}

function tlsOptions(c: RedisConnect, target: RedisTarget | undefined): ConnectionOptions | undefined {
  if (!c.tls && !target?.tls) return undefined;
  const t = c.tls;
  const o: ConnectionOptions = {};
  if (t?.ca) o.ca = t.ca;
  if (t?.cert) o.cert = t.cert;
  if (t?.key) o.key = t.key;
  if (t && !t.verify) {
    o.rejectUnauthorized = false;
    o.checkServerIdentity = () => undefined;
  }
  return o;
}

export class RedisPool implements SharedPool {
  private readonly slots: (Slot | undefined)[];
  private next = 0;
  private closed = false;
  private waiting = 0;
  private peak = 0;
  /** a connection failed since one was last ready (for the one "restored" line) */
  private down = false;
  private readonly throttle: Throttle;

  constructor(
    private readonly Client: RedisClient,
    private readonly c: RedisConnect,
    size: number,
    readonly label: string,
    warn: (text: string) => void,
    throttle?: Throttle,
  ) {
    this.slots = Array.from({ length: Math.max(1, size) }, () => undefined);
    this.throttle = throttle ?? new Throttle(warn);
  }

  /** A warning through the pool's rate limit. */
  warn(text: string): void {
    this.throttle.say(text);
  }

  private targetLabel(s: { host: number }): string {
    return this.c.sentinels.length > 0 ? `sentinel master ${this.c.sentinelMaster}` : this.c.hosts[s.host]!.label;
  }

  private options(host: number): RedisOptions {
    const c = this.c;
    const common: RedisOptions = {
      username: c.user || undefined,
      password: c.password || undefined,
      db: c.database,
      connectTimeout: c.timeoutMs,
      commandTimeout: c.timeoutMs,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      autoResubscribe: false,
      retryStrategy: (times) => Math.min(times * 100, RECONNECT_MAX_MS),
      reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 1 : false),
      connectionName: 'proxymapd',
    };
    if (c.sentinels.length > 0) {
      const tls = tlsOptions(c, undefined);
      return {
        ...common,
        sentinels: c.sentinels,
        name: c.sentinelMaster,
        role: 'master',
        sentinelUsername: c.sentinelUser || undefined,
        sentinelPassword: c.sentinelPassword || undefined,
        sentinelRetryStrategy: (times) => Math.min(times * 100, RECONNECT_MAX_MS),
        failoverDetector: true,
        ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
      };
    }
    const t = c.hosts[host]!;
    const tls = tlsOptions(c, t);
    return {
      ...common,
      ...(t.kind === 'unix' ? { path: t.path } : { host: t.host, port: t.port }),
      ...(t.username !== undefined ? { username: t.username } : {}),
      ...(t.password !== undefined ? { password: t.password } : {}),
      ...(t.database !== undefined ? { db: t.database } : {}),
      ...(tls ? { tls } : {}),
    };
  }

  private makeSlot(i: number, host: number): Slot {
    const client = new this.Client(this.options(host));
    const slot: Slot = { client, host, inFlight: 0, pending: undefined, failed: false };
    client.on('error', (e: Error) => {
      slot.failed = true;
      this.down = true;
      this.throttle.say(`connect to redis server ${this.targetLabel(slot)}: ${e.message}`);
    });
    client.on('ready', () => {
      slot.failed = false;
      if (!this.down) return;
      this.down = false;
      log.info(`redis server ${this.targetLabel(slot)}: connection restored`);
    });
    this.slots[i] = slot;
    return slot;
  }

  /** The next client in turn; a client whose server is down moves on to the next host first. */
  private take(): Slot {
    const i = this.next;
    this.next = (i + 1) % this.slots.length;
    let s = this.slots[i];
    if (!s) return this.makeSlot(i, 0);
    if (this.c.hosts.length > 1 && this.c.sentinels.length === 0 && s.failed && s.client.status === 'reconnecting' && s.inFlight === 0) {
      s.client.disconnect();
      s = this.makeSlot(i, (s.host + 1) % this.c.hosts.length);
    }
    return s;
  }

  /** Wait (bounded by the timeout) for a connecting client; false when it is down. */
  private ready(s: Slot): boolean | Promise<boolean> {
    const st = s.client.status;
    if (st === 'ready') return true;
    if (st !== 'connecting' && st !== 'connect' && st !== 'wait') return false;
    s.pending ??= new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        s.client.off('ready', onReady);
        s.client.off('close', onFail);
        s.client.off('end', onFail);
        s.pending = undefined;
        resolve(ok);
      };
      const onReady = () => done(true);
      const onFail = () => done(false);
      const timer = setTimeout(onFail, this.c.timeoutMs);
      s.client.once('ready', onReady);
      s.client.once('close', onFail);
      s.client.once('end', onFail);
    });
    this.waiting++;
    return s.pending.finally(() => this.waiting--);
  }

  /**
   * Run one command (or a few) on the next client. Errors of any kind are
   * warned about (rate limited, `what` says what was asked) and answer
   * REDIS_RETRY.
   */
  async run<R>(what: string, fn: (c: Redis) => Promise<R>): Promise<R | typeof REDIS_RETRY> {
    if (this.closed) return REDIS_RETRY;
    const s = this.take();
    const r = this.ready(s);
    if (r !== true && !(await r)) {
      this.throttle.say(`${what}: redis server ${this.targetLabel(s)} is not available`);
      return REDIS_RETRY;
    }
    s.inFlight++;
    this.peak = Math.max(this.peak, this.openCount());
    try {
      return await fn(s.client);
    } catch (e) {
      this.throttle.say(`${what}: redis server ${this.targetLabel(s)}: ${(e as Error).message}`);
      return REDIS_RETRY;
    } finally {
      s.inFlight--;
    }
  }

  private openCount(): number {
    return this.slots.filter((s) => s?.client.status === 'ready').length;
  }

  stats(): PoolStats {
    const live = this.slots.filter((s): s is Slot => s !== undefined);
    const open = this.openCount();
    const busy = live.filter((s) => s.inFlight > 0).length;
    const labels = this.c.sentinels.length > 0 ? [`sentinel master ${this.c.sentinelMaster}`] : this.c.hosts.map((h) => h.label);
    return {
      open,
      busy,
      idle: Math.max(0, open - busy),
      waiting: this.waiting,
      peak: this.peak,
      max: this.slots.length,
      hosts: labels.map((label, i) => {
        const on = live.filter((s) => this.c.sentinels.length > 0 || s.host === i);
        const conns = on.filter((s) => s.client.status === 'ready').length;
        const state = conns > 0 ? 'active' : on.some((s) => s.failed) ? 'fail' : 'untried';
        return { label, state, until: 0, conns };
      }),
    };
  }

  /** Readiness: null when a PING answers before the deadline, else why not. */
  async probe(deadline: number): Promise<string | null> {
    if (this.closed) return 'pool closed';
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<string>((r) => (timer = setTimeout(() => r('timed out'), Math.max(0, deadline - Date.now()))));
    const ping = this.run('ping', (c) => c.ping()).then((r) => (r === REDIS_RETRY ? `redis server ${this.label} is not available` : null));
    try {
      return await Promise.race([ping, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Close every connection (commands in flight fail: RETRY). */
  close(): void {
    this.closed = true;
    for (const s of this.slots) s?.client.disconnect();
    this.slots.fill(undefined);
  }
}
