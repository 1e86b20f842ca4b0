/**
 * The client side of the memcached text protocol as Postfix's memcache
 * table speaks it (global/memcache_proto.c over util/auto_clnt.c):
 *
 *   - the server endpoint `inet:host:port`, `inet:[addr]:port`,
 *     `unix:/path` or `local:/path` (auto_clnt_create, host_port);
 *   - one connection (McConn) that is opened when a command needs it and
 *     closed after any error ("recover"), or when the server closes it while
 *     it is idle (what the daemon's event loop does for auto_clnt);
 *   - reading one reply line with Postfix's bound (vstring_get_bound plus
 *     the CRLF repair of memcache_get: CRLF or bare LF ends a line), reading
 *     a data block followed by CRLF (memcache_fread), and every read waiting
 *     at most `timeout` seconds for more bytes (the vstream time limit);
 *   - a small per-table pool (McPool) of such connections. A connection
 *     carries one command at a time from request to reply, so the replies of
 *     two lookups can never be mixed up; commands beyond the pool size wait
 *     in FIFO order for a free connection.
 */
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { TableOpenError, type Bytes } from '../core/table.js';
import { strerror } from '../../util/strerror.js';

/** The network errno texts (glibc) a connection can report, beyond the shared table. */
const NET_MESSAGES: Record<string, string> = {
  ECONNREFUSED: 'Connection refused',
  ECONNRESET: 'Connection reset by peer',
  ECONNABORTED: 'Software caused connection abort',
  EPIPE: 'Broken pipe',
  EHOSTUNREACH: 'No route to host',
  ENETUNREACH: 'Network is unreachable',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  EADDRINUSE: 'Address already in use',
  ENOTSOCK: 'Socket operation on non-socket',
  EPROTOTYPE: 'Protocol wrong type for socket',
  ETIMEDOUT: 'Connection timed out',
};

/** glibc's text for a socket error, as Postfix's %m prints it. */
export function netStrerror(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code !== undefined && NET_MESSAGES[code] !== undefined) return NET_MESSAGES[code]!;
  return strerror(err);
}

/** Where the server is: a TCP host and port, or a UNIX-domain socket path. */
export type McEndpoint =
  | { kind: 'inet'; host: string; port: number | null; service: string; label: Bytes }
  | { kind: 'unix'; path: Bytes; label: Bytes };

function allDigits(s: string): boolean {
  return s.length > 0 && /^[0-9]+$/.test(s);
}

/** A TCP service name from /etc/services (what getaddrinfo() would find), or null. */
function serviceLookup(name: string): number | null {
  try {
    const text = readFileSync('/etc/services', 'latin1');
    for (const line of text.split('\n')) {
      const body = line.split('#')[0]!.trim();
      if (!body) continue;
      const [svc, portProto, ...aliases] = body.split(/\s+/);
      const m = /^(\d+)\/tcp$/.exec(portProto ?? '');
      if (m && (svc === name || aliases.includes(name))) return Number(m[1]);
    }
  } catch {
    /* no services file: only numeric ports */
  }
  return null;
}

/**
 * Parse the `memcache` parameter (auto_clnt_create, then host_port for
 * inet). Postfix exits on a bad endpoint (at open for the transport, at the
 * first connect for the host:port part); both throw TableOpenError here.
 */
export function parseEndpoint(service: Bytes): McEndpoint {
  const colon = service.indexOf(':');
  const transport = colon < 0 ? '' : service.slice(0, colon);
  const endpoint = colon < 0 ? '' : service.slice(colon + 1);
  if (colon < 0 || endpoint === '' || transport === '') {
    throw new TableOpenError(`need service transport:endpoint instead of "${service}"`);
  }
  if (transport === 'unix' || transport === 'local') return { kind: 'unix', path: endpoint, label: endpoint };
  if (transport !== 'inet') throw new TableOpenError(`invalid transport name: ${transport} in service: ${service}`);
  let host: string;
  let port: string;
  const bad = (why: string) => new TableOpenError(`${endpoint}: ${why}`);
  if (endpoint.startsWith('[')) {
    let rest = endpoint.slice(1);
    const ipv6 = rest.slice(0, 5).toLowerCase() === 'ipv6:';
    if (ipv6) rest = rest.slice(5);
    const close = rest.indexOf(']');
    if (close < 0) throw bad('missing "]"');
    host = rest.slice(0, close);
    let after = rest.slice(close + 1);
    if (after !== '') {
      if (after[0] !== ':') throw bad('garbage after "]"');
      after = after.slice(1);
    }
    if (ipv6 && net.isIPv6(host) === false) throw bad('malformed IPv6 address');
    port = after;
  } else {
    const c = endpoint.lastIndexOf(':');
    if (c < 0) {
      // A bare word is the host and there is no default service.
      throw bad('missing service information');
    }
    host = endpoint.slice(0, c) || 'localhost';
    port = endpoint.slice(c + 1);
  }
  if (host === '') throw bad('missing host information');
  if (port === '') throw bad('missing service information');
  if (/^[0-9]/.test(port) && !allDigits(port)) throw bad('garbage after numerical service');
  if (host !== 'localhost' && !net.isIP(host) && !/^[A-Za-z0-9_.-]+$/.test(host)) {
    throw bad('valid hostname or network address required');
  }
  const numeric = allDigits(port) ? Number(port) : null;
  return { kind: 'inet', host, port: numeric !== null && numeric < 65536 ? numeric : null, service: port, label: endpoint };
}

