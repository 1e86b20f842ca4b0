/**
 * The optional HTTP listener of proxymapd_metrics_listen (off when empty,
 * the default; Postfix has nothing like it): GET or HEAD
 *   /metrics  Prometheus text format (src/server/metrics.ts)
 *   /healthz  200 "ok" while the process serves its listeners, else 503
 *   /readyz   200 "ok" when every approved table opens and every SQL/LDAP
 *             pool reaches its backend (src/server/health.ts), else 503
 *             with one line per thing that is not ready
 * any other path 404, any other method 405. Its connections are not client
 * connections (not counted, never reach the request handler); a malformed
 * HTTP request gets 400 and loses its connection, never the process.
 *
 * The address is `host:port`, `[ipv6]:port`, or a UNIX socket path (starts
 * with "/"; "%p" in it is replaced by the process id, so that the several
 * processes master(8) may run each get a socket of their own). A listener
 * that cannot be opened is a warning: metrics are then off in this process
 * and lookups are served as usual.
 */
import http from 'node:http';
import net from 'node:net';
import { log } from '../log.js';
import { health, readiness, type ReadyOptions } from './health.js';
import type { ProxyServer } from './server.js';
import { closeListener, listenOn, listenOnPath } from './socket-path.js';

export const METRICS_LISTEN_PARAM = 'proxymapd_metrics_listen';

/** Most HTTP connections at once: a scraper or two and a health checker need few. */
const MAX_HTTP_CONNECTIONS = 64;

export type ListenAddress = { path: string } | { host: string; port: number };

/** Parse proxymapd_metrics_listen; null when empty (off). Throws an Error with the reason when malformed. */
export function parseListenAddress(text: string, pid = process.pid): ListenAddress | null {
  const v = text.trim();
  if (v === '') return null;
  if (v.startsWith('/')) return { path: v.replace(/%p/g, String(pid)) };
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`${METRICS_LISTEN_PARAM}: expected host:port, [ipv6]:port or /socket/path, got "${v}"`);
  const host = m[1] ?? m[2]!;
  if (m[1] !== undefined && net.isIPv6(host) === false) throw new Error(`${METRICS_LISTEN_PARAM}: bad IPv6 address in "${v}"`);
  return { host, port };
}

export class MetricsHttp {
  private constructor(
    private readonly http: http.Server,
    private readonly where: ListenAddress,
  ) {}

  /** Listen on `where` and serve `server`'s metrics and health. Rejects when the address cannot be bound. */
  static async start(server: ProxyServer, where: ListenAddress, ready: ReadyOptions = {}): Promise<MetricsHttp> {
    const srv = http.createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
      route(server, ready, req, res).catch((e: unknown) => {
        log.warn(`metrics listener: ${(e as Error)?.message ?? e}`);
        if (!res.headersSent) send(res, 500, 'internal error\n');
        else res.destroy();
      });
    });
    srv.maxConnections = MAX_HTTP_CONNECTIONS;
    srv.keepAliveTimeout = 30_000;
    srv.on('clientError', (_err, sock) => {
      if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else sock.destroy();
    });
    // as Postfix's sockets: open to all, access controlled by the directory
    if ('path' in where) await listenOnPath(srv, where.path, 0o666);
    else await listenOn(srv, (done) => srv.listen(where.port, where.host, done));
    srv.on('error', (e) => log.warn(`metrics listener: ${e.message}`));
    return new MetricsHttp(srv, where);
  }

  /** Where it listens: the socket path, or host:port with the port actually bound. */
  get address(): string {
    if ('path' in this.where) return this.where.path;
    const a = this.http.address() as net.AddressInfo;
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  async close(): Promise<void> {
    const closed = closeListener(this.http, 'path' in this.where ? this.where.path : undefined);
    this.http.closeAllConnections();
    await closed;
  }
}

/**
 * Start the listener of proxymapd_metrics_listen if one is configured and
 * the server keeps metrics: null when off, or (after a warning) when it
 * cannot be opened.
 */
export async function startMetricsListener(server: ProxyServer, value: string): Promise<MetricsHttp | null> {
  let where: ListenAddress | null;
  try {
    where = parseListenAddress(value);
  } catch (e) {
    log.warn(`${(e as Error).message}; metrics and health checks are off`);
    return null;
  }
  if (!where || !server.metrics) return null;
  const shown = 'path' in where ? where.path : value.trim();
  try {
    const h = await MetricsHttp.start(server, where);
    log.debug(`metrics and health checks on ${h.address}`);
    return h;
  } catch (e) {
    log.warn(`cannot listen on ${shown} for metrics: ${(e as Error).message}; metrics and health checks are off in this process`);
    return null;
  }
}

async function route(server: ProxyServer, ready: ReadyOptions, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, 405, 'method not allowed\n');
    return;
  }
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  switch (q < 0 ? url : url.slice(0, q)) {
    case '/metrics': {
      const m = server.metrics!;
      send(res, 200, await m.text(), m.contentType);
      return;
    }
    case '/healthz': {
      const h = health(server);
      send(res, h.ok ? 200 : 503, h.ok ? 'ok\n' : h.problems.join('\n') + '\n');
      return;
    }
    case '/readyz': {
      const r = await readiness(server, ready);
      send(res, r.ok ? 200 : 503, r.ok ? 'ok\n' : r.problems.join('\n') + '\n');
      return;
    }
    default:
      send(res, 404, 'not found\n');
  }
}

function send(res: http.ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
