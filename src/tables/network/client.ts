/**
 * What the socketmap: and tcp: tables share: the endpoint syntax of
 * Postfix's connect helpers (src/util/host_port.c, inet_connect.c,
 * unix_connect.c, auto_clnt.c) and a small pool of client connections to
 * one endpoint, with Postfix's connect and I/O time limits, an optional
 * idle limit and time to live (auto_clnt's max_idle/max_ttl), and one
 * request in flight per connection.
 *
 * Pool: at most `maxConnections` connections (POOL_SIZE, 4, unless the
 * table says otherwise); a lookup takes an idle connection (the most
 * recently used first) or opens a new one, and waits in FIFO order when
 * every connection is busy. A request and its reply are never interleaved
 * with another's on one connection. An idle connection is closed when the
 * server closes it or sends anything unasked (auto_clnt_event does the
 * same), when it has been idle for `idleMs`, and once it is older than
 * `ttlMs` (checked whenever it becomes idle, as Postfix's TTL timer fires
 * only between requests). A reply followed by more bytes than it needs
 * closes the connection too: the extra bytes could only be taken for the
 * next request's answer.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { strerror } from '../../util/strerror.js';

/** Connections per pool (socketmap endpoint, tcp table). */
export const POOL_SIZE = 4;

/**
 * The time limits, in milliseconds, that Postfix fixes in the table code
 * (100 s I/O and connect for both types, socketmap's 10 s idle and 100 s
 * TTL, tcp's 1 s pause between attempts). Tests may shorten them; nothing
 * else changes them.
 */
export const NET_LIMITS = {
  timeoutMs: 100_000,
  sockmapIdleMs: 10_000,
  sockmapTtlMs: 100_000,
  tcpRetryPauseMs: 1000,
};

export type Endpoint =
  | { kind: 'inet'; host: string; port: string; label: string }
  | { kind: 'unix'; path: string; label: string };

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const HOSTNAME = /^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/;

function validHostaddr(h: string): boolean {
  const m = IPV4.exec(h);
  if (m) return m.slice(1).every((o) => Number(o) <= 255);
  return net.isIPv6(h);
}

function validHostname(h: string): boolean {
  if (h.length > 255 || !HOSTNAME.test(h)) return false;
  // an all-numeric name is an address, not a name
  return !/^[\d.]+$/.test(h);
}

/**
 * host_port(buf, &host, "localhost", &port, NULL): `host:port`, `[addr]:port`,
 * `:port`, or a port alone; the host defaults to localhost. Postfix checks
 * this when it connects (a fatal error); the tables check it at open.
 */
export function parseHostPort(addr: string): { host: string; port: string } | { error: string } {
  let host: string | undefined;
  let port: string | undefined;
  let defHost = false;
  if (addr.startsWith('[')) {
    let rest = addr.slice(1);
    const ipv6 = /^ipv6:/i.test(rest);
    if (ipv6) rest = rest.slice(5);
    const close = rest.indexOf(']');
    if (close < 0) return { error: 'missing "]"' };
    host = rest.slice(0, close);
    let after = rest.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) return { error: 'garbage after "]"' };
    after = after.slice(1);
    if (ipv6 && !net.isIPv6(host)) return { error: 'malformed IPv6 address' };
    port = after !== '' ? after : undefined;
  } else {
    const colon = addr.lastIndexOf(':');
    if (colon >= 0) {
      host = addr.slice(0, colon) || ((defHost = true), 'localhost');
      port = addr.slice(colon + 1) || undefined;
    } else {
      host = 'localhost';
      defHost = true;
      port = addr || undefined;
    }
  }
  if (port === undefined) return { error: 'missing service information' };
  if (!defHost && !validHostname(host) && !validHostaddr(host)) return { error: 'valid hostname or network address required' };
  if (/^\d/.test(port) && !/^\d+$/.test(port)) return { error: 'garbage after numerical service' };
  return { host, port };
}

