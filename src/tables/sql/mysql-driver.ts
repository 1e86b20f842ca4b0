/**
 * The MySQL/MariaDB side of the mysql: table: host syntax, connections
 * through the `mysql2` driver, Postfix's quoting (mysql_real_escape_string)
 * and result-set handling (dict_mysql.c, spec tables-network.md 2).
 *
 * The driver makes and sets up connections (handshake, passwords, TLS,
 * option files, charset, init-command); lookups then speak COM_QUERY on
 * the connection's socket directly (MyWire). Byte transparency: queries go
 * out as the raw bytes Postfix would send and column values come back as
 * raw bytes, whatever the connection character set; the server interprets
 * them in that character set exactly as it does for Postfix's C client.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type mysql from 'mysql2';
import type { Bytes } from '../core/table.js';
import { optSeconds, readMyOptions, type MyOptions } from './myoptions.js';
import { MyWire, type MyWireResult } from './mysql-wire.js';
import type { PoolDriver, PoolHost, WorkResult } from '../dbcommon/pool.js';

// The driver is loaded when the first connection is made: a server without mysql tables does not carry it.
let lib: typeof mysql | undefined;
function mysqlLib(): typeof mysql {
  return (lib ??= createRequire(import.meta.url)('mysql2') as typeof mysql);
}

/** Load the client library ahead of the first connection (about 80 ms here), for a server whose tables may use it. */
export function warmUpMysql(): void {
  mysqlLib();
}

export interface MyTarget {
  /** TCP host name or address (INET) */
  host?: string;
  /** 0: the option file's port, else 3306 */
  port: number;
  /** UNIX socket path; undefined for the library default */
  socketPath?: string;
}

/** Thrown for settings Postfix rejects with a fatal error at open. */
export class MysqlConfigError extends Error {}

let services: Map<string, number> | undefined;
function tcpService(name: string): number | undefined {
  if (!services) {
    services = new Map();
    try {
      for (const line of fs.readFileSync('/etc/services', 'latin1').split('\n')) {
        const f = line.replace(/#.*/, '').trim().split(/\s+/);
        const m = /^(\d+)\/tcp$/.exec(f[1] ?? '');
        if (!m) continue;
        for (const n of [f[0]!, ...f.slice(2)]) if (!services.has(n)) services.set(n, Number(m[1]));
      }
    } catch {
      /* no services file */
    }
  }
  return services.get(name);
}

/** Postfix's find_inet_port: a number or a TCP service name. */
function findInetPort(s: string): number {
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n > 65535) throw new MysqlConfigError(`bad port number: ${s}`);
    return n;
  }
  const p = tcpService(s);
  if (p === undefined) throw new MysqlConfigError(`unknown service: ${s}/tcp`);
  return p;
}

/** Parse the `hosts` parameter (split on comma and white space; default `localhost`). */
export function parseMysqlHosts(hosts: string): PoolHost<MyTarget>[] {
  const list = hosts.split(/[,\s]+/).filter((h) => h !== '');
  if (list.length === 0) list.push('localhost');
  return list.map((label) => {
    let d = label;
    let kind: 'unix' | 'inet' = 'inet';
    if (d.startsWith('unix:')) {
      d = d.slice(5);
      kind = 'unix';
    } else if (d.startsWith('inet:')) {
      d = d.slice(5);
    }
    let port = 0;
    const colon = d.lastIndexOf(':');
    if (colon >= 0) {
      port = findInetPort(d.slice(colon + 1));
      d = d.slice(0, colon);
    }
    if (d.toLowerCase() === 'localhost' || (kind === 'inet' && d === '')) {
      return { label, kind: 'unix', target: { port } };
    }
    return kind === 'unix' ? { label, kind, target: { port, socketPath: d } } : { label, kind, target: { host: d, port } };
  });
}

export interface MysqlSettings {
  user: string;
  password: string;
  dbname: string;
  /** `charset` (Postfix 3.9+) if given */
  charset?: string;
  optionFile?: string;
  optionGroup: string;
  tls: {
    certFile?: string;
    keyFile?: string;
    caFile?: string;
    caPath?: string;
    ciphers?: string;
    /** undefined: library default */
    verifyCert?: boolean;
  };
}