/** A failed read: `errno` is the %m text when the failure has one (a timeout, a socket error), else null (EOF, too long). */
export interface IoFailure {
  ok: false;
  errno: string | null;
}
export type LineResult = { ok: true; line: Bytes } | IoFailure;
export type DataResult = { ok: true; data: Bytes } | IoFailure;

const LF = 0x0a;
const CR = 0x0d;

/** One connection to the server (an AUTO_CLNT stream). */
export class McConn {
  private sock: net.Socket | null = null;
  private buf: Buffer = Buffer.alloc(0);
  private eof = false;
  private error: Error | null = null;
  private wake: (() => void) | null = null;
  /** A command owns the connection (reads and writes go through it). */
  busy = false;

  constructor(
    private readonly ep: McEndpoint,
    private readonly timeoutMs: number,
    private readonly warn: (text: string) => void,
  ) {}

  get connected(): boolean {
    return this.sock !== null;
  }

  /**
   * auto_clnt_access(): the open stream, or a new connection. A connect
   * failure is logged as Postfix logs it (`connect to ENDPOINT: error`) and
   * gives false.
   */
  async access(): Promise<boolean> {
    if (this.sock) return true;
    const res = await this.connect();
    if (res !== null) {
      this.warn(`connect to ${this.ep.label}: ${res}`);
      return false;
    }
    return true;
  }

  private connect(): Promise<string | null> {
    return new Promise((resolve) => {
      let sock: net.Socket;
      const ep = this.ep;
      if (ep.kind === 'inet') {
        const port = ep.port ?? serviceLookup(ep.service);
        if (port === null) {
          this.warn(`host or service ${ep.label} not found: Servname not supported for ai_socktype`);
          resolve(NET_MESSAGES.EADDRNOTAVAIL!);
          return;
        }
        sock = net.connect({ host: ep.host, port, autoSelectFamily: true });
      } else {
        sock = net.connect({ path: Buffer.from(ep.path, 'latin1').toString('utf8') });
      }
      let timer: NodeJS.Timeout | undefined;
      const done = (err: string | null) => {
        if (timer) clearTimeout(timer);
        sock.removeListener('error', onError);
        sock.removeListener('connect', onConnect);
        if (err !== null) {
          sock.destroy();
          resolve(err);
          return;
        }
        this.attach(sock);
        resolve(null);
      };
      const onError = (e: Error) => done(netStrerror(e));
      const onConnect = () => done(null);
      sock.once('error', onError);
      sock.once('connect', onConnect);
      if (this.timeoutMs > 0) timer = setTimeout(() => done(NET_MESSAGES.ETIMEDOUT!), this.timeoutMs);
    });
  }

  private attach(sock: net.Socket): void {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.eof = false;
    this.error = null;
    sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => {
      if (this.sock !== sock) return;
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      this.poke();
    });
    const lost = (err: Error | null) => {
      if (this.sock !== sock) return;
      if (err && !this.error) this.error = err;
      this.eof = true;
      // Idle: the server hung up (restart, idle timeout); forget the stream, as the event loop does.
      if (!this.busy) this.recover();
      else this.poke();
    };
    sock.on('end', () => lost(null));
    sock.on('close', () => lost(null));
    sock.on('error', (e: Error) => lost(e));
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** auto_clnt_recover(): close the stream; the next access() connects again. */
  recover(): void {
    const s = this.sock;
    this.sock = null;
    this.buf = Buffer.alloc(0);
    this.eof = false;
    this.error = null;
    this.poke();
    s?.destroy();
  }

  /** Send bytes (a command line or a data block with its CRLF). Errors show up at the next read. */
  send(data: Bytes): void {
    const s = this.sock;
    if (!s || s.destroyed) return;
    try {
      s.write(Buffer.from(data, 'latin1'));
    } catch (e) {
      this.error = e as Error;
    }
  }

