/**
 * The PostgreSQL side of the pgsql: table: host syntax, connections through
 * the `pg` driver, Postfix's quoting (PQescapeStringConn) and result
 * handling (dict_pgsql.c, spec tables-network.md 3).
 *
 * Client encoding: Postfix 3.7 sets the connection's client encoding to
 * LATIN1 (3.8+: the `encoding` parameter, default UTF8), so the key's bytes
 * are read by the server as characters of that encoding, and results come
 * back converted to it. The `pg` driver always speaks UTF-8, so the
 * connection runs with client_encoding UTF8 and this module converts: the
 * query's bytes are decoded from the configured encoding before they are
 * sent, and result text is encoded back into it. The server sees the same
 * characters as it would from Postfix, and results are the same bytes. What
 * the server would refuse (bytes that are not valid in the encoding, a
 * result character the encoding lacks) fails the lookup with RETRY.
 */
import os from 'node:os';
import { createRequire } from 'node:module';
import type pg from 'pg';
import type { Bytes } from '../core/table.js';
import { PgWire, type WireResult } from './pgsql-wire.js';
import type { PoolDriver, PoolHost, WorkResult } from '../dbcommon/pool.js';

// The driver is loaded when the first connection is made: a server without pgsql tables does not carry it.
let lib: typeof pg | undefined;
function pgLib(): typeof pg {
  return (lib ??= createRequire(import.meta.url)('pg') as typeof pg);
}

/** Load the client library ahead of the first connection (about 50 ms here), for a server whose tables may use it. */
export function warmUpPgsql(): void {
  pgLib();
}

export type PgTarget =
  | { kind: 'unix'; dir: string }
  | { kind: 'inet'; host: string; port?: string }
  | { kind: 'uri'; uri: string };

/** A URI scheme: ALPHA *(ALPHA / DIGIT / "+" / "-" / ".") "://" (util/valid_uri_scheme.c). */
const URI_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/** Parse the `hosts` parameter (split on comma and white space; default `localhost`). */
export function parsePgsqlHosts(hosts: string): PoolHost<PgTarget>[] {
  const list = hosts.split(/[,\s]+/).filter((h) => h !== '');
  if (list.length === 0) list.push('localhost');
  return list.map((label): PoolHost<PgTarget> => {
    if (URI_SCHEME.test(label)) return { label, kind: 'uri', target: { kind: 'uri', uri: label } };
    let d = label;
    if (d.startsWith('unix:') || d.startsWith('inet:')) d = d.slice(5);
    if (d === '' || d.startsWith('/')) return { label, kind: 'unix', target: { kind: 'unix', dir: d } };
    const colon = d.lastIndexOf(':');
    if (colon >= 0) return { label, kind: 'inet', target: { kind: 'inet', host: d.slice(0, colon), port: d.slice(colon + 1) } };
    return { label, kind: 'inet', target: { kind: 'inet', host: d } };
  });
}

// ------------------------------------------------------------------ encodings

/** Byte string <-> JS text in one client encoding. `decode` answers null for bytes invalid in it. */
export interface PgCodec {
  readonly name: string;
  decode(bytes: Bytes): string | null;
  /** null when a character has no equivalent in the encoding */
  encode(text: string): Bytes | null;
}

function singleByteCodec(name: string, whatwg: string): PgCodec | undefined {
  let dec: TextDecoder;
  try {
    dec = new TextDecoder(whatwg, { fatal: false });
  } catch {
    return undefined;
  }
  const toChar: string[] = [];
  const toByte = new Map<string, number>();
  for (let b = 0; b < 256; b++) {
    const ch = b < 0x80 ? String.fromCharCode(b) : dec.decode(Uint8Array.of(b));
    toChar.push(ch);
    if (ch !== '\ufffd' && !toByte.has(ch)) toByte.set(ch, b);
  }
  return {
    name,
    decode(bytes) {
      let out = '';
      for (let i = 0; i < bytes.length; i++) {
        const ch = toChar[bytes.charCodeAt(i)]!;
        if (ch === '\ufffd') return null;
        out += ch;
      }
      return out;
    },
    encode(text) {
      let out = '';
      for (const ch of text) {
        const b = toByte.get(ch);
        if (b === undefined) return null;
        out += String.fromCharCode(b);
      }
      return out;
    },
  };
}

