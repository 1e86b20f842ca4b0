/**
 * A bounded, shared connection pool for the SQL table types (mysql, pgsql),
 * with Postfix's host failover rules (dict_mysql.c / dict_pgsql.c, spec
 * tables-network.md 2.3).
 *
 * One pool serves every open table that connects the same way (same type,
 * hosts, credentials, database and client settings; the queries may
 * differ): however many clients and tables there are, it holds at most
 * `maxConnections` connections. Lookups beyond that wait in a FIFO queue
 * until a connection is free or their deadline passes (then they answer
 * RETRY).
 *
 * Host states are kept per table (a PoolView), as Postfix keeps them per
 * table and process; the connections are shared:
 *   UNTRIED: no connection to the host; ACTIVE: connections exist and the
 *   table has not seen it fail; FAIL: a connect or query failed, blocked
 *   while ts >= now (seconds), ts = now + retry_interval; afterwards
 *   eligible for a new connect, and ACTIVE again after a success.
 * A connection is taken from an ACTIVE host, UNIX sockets before TCP before
 * URIs, a random host within a class; with no ACTIVE host, an eligible
 * UNTRIED/FAIL host is connected to in the same order. With every host
 * blocked a lookup answers RETRY at once. A single configured host is listed
 * twice (Postfix 3.10+), so one failure does not block the only server.
 *
 * Differences from Postfix, all invisible in answers: connections are
 * shared by all clients and tables instead of one per table and proxymap
 * process; a connection
 * that the server closes while idle is dropped without marking its host
 * down; a lookup that runs out of time answers RETRY (Postfix would block
 * as long as the client library does).
 */
import { intParam, timeParam } from '../core/params.js';

export type HostKind = 'unix' | 'inet' | 'uri';

/** One entry of the `hosts` parameter, parsed by the backend. */
export interface PoolHost<T> {
  /** as written in `hosts` (used in log messages) */
  readonly label: string;
  readonly kind: HostKind;
  /** backend-specific connect target */
  readonly target: T;
}

/** The backend's part: opening and closing connections. */
export interface PoolDriver<T, C> {
  /**
   * Open a connection. Reject with an Error whose message is the complete
   * warning to log (e.g. `connect to mysql server H: ...`).
   * `onLost` must be called if the connection dies on its own.
   */
  connect(host: PoolHost<T>, onLost: () => void): Promise<C>;
  /** Close (or destroy) a connection; must not throw. */
  close(conn: C): void;
}

/** What a unit of work on one connection reports. */
export type WorkResult<R> =
  | { kind: 'ok'; value: R }
  /** query failed: warn, mark the host down, try the next host (Postfix's behaviour) */
  | { kind: 'host-error'; message: string }
  /** this lookup fails with RETRY, the connection and host stay in service */
  | { kind: 'retry'; message?: string };

/** A unit of work on one pooled connection (a query); may answer at once. */
export type Work<C, T, R> = (conn: C, host: PoolHost<T>) => WorkResult<R> | Promise<WorkResult<R>>;

export interface PoolOptions {
  /** most connections open at once (in use, idle or being opened) */
  maxConnections: number;
  /** retry_interval: seconds a failed host is left alone */
  retryInterval: number;
  /** idle_interval: seconds after which an unused connection is closed */
  idleInterval: number;
  /** connect timeout in ms (the backend's own may be shorter) */
  connectTimeoutMs: number;
  /**
   * most queries in flight on one connection at once (default 1). Above 1,
   * a lookup that finds every connection busy and the pool full is sent on
   * the least busy connection behind the queries already there (the
   * backend's wire must answer them in order) instead of waiting.
   */
  pipeline?: number;
  /**
   * How a host is chosen: 'random' (default; Postfix's mysql/pgsql: UNIX
   * sockets before TCP before URIs, random within a kind) or 'listed' (the
   * first usable host in the order written, as libldap goes down ldap's
   * server_host list).
   */
  hostOrder?: 'random' | 'listed';
  /** how metrics and status name the pool: type, hosts, database, user; never a password (see poolLabel) */
  label?: string;
}

export interface UseOptions {
  /** absolute time (ms since the epoch) after which the lookup answers RETRY */
  deadline: number;
  warn(text: string): void;
}

