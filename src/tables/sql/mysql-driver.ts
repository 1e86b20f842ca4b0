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
import { Outbox } from './outbox.js';
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

/** What one COM_QUERY answered: its result sets with data (column count > 0), or the error that ended it. */
interface MyWireResult {
  sets: (Buffer | null)[][][];
  error?: string;
}

const SERVER_MORE_RESULTS_EXISTS = 0x0008;
const SERVER_STATUS_NO_BACKSLASH_ESCAPES = 0x0200;
const MAX_PACKET = 0xffffff;

/**
 * The query path of one connection: COM_QUERY in the text protocol spoken
 * directly on the socket `mysql2` connected, authenticated and set up (the
 * handshake, TLS, option files stay the driver's). Per query the packets of
 * every result set (CLIENT_MULTI_RESULTS), until the last OK/EOF/ERR
 * packet; values as raw bytes; the server status flags kept
 * (NO_BACKSLASH_ESCAPES, as the C client's mysql_real_escape_string reads
 * them). About half the CPU of the driver's own query objects.
 *
 * Several queries may be in flight (the pool's pipeline): the server reads
 * one command after another from the socket and answers each in turn, so
 * the responses are matched to the queries in the order they were sent.
 */
export class MyWire {
  private buf: Buffer = Buffer.alloc(0);
  private parts: Buffer[] = [];
  /** queries sent and not yet answered, oldest first */
  private readonly pending: ((r: MyWireResult) => void)[] = [];
  private dead: string | undefined;
  // the response being read (to the oldest pending query)
  private phase: 'start' | 'columns' | 'coleof' | 'rows' = 'start';
  private columnsLeft = 0;
  private sets: (Buffer | null)[][][] = [];
  private rows: (Buffer | null)[][] | null = null;
  private readonly stream: import('node:net').Socket;
  private readonly out: Outbox;

  constructor(raw: mysql.Connection, private readonly conn: Pick<MyConn, 'noBackslashEscapes'>) {
    this.stream = (raw as unknown as { stream: import('node:net').Socket }).stream;
    this.out = new Outbox(this.stream);
    // from here on the driver no longer reads this socket; it still sees its end and errors
    this.stream.removeAllListeners('data');
    this.stream.on('data', (chunk: Buffer) => this.onData(chunk));
    this.stream.on('close', () => this.fail('Lost connection to server'));
    this.stream.on('error', (e: Error) => this.fail(e.message));
  }

  private fail(why: string): void {
    this.dead ??= why;
    for (const p of this.pending.splice(0)) p({ sets: [], error: this.dead });
  }

  /** Send one query (raw bytes), collect its result sets, and answer what `map` makes of them. */
  query<X>(sql: Bytes, map: (r: MyWireResult) => X): Promise<X> {
    if (this.dead !== undefined) return Promise.resolve(map({ sets: [], error: this.dead }));
    return new Promise((resolve) => {
      this.pending.push((r) => resolve(map(r)));
      const len = sql.length + 1; // COM_QUERY and the query's bytes
      if (len < MAX_PACKET) {
        const m = Buffer.allocUnsafe(4 + len);
        m.writeUIntLE(len, 0, 3);
        m[3] = 0; // sequence
        m[4] = 0x03; // COM_QUERY
        m.write(sql, 5, 'latin1');
        this.out.send(m, this.pending.length === 1);
        return;
      }
      const payload = Buffer.allocUnsafe(len);
      payload[0] = 0x03;
      payload.write(sql, 1, 'latin1');
      // packets of at most 2^24-1 bytes; one that is exactly that long is followed by another
      const out: Buffer[] = [];
      let seq = 0;
      for (let off = 0; ; ) {
        const n = Math.min(MAX_PACKET, payload.length - off);
        const h = Buffer.allocUnsafe(4);
        h.writeUIntLE(n, 0, 3);
        h[3] = seq++ & 0xff;
        out.push(h, payload.subarray(off, off + n));
        off += n;
        if (n < MAX_PACKET) break;
      }
      this.out.send(Buffer.concat(out), this.pending.length === 1);
    });
  }