const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true });
const ASCII = /^[\x00-\x7f]*$/;

const UTF8_CODEC: PgCodec = {
  name: 'UTF8',
  decode(bytes) {
    if (ASCII.test(bytes)) return bytes;
    try {
      return UTF8_STRICT.decode(Buffer.from(bytes, 'latin1'));
    } catch {
      return null;
    }
  },
  encode(text) {
    return Buffer.from(text, 'utf8').toString('latin1');
  },
};

const LATIN1_CODEC: PgCodec = {
  name: 'LATIN1',
  decode: (bytes) => bytes,
  encode(text) {
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0xff) return null;
    return text;
  },
};

/** PostgreSQL single-byte client encodings whose WHATWG decoder matches. */
const SINGLE_BYTE: Record<string, string> = {
  LATIN2: 'iso-8859-2', LATIN3: 'iso-8859-3', LATIN4: 'iso-8859-4', LATIN6: 'iso-8859-10', LATIN7: 'iso-8859-13',
  LATIN8: 'iso-8859-14', LATIN9: 'iso-8859-15', LATIN10: 'iso-8859-16', ISO_8859_5: 'iso-8859-5',
  ISO_8859_6: 'iso-8859-6', ISO_8859_7: 'iso-8859-7', ISO_8859_8: 'iso-8859-8', WIN866: 'ibm866', WIN874: 'windows-874',
  WIN1250: 'windows-1250', WIN1251: 'windows-1251', WIN1252: 'windows-1252', WIN1253: 'windows-1253',
  WIN1254: 'windows-1254', WIN1255: 'windows-1255', WIN1256: 'windows-1256', WIN1257: 'windows-1257',
  WIN1258: 'windows-1258', KOI8R: 'koi8-r', KOI8U: 'koi8-u',
};
const ALIASES: Record<string, string> = {
  UNICODE: 'UTF8', ISO88591: 'LATIN1', ISO88592: 'LATIN2', ISO88593: 'LATIN3', ISO88594: 'LATIN4', ISO88599: 'LATIN5',
  ISO885910: 'LATIN6', ISO885913: 'LATIN7', ISO885914: 'LATIN8', ISO885915: 'LATIN9', ISO885916: 'LATIN10',
  KOI8: 'KOI8R', WIN: 'WIN1251', ALT: 'WIN866', WINDOWS1252: 'WIN1252', WINDOWS1251: 'WIN1251', WINDOWS1250: 'WIN1250',
  ISO88595: 'ISO_8859_5', ISO88596: 'ISO_8859_6', ISO88597: 'ISO_8859_7', ISO88598: 'ISO_8859_8',
};

/** The codec for a PostgreSQL encoding name (case and punctuation as PostgreSQL ignores them), or undefined. */
export function pgCodec(encoding: string): PgCodec | undefined {
  const clean = encoding.toUpperCase().replace(/[^A-Z0-9]/g, '');
  const name = ALIASES[clean] ?? (clean === 'ISO8859' ? clean : encoding.toUpperCase().replace(/-/g, '_'));
  if (name === 'UTF8' || clean === 'UTF8') return UTF8_CODEC;
  if (name === 'LATIN1' || clean === 'LATIN1') return LATIN1_CODEC;
  for (const key of [name, clean]) {
    const w = SINGLE_BYTE[key] ?? SINGLE_BYTE[key.replace(/^ISO8859/, 'ISO_8859_')];
    if (w) return singleByteCodec(key, w);
  }
  return undefined;
}

// --------------------------------------------------------------- connections

export interface PgsqlSettings {
  user: string;
  password: string;
  dbname: string;
  /** the client encoding the connection emulates */
  codec: PgCodec;
}

export interface PgConn {
  readonly raw: pg.Client;
  /** standard_conforming_strings is on: backslashes are not doubled */
  standardStrings: boolean;
  /** the query path (after the driver has connected and authenticated) */
  readonly wire: PgWire;
}

/** Every column as the server's text (no type parsing). */
const RAW_TYPES = { getTypeParser: () => (v: string) => v } as unknown as pg.CustomTypesConfig;

function sslFor(mode: string | undefined): pg.ClientConfig['ssl'] | 'prefer' {
  switch (mode) {
    case 'disable':
    case 'allow':
      return false;
    case 'require':
      return { rejectUnauthorized: false };
    case 'verify-ca':
    case 'verify-full':
      return { rejectUnauthorized: true };
    default:
      return 'prefer';
  }
}