let services: Map<string, number> | undefined;
function servicePort(name: string): number | undefined {
  if (/^\d+$/.test(name)) {
    const n = Number(name);
    return n <= 65535 ? n : undefined;
  }
  if (!services) {
    services = new Map();
    try {
      for (const line of readFileSync('/etc/services', 'latin1').split('\n')) {
        const m = /^([^\s#]+)\s+(\d+)\/tcp\b([^#]*)/.exec(line);
        if (!m) continue;
        for (const n of [m[1], ...m[3].trim().split(/\s+/).filter(Boolean)]) if (!services.has(n)) services.set(n, Number(m[2]));
      }
    } catch {
      /* no /etc/services: numeric ports only */
    }
  }
  return services.get(name);
}

/** A completed read: the reader's result, the bytes it used, and whether the connection stays usable. */
export interface ReadDone<T> {
  result: T;
  used: number;
  keep: boolean;
}

/** Looks at the bytes received so far: undefined while it needs more. */
export type Reader<T> = (buf: Buffer) => ReadDone<T> | undefined;

export type ExchangeFailure = {
  ok: false;
  /** connect: no connection; eof: the server closed or reset it before a full reply; timeout: the I/O limit passed */
  kind: 'connect' | 'eof' | 'timeout';
  /** strerror text of the errno Postfix would see */
  errno: string;
  /** the reply bytes received before the failure */
  received: Buffer;
};
export type ExchangeResult<T> = { ok: true; result: T } | ExchangeFailure;

export interface PoolOptions {
  maxConnections?: number;
  /** connect and per-read time limit */
  timeoutMs: () => number;
  /** close a connection idle this long (0: never) */
  idleMs?: () => number;
  /** close a connection this old when it next becomes idle (0: never) */
  ttlMs?: () => number;
  /** inet_connect's own warnings (an unknown host or service) */
  warn(text: string): void;
}

interface Conn {
  socket: net.Socket;
  born: number;
  dead: boolean;
  idleTimer?: NodeJS.Timeout;
  /** the exchange waiting on this connection */
  onEvent?: (ev: 'data' | 'eof' | 'error', arg?: Buffer | Error) => void;
}

export class ConnPool {
  private readonly idle: Conn[] = [];
  private readonly all = new Set<Conn>();
  private busy = 0;
  private readonly waiting: Array<() => void> = [];
  private closed = false;
  private readonly max: number;

  constructor(
    readonly endpoint: Endpoint,
    private readonly o: PoolOptions,
  ) {
    this.max = o.maxConnections ?? POOL_SIZE;
  }

  /** Live connections (busy and idle). */
  get size(): number {
    return this.all.size;
  }

  /**
   * Send a request and read its reply with `reader`, on one connection
   * nobody else uses meanwhile. `fresh`: on a new connection (a retry after
   * the server closed one).
   */
  async exchange<T>(request: Buffer, reader: Reader<T>, fresh = false): Promise<ExchangeResult<T>> {
    if (this.busy >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    this.busy++;
    try {
      let conn = fresh ? undefined : this.takeIdle();
      if (!conn) {
        const c = await this.connect();
        if ('errno' in c) return { ok: false, kind: 'connect', errno: c.errno, received: Buffer.alloc(0) };
        conn = c;
      }
      return await this.run(conn, request, reader);
    } finally {
      this.busy--;
      this.waiting.shift()?.();
    }
  }

  /** Close every connection; later exchanges open new ones. */
  close(): void {
    this.closed = true;
    for (const c of [...this.all]) this.destroy(c);
  }

  private takeIdle(): Conn | undefined {
    for (;;) {
      const c = this.idle.pop();
      if (!c) return undefined;
      clearTimeout(c.idleTimer);
      if (!c.dead) return c;
    }
  }

  private destroy(c: Conn): void {
    c.dead = true;
    clearTimeout(c.idleTimer);
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
    this.all.delete(c);
    c.socket.destroy();
  }

  private release(c: Conn): void {
    const ttl = this.o.ttlMs?.() ?? 0;
    if (this.closed || c.dead || (ttl > 0 && Date.now() - c.born >= ttl)) {
      this.destroy(c);
      return;
    }
    const idle = this.o.idleMs?.() ?? 0;
    const left = ttl > 0 ? ttl - (Date.now() - c.born) : 0;
    const ms = idle > 0 && left > 0 ? Math.min(idle, left) : idle > 0 ? idle : left;
    if (ms > 0) {
      c.idleTimer = setTimeout(() => this.destroy(c), ms);
      c.idleTimer.unref();
    }
    this.idle.push(c);
  }

  private connect(): Promise<Conn | { errno: string }> {
    const ep = this.endpoint;
    let port = 0;
    if (ep.kind === 'inet') {
      const p = servicePort(ep.port);
      if (p === undefined) {
        this.o.warn(`host or service ${ep.label} not found: Servname not supported for ai_socktype`);
        return Promise.resolve({ errno: strerror('EADDRNOTAVAIL') });
      }
      port = p;
    }
    return new Promise((resolve) => {
      const socket = ep.kind === 'inet' ? net.connect({ host: ep.host, port }) : net.connect({ path: ep.path });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve({ errno: strerror('ETIMEDOUT') });
      }, this.o.timeoutMs());
      socket.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        socket.destroy();
        if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN' || e.code === 'EAI_FAIL') {
          const why = e.code === 'ENOTFOUND' ? 'Name or service not known' : 'Temporary failure in name resolution';
          this.o.warn(`host or service ${ep.label} not found: ${why}`);
          resolve({ errno: strerror('EADDRNOTAVAIL') });
        } else resolve({ errno: strerror(e) });
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.setNoDelay(true);
        const c: Conn = { socket, born: Date.now(), dead: false };
        if (this.closed) {
          socket.destroy();
          resolve({ errno: strerror('ECONNABORTED') });
          return;
        }
        this.all.add(c);
        // Events while no exchange waits: the server closed the connection or talks out of turn.
        socket.on('data', (d: Buffer) => (c.onEvent ? c.onEvent('data', d) : this.destroy(c)));
        socket.on('end', () => (c.onEvent ? c.onEvent('eof') : this.destroy(c)));
        socket.on('close', () => (c.onEvent ? c.onEvent('eof') : this.destroy(c)));
        socket.on('error', (e: Error) => (c.onEvent ? c.onEvent('error', e) : this.destroy(c)));
        resolve(c);
      });
    });
  }

  private run<T>(c: Conn, request: Buffer, reader: Reader<T>): Promise<ExchangeResult<T>> {
    return new Promise((resolve) => {
      let buf: Buffer = Buffer.alloc(0);
      let timer: NodeJS.Timeout | undefined;
      const finish = (r: ExchangeResult<T>, keep: boolean) => {
        clearTimeout(timer);
        c.onEvent = undefined;
        if (keep) this.release(c);
        else this.destroy(c);
        resolve(r);
      };
      // Postfix's limit is per read or write: restart it whenever bytes arrive.
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => finish({ ok: false, kind: 'timeout', errno: strerror('ETIMEDOUT'), received: buf }, false), this.o.timeoutMs());
      };
      c.onEvent = (ev, arg) => {
        if (ev === 'data') {
          buf = buf.length === 0 ? (arg as Buffer) : Buffer.concat([buf, arg as Buffer]);
          let done: ReturnType<Reader<T>>;
          try {
            done = reader(buf);
          } catch {
            // a reply this reader cannot take apart: the connection is dropped, never the process (the lookup fails as on EOF)
            return finish({ ok: false, kind: 'eof', errno: strerror('EPROTO'), received: buf }, false);
          }
          if (!done) return arm();
          finish({ ok: true, result: done.result }, done.keep && done.used === buf.length);
        } else {
          // a plain EOF leaves the errno of the non-blocking connect (what postmap shows)
          const errno = ev === 'error' && (arg as NodeJS.ErrnoException).code ? strerror(arg) : strerror('EINPROGRESS');
          finish({ ok: false, kind: 'eof', errno, received: buf }, false);
        }
      };
      if (c.dead) {
        finish({ ok: false, kind: 'eof', errno: strerror('EINPROGRESS'), received: buf }, false);
        return;
      }
      arm();
      c.socket.write(request);
    });
  }
}