  /** Wait for more bytes, the end of the stream, or the time limit: null when more may follow, else the failure. */
  private async more(): Promise<IoFailure | null> {
    if (!this.sock) return { ok: false, errno: null };
    if (this.error) return { ok: false, errno: netStrerror(this.error) };
    if (this.eof) return { ok: false, errno: null };
    const before = this.buf.length;
    let timedOut = false;
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      this.wake = () => {
        if (timer) clearTimeout(timer);
        resolve();
      };
      if (this.timeoutMs > 0) {
        timer = setTimeout(() => {
          timedOut = true;
          this.wake = null;
          resolve();
        }, this.timeoutMs);
      }
    });
    if (this.buf.length > before) return null;
    if (timedOut) return { ok: false, errno: NET_MESSAGES.ETIMEDOUT! };
    if (this.error) return { ok: false, errno: netStrerror(this.error) };
    return this.sock ? (this.eof ? { ok: false, errno: null } : null) : { ok: false, errno: null };
  }

  private take(n: number): Buffer {
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /**
   * memcache_get(): one line of at most `bound` bytes counting its LF (a
   * CR that is the last byte allowed still counts when an LF follows). The
   * terminator (CRLF or a bare LF) is removed. An over-long line, the end
   * of the stream before a LF, an error or the time limit fail.
   */
  async readLine(bound: number): Promise<LineResult> {
    for (;;) {
      const scan = Math.min(this.buf.length, bound);
      const lf = this.buf.subarray(0, scan).indexOf(LF);
      if (lf >= 0) {
        const raw = this.take(lf + 1);
        let end = lf;
        if (end > 0 && raw[end - 1] === CR) end--;
        return { ok: true, line: raw.subarray(0, end).toString('latin1') };
      }
      if (this.buf.length >= bound) {
        if (this.buf[bound - 1] !== CR) return { ok: false, errno: null };
        if (this.buf.length > bound) {
          if (this.buf[bound] !== LF) return { ok: false, errno: null };
          const raw = this.take(bound + 1);
          return { ok: true, line: raw.subarray(0, bound - 1).toString('latin1') };
        }
      }
      const f = await this.more();
      if (f) return f;
    }
  }

  /** memcache_fread(): exactly `n` bytes, then CR and LF. */
  async readData(n: number): Promise<DataResult> {
    while (this.buf.length < n + 1) {
      const f = await this.more();
      if (f) return f;
    }
    if (this.buf[n] !== CR) return { ok: false, errno: null };
    while (this.buf.length < n + 2) {
      const f = await this.more();
      if (f) return f;
    }
    if (this.buf[n + 1] !== LF) return { ok: false, errno: null };
    const data = this.take(n + 2).subarray(0, n).toString('latin1');
    return { ok: true, data };
  }
}

/**
 * A table's connections: at most `size`, each used by one command at a
 * time. A command that finds them all busy waits its turn.
 */
export class McPool {
  private readonly conns: McConn[] = [];
  private readonly waiting: Array<(c: McConn) => void> = [];
  private closed = false;

  constructor(
    private readonly ep: McEndpoint,
    private readonly timeoutMs: number,
    private readonly size: number,
    private readonly warn: (text: string) => void,
  ) {}

  /** Run `fn` with a connection of its own; the connection is free again when `fn` settles. */
  async use<T>(fn: (c: McConn) => Promise<T>): Promise<T> {
    const c = await this.acquire();
    try {
      return await fn(c);
    } finally {
      this.release(c);
    }
  }

  private acquire(): Promise<McConn> {
    const free = this.conns.filter((c) => !c.busy);
    const pick = free.find((c) => c.connected) ?? free[0];
    if (pick) {
      pick.busy = true;
      return Promise.resolve(pick);
    }
    if (this.conns.length < this.size) {
      const c = new McConn(this.ep, this.timeoutMs, this.warn);
      c.busy = true;
      this.conns.push(c);
      return Promise.resolve(c);
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(c: McConn): void {
    if (this.closed) {
      c.recover();
      c.busy = false;
      return;
    }
    const next = this.waiting.shift();
    if (next) {
      next(c);
      return;
    }
    c.busy = false;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Close every connection (commands still running finish with an I/O failure). */
  close(): void {
    this.closed = true;
    for (const c of this.conns) c.recover();
  }
}

/**
 * sscanf(line, "VALUE %*s %*s %ld"): the data length of a VALUE reply
 * line, or null when the line does not have that form. A number beyond a
 * C long saturates (and is then over any limit).
 */
export function valueReplyLength(line: Bytes): number | null {
  if (!line.startsWith('VALUE')) return null;
  let i = 5;
  const space = (ch: string | undefined) => ch === ' ' || ch === '\t' || ch === '\n' || ch === '\v' || ch === '\f' || ch === '\r';
  for (let field = 0; field < 2; field++) {
    while (space(line[i])) i++;
    if (i >= line.length) return null;
    while (i < line.length && !space(line[i])) i++;
  }
  while (space(line[i])) i++;
  let neg = false;
  if (line[i] === '+' || line[i] === '-') neg = line[i++] === '-';
  const start = i;
  let v = 0;
  while (i < line.length && line.charCodeAt(i) >= 0x30 && line.charCodeAt(i) <= 0x39) {
    v = Math.min(v * 10 + (line.charCodeAt(i) - 0x30), Number.MAX_SAFE_INTEGER);
    i++;
  }
  if (i === start) return null;
  return neg ? -v : v;
}
