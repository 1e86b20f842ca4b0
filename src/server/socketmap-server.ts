/**
 * The socketmap front-end (a proxymapd extension; Postfix has only the
 * client side, dict_sockmap.c): proxymapd also answers socketmap(5)
 * requests, so that another host's Postfix can use
 * `socketmap:inet:tables.example:9000:virtual` for any table this server
 * may serve.
 *
 * Each request is a netstring `NAME SP KEY`; NAME selects a table of
 * proxymapd_socketmap_maps, and the lookup goes through the server's own
 * RequestHandler as a read-only (proxymap) lookup with the flags a Postfix
 * daemon or postmap uses (FOLD_FIX, UTF8_REQUEST): the same authorization
 * (the table must be approved in proxy_read_maps), table instances, key
 * folding, UTF-8 checks, lookup cache and metrics as the proxymap protocol.
 * Postfix's socketmap client sends keys unfolded (socketmap is a pattern
 * table to it), so the folding of a FIXED table happens here, as it would
 * in a direct lookup. Replies: `OK value`, `NOTFOUND `, `TEMP reason`
 * (RETRY), `TIMEOUT reason` (no answer within the request deadline),
 * `PERM reason` (CONFIG, an unapproved or unknown table, a malformed
 * request).
 *
 * Access control: inet clients must match proxymapd_socketmap_clients
 * (others are closed at accept, with a rate-limited warning); UNIX-socket
 * clients are controlled by the permissions of the socket's directory.
 * Optional TLS (inet listeners only) with client certificates; Postfix's
 * own socketmap client speaks no TLS, so TLS is for clients behind stunnel
 * and the like. Limits: request size, idle and request deadlines, an
 * optional connection bound. A malformed netstring gets a PERM reply (after
 * the replies to the requests before it) and the connection is closed;
 * nothing a client sends can stop the server or other clients.
 *
 * The same listeners, limits and lookups serve the tcp_table protocol on the
 * addresses of proxymapd_tcp_maps (tcp-frontend.ts); a WireCodec is what
 * differs between the two.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { DICT_FLAG, PROXY_STAT, type ProxyStatus } from '../protocol/flags.js';
import type { LookupRequest } from '../protocol/messages.js';
import { FramingError, NetstringDecoder, encodeNetstring, type RequestDecoder } from '../protocol/netstring.js';
import { log, logBytes, printable } from '../log.js';
import type { Outcome, RequestHandler } from './handler.js';
import type { Metrics } from './metrics.js';
import { closeListener, listenOn, listenOnPath } from './socket-path.js';
import { AllowList } from './allowlist.js';
import { SOCKETMAP_CLIENTS_PARAM, SOCKETMAP_MAPS_PARAM, TCP_MAPS_PARAM, socketmapSettings, type ListenSpec, type SocketmapSettings } from './socketmap-settings.js';
import { tcpCodec } from './tcp-frontend.js';

/** Time and timers, replaceable in tests. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const REAL_CLOCK: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** The flags of a Postfix daemon's (and postmap's) lookups: fixed-key folding, UTF-8 layer when smtputf8 is on. */
const LOOKUP_FLAGS = DICT_FLAG.FOLD_FIX | DICT_FLAG.UTF8_REQUEST;
/** Requests received ahead of the one in progress before reading pauses. */
const MAX_QUEUED = 64;
/** At most one warning of a kind (refused client, bad request, ...) per this interval. */
const WARN_INTERVAL_MS = 10_000;
/** Longest map name shown in a reply reason. */
const MAX_NAME_SHOWN = 100;

/** The parts of a ProxyServer the front-end uses. */
export interface LookupBackend {
  readonly handler: RequestHandler;
  readonly metrics: Metrics | null;
}

