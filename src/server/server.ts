/**
 * The proxymap/proxywrite server: listeners on socket paths or inherited
 * descriptors, shared table instances, one RequestHandler.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { log } from '../log.js';
import type { RequestKind } from '../protocol/messages.js';
import { dupFd } from '../addon/fd.js';
import { Connection, DEFAULT_CONNECTION_OPTIONS, socketTransport, type ConnectionOptions, type Transport } from './connection.js';
import { SockSet, loopSpin } from './sockset.js';
import { RequestHandler, type Service } from './handler.js';
import { closeListener, listenOn, listenOnPath } from './socket-path.js';
import { TableInstances, type Opener, type ReloadOptions } from './instances.js';
import { Metrics } from './metrics.js';
import type { LookupCache } from './cache.js';

/** Activity window of the busy-poll policy (ms). */
const ACTIVE_WINDOW_MS = 2;

/** Longest native busy-wait between two turns of the event loop (µs). */
const SPIN_SLICE_US = 250;

/** Default busy-poll window (µs); see ServerOptions.busyPollUsec. */
export const DEFAULT_BUSY_POLL_USEC = 100;

export interface ServerOptions {
  opener: Opener;
  authorized: Record<Service, ReadonlySet<string>>;
  smtputf8: boolean;
  /** main.cf parameter lookup for tables (expanded values) */
  param: (name: string) => string | undefined;
  /** whether a table type folds keys while loading its source (see TableInstances) */
  loadsSource?: (type: string) => boolean;
  /** reload-without-restart settings (see TableInstances) */
  reload?: Partial<ReloadOptions>;
  /** whether a table has FIXED keys, known from its type before it is opened */
  typeFixed?: (spec: string) => boolean | undefined;
  connection?: Partial<ConnectionOptions>;
  /**
   * Busy-poll window in microseconds (0: off). After a reply, while clients
   * have recently sent their next request within this window, the event loop
   * keeps polling instead of sleeping, which saves the wake-up latency of a
   * back-to-back client. Idle or lightly loaded servers never spin.
   */
  busyPollUsec?: number;
  /**
   * True while work runs on other threads and will wake the event loop when
   * done (regexp/pcre evaluations): busy polling stops then, so that the
   * main thread leaves the CPU to those threads.
   */
  offThreadWork?: () => boolean;
  /** Serve connections from a native socket set (native/sockset.c) when the addon loads (default true). */
  nativeSockets?: boolean;
  /** Keep request, connection and table metrics (src/server/metrics.ts); off by default. */
  metrics?: boolean;
  /** the lookup cache (proxymapd_cache_maps); none: every lookup reaches its table */
  cache?: LookupCache;
}

export interface ListenerInfo {
  service: Service;
  server: net.Server;
  path?: string;
}

export class ProxyServer {
  readonly instances: TableInstances;
  readonly handler: RequestHandler;
  /** null when metrics are off */
  readonly metrics: Metrics | null;
  /** main.cf smtputf8_enable */
  readonly smtputf8: boolean;
  private lookupCache?: LookupCache;
  private readonly listeners: ListenerInfo[] = [];
  private readonly connections = new Set<Connection>();
  private readonly connOpts: ConnectionOptions;
  /** connections accepted / closed since start */
  accepted = 0;
  closedCount = 0;
  /** connections accepted since start, per service */
  readonly acceptedBy: Record<Service, number> = { proxymap: 0, proxywrite: 0 };
  private busyCount = 0;
  /** busy-poll window, ms (performance.now() units: plain numbers, no BigInt per request) */
  private readonly busyPollMs: number;
  private lastReplyAt = 0;
  /** time from the last reply to the next request data, ms */
  private lastGapMs = Number.MAX_SAFE_INTEGER;
  private spinning = false;
  /** the last turn of the busy poll saw events ready (the loop has handled them since) */
  private spinEvents = false;
  /** clients that sent requests in the current / previous activity window (busy-poll policy) */
  private activeCur = 0;
  private activePrev = 0;
  private windowStart = 0;
  private window = 1;
  /** busy-poll only while at most this many clients are active (the CPUs left beside this thread) */
  private readonly spinClients = Math.max(1, os.availableParallelism() - 1);
  /** the native socket set of this server (undefined: not made yet; null: unavailable or not wanted) */
  private sockSet: SockSet | null | undefined;
  private readonly useSockSet: boolean;
  /** observers (master(8) mode: busy/available status, max_use, max_idle) */
  onBusyChange?: (busy: boolean) => void;
  onConnectionClosed?: (open: number) => void;
  onConnectionOpened?: (open: number) => void;