/** An inet endpoint from `host:port` text (inet_connect), or the host_port error. */
export function inetEndpoint(addr: string): Endpoint | { error: string } {
  const hp = parseHostPort(addr);
  if ('error' in hp) return { error: `${addr}: ${hp.error}` };
  return { kind: 'inet', host: hp.host, port: hp.port, label: addr };
}

/**
 * An auto_clnt service (`inet:host:port`, `unix:/path`, `local:path`): the
 * endpoint, or the text of Postfix's fatal error. A relative UNIX path is
 * taken from `baseDir` (Postfix daemons run in the queue directory).
 */
export function serviceEndpoint(service: string, baseDir?: string): Endpoint | { error: string } {
  const colon = service.indexOf(':');
  const transport = colon < 0 ? '' : service.slice(0, colon);
  const rest = colon < 0 ? '' : service.slice(colon + 1);
  if (colon < 0 || rest === '' || transport === '') return { error: `need service transport:endpoint instead of "${service}"` };
  if (transport === 'inet') return inetEndpoint(rest);
  if (transport === 'unix' || transport === 'local') {
    const path = rest.startsWith('/') || !baseDir ? rest : `${baseDir}/${rest}`;
    return { kind: 'unix', path, label: rest };
  }
  return { error: `invalid transport name: ${transport} in service: ${service}` };
}
