/**
 * The control socket of a standalone server: `$queue_directory/private/
 * $proxymapd_control_service_name` (default proxymapd-control), mode 0600,
 * owned like the proxymap sockets (mail_owner when started as root), so
 * that only root and mail_owner can use it. Postfix's proxymap has no such
 * thing; `proxymapd status` and `proxymapd cache purge` talk to it.
 *
 * Protocol: newline-delimited JSON, one request per line, one reply line per
 * request, in order: `{"cmd":"status"}` or `{"cmd":"cache-purge","args":
 * ["pgsql:/etc/postfix/a.cf"]}` -> `{"result":...}` or `{"error":"text"}`.
 * A line that is not such a request gets an error reply; a line longer
 * than CONTROL_MAX_LINE closes the connection; a client idle for
 * CONTROL_IDLE_MS is disconnected. A failing command or section is an error
 * reply, never a crash.
 *
 * Commands are registered by name (`register`); the `status` command
 * gathers the registered sections (`addSection`), each a function returning
 * a JSON value, so that any part of the server can show itself in
 * `proxymapd status` with one line.
 */
import net from 'node:net';
import path from 'node:path';
import { log, logBytes } from '../log.js';
import { splitAtColon } from '../tables/core/registry.js';
import { livePools } from '../tables/dbcommon/pool.js';
import type { ProxyServer } from './server.js';
import { closeListener, listenOnPath } from './socket-path.js';
import type { Service } from './handler.js';

/** Longest request line accepted (bytes). */
export const CONTROL_MAX_LINE = 64 * 1024;

/** A client that sends nothing for this long is disconnected (ms). */
export const CONTROL_IDLE_MS = 30_000;

/** Control connections served at once; more are closed at once. */
export const CONTROL_MAX_CLIENTS = 16;

/** Default socket name in $queue_directory/private/. */
export const DEFAULT_CONTROL_NAME = 'proxymapd-control';

export type ControlHandler = (args: string[]) => unknown | Promise<unknown>;
export type StatusSection = () => unknown | Promise<unknown>;

export type ControlReply = { result: unknown } | { error: string };

export class ControlServer {
  private readonly commands = new Map<string, ControlHandler>();
  private readonly sections = new Map<string, StatusSection>();
  private readonly clients = new Set<net.Socket>();
  private server?: net.Server;
  private socketPath?: string;

  constructor() {
    this.register('status', () => this.status());
  }

  /** Add (or replace) a command. */
  register(name: string, handler: ControlHandler): void {
    this.commands.set(name, handler);
  }

  /** Add (or replace) a section of the `status` reply. */
  addSection(name: string, section: StatusSection): void {
    this.sections.set(name, section);
  }

  /** Every section, in the order they were added; a failing one becomes {"error": text}. */
  async status(): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    for (const [name, section] of this.sections) {
      try {
        out[name] = await section();
      } catch (e) {
        out[name] = { error: (e as Error)?.message ?? String(e) };
      }
    }
    return out;
  }

  /** Run one request line; always a reply. */
  async execute(line: string): Promise<ControlReply> {
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      return { error: 'request is not valid JSON' };
    }
    if (typeof req !== 'object' || req === null || typeof (req as { cmd?: unknown }).cmd !== 'string') {
      return { error: 'request must be an object with a "cmd" string' };
    }
    const { cmd, args = [] } = req as { cmd: string; args?: unknown };
    if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) return { error: '"args" must be an array of strings' };
    const handler = this.commands.get(cmd);
    if (!handler) return { error: `unknown command: ${cmd}` };
    try {
      const result = await handler(args);
      return result !== null && typeof result === 'object' && 'error' in result && typeof result.error === 'string'
        ? { error: result.error }
        : { result: result ?? null };
    } catch (e) {
      log.warn(`control: ${cmd}: ${(e as Error)?.message ?? String(e)}`);
      return { error: `${cmd} failed: ${(e as Error)?.message ?? String(e)}` };
    }
  }

  /** Listen on a socket path (a stale socket file is replaced, a live one is an error). */
  async listen(sockPath: string, owner?: { uid: number; gid: number }): Promise<void> {
    const srv = net.createServer((sock) => this.accept(sock));
    srv.on('error', (e) => log.warn(`control listener: ${e.message}`));
    // (private/ is mode 0700: nobody else can reach the socket before its mode is set)
    await listenOnPath(srv, sockPath, 0o600, owner);
    this.server = srv;
    this.socketPath = sockPath;
  }

  private accept(sock: net.Socket): void {
    if (this.clients.size >= CONTROL_MAX_CLIENTS) {
      sock.destroy();
      return;
    }
    this.clients.add(sock);
    sock.setTimeout(CONTROL_IDLE_MS, () => sock.destroy());
    sock.on('close', () => this.clients.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf = '';
    let chain: Promise<void> = Promise.resolve();
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line === '') continue;
        chain = chain.then(async () => {
          const reply = await this.execute(line);
          if (!sock.destroyed) sock.write(JSON.stringify(reply) + '\n');
        });
      }
      if (Buffer.byteLength(buf) > CONTROL_MAX_LINE) {
        log.warn('control: request line too long; closing connection');
        sock.destroy();
      }
    });
    sock.on('end', () => void chain.then(() => sock.end()));
  }

  /** Stop listening, remove the socket, drop the clients. */
  async close(): Promise<void> {
    for (const c of this.clients) c.destroy();
    const srv = this.server;
    this.server = undefined;
    if (!srv) return;
    await closeListener(srv, this.socketPath);
  }
}