export class PgsqlDriver implements PoolDriver<PgTarget, PgConn> {
  constructor(
    private readonly s: PgsqlSettings,
    readonly connectTimeoutMs: number,
  ) {}

  connect(h: PoolHost<PgTarget>, onLost: () => void): Promise<PgConn> {
    const t = h.target;
    const s = this.s;
    let config: pg.ClientConfig;
    let ssl: pg.ClientConfig['ssl'] | 'prefer' = false;
    if (t.kind === 'uri') {
      // libpq's sslmode semantics, not the driver's stricter reading of "require"
      const uri = /[?&]sslmode=/.test(t.uri) && !/[?&]uselibpqcompat=/.test(t.uri)
        ? `${t.uri}${t.uri.includes('?') ? '&' : '?'}uselibpqcompat=true` : t.uri;
      config = { connectionString: uri };
    } else {
      // PQsetdbLogin: empty settings fall back to libpq's environment and defaults
      const env = process.env;
      config = {
        host: t.kind === 'unix' ? t.dir || env.PGHOST || '/var/run/postgresql' : t.host,
        port: Number((t.kind === 'inet' && t.port) || env.PGPORT || 5432),
        user: s.user || env.PGUSER || os.userInfo().username,
        database: s.dbname || env.PGDATABASE || s.user || env.PGUSER || os.userInfo().username,
      };
      if (s.password !== '' || env.PGPASSWORD !== undefined) config.password = s.password || env.PGPASSWORD;
      if (t.kind === 'inet') ssl = sslFor(env.PGSSLMODE);
    }
    config.connectionTimeoutMillis = this.connectTimeoutMs;
    config.types = RAW_TYPES;
    const attempt = (useSsl: pg.ClientConfig['ssl']): Promise<PgConn> =>
      new Promise<PgConn>((resolve, reject) => {
        const raw = new (pgLib().Client)({ ...config, ...(useSsl ? { ssl: useSsl } : {}) });
        let settled = false;
        raw.on('error', () => {
          if (settled) onLost();
        });
        raw.on('end', () => {
          if (settled) onLost();
        });
        raw.connect().then(
          async () => {
            try {
              const res = (await raw.query({ text: "SET client_encoding TO 'UTF8'; SHOW standard_conforming_strings", rowMode: 'array' })) as unknown as pg.QueryArrayResult[];
              const scs = res[res.length - 1]!.rows[0]?.[0];
              const conn: PgConn = { raw, standardStrings: scs === 'on', wire: undefined as unknown as PgWire };
              (conn as { wire: PgWire }).wire = new PgWire(raw, conn);
              settled = true;
              resolve(conn);
            } catch (e) {
              raw.end().catch(() => undefined);
              reject(e);
            }
          },
          (e: Error) => {
            raw.end().catch(() => undefined);
            reject(e);
          },
        );
      });
    const fail = (e: Error): never => {
      throw new Error(`connect to pgsql server ${h.label}: ${e.message}`);
    };
    if (ssl === 'prefer') {
      return attempt({ rejectUnauthorized: false }).catch((e: Error) =>
        /does not support SSL/i.test(e.message) ? attempt(false).catch(fail) : fail(e),
      );
    }
    return attempt(ssl).catch(fail);
  }

  close(conn: PgConn): void {
    conn.raw.end().catch(() => undefined);
    // end() waits for the server; make sure the socket goes away
    (conn.raw as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  }
}

/**
 * PQescapeStringConn on a byte string in the connection's client encoding:
 * `'` doubled, `\` doubled unless standard_conforming_strings is on. The
 * encodings handled here have no multi-byte characters that contain ASCII
 * bytes, so escaping byte by byte is exact once the bytes are known to be
 * valid (answers null when they are not: libpq's "invalid multibyte
 * character").
 */
export function pgsqlEscape(s: Bytes, conn: Pick<PgConn, 'standardStrings'>, codec: PgCodec): Bytes | null {
  if (codec.decode(s) === null) return null;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === "'") out += "''";
    else if (ch === '\\' && !conn.standardStrings) out += '\\\\';
    else out += ch;
  }
  return out;
}

/**
 * Run one query (bytes in the client encoding) as PQexec does: with several
 * statements the last result counts; rows in order, all columns, NULL as
 * "" (PQgetvalue). `host` names the host in warnings.
 */