/** One wire protocol on a connection: framing, answers, and the replies of its error cases. */
export interface WireCodec {
  readonly decoder: RequestDecoder;
  /** The reply to one request (synchronous when the table answers synchronously). */
  answer(request: string): string | Promise<string>;
  /** The reply when the table has not answered within the request deadline. */
  timeout(request: string, seconds: number): string;
  /** The last reply before the connection closes on a framing error. */
  framingError(message: string): string;
  /** A reply as the bytes to send. */
  encode(reply: string): string;
}

/** A table's answer to a front-end lookup. */
export interface LookupAnswer {
  status: ProxyStatus;
  value: string;
}

/** A warning logged at most once per interval, telling how many were left out in between. */
export class RateLimitedWarning {
  private last = -Infinity;
  private suppressed = 0;

  constructor(
    private readonly clock: Pick<Clock, 'now'>,
    private readonly intervalMs = WARN_INTERVAL_MS,
  ) {}

  warn(text: string): void {
    const now = this.clock.now();
    if (now - this.last < this.intervalMs) {
      this.suppressed++;
      return;
    }
    const more = this.suppressed > 0 ? ` (${this.suppressed} more like this since the last warning)` : '';
    this.last = now;
    this.suppressed = 0;
    log.warn(text + more);
  }
}

interface Listener {
  server: net.Server;
  where: string;
  path?: string;
}

/** Where to listen, and the protocol spoken there. */
interface ListenerPlan {
  spec: ListenSpec;
  codec: () => WireCodec;
  /** TLS when configured (socketmap inet listeners) */
  tls: boolean;
}

export class SocketmapServer {
  private settings: SocketmapSettings;
  private allow: AllowList;
  private readonly listeners: Listener[] = [];
  private readonly conns = new Set<FrontEndConnection>();
  /** serves the inet connections when TLS is on (connections are handed to it after the allow-list check) */
  private tls: tls.Server | undefined;
  readonly clock: Clock;
  private readonly refused: RateLimitedWarning;
  private readonly overLimit: RateLimitedWarning;
  /** malformed requests, unknown or unapproved names, TLS failures: things a client can repeat at will */
  readonly clientWarning: RateLimitedWarning;
  /** connections accepted and refused since start */
  accepted = 0;
  refusedCount = 0;

  constructor(
    private readonly backend: LookupBackend,
    settings: SocketmapSettings,
    clock: Clock = REAL_CLOCK,
  ) {
    this.clock = clock;
    this.refused = new RateLimitedWarning(clock);
    this.overLimit = new RateLimitedWarning(clock);
    this.clientWarning = new RateLimitedWarning(clock);
    this.settings = settings;
    this.allow = this.makeAllowList(settings);
    this.checkApproved();
  }

  /** Current settings (connections read the deadlines as they arm them; the size limit when they open). */
  get limits(): Readonly<SocketmapSettings> {
    return this.settings;
  }

  /**
   * Use new settings for maps, allow-list and limits (a configuration
   * reload); listen addresses and TLS files are read at start only.
   */
  configure(settings: SocketmapSettings): void {
    this.settings = { ...settings, listen: this.settings.listen, tcpMaps: this.settings.tcpMaps, tls: this.settings.tls };
    this.allow = this.makeAllowList(settings);
    this.checkApproved();
  }

  private makeAllowList(s: SocketmapSettings): AllowList {
    return new AllowList(s.clients, (why) => log.warn(`${SOCKETMAP_CLIENTS_PARAM}: ${why}`));
  }

  /** Warn once for every mapped table that proxy_read_maps does not approve (its lookups are refused). */
  private checkApproved(): void {
    const approved = this.backend.handler.approvedFor('proxymap');
    for (const [name, spec] of this.settings.maps) {
      if (!approved.has(spec)) {
        log.warn(`${SOCKETMAP_MAPS_PARAM}: table "${logBytes(spec)}" of name "${logBytes(name)}" is not listed in proxy_read_maps; requests for "${logBytes(name)}" get a PERM reply`);
      }
    }
    for (const { listen, spec } of this.settings.tcpMaps) {
      if (!approved.has(spec)) {
        log.warn(`${TCP_MAPS_PARAM}: table "${logBytes(spec)}" of ${showListen(listen)} is not listed in proxy_read_maps; its lookups get a 400 reply`);
      }
    }
  }