/** One open connection and what quoting needs to know about it. */
export interface MyConn {
  readonly raw: mysql.Connection;
  /** the connection character set (lowercase MySQL name) */
  charset: string;
  /** SERVER_STATUS_NO_BACKSLASH_ESCAPES: quotes are doubled instead of backslash-escaped */
  noBackslashEscapes: boolean;
  /** why the connection died (set once it has), and who waits to hear it */
  dead?: string;
  readonly onDeath: Set<(why: string) => void>;
  /** the query path (after the driver has connected, authenticated and set the connection up) */
  wire?: MyWire;
}

const DEFAULT_SOCKET = '/run/mysqld/mysqld.sock';

function readPem(file: string | undefined): Buffer | undefined {
  return file ? fs.readFileSync(file) : undefined;
}

function pemDir(dir: string | undefined): Buffer[] {
  if (!dir) return [];
  try {
    return fs.readdirSync(dir).filter((n) => /\.(pem|crt)$/i.test(n) || /^[0-9a-f]{8}\.\d+$/.test(n)).map((n) => fs.readFileSync(`${dir}/${n}`));
  } catch {
    return [];
  }
}

export class MysqlDriver implements PoolDriver<MyTarget, MyConn> {
  private readonly options: MyOptions;
  readonly connectTimeoutMs: number;

  constructor(private readonly s: MysqlSettings) {
    this.options = readMyOptions(s.optionFile, s.optionGroup);
    // the client library's connect timeout comes from the option file; 10 s otherwise
    this.connectTimeoutMs = (optSeconds(this.options, 'connect-timeout', 'timeout') || 10) * 1000;
  }