/** Returned by `use` when the lookup must answer RETRY. */
export const POOL_RETRY: unique symbol = Symbol('POOL_RETRY');

/** The state one table keeps of one host entry: Postfix's per-process host state. */
interface HostView {
  /** FAIL: a connect or query failed; cleared by the next success */
  failed: boolean;
  /** end of the back-off, in seconds (Postfix's time_t ts) */
  ts: number;
}

interface HostEntry<T> {
  readonly index: number;
  readonly spec: PoolHost<T>;
  /** connections to this entry that exist (idle, busy or opening), shared by every view */
  conns: number;
}

interface Conn<T, C> {
  readonly host: HostEntry<T>;
  readonly conn: C;
  /** queries running on it (0: idle) */
  inFlight: number;
  /** takes no more queries; closed when the last one in flight ends */
  retired: boolean;
  /** its slot was given back */
  freed: boolean;
  /** driver.close was called */
  destroyed: boolean;
  /** when it went idle (ms since the epoch), for idle_interval */
  idleSince: number;
}

/** One query running on a connection: when it times out (ms since the epoch), and how to end it then. */
interface Running<T, C> {
  readonly c: Conn<T, C>;
  deadline: number;
  expire: () => void;
}

interface Waiter<T, C> {
  readonly view: PoolView<T, C>;
  /** resolve with a connection handed over, or undefined to re-run the acquire logic */
  wake(c: Conn<T, C> | undefined): void;
}

const KIND_ORDER: HostKind[] = ['unix', 'inet', 'uri'];

/**
 * How often a pool checks its query deadlines and idle connections: one
 * timer per pool rather than two per query (a query time-out or an
 * idle_interval ends up to this much late).
 */
export const SWEEP_MS = 100;

/** Seconds since the epoch (Postfix's time()); overridable for tests. */
export let nowSeconds = (): number => Math.floor(Date.now() / 1000);
export function setClock(fn: () => number): void {
  nowSeconds = fn;
}

export interface PoolStats {
  open: number;
  busy: number;
  idle: number;
  waiting: number;
  /** the most connections ever open at once */
  peak: number;
  /** maxConnections */
  max: number;
  /** host states as the pool's default view (or the view asked for) sees them */
  hosts: { label: string; state: 'untried' | 'active' | 'fail'; until: number; conns: number }[];
}

/**
 * One table's view of a shared pool: its own host states and back-off
 * (Postfix keeps them per table and process), the pool's connections and
 * bound. A query that fails in one table takes the host out of service for
 * that table only; the other tables find out for themselves, as they would
 * in Postfix.
 */
export class PoolView<T, C> {
  /** per host entry of the pool */
  readonly hosts: HostView[];

  constructor(
    readonly pool: SqlPool<T, C>,
    /** retry_interval of this table, in seconds */
    readonly retryInterval: number,
    entries: number,
  ) {
    this.hosts = Array.from({ length: entries }, () => ({ failed: false, ts: 0 }));
  }

  /** Run `work` on a pooled connection with this view's host states (see SqlPool.use). */
  use<R>(work: Work<C, T, R>, uo: UseOptions): Promise<R | typeof POOL_RETRY> {
    return this.pool.use(work, uo, this);
  }
}

export class SqlPool<T, C> {
  private readonly hosts: HostEntry<T>[];
  private readonly idle: Conn<T, C>[] = [];
  /** connections in service (not retired), idle or busy: where a pipelined query may go */
  private readonly live = new Set<Conn<T, C>>();
  private readonly waiters: Waiter<T, C>[] = [];
  /** queries running, for their deadlines */
  private readonly running = new Set<Running<T, C>>();
  private readonly pipeline: number;
  private sweeper: NodeJS.Timeout | undefined;
  private readonly defaultView: PoolView<T, C>;
  private open = 0;
  private peak = 0;
  private closed = false;
  /** the host states of the readiness probe: its failures take no host out of service for a table */
  private readonly probeView: PoolView<T, C>;
  private probing: Promise<string | null> | undefined;

