/**
 * The parameters of a redis: table (a proxymapd extension: Postfix has no
 * redis table), read with the .cf reader of Postfix's client tables, so
 * `redis:/etc/postfix/x.cf` and the main.cf form `redis:prefix`
 * (prefix_hosts, ...) both work:
 *
 *   hosts             servers, tried in the order written: `inet:host:port`,
 *                     `host:port`, `host` (port 6379), `unix:/path`, `/path`,
 *                     `redis://[user:password@]host[:port][/db]`, `rediss://...`
 *                     (TLS); default inet:localhost:6379
 *   user, password    AUTH (a URI's own credentials win for that host)
 *   database          SELECT number (default 0; a URI's /db wins)
 *   key_format        the SQL tables' template language, default %s
 *   ttl               seconds, SET ... EX on every update (0 = none, the default)
 *   timeout           seconds for a connect and for each command (default 2)
 *   domain            as the SQL tables: only keys in these domains are asked
 *   tls_CAfile, tls_cert_file, tls_key_file, tls_verify_cert
 *                     the mysql table's names; any of them (or a rediss:// host)
 *                     turns TLS on; tls_verify_cert (default yes) checks the
 *                     server's certificate and name
 *   sentinels         Redis Sentinel servers (`host:port`, port 26379): the
 *                     master is asked of them and followed through failovers;
 *                     `hosts` is then not used
 *   sentinel_master   the master's name in Sentinel (required with sentinels)
 *   sentinel_user, sentinel_password
 *
 * Postfix's client tables ignore parameters they do not know; here a name
 * the table does not know gets a warning, since a misspelt ttl or
 * key_format would silently change what is stored.
 */
import fs from 'node:fs';
import { TableOpenError, type Bytes } from '../core/table.js';
import type { CfParser } from '../dbcommon/cf.js';

export const REDIS_DEFAULT_PORT = 6379;
export const SENTINEL_DEFAULT_PORT = 26379;

/** One server to connect to. */
export interface RedisTarget {
  /** as written (URIs with the password masked), for messages and metrics */
  readonly label: string;
  readonly kind: 'inet' | 'unix';
  readonly host?: string;
  readonly port?: number;
  readonly path?: string;
  /** rediss:// */
  readonly tls?: boolean;
  /** credentials and database of a URI (override the table's) */
  readonly username?: string;
  readonly password?: string;
  readonly database?: number;
}

export interface RedisTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  verify: boolean;
}

/** How a table connects: what its pool is shared by. */
export interface RedisConnect {
  hosts: RedisTarget[];
  sentinels: { host: string; port: number }[];
  sentinelMaster: string;
  sentinelUser: string;
  sentinelPassword: string;
  user: string;
  password: string;
  database: number;
  /** TLS for every connection (also given by rediss:// per host), or null */
  tls: RedisTls | null;
  /** file names of the TLS settings (the pool key; the contents may be large) */
  tlsFiles: string[];
  /** connect and command timeout, ms */
  timeoutMs: number;
}

export interface RedisSettings {
  connect: RedisConnect;
  keyFormat: Bytes;
  ttl: number;
  domain: Bytes;
}

const KNOWN = new Set([
  'hosts', 'user', 'password', 'database', 'key_format', 'ttl', 'timeout', 'domain',
  'tls_CAfile', 'tls_cert_file', 'tls_key_file', 'tls_verify_cert',
  'sentinels', 'sentinel_master', 'sentinel_user', 'sentinel_password',
]);

/** A list parameter: separated by whitespace or commas, as Postfix's lists. */
export function splitList(text: string): string[] {
  return text.split(/[\s,]+/).filter((s) => s !== '');
}

/** `host`, `host:port`, `[v6]`, `[v6]:port` (no inet: prefix); undefined when malformed. */
export function parseHostPort(text: string, dfltPort: number): { host: string; port: number } | undefined {
  let host: string;
  let port: string | undefined;
  const m = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  if (m) {
    host = m[1]!;
    port = m[2];
  } else {
    const colon = text.lastIndexOf(':');
    // more than one ':' without brackets: a bare IPv6 address
    if (colon >= 0 && text.indexOf(':') === colon) {
      host = text.slice(0, colon);
      port = text.slice(colon + 1);
    } else {
      host = text;
    }
  }
  if (host === '') return undefined;
  if (port === undefined) return { host, port: dfltPort };
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) return undefined;
  return { host, port: Number(port) };
}

function parseUri(text: string, fail: () => never): RedisTarget {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    fail();
  }
  const db = u.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d+$/.test(db)) fail();
  const masked = u.password !== '' ? text.replace(/(\/\/[^/@:]*):[^/@]*@/, '$1:***@') : text;
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') fail();
  return {
    label: masked,
    kind: 'inet',
    host,
    port: u.port !== '' ? Number(u.port) : REDIS_DEFAULT_PORT,
    tls: u.protocol === 'rediss:',
    ...(u.username !== '' ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password !== '' ? { password: decodeURIComponent(u.password) } : {}),
    ...(db !== '' ? { database: Number(db) } : {}),
  };
}

