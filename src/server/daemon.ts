/**
 * Build a ProxyServer from a Postfix configuration: authorization sets,
 * smtputf8, the cleaned environment for environ:, socket paths and owner.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Config } from '../config/params.js';
import { authorizedTables } from '../config/authorize.js';
import { log } from '../log.js';
import { defaultRegistry, type TableRegistry } from '../tables/index.js';
import { intParam } from '../tables/core/params.js';
import { ProxyServer } from './server.js';
import { METRICS_LISTEN_PARAM } from './http.js';
import { LookupCache, cacheSettings } from './cache.js';
import type { Service } from './handler.js';
import type { ConnectionOptions } from './connection.js';
import { controlSocketPath, type ControlServer } from './control.js';
import type { LiveConfig } from './reload.js';

export { importEnvironment } from '../tables/builtin/environ.js';

export interface DaemonOptions {
  config: Config;
  connection?: Partial<ConnectionOptions>;
  /** the table types served (default: the built-in ones) */
  registry?: TableRegistry;
  /** where tables opened later read main.cf parameters (a reload replaces its config; default: `config` for good) */
  live?: LiveConfig;
}

export function createServer(opts: DaemonOptions): ProxyServer {
  const { config } = opts;
  const registry = opts.registry ?? defaultRegistry;
  const live = opts.live ?? { config };
  const param = (name: string) => live.config.lookup(name);
  // Like a Postfix command given -c, the daemon runs with MAIL_CONFIG set to its configuration directory.
  registry.configure({ param, env: { ...process.env, MAIL_CONFIG: config.configDir }, warn: log.warn });
  const authorized: Record<Service, ReadonlySet<string>> = {
    proxymap: authorizedTables(config, 'proxymap', log.warn),
    proxywrite: authorizedTables(config, 'proxywrite', log.warn),
  };
  const cache = cacheConfig(config, authorized);
  return new ProxyServer({
    opener: registry.open,
    authorized,
    smtputf8: config.smtputf8(),
    param,
    loadsSource: (type) => registry.loadsSource(type),
    typeFixed: (spec) => registry.typeFixed(spec),
    connection: opts.connection,
    busyPollUsec: intParam({ param: (n) => config.lookup(n), warn: log.warn }, 'proxymapd_busy_poll_usec', undefined, { max: 10_000, fallback: 'the default' }),
    offThreadWork: registry.offThreadWork,
    reload: { checkIntervalMs: config.getTime('proxymapd_table_check_interval', 's', 1) * 1000 },
    metrics: config.get(METRICS_LISTEN_PARAM).trim() !== '',
    // No cached table, no cache: lookups then take the path they take without this feature.
    cache: cache.maps.size > 0 ? new LookupCache(cache) : undefined,
  });
}

/** The lookup cache settings of a configuration, with a warning for each cached table that is not approved. */
function cacheConfig(config: Config, authorized: Record<Service, ReadonlySet<string>>): ReturnType<typeof cacheSettings> {
  const cache = cacheSettings({ param: (n) => config.lookup(n), warn: log.warn });
  for (const spec of cache.maps.keys()) {
    if (!authorized.proxymap.has(spec) && !authorized.proxywrite.has(spec)) {
      log.warn(`proxymapd_cache_maps: table "${spec}" is not listed in proxy_read_maps or proxy_write_maps; nothing is cached for it`);
    }
  }
  return cache;
}

/**
 * Apply the lookup cache settings of a reloaded configuration: a cache
 * made, reconfigured (tables no longer listed lose their entries) or
 * dropped when no table is listed any more.
 */
export function reconfigureCache(server: ProxyServer, config: Config): void {
  const s = cacheConfig(config, { proxymap: server.handler.approvedFor('proxymap'), proxywrite: server.handler.approvedFor('proxywrite') });
  if (s.maps.size === 0) server.setCache(undefined);
  else if (server.cache) server.cache.configure(s.maps, s);
  else server.setCache(new LookupCache(s));
}