  constructor(
    hosts: readonly PoolHost<T>[],
    private readonly driver: PoolDriver<T, C>,
    private readonly opts: PoolOptions,
  ) {
    if (hosts.length === 0) throw new Error('SqlPool: no hosts');
    // Postfix 3.10+: a single host is listed twice.
    const list = hosts.length === 1 ? [hosts[0]!, hosts[0]!] : hosts;
    this.hosts = list.map((spec, index) => ({ index, spec, conns: 0 }));
    this.pipeline = Math.max(1, Math.floor(opts.pipeline ?? 1));
    this.defaultView = this.view();
    this.probeView = this.view();
  }

  get label(): string {
    return this.opts.label ?? this.hosts.map((h) => h.spec.label).join(',');
  }

  /** A new table's view of this pool (retry_interval defaults to the pool's). */
  view(retryInterval = this.opts.retryInterval): PoolView<T, C> {
    return new PoolView(this, retryInterval, this.hosts.length);
  }

  stats(view: PoolView<T, C> = this.defaultView): PoolStats {
    return {
      open: this.open,
      busy: this.open - this.idle.length,
      idle: this.idle.length,
      waiting: this.waiters.length,
      peak: this.peak,
      max: this.opts.maxConnections,
      hosts: this.hosts.map((h) => {
        const v = view.hosts[h.index]!;
        return { label: h.spec.label, state: v.failed ? 'fail' : h.conns > 0 ? 'active' : 'untried', until: v.ts, conns: h.conns };
      }),
    };
  }

  /**
   * Run `work` on a pooled connection, failing over across hosts as Postfix
   * does. Answers POOL_RETRY when no host can serve before the deadline.
   */
  use<R>(work: Work<C, T, R>, uo: UseOptions, view: PoolView<T, C> = this.defaultView): Promise<R | typeof POOL_RETRY> {
    return this.attemptFrom(work, uo, view, 0);
  }

  /**
   * One attempt: a connection taken at once when one is free (the common
   * case, without a turn of the event loop), else through acquire(). A
   * failed attempt takes a host out of service, so the attempts end; the
   * cap is a safety net.
   */
  private attemptFrom<R>(work: Work<C, T, R>, uo: UseOptions, view: PoolView<T, C>, attempts: number): Promise<R | typeof POOL_RETRY> {
    if (attempts >= 2 * this.hosts.length + 4) return Promise.resolve(POOL_RETRY);
    const c = this.closed || this.allBlocked(view, nowSeconds()) ? undefined : this.takeNow(view);
    if (c) return this.attempt(c, work, uo, view, attempts);
    return this.acquire(view, uo).then((got) => (got ? this.attempt(got, work, uo, view, attempts) : POOL_RETRY));
  }

  /** Run work on c under the query deadline; the answer, or the next attempt's. */
  private attempt<R>(c: Conn<T, C>, work: Work<C, T, R>, uo: UseOptions, view: PoolView<T, C>, attempts: number): Promise<R | typeof POOL_RETRY> {
    return new Promise((resolve) => {
      let settled = false;
      const finish = (res: WorkResult<R>, timedOut: boolean) => {
        if (settled) return;
        settled = true;
        this.unwatch(r);
        resolve(this.outcome(c, res, timedOut, work, uo, view, attempts));
      };
      // at least a second for the query, even when connecting took most of the budget
      const r: Running<T, C> = {
        c,
        deadline: Math.max(uo.deadline, Date.now() + 1000),
        expire: () => finish({ kind: 'host-error', message: `${c.host.spec.label}: query timed out` }, true),
      };
      this.watch(r);
      const failed = (e: unknown) => finish({ kind: 'host-error', message: errText(e) }, false);
      try {
        const w = work(c.conn, c.host.spec);
        if (w instanceof Promise) w.then((x) => finish(x, false), failed);
        else finish(w, false);
      } catch (e) {
        failed(e);
      }
    });
  }

  private outcome<R>(
    c: Conn<T, C>,
    res: WorkResult<R>,
    timedOut: boolean,
    work: Work<C, T, R>,
    uo: UseOptions,
    view: PoolView<T, C>,
    attempts: number,
  ): R | typeof POOL_RETRY | Promise<R | typeof POOL_RETRY> {
    if (res.kind === 'ok') {
      view.hosts[c.host.index]!.failed = false;
      this.release(c);
      return res.value;
    }
    if (res.kind === 'retry') {
      if (res.message) uo.warn(res.message);
      this.release(c);
      return POOL_RETRY;
    }
    uo.warn(res.message);
    this.down(view, c.host);
    // a query that hangs holds up the ones behind it: close now; after a failed query let the others finish
    if (timedOut) this.retire(c);
    this.release(c, true);
    if (Date.now() >= uo.deadline) return POOL_RETRY;
    return this.attemptFrom(work, uo, view, attempts + 1);
  }