/** One entry of `hosts`; throws TableOpenError when malformed. */
export function parseRedisHost(text: string, where: string): RedisTarget {
  const fail = (): never => {
    throw new TableOpenError(`${where}: invalid redis host "${text}"`);
  };
  if (/^rediss?:\/\//i.test(text)) return parseUri(text, fail);
  if (text.startsWith('unix:') || text.startsWith('/')) {
    const p = text.startsWith('unix:') ? text.slice(5) : text;
    if (p === '') fail();
    return { label: text, kind: 'unix', path: p };
  }
  const hp = parseHostPort(text.startsWith('inet:') ? text.slice(5) : text, REDIS_DEFAULT_PORT);
  if (!hp) fail();
  return { label: text, kind: 'inet', host: hp!.host, port: hp!.port };
}

function readTlsFile(where: string, param: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new TableOpenError(`${where}: ${param} ${file}: ${(e as Error).message}`);
  }
}

/** Read a redis table's parameters; `where` names the table in messages (`redis:NAME`). */
export function readRedisSettings(cf: CfParser, where: string, warn: (text: string) => void): RedisSettings {
  for (const name of cf.names() ?? []) if (!KNOWN.has(name)) warn(`${where}: unknown parameter "${name}" ignored`);
  const hosts = splitList(cf.getStr('hosts', 'inet:localhost:6379', 0, 0)).map((h) => parseRedisHost(h, where));
  if (hosts.length === 0) throw new TableOpenError(`${where}: no redis hosts`);
  const sentinels = splitList(cf.getStr('sentinels', '', 0, 0)).map((s) => {
    const hp = parseHostPort(s.startsWith('inet:') ? s.slice(5) : s, SENTINEL_DEFAULT_PORT);
    if (!hp) throw new TableOpenError(`${where}: invalid sentinel "${s}"`);
    return hp;
  });
  const sentinelMaster = cf.getStr('sentinel_master', '', sentinels.length > 0 ? 1 : 0, 0);
  const tlsParams = { ca: 'tls_CAfile', cert: 'tls_cert_file', key: 'tls_key_file' } as const;
  const tlsFiles: string[] = [];
  const tls: RedisTls = { verify: cf.getBool('tls_verify_cert', true) };
  let tlsOn = cf.lookup('tls_verify_cert') !== undefined;
  for (const [k, param] of Object.entries(tlsParams) as [keyof typeof tlsParams, string][]) {
    const file = cf.getStr(param, null, 0, 0);
    tlsFiles.push(file ?? '');
    if (file === null) continue;
    tls[k] = readTlsFile(where, param, file);
    tlsOn = true;
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new TableOpenError(`${where}: tls_cert_file and tls_key_file must be given together`);
  }
  const connect: RedisConnect = {
    hosts,
    sentinels,
    sentinelMaster,
    sentinelUser: cf.getStr('sentinel_user', '', 0, 0),
    sentinelPassword: cf.getStr('sentinel_password', '', 0, 0),
    user: cf.getStr('user', '', 0, 0),
    password: cf.getStr('password', '', 0, 0),
    database: cf.getInt('database', 0, 0, 0),
    tls: tlsOn ? tls : null,
    tlsFiles: tlsOn ? [...tlsFiles, String(tls.verify)] : [],
    timeoutMs: cf.getInt('timeout', 2, 1, 0) * 1000,
  };
  if (connect.database < 0) throw new TableOpenError(`${where}: invalid database parameter value ${connect.database} < 0`);
  const ttl = cf.getInt('ttl', 0, 0, 0);
  if (ttl < 0) throw new TableOpenError(`${where}: invalid ttl parameter value ${ttl} < 0`);
  return {
    connect,
    keyFormat: cf.getStr('key_format', '%s', 1, 0),
    ttl,
    domain: cf.getStr('domain', '', 0, 0),
  };
}

/**
 * The key_format as PREFIX and SUFFIX around one %s, or null when it has
 * any other substitution (then the table offers no sequence: a stored key
 * cannot be turned back into the Postfix key).
 */
export function keyAffixes(keyFormat: Bytes): { prefix: Bytes; suffix: Bytes } | null {
  const m = /^([^%]*)%s([^%]*)$/.exec(keyFormat);
  return m ? { prefix: m[1]!, suffix: m[2]! } : null;
}

/** A SCAN MATCH pattern for PREFIX*SUFFIX: glob characters of the affixes escaped. */
export function scanPattern(a: { prefix: Bytes; suffix: Bytes }): Bytes {
  const esc = (s: Bytes) => s.replace(/[*?[\]\\]/g, '\\$&');
  return `${esc(a.prefix)}*${esc(a.suffix)}`;
}