  /**
   * Open every listener of the settings. One that cannot be opened is a
   * warning (the others and the proxymap service go on). Returns the
   * addresses listened on (an inet port 0 shows the port bound).
   */
  async listen(): Promise<string[]> {
    const t = this.settings.tls;
    if (t) {
      try {
        this.tls = tls.createServer({
          cert: fs.readFileSync(t.certFile),
          key: fs.readFileSync(t.keyFile),
          ca: t.caFile ? fs.readFileSync(t.caFile) : undefined,
          requestCert: t.requireClientCert,
          rejectUnauthorized: t.requireClientCert,
          handshakeTimeout: this.settings.requestTimeoutMs,
        });
        this.tls.on('secureConnection', (sock: tls.TLSSocket) => this.serve(sock, socketmapCodec(this), sock.remoteAddress ?? 'unknown'));
        this.tls.on('tlsClientError', (e, sock) => {
          this.clientWarning.warn(`socketmap: TLS with ${sock.remoteAddress ?? 'unknown'}: ${e.message}`);
          sock.destroy();
        });
      } catch (e) {
        log.warn(`socketmap: TLS settings unusable: ${(e as Error).message}; not listening on inet addresses`);
      }
    }
    const plans: ListenerPlan[] = [
      ...this.settings.listen.map((spec) => ({ spec, codec: () => socketmapCodec(this), tls: true })),
      ...this.settings.tcpMaps.map(({ listen, spec }) => ({ spec: listen, codec: () => tcpCodec(this, spec), tls: false })),
    ];
    for (const plan of plans) {
      const shown = showListen(plan.spec);
      if (plan.spec.kind === 'inet' && plan.tls && t && !this.tls) continue;
      try {
        this.listeners.push(await this.listenOne(plan, shown));
      } catch (e) {
        log.warn(`socketmap: cannot listen on ${shown}: ${(e as Error).message}`);
      }
    }
    return this.listeners.map((l) => l.where);
  }

  private async listenOne(plan: ListenerPlan, shown: string): Promise<Listener> {
    const { spec } = plan;
    const inet = spec.kind === 'inet';
    const useTls = inet && plan.tls;
    const srv = net.createServer({ allowHalfOpen: true }, (sock) => this.accept(sock, inet, useTls, plan.codec));
    srv.on('error', (e) => log.warn(`socketmap listener ${shown}: ${e.message}`));
    if (spec.kind === 'unix') {
      const dir = path.dirname(spec.path);
      if (!fs.existsSync(dir)) fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
      // as Postfix's sockets: open to all, access controlled by the directory
      await listenOnPath(srv, spec.path, 0o666);
      return { server: srv, where: shown, path: spec.path };
    }
    await listenOn(srv, (done) => srv.listen(spec.port, spec.host, done));
    const a = srv.address() as net.AddressInfo;
    return { server: srv, where: `inet:${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` };
  }

  private accept(raw: net.Socket, inet: boolean, useTls: boolean, codec: () => WireCodec): void {
    if (inet && !this.allow.allows(raw.remoteAddress)) {
      this.refusedCount++;
      this.refused.warn(`socketmap: refusing connection from ${raw.remoteAddress ?? 'unknown'}: not in ${SOCKETMAP_CLIENTS_PARAM}`);
      raw.destroy();
      return;
    }
    const max = this.settings.maxConnections;
    if (max > 0 && this.conns.size >= max) {
      this.refusedCount++;
      this.overLimit.warn(`socketmap: refusing connection from ${raw.remoteAddress ?? 'a local client'}: ${max} connections open (proxymapd_socketmap_max_connections)`);
      raw.destroy();
      return;
    }
    this.accepted++;
    const peer = raw.remoteAddress ?? 'local client';
    if (useTls && this.tls) {
      // tls.Server does the handshake (within the request deadline) and the client certificate check
      this.tls.emit('connection', raw);
      return;
    }
    this.serve(raw, codec(), peer);
  }