  /**
   * Whether the pool can reach its backend (for /readyz): null when a
   * connection is in service or one could be opened now (it then stays in
   * the pool, idle), else what went wrong. Each host is tried once, back-off
   * or not; the probe has host states of its own, so a failed probe never
   * takes a host out of service for a table. Concurrent probes share one
   * attempt.
   */
  probe(deadline: number): Promise<string | null> {
    if (this.closed) return Promise.resolve('pool closed');
    if (this.live.size > 0) return Promise.resolve(null);
    this.probing ??= this.probeHosts(deadline).finally(() => (this.probing = undefined));
    return this.probing;
  }

  private async probeHosts(deadline: number): Promise<string | null> {
    const errors: string[] = [];
    // a single host is listed twice: once is enough
    const hosts = this.hosts.filter((h, i) => this.hosts.findIndex((x) => x.spec === h.spec) === i);
    for (const h of hosts) {
      if (this.closed || this.live.size > 0 || Date.now() >= deadline) break;
      if (this.open >= this.opts.maxConnections) return errors.join('; ') || `all ${this.opts.maxConnections} connections are being opened`;
      const c = await this.connect(this.probeView, h, { deadline, warn: (t) => errors.push(t) });
      if (c) {
        this.release(c);
        return null;
      }
    }
    if (this.live.size > 0) return null;
    return errors.join('; ') || (this.closed ? 'pool closed' : 'timed out');
  }

  /** Close idle connections now, the others when they are released; wake all waiters (RETRY). */
  close(): void {
    this.closed = true;
    this.stopSweep();
    for (const c of this.idle.splice(0)) this.destroy(c);
    for (const w of this.waiters.splice(0)) w.wake(undefined);
  }

  // ---------------------------------------------------------------- internals

  /** In back-off: FAIL and ts >= now (Postfix's test, in whole seconds). */
  private blocked(view: PoolView<T, C>, h: HostEntry<T>, now: number): boolean {
    const v = view.hosts[h.index]!;
    return v.failed && v.ts > 0 && v.ts >= now;
  }

  /** ACTIVE for this view: not failed, and connected (some connection to it exists). */
  private active(view: PoolView<T, C>, h: HostEntry<T>): boolean {
    return !view.hosts[h.index]!.failed && h.conns > 0;
  }

  /** Postfix's find_host: a uniformly random host of one kind that passes the test. */
  private pick(kind: HostKind, ok: (h: HostEntry<T>) => boolean): HostEntry<T> | undefined {
    const cands = this.hosts.filter((h) => h.spec.kind === kind && ok(h));
    if (cands.length === 0) return undefined;
    return cands[Math.floor(Math.random() * cands.length)];
  }

  /** An ACTIVE host (UNIX before TCP before URI), else an UNTRIED or FAIL one out of back-off. */
  private pickHost(view: PoolView<T, C>, now: number): HostEntry<T> | undefined {
    if (this.opts.hostOrder === 'listed') {
      return this.hosts.find((x) => this.active(view, x)) ?? this.hosts.find((x) => !this.active(view, x) && !this.blocked(view, x, now));
    }
    for (const k of KIND_ORDER) {
      const h = this.pick(k, (x) => this.active(view, x));
      if (h) return h;
    }
    for (const k of KIND_ORDER) {
      const h = this.pick(k, (x) => !this.active(view, x) && !this.blocked(view, x, now));
      if (h) return h;
    }
    return undefined;
  }