  constructor(opts: ServerOptions) {
    this.instances = new TableInstances(opts.opener, opts.param, opts.loadsSource, opts.reload);
    this.handler = new RequestHandler({
      instances: this.instances,
      authorized: opts.authorized,
      smtputf8: opts.smtputf8,
      typeFixed: opts.typeFixed,
      cache: opts.cache,
    });
    this.setCache(opts.cache);
    this.smtputf8 = opts.smtputf8;
    this.connOpts = { ...DEFAULT_CONNECTION_OPTIONS, ...opts.connection };
    this.busyPollMs = Math.max(0, Math.floor(opts.busyPollUsec ?? DEFAULT_BUSY_POLL_USEC)) / 1000;
    this.offThreadWork = opts.offThreadWork ?? (() => false);
    this.useSockSet = opts.nativeSockets ?? true;
    this.metrics = opts.metrics
      ? new Metrics({
          tables: () => this.instances.opened(),
          reloads: () => ({ reloads: this.instances.reloads, failures: this.instances.reloadFailures }),
          cacheStats: () => this.lookupCache?.stats(),
        })
      : null;
  }

  /** The lookup cache (proxymapd_cache_maps), if any table is cached. */
  get cache(): LookupCache | undefined {
    return this.lookupCache;
  }

  /** Use another lookup cache, or none (a configuration reload that turns caching on or off). */
  setCache(cache: LookupCache | undefined): void {
    this.lookupCache = cache;
    this.handler.setCache(cache);
    // A table replaced by a newer version (reload of a changed file) loses its cached answers.
    this.instances.onReplaced = cache ? (spec) => cache.invalidate(spec) : undefined;
  }

  private readonly offThreadWork: () => boolean;
  private lastDataAt = 0;

  private onRequestData(conn: Connection): void {
    if (this.busyPollMs === 0) return;
    const now = performance.now();
    this.lastDataAt = now;
    if (this.lastReplyAt !== 0) this.lastGapMs = now - this.lastReplyAt;
    // Clients active in the current and the previous window of ACTIVE_WINDOW_MS.
    if (now - this.windowStart > ACTIVE_WINDOW_MS) {
      this.activePrev = now - this.windowStart > 2 * ACTIVE_WINDOW_MS ? 0 : this.activeCur;
      this.activeCur = 0;
      this.windowStart = now;
      this.window++;
    }
    if (conn.activeWindow !== this.window) {
      conn.activeWindow = this.window;
      this.activeCur++;
    }
  }

  /**
   * Busy-poll after a reply only while few clients are active: one that comes back within the window saves the
   * wake-up; with more active clients than spare CPUs there is nearly always work, and a spinning server would only
   * take CPU from the clients that produce it.
   */
  private onReplySent(kind: RequestKind | null): void {
    if (this.busyPollMs === 0) return;
    if (kind === 'update' || kind === 'delete') {
      // Never after an update or delete (and a spin that runs ends): the kernel is still completing the flush
      // (journal commit, block I/O) and the client takes longer to come back than after a lookup; spinning took the
      // CPU both need (proxywrite lmdb at 1 connection, bench: 0.96x Postfix without it, 0.72-0.83x with it).
      this.lastReplyAt = 0;
      this.lastGapMs = Number.MAX_SAFE_INTEGER;
      return;
    }
    this.lastReplyAt = performance.now();
    if (
      this.lastGapMs < this.busyPollMs &&
      !this.spinning &&
      Math.max(this.activeCur, this.activePrev) <= this.spinClients &&
      !this.offThreadWork()
    ) {
      this.spinning = true;
      this.spinEvents = true;
      setImmediate(this.spin);
    }
  }

  /**
   * Keep the event loop polling (setImmediate: the poll phase does not block) until the window after the last reply
   * passes, and while a request waits for its backend (an SQL server's answer) for up to 10 windows after it arrived:
   * a database round trip is about as long as one window, and the answer picked up without a wake-up saves ~20 µs of latency.
   */
  private readonly spin = (): void => {
    const now = performance.now();
    const until = Math.max(this.lastReplyAt + this.busyPollMs, this.busyCount > 0 ? this.lastDataAt + 10 * this.busyPollMs : 0);
    if (now < until && this.connections.size > 0 && Math.max(this.activeCur, this.activePrev) <= this.spinClients && !this.offThreadWork()) {
      // Wait in native code for the next event (a slice at a time, so that timers still run): each turn of the loop
      // would otherwise allocate an Immediate, ~20 KB per SQL lookup, and with it a scavenge every few ms. Not in the
      // turn right after events were handled: the Immediates they queued (a proxywrite batch start, a pattern turn)
      // come after this one in the same check phase and must not wait for the next event.
      if (this.spinEvents) this.spinEvents = false;
      else this.spinEvents = loopSpin(Math.min(SPIN_SLICE_US, Math.ceil((until - now) * 1000))) === 1;
      setImmediate(this.spin);
    } else {
      this.spinning = false;
    }
  };