  private serve(sock: net.Socket, codec: WireCodec, peer: string): void {
    this.conns.add(new FrontEndConnection(sock, this, codec, peer));
  }

  /** A connection closed (called by the connection). */
  closed(conn: FrontEndConnection): void {
    this.conns.delete(conn);
  }

  get openConnections(): number {
    return this.conns.size;
  }

  /**
   * Look a key up in a table as a Postfix daemon's read-only lookup:
   * DENY (with a rate-limited warning) when proxy_read_maps does not
   * approve the table; a failure inside the handler is RETRY.
   */
  lookup(spec: string, key: string, what: string): LookupAnswer | Promise<LookupAnswer> {
    if (!this.backend.handler.approvedFor('proxymap').has(spec)) {
      this.clientWarning.warn(`${what}: table "${logBytes(spec)}" is not approved in proxy_read_maps`);
      return { status: PROXY_STAT.DENY, value: '' };
    }
    const req: LookupRequest = { kind: 'lookup', dialect: 'new', table: spec, instanceFlags: LOOKUP_FLAGS, flags: LOOKUP_FLAGS, key };
    const metrics = this.backend.metrics;
    const start = metrics === null ? 0 : performance.now();
    const answer = (o: Outcome): LookupAnswer => {
      metrics?.record('proxymap', 'lookup', spec, o.reply.status, performance.now() - start);
      return { status: o.reply.status, value: o.reply.value ?? '' };
    };
    const internal = (e: unknown): LookupAnswer => {
      log.warn(`${what}: internal error: ${(e as Error)?.stack ?? e}`);
      return { status: PROXY_STAT.RETRY, value: '' };
    };
    let out: Outcome | Promise<Outcome>;
    try {
      out = this.backend.handler.handle(req, 'proxymap');
    } catch (e) {
      return internal(e);
    }
    return out instanceof Promise ? out.then(answer, internal) : answer(out);
  }

  /** Stop listening (socket paths are removed) and close every connection. */
  async close(): Promise<void> {
    const listeners = this.listeners.splice(0);
    for (const c of [...this.conns]) c.destroy();
    await Promise.all(listeners.map((l) => closeListener(l.server, l.path)));
  }
}

/** A listen address as the parameters write it. */
export function showListen(spec: ListenSpec): string {
  return spec.kind === 'unix' ? `unix:${spec.path}` : `inet:${spec.host.includes(':') ? `[${spec.host}]` : spec.host}:${spec.port}`;
}

/** The socketmap protocol: netstrings `name key`, replies `OK value`, `NOTFOUND `, `TEMP`, `TIMEOUT`, `PERM`. */
function socketmapCodec(server: SocketmapServer): WireCodec {
  return {
    decoder: new NetstringDecoder(server.limits.maxRequest),
    answer(payload) {
      const sp = payload.indexOf(' ');
      if (sp <= 0) {
        server.clientWarning.warn(`socketmap: malformed request "${shownName(payload)}": expected "name key"`);
        return 'PERM malformed request: expected "name key"';
      }
      const name = payload.slice(0, sp);
      const spec = server.limits.maps.get(name);
      const shown = shownName(name);
      if (spec === undefined) {
        server.clientWarning.warn(`socketmap: request for unknown name "${shown}" (not in ${SOCKETMAP_MAPS_PARAM})`);
        return `PERM unknown map name: ${shown}`;
      }
      const reply = (a: LookupAnswer): string => {
        switch (a.status) {
          case PROXY_STAT.OK:
            return `OK ${a.value}`;
          case PROXY_STAT.NOKEY:
            return 'NOTFOUND ';
          case PROXY_STAT.RETRY:
            return `TEMP ${shown}: temporary lookup failure`;
          case PROXY_STAT.DENY:
            return `PERM ${shown}: table not approved`;
          default:
            return `PERM ${shown}: table configuration error`;
        }
      };
      const out = server.lookup(spec, payload.slice(sp + 1), `socketmap: request for "${shown}"`);
      return out instanceof Promise ? out.then(reply) : reply(out);
    },
    timeout: (payload, seconds) => `TIMEOUT ${shownName(payload.slice(0, payload.indexOf(' ')))}: no answer within ${seconds}s`,
    framingError: (message) => `PERM ${message}`,
    encode: encodeNetstring,
  };
}