  /** An idle connection to a host ACTIVE in this view, of the best kind available (a single host listed twice counts once). */
  private takeIdle(view: PoolView<T, C>): Conn<T, C> | undefined {
    const idle = this.idle;
    const listed = this.opts.hostOrder === 'listed';
    for (const k of listed ? [undefined] : KIND_ORDER) {
      // a random server (as Postfix picks a host per query; listed: the first written) among those with idle connections...
      const servers: HostEntry<T>[] = [];
      for (const c of idle) {
        if ((k === undefined || c.host.spec.kind === k) && !view.hosts[c.host.index]!.failed && !servers.some((h) => h.spec === c.host.spec)) servers.push(c.host);
      }
      if (servers.length === 0) continue;
      const spec = listed ? servers.reduce((a, b) => (b.index < a.index ? b : a)).spec : servers[Math.floor(Math.random() * servers.length)]!.spec;
      // ...and its most recently used connection: a light load stays on one warm connection and the rest idle out
      for (let i = idle.length - 1; i >= 0; i--) {
        const c = idle[i]!;
        if (c.host.spec !== spec || view.hosts[c.host.index]!.failed) continue;
        idle.splice(i, 1);
        c.inFlight = 1;
        return c;
      }
    }
    return undefined;
  }

  /** The least busy connection with room in its pipeline, to a host this view may use, of the best kind available. */
  private takePipelined(view: PoolView<T, C>): Conn<T, C> | undefined {
    if (this.pipeline <= 1) return undefined;
    for (const k of KIND_ORDER) {
      let best: Conn<T, C> | undefined;
      for (const c of this.live) {
        if (c.host.spec.kind !== k || c.inFlight >= this.pipeline || view.hosts[c.host.index]!.failed) continue;
        if (!best || c.inFlight < best.inFlight) best = c;
      }
      if (best) {
        best.inFlight++;
        return best;
      }
    }
    return undefined;
  }

  /**
   * A connection that can be had without waiting or connecting: an idle one,
   * or, when the pool is full and none is idle, a place behind the queries
   * on one. Not for a view whose hosts are all blocked (the caller checks).
   */
  private takeNow(view: PoolView<T, C>): Conn<T, C> | undefined {
    const c = this.takeIdle(view);
    if (c || this.open < this.opts.maxConnections || this.idle.length > 0) return c;
    return this.takePipelined(view);
  }

  private allBlocked(view: PoolView<T, C>, now: number): boolean {
    return this.hosts.every((h) => this.blocked(view, h, now));
  }