  connect(h: PoolHost<MyTarget>, onLost: () => void): Promise<MyConn> {
    const o = this.options;
    const t = h.target;
    const s = this.s;
    const charset = (s.charset ?? o.get('default-character-set') ?? 'utf8mb4').toLowerCase();
    const tls = s.tls;
    const caFile = tls.caFile ?? o.get('ssl-ca');
    const caPath = tls.caPath ?? o.get('ssl-capath');
    const certFile = tls.certFile ?? o.get('ssl-cert');
    const keyFile = tls.keyFile ?? o.get('ssl-key');
    const ciphers = tls.ciphers ?? o.get('ssl-cipher');
    const wantTls = !!(caFile || caPath || certFile || keyFile || ciphers || o.has('ssl'));
    const verify = tls.verifyCert ?? (o.has('ssl-verify-server-cert') ? o.get('ssl-verify-server-cert') !== '0' : false);
    return new Promise<MyConn>((resolve, reject) => {
      let raw: mysql.Connection;
      try {
        const base: mysql.ConnectionOptions = {
          user: s.user !== '' ? s.user : o.get('user') ?? process.env.USER ?? '',
          // Postfix passes its (possibly empty) password, which the library uses as given
          password: s.password,
          database: s.dbname !== '' ? s.dbname : o.get('database'),
          charset: 'UTF8MB4_GENERAL_CI',
          connectTimeout: this.connectTimeoutMs,
          // CLIENT_MULTI_RESULTS as Postfix; none of the node driver's extras that change SQL semantics
          flags: ['-IGNORE_SPACE', '-FOUND_ROWS', '-LOCAL_FILES', 'MULTI_RESULTS', '-MULTI_STATEMENTS'],
          multipleStatements: false,
          supportBigNumbers: true,
          bigNumberStrings: true,
          dateStrings: true,
        };
        if (h.kind === 'unix') {
          base.socketPath = t.socketPath ?? o.get('socket') ?? process.env.MYSQL_UNIX_PORT ?? DEFAULT_SOCKET;
        } else {
          base.host = t.host;
          base.port = t.port || Number(o.get('port') ?? process.env.MYSQL_TCP_PORT ?? 3306) || 3306;
        }
        if (wantTls) {
          const ca = [...(caFile ? [readPem(caFile)!] : []), ...pemDir(caPath)];
          base.ssl = {
            ...(ca.length ? { ca } : {}),
            ...(certFile ? { cert: readPem(certFile) } : {}),
            ...(keyFile ? { key: readPem(keyFile) } : {}),
            ...(ciphers ? { ciphers } : {}),
            rejectUnauthorized: verify,
          };
        }
        raw = mysqlLib().createConnection(base);
      } catch (e) {
        reject(new Error(`connect to mysql server ${h.label}: ${(e as Error).message}`));
        return;
      }
      let settled = false;
      let conn: MyConn | undefined;
      const died = (why: string) => {
        if (!settled || !conn || conn.dead !== undefined) return;
        conn.dead = why;
        // a query in flight fails now, not when its deadline passes
        for (const f of conn.onDeath) f(why);
        conn.onDeath.clear();
        onLost();
      };
      raw.on('error', (e: Error) => died(e.message));
      raw.on('end', () => died('Lost connection to server'));
      const fail = (e: Error & { code?: string }) => {
        if (settled) return;
        settled = true;
        raw.destroy();
        reject(new Error(`connect to mysql server ${h.label}: ${e.message}`));
      };
      raw.connect((err) => {
        if (err) return fail(err);
        const c: MyConn = { raw, charset, noBackslashEscapes: false, onDeath: new Set() };
        conn = c;
        const setup: string[] = [];
        if (s.charset !== undefined || (charset !== 'utf8mb4' && o.has('default-character-set'))) {
          setup.push(`SET NAMES ${charset.replace(/[^A-Za-z0-9_]/g, '')}`);
        }
        const init = o.get('init-command');
        if (init) setup.push(init);
        setup.push('SELECT @@SESSION.sql_mode');
        const next = (i: number): void => {
          if (i === setup.length) return;
          raw.query({ sql: setup[i]!, typeCast: rawCast }, (qerr: Error | null, rows: unknown) => {
            if (qerr) return fail(qerr);
            if (i === setup.length - 1) {
              const mode = (rows as Record<string, Bytes | null>[])[0]?.['@@SESSION.sql_mode'] ?? '';
              c.noBackslashEscapes = /(^|,)NO_BACKSLASH_ESCAPES(,|$)/i.test(mode ?? '');
              c.wire = new MyWire(raw, c);
              settled = true;
              resolve(c);
              return;
            }
            next(i + 1);
          });
        };
        next(0);
      });
    });
  }

  close(conn: MyConn): void {
    conn.raw.destroy();
  }
}

/** mysql2 typeCast: every column as its raw bytes (null for SQL NULL). */
function rawCast(field: { buffer(): Buffer | null }): Bytes | null {
  const b = field.buffer();
  return b === null ? null : b.toString('latin1');
}

/** Lead-byte / trail-byte tests of the multi-byte charsets whose second byte can be an ASCII escape char. */
const MB_CHARSETS: Record<string, (a: number, b: number) => boolean> = {
  big5: (a, b) => a >= 0xa1 && a <= 0xf9 && ((b >= 0x40 && b <= 0x7e) || (b >= 0xa1 && b <= 0xfe)),
  gbk: (a, b) => a >= 0x81 && a <= 0xfe && b >= 0x40 && b <= 0xfe && b !== 0x7f,
  sjis: (a, b) => ((a >= 0x81 && a <= 0x9f) || (a >= 0xe0 && a <= 0xfc)) && ((b >= 0x40 && b <= 0x7e) || (b >= 0x80 && b <= 0xfc)),
  cp932: (a, b) => ((a >= 0x81 && a <= 0x9f) || (a >= 0xe0 && a <= 0xfc)) && ((b >= 0x40 && b <= 0x7e) || (b >= 0x80 && b <= 0xfc)),
};

/**
 * mysql_real_escape_string on a byte string for this connection: with
 * NO_BACKSLASH_ESCAPES only `'` is doubled; otherwise NUL, LF, CR, `\`,
 * `'`, `"` and ^Z get a backslash escape. Complete double-byte characters
 * of big5/gbk/sjis/cp932 are copied whole (their trail byte may be 0x5C);
 * UTF-8 and single-byte charsets never have an ASCII byte inside a
 * character, so byte-wise escaping is the library's result for them.
 */