/** A request name as replies and logs show it: printable, bounded. */
function shownName(name: string): string {
  return printable(logBytes(name.slice(0, MAX_NAME_SHOWN)));
}

/**
 * One front-end client connection: requests answered one at a time in
 * order, with the idle deadline (no request for idle_timeout), the request
 * deadline (a started request must arrive, and its table must answer,
 * within request_timeout; a reply that cannot be written in that time
 * closes the connection).
 */
class FrontEndConnection {
  private readonly decoder: RequestDecoder;
  private readonly queue: string[] = [];
  private busy = false;
  private closed = false;
  private paused = false;
  /** a framing error: answered with PERM once the requests before it are answered, then the connection closes */
  private broken: string | null = null;
  private idleTimer: unknown = null;
  private recvTimer: unknown = null;
  private lookupTimer: unknown = null;
  private writeTimer: unknown = null;
  /** number of the request in progress (a late answer after TIMEOUT is dropped) */
  private seq = 0;

  constructor(
    private readonly sock: net.Socket,
    private readonly owner: SocketmapServer,
    private readonly codec: WireCodec,
    private readonly peer: string,
  ) {
    this.decoder = codec.decoder;
    sock.on('data', (chunk: Buffer) => this.feed(chunk.toString('latin1')));
    sock.on('end', () => this.maybeFinish());
    sock.on('drain', () => this.drained());
    sock.on('error', () => this.destroy());
    sock.on('close', () => this.destroy());
    this.armIdle();
  }

  private get clock(): Clock {
    return this.owner.clock;
  }

  private feed(chunk: string): void {
    if (this.closed || this.broken !== null) return;
    this.decoder.push(chunk);
    try {
      let p: string | null;
      while ((p = this.decoder.next()) !== null) this.queue.push(p);
    } catch (e) {
      if (!(e instanceof FramingError)) throw e;
      this.broken = e.message;
      this.owner.clientWarning.warn(`socketmap: ${this.peer}: ${e.message}; closing connection`);
      this.pauseReading();
    }
    this.stopTimer('idleTimer');
    if (this.broken === null && this.decoder.pendingBytes > 0) {
      if (this.recvTimer === null) {
        this.recvTimer = this.clock.setTimeout(() => {
          this.owner.clientWarning.warn(`socketmap: ${this.peer}: timeout receiving request; closing connection`);
          this.destroy();
        }, this.owner.limits.requestTimeoutMs);
      }
    } else {
      this.stopTimer('recvTimer');
    }
    if (this.queue.length >= MAX_QUEUED) this.pauseReading();
    this.pump();
  }