  private onData(chunk: Buffer): void {
    const buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let off = 0;
    while (buf.length - off >= 4) {
      const len = buf.readUIntLE(off, 3);
      if (buf.length - off < 4 + len) break;
      const body = buf.subarray(off + 4, off + 4 + len);
      off += 4 + len;
      if (len === MAX_PACKET) {
        this.parts.push(body);
        continue;
      }
      let packet = body;
      if (this.parts.length) {
        this.parts.push(body);
        packet = Buffer.concat(this.parts);
        this.parts = [];
      }
      this.packet(packet);
    }
    this.buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
  }

  private finish(error?: string): void {
    const p = this.pending.shift();
    const sets = this.sets;
    this.phase = 'start';
    this.sets = [];
    this.rows = null;
    p?.({ sets, error });
  }

  private status(flags: number): void {
    this.conn.noBackslashEscapes = (flags & SERVER_STATUS_NO_BACKSLASH_ESCAPES) !== 0;
  }

  private errorText(p: Buffer): string {
    // 0xFF, error code (2), '#' and the SQLSTATE (5), message
    const start = p.length > 3 && p[3] === 0x23 ? 9 : 3;
    return p.toString('utf8', Math.min(start, p.length));
  }

  private packet(p: Buffer): void {
    if (this.pending.length === 0) return; // nothing asked: not ours to read
    const first = p[0];
    switch (this.phase) {
      case 'start': {
        if (first === 0x00) {
          // OK: no result set (a command, or the status of a CALL)
          let o = 1;
          o = lenencSkip(p, o); // affected rows
          o = lenencSkip(p, o); // last insert id
          const flags = p.length >= o + 2 ? p.readUInt16LE(o) : 0;
          this.status(flags);
          if (!(flags & SERVER_MORE_RESULTS_EXISTS)) this.finish();
          return;
        }
        if (first === 0xff) return this.finish(this.errorText(p));
        if (first === 0xfb) return this.finish('LOAD DATA LOCAL INFILE is not supported');
        this.columnsLeft = lenencInt(p, 0).value;
        this.rows = [];
        this.sets.push(this.rows);
        this.phase = this.columnsLeft > 0 ? 'columns' : 'coleof';
        return;
      }
      case 'columns':
        if (--this.columnsLeft === 0) this.phase = 'coleof';
        return;
      case 'coleof':
        if (first === 0xff) return this.finish(this.errorText(p));
        // the EOF after the column definitions
        this.phase = 'rows';
        return;
      case 'rows': {
        if (first === 0xfe && p.length < 9) {
          // EOF: warnings (2), status (2)
          const flags = p.length >= 5 ? p.readUInt16LE(3) : 0;
          this.status(flags);
          if (flags & SERVER_MORE_RESULTS_EXISTS) this.phase = 'start';
          else this.finish();
          return;
        }
        if (first === 0xff) return this.finish(this.errorText(p));
        const row: (Buffer | null)[] = [];
        for (let o = 0; o < p.length; ) {
          if (p[o] === 0xfb) {
            row.push(null);
            o++;
            continue;
          }
          const { value: n, next } = lenencInt(p, o);
          row.push(p.subarray(next, next + n));
          o = next + n;
        }
        this.rows!.push(row);
        return;
      }
    }
  }
}

/** A length-encoded integer at `o`: its value and the offset after it. */
function lenencInt(p: Buffer, o: number): { value: number; next: number } {
  const b = p[o]!;
  if (b < 0xfb) return { value: b, next: o + 1 };
  if (b === 0xfc) return { value: p.readUInt16LE(o + 1), next: o + 3 };
  if (b === 0xfd) return { value: p.readUIntLE(o + 1, 3), next: o + 4 };
  return { value: Number(p.readBigUInt64LE(o + 1)), next: o + 9 };
}

function lenencSkip(p: Buffer, o: number): number {
  return o < p.length ? lenencInt(p, o).next : o;
}

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