export function mysqlEscape(s: Bytes, conn: Pick<MyConn, 'charset' | 'noBackslashEscapes'>): Bytes {
  const mb = MB_CHARSETS[conn.charset];
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (mb && i + 1 < s.length && mb(c, s.charCodeAt(i + 1))) {
      out += s[i]! + s[i + 1]!;
      i++;
      continue;
    }
    if (conn.noBackslashEscapes) {
      out += c === 0x27 ? "''" : s[i];
      continue;
    }
    switch (c) {
      case 0x00: out += '\\0'; break;
      case 0x0a: out += '\\n'; break;
      case 0x0d: out += '\\r'; break;
      case 0x5c: out += '\\\\'; break;
      case 0x27: out += "\\'"; break;
      case 0x22: out += '\\"'; break;
      case 0x1a: out += '\\Z'; break;
      default: out += s[i];
    }
  }
  return out;
}

/** The values of the first data result set, row by row, all columns (null = SQL NULL); null when there is none. */
export type MysqlRows = (Bytes | null)[] | null;

/**
 * Send one query (raw bytes) and collect the result sets as Postfix's
 * plmysql_query does. `label` is `mysql:NAME` for the warnings.
 */
export function mysqlQuery(conn: MyConn, query: Bytes, requireResultSet: boolean, label: string): Promise<WorkResult<MysqlRows>> {
  if (conn.dead !== undefined || !conn.wire) {
    return Promise.resolve({ kind: 'host-error', message: `${label}: query failed: ${conn.dead ?? 'not connected'}` });
  }
  return conn.wire.query(query, (r) => mysqlResult(r, requireResultSet, label));
}

function mysqlResult(r: MyWireResult, requireResultSet: boolean, label: string): WorkResult<MysqlRows> {
  if (r.error !== undefined) return { kind: 'host-error', message: `${label}: query failed: ${r.error}` };
  if (r.sets.length > 1) {
    return { kind: 'host-error', message: `${label}: query failed: multiple result sets returning data are not supported` };
  }
  if (r.sets.length === 0) {
    if (requireResultSet) {
      return { kind: 'host-error', message: `${label}: query failed: query returned no result set(require_result_set = yes)` };
    }
    return { kind: 'ok', value: null };
  }
  const values: (Bytes | null)[] = [];
  for (const row of r.sets[0]!) for (const v of row) values.push(v === null ? null : v.toString('latin1'));
  return { kind: 'ok', value: values };
}

/** Run a write statement (update_query, delete_query): the affected rows of its last OK packet. */
export function mysqlExec(conn: MyConn, query: Bytes, label: string): Promise<WorkResult<number>> {
  if (conn.dead !== undefined || !conn.wire) {
    return Promise.resolve({ kind: 'host-error', message: `${label}: query failed: ${conn.dead ?? 'not connected'}` });
  }
  return conn.wire.query(query, (r): WorkResult<number> =>
    r.error !== undefined ? { kind: 'host-error', message: `${label}: query failed: ${r.error}` } : { kind: 'ok', value: r.affected },
  );
}

/** Run the sequence query: the rows of its first result set, every column (null = SQL NULL). */
export function mysqlRows(conn: MyConn, query: Bytes, label: string): Promise<WorkResult<(Bytes | null)[][]>> {
  if (conn.dead !== undefined || !conn.wire) {
    return Promise.resolve({ kind: 'host-error', message: `${label}: query failed: ${conn.dead ?? 'not connected'}` });
  }
  return conn.wire.query(query, (r): WorkResult<(Bytes | null)[][]> => {
    if (r.error !== undefined) return { kind: 'host-error', message: `${label}: query failed: ${r.error}` };
    if (r.sets.length === 0) return { kind: 'host-error', message: `${label}: sequence_query returned no result set` };
    return { kind: 'ok', value: r.sets[0]!.map((row) => row.map((v) => (v === null ? null : v.toString('latin1')))) };
  });
}