  private pump(): void {
    while (!this.busy && !this.closed && this.queue.length > 0) {
      const payload = this.queue.shift()!;
      const out = this.codec.answer(payload);
      if (typeof out === 'string') {
        this.write(out);
        continue;
      }
      this.busy = true;
      const seq = ++this.seq;
      this.lookupTimer = this.clock.setTimeout(() => {
        this.lookupTimer = null;
        this.done(seq, this.codec.timeout(payload, this.owner.limits.requestTimeoutMs / 1000));
      }, this.owner.limits.requestTimeoutMs);
      out.then((r) => this.done(seq, r));
      return;
    }
    if (this.closed) return;
    if (this.paused && this.broken === null && this.queue.length < MAX_QUEUED / 2 && this.sock.writableLength === 0) {
      this.paused = false;
      this.sock.resume();
    }
    if (!this.busy && this.queue.length === 0) {
      if (this.broken !== null) {
        this.write(this.codec.framingError(this.broken));
        this.finish();
        return;
      }
      this.maybeFinish();
      this.armIdle();
    }
  }

  /** The answer of request `seq` (from its table, or the TIMEOUT of its deadline: whichever comes first). */
  private done(seq: number, reply: string): void {
    if (this.closed || seq !== this.seq || !this.busy) return;
    this.stopTimer('lookupTimer');
    this.busy = false;
    this.write(reply);
    this.pump();
  }

  private write(payload: string): void {
    if (this.closed) return;
    if (!this.sock.write(this.codec.encode(payload), 'latin1')) {
      this.pauseReading();
      if (this.writeTimer === null) {
        this.writeTimer = this.clock.setTimeout(() => {
          this.owner.clientWarning.warn(`socketmap: ${this.peer}: timeout sending reply; closing connection`);
          this.destroy();
        }, this.owner.limits.requestTimeoutMs);
      }
    }
  }

  private drained(): void {
    this.stopTimer('writeTimer');
    this.pump();
  }

  private pauseReading(): void {
    if (!this.paused) {
      this.paused = true;
      this.sock.pause();
    }
  }

  private armIdle(): void {
    if (this.closed || this.busy || this.idleTimer !== null || this.decoder.pendingBytes > 0) return;
    this.idleTimer = this.clock.setTimeout(() => {
      log.debug(`socketmap: ${this.peer}: idle for ${this.owner.limits.idleTimeoutMs / 1000}s; closing connection`);
      this.destroy();
    }, this.owner.limits.idleTimeoutMs);
  }

  private stopTimer(which: 'idleTimer' | 'recvTimer' | 'lookupTimer' | 'writeTimer'): void {
    if (this[which] !== null) {
      this.clock.clearTimeout(this[which]);
      this[which] = null;
    }
  }

  /** The client closed its side: close ours once everything received is answered. */
  private maybeFinish(): void {
    if (this.sock.readableEnded && !this.busy && this.queue.length === 0) this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    // Destroyed once the replies are written, whether or not the client closes its side.
    this.sock.end(() => this.sock.destroy());
    this.cleanup();
  }

  destroy(): void {
    if (this.closed) return;
    this.sock.destroy();
    this.cleanup();
  }

  private cleanup(): void {
    this.closed = true;
    this.queue.length = 0;
    this.stopTimer('idleTimer');
    this.stopTimer('recvTimer');
    this.stopTimer('lookupTimer');
    this.stopTimer('writeTimer');
    this.owner.closed(this);
  }
}

/** The socketmap settings of a configuration (warnings to the log). */
export function socketmapConfig(param: (name: string) => string | undefined): SocketmapSettings {
  return socketmapSettings({ param, warn: log.warn });
}

/**
 * Start the front-end when proxymapd_socketmap_listen or proxymapd_tcp_maps
 * names an address (standalone `proxymapd serve` only: under master(8)
 * several processes would compete for the same addresses). Null when it
 * is off.
 */
export async function startSocketmap(backend: LookupBackend, param: (name: string) => string | undefined): Promise<SocketmapServer | null> {
  const settings = socketmapConfig(param);
  if (settings.listen.length === 0 && settings.tcpMaps.length === 0) return null;
  const sm = new SocketmapServer(backend, settings);
  const where = await sm.listen();
  if (where.length > 0) log.info(`socketmap/tcp_table front-end on ${where.join(', ')}`);
  return sm;
}