/** The control socket path of a configuration: $queue_directory/private/$proxymapd_control_service_name ("" = none). */
export function controlSocketPath(param: (name: string) => string | undefined, queueDirectory: string): string | undefined {
  const name = param('proxymapd_control_service_name') ?? DEFAULT_CONTROL_NAME;
  return name === '' ? undefined : path.join(queueDirectory, 'private', name);
}

/** One table of the `tables` status section: the instances of one (service, table). */
export interface TableStatus {
  table: string;
  type: string;
  name: string;
  service: Service;
  /** instances (one per fold mode and duplicate policy for tables that fold while loading) */
  instances: number;
  folds: string[];
  /** false while the table cannot be opened (requests answer "try again") */
  ok: boolean;
  openedAt?: string;
  reloads: number;
  lastReload?: string;
  lastError?: { at: string; message: string };
}

const iso = (t: number | undefined) => (t === undefined ? undefined : new Date(t).toISOString());

/** The built-in sections: process, connections, tables. */
export function addServerSections(control: ControlServer, server: ProxyServer, info: { configDir: string; mode: string }): void {
  const startedAt = Date.now();
  control.addSection('process', () => ({
    pid: process.pid,
    mode: info.mode,
    configDir: info.configDir,
    startedAt: iso(startedAt),
    uptimeSeconds: Math.floor((Date.now() - startedAt) / 1000),
    node: process.version,
    rssBytes: process.memoryUsage.rss(),
  }));
  control.addSection('connections', () => ({ open: server.openConnectionsBy(), accepted: { ...server.acceptedBy } }));
  control.addSection('tables', () => tablesSection(server));
  // The shared SQL/LDAP connection pools: connections open, busy and waiting, and the hosts now marked down.
  control.addSection('pools', () =>
    livePools().map((p) => {
      const st = p.stats();
      return {
        pool: p.label, open: st.open, busy: st.busy, idle: st.idle, waiting: st.waiting, peak: st.peak, max: st.max,
        hostsDown: st.hosts.filter((h) => h.state === 'fail').map((h) => h.label),
      };
    }),
  );
}

function tablesSection(server: ProxyServer): { approved: Record<Service, number>; open: TableStatus[]; errors: Array<{ table: string; at: string; message: string }> } {
  const errors = server.instances.lastErrors();
  const groups = new Map<string, TableStatus>();
  for (const i of server.instances.list()) {
    const service: Service = i.writable ? 'proxywrite' : 'proxymap';
    const k = `${service}\0${i.spec}`;
    let g = groups.get(k);
    if (!g) {
      const parts = splitAtColon(i.spec);
      const err = errors.get(i.spec);
      g = {
        table: logBytes(i.spec),
        type: logBytes(parts?.type ?? ''),
        name: logBytes(parts?.name ?? i.spec),
        service,
        instances: 0,
        folds: [],
        ok: true,
        reloads: 0,
        lastError: err && { at: iso(err.at)!, message: logBytes(err.message) },
      };
      groups.set(k, g);
    }
    g.instances++;
    if (!g.folds.includes(i.fold)) g.folds.push(i.fold);
    g.ok &&= i.ok;
    if (i.openedAt !== undefined && (g.openedAt === undefined || iso(i.openedAt)! < g.openedAt)) g.openedAt = iso(i.openedAt);
    g.reloads += i.reloads;
    if (i.reloadedAt !== undefined && (g.lastReload === undefined || iso(i.reloadedAt)! > g.lastReload)) g.lastReload = iso(i.reloadedAt);
  }
  return {
    approved: { proxymap: server.handler.approvedFor('proxymap').size, proxywrite: server.handler.approvedFor('proxywrite').size },
    open: [...groups.values()].sort((a, b) => (a.service + a.table < b.service + b.table ? -1 : 1)),
    errors: [...errors].map(([spec, e]) => ({ table: logBytes(spec), at: iso(e.at)!, message: logBytes(e.message) })),
  };
}

/**
 * `cache-purge [table]`: empties the lookup cache, or only its entries of one table (given as in main.cf, with or
 * without proxy:); the reply says how many entries were dropped. The cache is the server's `cache` property when
 * one is configured: `purge(spec?)` with spec a byte string "type:name", returning a count.
 */
export function registerCachePurge(control: ControlServer, server: ProxyServer): void {
  control.register('cache-purge', (args) => {
    const cache = (server as { cache?: { purge(spec?: string): number } }).cache;
    if (!cache) return { error: 'no cache configured' };
    let spec = args[0] === undefined ? undefined : Buffer.from(args[0], 'utf8').toString('latin1');
    while (spec?.startsWith('proxy:')) spec = spec.slice('proxy:'.length);
    return { purged: cache.purge(spec) };
  });
}

/**
 * Send one request to a control socket and wait for its reply (the client
 * side, for the CLI). Rejects when nothing listens or no reply comes.
 */
export function controlRequest(sockPath: string, cmd: string, args: string[] = [], timeoutMs = 10_000): Promise<ControlReply> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(sockPath);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`${sockPath}: no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.once('connect', () => sock.write(JSON.stringify({ cmd, args }) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.end();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as ControlReply);
      } catch {
        reject(new Error(`${sockPath}: malformed reply`));
      }
    });
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.once('close', () => {
      clearTimeout(timer);
      reject(new Error(`${sockPath}: connection closed without a reply`));
    });
  });
}