/**
 * Start the warm-ups of the table types that approved tables use, while
 * the server is idle (standalone and under master(8) alike).
 */
export function startWarmUps(server: ProxyServer, registry: TableRegistry = defaultRegistry): void {
  const types = registry.typesIn(server.handler.approved());
  setTimeout(() => void registry.warmUp(types, log.warn), 10).unref();
}

/** uid/gid of a user name via NSS (getent), or undefined. */
export function lookupUser(name: string): { uid: number; gid: number } | undefined {
  try {
    const line = execFileSync('getent', ['passwd', name], { encoding: 'utf8', timeout: 5000 }).split('\n')[0];
    const f = line.split(':');
    if (f[0] !== name) return undefined;
    return { uid: Number(f[2]), gid: Number(f[3]) };
  } catch {
    return undefined;
  }
}

/** Socket paths: $queue_directory/private/$proxymap_service_name and .../$proxywrite_service_name. */
export function socketPaths(config: Config): Record<Service, string> {
  const priv = path.join(config.get('queue_directory'), 'private');
  return {
    proxymap: path.join(priv, config.get('proxymap_service_name') || 'proxymap'),
    proxywrite: path.join(priv, config.get('proxywrite_service_name') || 'proxywrite'),
  };
}

/** Listen on both sockets; as root, the private/ directory and sockets belong to mail_owner. */
export async function listenStandalone(server: ProxyServer, config: Config): Promise<Record<Service, string>> {
  const paths = socketPaths(config);
  const owner = process.getuid?.() === 0 ? lookupUser(config.get('mail_owner')) : undefined;
  const queue = config.get('queue_directory');
  if (!fs.existsSync(queue)) fs.mkdirSync(queue, { recursive: true, mode: 0o755 });
  await server.listenPath(paths.proxymap, 'proxymap', owner);
  await server.listenPath(paths.proxywrite, 'proxywrite', owner);
  return paths;
}

/**
 * Listen on the control socket (src/server/control.ts) in
 * $queue_directory/private/, owned like the service sockets. With
 * `createDir` false (socket activation) only when private/ exists already.
 * Returns the path, or undefined when there is none to listen on.
 */
export async function listenControl(control: ControlServer, config: Config, createDir: boolean): Promise<string | undefined> {
  const sockPath = controlSocketPath((n) => config.lookup(n), config.get('queue_directory'));
  if (sockPath === undefined) return undefined;
  const dir = path.dirname(sockPath);
  const owner = process.getuid?.() === 0 ? lookupUser(config.get('mail_owner')) : undefined;
  if (!fs.existsSync(dir)) {
    if (!createDir) return undefined;
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (owner) fs.chownSync(dir, owner.uid, owner.gid);
  }
  await control.listen(sockPath, owner);
  return sockPath;
}

/**
 * Descriptors handed over by systemd socket activation (sd_listen_fds):
 * LISTEN_FDS sockets from fd 3, for this process (LISTEN_PID). Named
 * "proxywrite" in LISTEN_FDNAMES for the write service; unnamed ones are
 * proxymap then proxywrite, in order.
 */
export function systemdListenFds(env: NodeJS.ProcessEnv = process.env): Array<{ fd: number; service: Service }> {
  const n = Number(env.LISTEN_FDS ?? '0');
  if (!Number.isInteger(n) || n <= 0) return [];
  if (env.LISTEN_PID !== undefined && Number(env.LISTEN_PID) !== process.pid) return [];
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  const out: Array<{ fd: number; service: Service }> = [];
  for (let i = 0; i < n; i++) {
    const name = names[i];
    const service: Service =
      name === 'proxywrite' || name === 'proxymap' ? name : i === 1 && !env.LISTEN_FDNAMES ? 'proxywrite' : 'proxymap';
    out.push({ fd: 3 + i, service });
  }
  return out;
}