export function pgsqlQuery(conn: PgConn, query: Bytes, codec: PgCodec, host: string): WorkResult<Bytes[]> | Promise<WorkResult<Bytes[]>> {
  const text = pgsqlText(query, codec, host);
  if (typeof text !== 'string') return text;
  return conn.wire.query(text, (res) => pgsqlResult(res, codec, host));
}

/** A result that is not rows, as the failure Postfix reports for it; null for rows. */
function pgsqlFailure(res: WireResult, host: string): WorkResult<never> | null {
  if (res.kind === 'error') {
    const msg = res.severity ? `${res.severity}:  ${res.message}` : res.message;
    return { kind: 'host-error', message: `pgsql query failed: fatal error from host ${host}: ${msg}` };
  }
  if (res.kind === 'none') {
    return { kind: 'host-error', message: `pgsql query failed: ${res.why === 'empty query' || res.why === 'no result' ? 'unknown code 0x0' : res.why} from host ${host}` };
  }
  return null;
}

/** A value the server sent (UTF-8) in the emulated client encoding, or null when it has no equivalent there. */
function pgsqlCell(cell: Buffer, codec: PgCodec): Bytes | null {
  return codec.name === 'UTF8' ? cell.toString('latin1') : codec.encode(cell.toString('utf8'));
}

function noEquivalent(host: string, codec: PgCodec): WorkResult<never> {
  return { kind: 'retry', message: `pgsql query failed: fatal error from host ${host}: ERROR:  character has no equivalent in encoding "${codec.name}"` };
}

function pgsqlResult(res: WireResult, codec: PgCodec, host: string): WorkResult<Bytes[]> {
  if (res.kind !== 'rows') return pgsqlFailure(res, host)!;
  const values: Bytes[] = [];
  for (const row of res.rows) {
    for (const cell of row) {
      if (cell === null) {
        values.push('');
        continue;
      }
      // the connection speaks UTF-8; convert to the emulated client encoding
      const b = pgsqlCell(cell, codec);
      if (b === null) return noEquivalent(host, codec);
      values.push(b);
    }
  }
  return { kind: 'ok', value: values };
}

/** The query as UTF-8 text for the wire, or the failure libpq reports for bytes invalid in the client encoding. */
function pgsqlText(query: Bytes, codec: PgCodec, host: string): string | WorkResult<never> {
  const text = codec.decode(query);
  if (text !== null) return text;
  return { kind: 'retry', message: `pgsql query failed: fatal error from host ${host}: ERROR:  invalid byte sequence for encoding "${codec.name}"` };
}

/**
 * Run a write statement (update_query, delete_query): the rows it affected,
 * the count of the last CommandComplete tag (`INSERT 0 1`, `DELETE 3`; 0
 * for a command without one).
 */
export function pgsqlExec(conn: PgConn, query: Bytes, codec: PgCodec, host: string): WorkResult<number> | Promise<WorkResult<number>> {
  const text = pgsqlText(query, codec, host);
  if (typeof text !== 'string') return text;
  return conn.wire.query(text, (res): WorkResult<number> => {
    if (res.kind !== 'rows') return pgsqlFailure(res, host)!;
    const m = / (\d+)$/.exec(res.tag);
    return { kind: 'ok', value: m ? Number(m[1]) : 0 };
  });
}

/** Run the sequence query: its rows, every column (null = SQL NULL), in the emulated client encoding. */
export function pgsqlRows(conn: PgConn, query: Bytes, codec: PgCodec, host: string): WorkResult<(Bytes | null)[][]> | Promise<WorkResult<(Bytes | null)[][]>> {
  const text = pgsqlText(query, codec, host);
  if (typeof text !== 'string') return text;
  return conn.wire.query(text, (res): WorkResult<(Bytes | null)[][]> => {
    if (res.kind !== 'rows') return pgsqlFailure(res, host)!;
    const rows: (Bytes | null)[][] = [];
    for (const row of res.rows) {
      const out: (Bytes | null)[] = [];
      for (const cell of row) {
        const b = cell === null ? null : pgsqlCell(cell, codec);
        if (cell !== null && b === null) return noEquivalent(host, codec);
        out.push(b);
      }
      rows.push(out);
    }
    return { kind: 'ok', value: rows };
  });
}