  private async acquire(view: PoolView<T, C>, uo: UseOptions): Promise<Conn<T, C> | undefined> {
    for (;;) {
      if (this.closed) return undefined;
      const now = nowSeconds();
      // Every host blocked: RETRY at once, as Postfix does.
      if (this.allBlocked(view, now)) return undefined;
      const free = this.takeNow(view);
      if (free) return free;
      // Full, but some connections are idle on hosts this view has failed: make room (for this lookup, not a waiter).
      if (this.open >= this.opts.maxConnections && this.idle.length > 0) this.retire(this.idle.shift()!, false);
      if (this.open < this.opts.maxConnections) {
        const h = this.pickHost(view, now);
        if (!h) return undefined;
        const c = await this.connect(view, h, uo);
        if (c) return c;
        continue; // host marked down; try the next one
      }
      // Pool full and no pipeline with room (takeNow): wait for a connection (FIFO) or a free slot.
      const remaining = uo.deadline - Date.now();
      if (remaining <= 0) {
        uo.warn(`timed out waiting for a database connection (all ${this.opts.maxConnections} in use)`);
        return undefined;
      }
      const got = await new Promise<Conn<T, C> | undefined | 'timeout'>((resolve) => {
        const w: Waiter<T, C> = {
          view,
          wake: (c) => {
            clearTimeout(timer);
            resolve(c);
          },
        };
        const timer = setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          resolve('timeout');
        }, remaining);
        this.waiters.push(w);
      });
      if (got === 'timeout') {
        uo.warn(`timed out waiting for a database connection (all ${this.opts.maxConnections} in use)`);
        return undefined;
      }
      if (got) return got;
    }
  }

  /** Open a connection to h; on failure warn, mark h down (for this view) and answer undefined. */
  private async connect(view: PoolView<T, C>, h: HostEntry<T>, uo: UseOptions): Promise<Conn<T, C> | undefined> {
    this.open++;
    this.peak = Math.max(this.peak, this.open);
    h.conns++;
    let entry: Conn<T, C> | undefined;
    let lost = false;
    let gaveUp = false;
    const onLost = () => {
      lost = true;
      if (entry) this.lost(entry);
    };
    let timer: NodeJS.Timeout | undefined;
    let conn: C;
    try {
      const attempt = this.driver.connect(h.spec, onLost);
      // A connection that completes after the timeout is closed.
      attempt.then((late) => gaveUp && this.driver.close(late), () => undefined);
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          gaveUp = true;
          reject(new Error(`connect to ${h.spec.label}: timed out`));
        }, this.opts.connectTimeoutMs);
      });
      conn = await Promise.race([attempt, timeout]);
    } catch (e) {
      clearTimeout(timer);
      gaveUp = true;
      this.open--;
      h.conns--;
      uo.warn(errText(e));
      this.down(view, h);
      this.wakeOne();
      return undefined;
    }
    clearTimeout(timer);
    entry = { host: h, conn, inFlight: 1, retired: false, freed: false, destroyed: false, idleSince: 0 };
    if (lost || this.closed) {
      entry.inFlight = 0;
      this.retire(entry);
      return undefined;
    }
    this.live.add(entry);
    view.hosts[h.index]!.failed = false;
    // lookups that queued while it was being opened may go behind this one
    this.fill(entry);
    return entry;
  }

  /** A connection died on its own (server restart, network, server-side timeout). */
  private lost(c: Conn<T, C>): void {
    if (c.retired) return;
    if (c.inFlight > 0) {
      // the running queries fail and report it; just make sure it is not reused, and give its slot back now
      c.retired = true;
      this.live.delete(c);
      this.free(c);
      return;
    }
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
    this.retire(c);
  }

  /** A query on c has ended; `failed`: it failed, c takes no more queries. */
  private release(c: Conn<T, C>, failed = false): void {
    c.inFlight--;
    if (failed && !c.retired) {
      c.retired = true;
      this.live.delete(c);
    }
    if (c.retired || this.closed) {
      if (c.inFlight === 0) this.retire(c);
      return;
    }
    if (this.fill(c) || c.inFlight > 0) return;
    c.idleSince = Date.now();
    this.idle.push(c);
    // waiters that may not use it can use its slot
    if (this.waiters.length > 0) this.waiters.shift()!.wake(undefined);
  }

  /** Hand c to the first waiters that may use its host, while its pipeline has room; whether any got it. */
  private fill(c: Conn<T, C>): boolean {
    let any = false;
    while (this.waiters.length > 0 && c.inFlight < this.pipeline) {
      const wi = this.waiters.findIndex((w) => !w.view.hosts[c.host.index]!.failed);
      if (wi < 0) break;
      const [w] = this.waiters.splice(wi, 1);
      c.inFlight++;
      w!.wake(c);
      any = true;
    }
    return any;
  }

  /** Take a connection out of service, close it and free its slot (for the first waiter, unless `wake` is false). */
  private retire(c: Conn<T, C>, wake = true): void {
    c.retired = true;
    this.live.delete(c);
    this.free(c, wake);
    this.destroy(c);
  }

  private free(c: Conn<T, C>, wake = true): void {
    if (c.freed) return;
    c.freed = true;
    this.open--;
    c.host.conns--;
    if (wake) this.wakeOne();
  }

  private destroy(c: Conn<T, C>): void {
    if (c.destroyed) return;
    c.destroyed = true;
    try {
      this.driver.close(c.conn);
    } catch {
      /* ignore */
    }
  }

  /** Watch a running query's deadline: the sweep timer runs, and keeps the process alive while queries run (as a timer per query did). */
  private watch(r: Running<T, C>): void {
    this.running.add(r);
    if (this.sweeper === undefined) this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    else if (this.running.size === 1) this.sweeper.ref();
  }

  private unwatch(r: Running<T, C>): void {
    if (this.running.delete(r) && this.running.size === 0) this.sweeper?.unref();
  }

  private stopSweep(): void {
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /** End queries past their deadline and close connections idle for idle_interval; stop when nothing is left to watch. */
  private sweep(): void {
    const now = Date.now();
    for (const r of this.running) {
      if (r.deadline <= now) {
        this.unwatch(r);
        r.expire();
      }
    }
    const limit = this.opts.idleInterval * 1000;
    for (let i = 0; i < this.idle.length; ) {
      const c = this.idle[i]!;
      if (now - c.idleSince >= limit) {
        this.idle.splice(i, 1);
        this.retire(c);
      } else i++;
    }
    if (this.running.size === 0 && this.idle.length === 0) this.stopSweep();
  }

  /** A slot is free: let the first waiter run the acquire logic again. */
  private wakeOne(): void {
    if (this.open < this.opts.maxConnections) this.waiters.shift()?.wake(undefined);
  }

  /** Postfix's down_host: leave the host alone for retry_interval (in this view). */
  private down(view: PoolView<T, C>, h: HostEntry<T>): void {
    const v = view.hosts[h.index]!;
    v.failed = true;
    v.ts = nowSeconds() + view.retryInterval;
    // Waiters of this view must not wait for connections that will not come back.
    if (this.allBlocked(view, nowSeconds())) {
      for (const w of this.waiters.filter((x) => x.view === view)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.wake(undefined);
      }
    }
  }
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ------------------------------------------------------------ shared registry

/** What the shared registry holds: a pool metrics and status can see, closed with its last table (SqlPool, RedisPool). */
export interface SharedPool extends LivePool {
  close(): void;
}

interface Shared {
  pool: SharedPool;
  refs: number;
}

const pools = new Map<string, Shared>();

/**
 * The pool for a backend configuration, created on first use. `key` must
 * identify the configuration completely (type, every parameter, hosts, pool
 * settings). Call the returned release function when the table closes; the
 * pool is closed when its last table is.
 */
export function sharedPool<P extends SharedPool>(key: string, make: () => P): { pool: P; release: () => void } {
  let s = pools.get(key);
  if (!s) {
    s = { pool: make(), refs: 0 };
    pools.set(key, s);
  }
  s.refs++;
  const shared = s;
  let released = false;
  return {
    pool: shared.pool as P,
    release() {
      if (released) return;
      released = true;
      if (--shared.refs === 0) {
        shared.pool.close();
        if (pools.get(key) === shared) pools.delete(key);
      }
    },
  };
}

/** A live pool as metrics and status see it. */
export interface LivePool {
  readonly label: string;
  stats(): PoolStats;
  probe(deadline: number): Promise<string | null>;
}

/** Every live shared pool of this process (metrics, /readyz, status). */
export function livePools(): LivePool[] {
  return [...pools.values()].map((s) => s.pool);
}

/**
 * A pool's label: `type:host1,host2/dbname user=name` (LDAP: the server
 * URLs and bind DN). The password is never part of it; a password written
 * inside a host URI (user:password@, password=) is masked.
 */
export function poolLabel(type: string, hosts: readonly string[], extra: Record<string, string>): string {
  const masked = hosts.map((h) => h.replace(/(\/\/[^/@:]*):[^/@]*@/, '$1:***@').replace(/([?&]password=)[^&]*/gi, '$1***'));
  const rest = Object.entries(extra)
    .filter(([, v]) => v !== '')
    .map(([k, v]) => ` ${k}=${v}`)
    .join('');
  return `${type}:${masked.join(',')}${rest}`;
}

/** Number of live shared pools (tests). */
export function sharedPoolCount(): number {
  return pools.size;
}

// ------------------------------------------------------ main.cf pool settings

/** proxymapd's own main.cf parameters for the SQL pools (defaults in brackets). */
export const POOL_PARAMS = {
  /** connections per backend configuration [4] */
  maxConnections: 'proxymapd_sql_max_connections',
  /** time budget of one lookup: waiting for a connection, connecting, querying [10s] */
  timeout: 'proxymapd_sql_timeout',
  /** most queries in flight on one connection when every connection is busy [16] */
  pipeline: 'proxymapd_sql_pipeline',
} as const;

export interface PoolSettings {
  maxConnections: number;
  timeoutMs: number;
  pipeline: number;
}

/** Read the pool settings from main.cf (invalid values: warning, default). */
export function poolSettings(param: (name: string) => string | undefined, warn: (t: string) => void): PoolSettings {
  const src = { param, warn };
  return {
    maxConnections: intParam(src, POOL_PARAMS.maxConnections, 4, { min: 1 }),
    timeoutMs: timeParam(src, POOL_PARAMS.timeout, 10, { min: 1 }) * 1000,
    pipeline: intParam(src, POOL_PARAMS.pipeline, 16, { min: 1, max: 1024 }),
  };
}
