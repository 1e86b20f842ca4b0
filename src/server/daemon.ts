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
import { environOpener, openTable, registerTableType, splitCompositeName, tableTypeInfo, type Environment } from '../tables/index.js';
import { DICT_FLAG } from '../protocol/flags.js';
import { ProxyServer } from './server.js';
import { defaultPatternThreads, patternWorkPending, setPatternThreads } from '../tables/pattern/pattern.js';
import type { Service } from './handler.js';
import type { ConnectionOptions } from './connection.js';

const MAX_PATTERN_THREADS = 64;

/**
 * The environment Postfix daemons run with: only the names listed in
 * import_environment, plus the NAME=value settings listed there.
 */
export function importEnvironment(spec: string, env: NodeJS.ProcessEnv = process.env): Environment {
  const out: Environment = {};
  for (const item of spec.split(/[\s,]+/).filter(Boolean)) {
    const eq = item.indexOf('=');
    if (eq > 0) out[item.slice(0, eq)] = item.slice(eq + 1);
    else if (env[item] !== undefined) out[item] = env[item];
  }
  return out;
}

export interface DaemonOptions {
  config: Config;
  connection?: Partial<ConnectionOptions>;
}

export function createServer(opts: DaemonOptions): ProxyServer {
  const { config } = opts;
  // Like a Postfix command given -c, the daemon runs with MAIL_CONFIG set to its configuration directory.
  const env = { ...process.env, MAIL_CONFIG: config.configDir };
  registerTableType('environ', environOpener(importEnvironment(config.get('import_environment'), env)), {
    implFlags: tableTypeInfo('environ')?.implFlags ?? 0,
    writable: true,
  });
  const authorized: Record<Service, ReadonlySet<string>> = {
    proxymap: authorizedTables(config, 'proxymap', log.warn),
    proxywrite: authorizedTables(config, 'proxywrite', log.warn),
  };
  setPatternThreads(patternThreads(config));
  return new ProxyServer({
    opener: openTable,
    authorized,
    smtputf8: config.smtputf8(),
    param: (name) => config.lookup(name),
    loadsSource: (type) => tableTypeInfo(type)?.loadsSource ?? false,
    typeFixed,
    connection: opts.connection,
    busyPollUsec: busyPollUsec(config),
    offThreadWork: patternWorkPending,
    reload: { checkIntervalMs: config.getTime('proxymapd_table_check_interval', 's', 1) * 1000 },
  });
}

/** proxymapd_pattern_threads: thread-pool evaluations of regexp/pcre rule sets at once (0: main thread only). */
function patternThreads(config: Config): number {
  const dflt = defaultPatternThreads();
  return intParam(config, 'proxymapd_pattern_threads', MAX_PATTERN_THREADS, `the default (${dflt})`) ?? dflt;
}

/** proxymapd_busy_poll_usec (microseconds; 0 turns busy polling off). */
function busyPollUsec(config: Config): number | undefined {
  return intParam(config, 'proxymapd_busy_poll_usec', 10_000, 'the default');
}

/** A proxymapd integer parameter in 0..max; undefined when unset, or invalid (with a warning naming `fallback`). */
function intParam(config: Config, name: string, max: number, fallback: string): number | undefined {
  const v = config.lookup(name);
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > max) {
    log.warn(`invalid ${name} value "${v}": using ${fallback}`);
    return undefined;
  }
  return n;
}

/**
 * FIXED or not, from the type registry; pipemap and unionmap take it from
 * their first component. undefined when unknown.
 */
export function typeFixed(spec: string): boolean | undefined {
  const colon = spec.indexOf(':');
  if (colon <= 0) return undefined;
  const type = spec.slice(0, colon);
  if (type === 'pipemap' || type === 'unionmap') {
    const first = splitCompositeName(spec.slice(colon + 1))?.[0];
    return first === undefined ? undefined : typeFixed(first);
  }
  const info = tableTypeInfo(type);
  if (!info) return undefined;
  return (info.implFlags & DICT_FLAG.FIXED) !== 0;
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