  private makeServer(service: Service): net.Server {
    const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => this.accept(sock, service));
    srv.on('error', (e) => log.warn(`${service} listener: ${e.message}`));
    return srv;
  }

  private accept(raw: net.Socket, service: Service): void {
    this.accepted++;
    this.acceptedBy[service]++;
    const metrics = this.metrics;
    metrics?.connectionOpened(service);
    const hooks = {
      metrics,
      onBusy: (b: boolean) => {
        const before = this.busyCount;
        this.busyCount += b ? 1 : -1;
        if (before === 0 && this.busyCount === 1) this.onBusyChange?.(true);
        else if (before === 1 && this.busyCount === 0) this.onBusyChange?.(false);
      },
      onData: () => this.onRequestData(conn!),
      onReply: (kind: RequestKind | null) => this.onReplySent(kind),
      onClose: () => {
        metrics?.connectionClosed(service);
        if (conn) this.connections.delete(conn);
        this.closedCount++;
        this.onConnectionClosed?.(this.connections.size);
      },
    };
    const make = (t: (c: Connection) => Transport) => new Connection(t, service, this.handler, this.connOpts, hooks);
    // Serve the connection from this thread's native socket set, on a duplicate of its descriptor (the accepted
    // socket was not read from: pauseOnConnect). Without the addon, as the net.Socket it was accepted as.
    let conn: Connection | null = null;
    if (this.sockSet === undefined) this.sockSet = this.useSockSet ? SockSet.create() : null;
    const fd = (raw as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (this.sockSet && typeof fd === 'number' && fd >= 0) {
      const dup = dupFd(fd);
      if (dup >= 0) {
        conn = this.sockSet.adopt(dup, make);
        if (conn) raw.destroy();
        else fs.closeSync(dup);
      }
    }
    if (!conn) {
      conn = make((c) => socketTransport(raw, c));
      raw.resume();
    }
    this.connections.add(conn);
    this.onConnectionOpened?.(this.connections.size);
  }

  /**
   * Listen on a UNIX socket path with Postfix's permissions (socket 0666 in
   * a 0700 private/ directory). A stale socket file is replaced; a live one
   * (another server answering) is an error.
   */
  async listenPath(sockPath: string, service: Service, owner?: { uid: number; gid: number }): Promise<void> {
    const dir = path.dirname(sockPath);
    if (!fs.existsSync(dir)) {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      if (owner) fs.chownSync(dir, owner.uid, owner.gid);
    }
    const srv = this.makeServer(service);
    await listenOnPath(srv, sockPath, 0o666, owner);
    this.listeners.push({ service, server: srv, path: sockPath });
  }

  /** Take over an already-listening descriptor (master(8) fd 6, systemd LISTEN_FDS). */
  async listenFd(fd: number, service: Service): Promise<void> {
    const srv = this.makeServer(service);
    await listenOn(srv, (done) => srv.listen({ fd }, done));
    this.listeners.push({ service, server: srv });
  }

  /** Whether connections are served from the native socket set (known once one was accepted). */
  get nativeSockets(): boolean {
    return !!this.sockSet;
  }

  /** Whether the event loop is busy-polling right now. */
  get busyPolling(): boolean {
    return this.spinning;
  }

  /** The listeners, and whether each still accepts connections (health checks). */
  listenerStates(): Array<{ service: Service; listening: boolean }> {
    return this.listeners.map((l) => ({ service: l.service, listening: l.server.listening }));
  }

  get openConnections(): number {
    return this.connections.size;
  }

  /** Open connections per service (counted when asked: for status displays). */
  openConnectionsBy(): Record<Service, number> {
    const n: Record<Service, number> = { proxymap: 0, proxywrite: 0 };
    for (const c of this.connections) n[c.service]++;
    return n;
  }

  /** Start time (Date.now()) of the oldest request still in progress, or 0 when none is. */
  oldestRequestStart(): number {
    let oldest = 0;
    for (const c of this.connections) {
      if (c.requestStartedAt !== 0 && (oldest === 0 || c.requestStartedAt < oldest)) oldest = c.requestStartedAt;
    }
    return oldest;
  }

  /** Stop accepting new connections (the listeners close, socket paths are removed; open connections stay). */
  async stopListening(): Promise<void> {
    const listeners = this.listeners.splice(0);
    await Promise.all(listeners.map((l) => closeListener(l.server, l.path)));
  }

  /** Stop accepting; optionally drop open connections; close tables. */
  async close(dropConnections = true): Promise<void> {
    const closing = this.stopListening();
    if (dropConnections) {
      for (const c of [...this.connections]) c.destroy();
      this.sockSet?.destroy();
      this.sockSet = null;
    }
    await closing;
    await this.instances.closeAll();
  }
}
