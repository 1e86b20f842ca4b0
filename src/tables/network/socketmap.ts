/**
 * socketmap: tables (Postfix src/util/dict_sockmap.c, netstring.c,
 * auto_clnt.c, socketmap_table(5)): a Sendmail-style socketmap server.
 *
 *   socketmap:inet:host:port:name    socketmap:unix:/path:name    socketmap:local:path:name
 *
 * The map name is the text after the last ':'; the rest is the server
 * (auto_clnt's transport:endpoint). Lookup only. A request is the netstring
 * `name SP key` (the key as it is: no quoting, no folding unless FOLD_MUL);
 * the reply is one netstring of at most socketmap_max_reply_size bytes
 * (main.cf, default 100000):
 *
 *   OK SP data    found (data may be empty or hold spaces)
 *   OK            not found (Postfix 3.7; the 3.12 snapshot returns "")
 *   NOTFOUND ...  not found
 *   TEMP/TIMEOUT  try again, with a warning; PERM: configuration error; anything else: try again
 *
 * Connections: every socketmap table on the same server shares one pool
 * (client.ts: at most 4 connections, one request in flight on each, the
 * rest queued in order), closed after 10 s idle and once older than 100 s;
 * connect and I/O limit 100 s. When the server closes a connection before
 * it replied, the request is sent once more on a new connection (Postfix's
 * one retry that makes server restarts transparent); a time-out, a
 * malformed or oversized reply, or a failed connect is a warning and "try
 * again". Unlike Postfix, a malformed or oversized reply also closes the
 * connection, so the next request does not read the rest of it.
 *
 * Postfix 3.12's socketmap_max_query_size is not applied (3.7 has none).
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { postfixPrintable } from '../../util/printable.js';
import { intParam } from '../core/params.js';
import type { TableType } from '../core/registry.js';
import { DICT_ERR, NOT_FOUND, RETRY, TableOpenError, found, type Bytes, type LookupResult, type Table, type TableOpenOptions } from '../core/table.js';
import { cString, requireReadOnly } from '../core/util.js';
import { ConnPool, NET_LIMITS, serviceEndpoint, type ReadDone } from './client.js';

const DEFAULT_MAX_REPLY = 100_000;

/** What one netstring read gives (netstring_get): the payload or a NETSTRING_ERR_*. */
type Netstring = { payload: Buffer } | { error: 'format' | 'size' };

const NETSTRING_TEXT = {
  eof: 'unexpected disconnect',
  timeout: 'time limit exceeded',
  format: 'input format error',
  size: 'input exceeds size limit',
} as const;

/** A netstring reader with a payload limit (netstring_get_length + netstring_get_data). */
export function netstringReader(limit: number): (buf: Buffer) => ReadDone<Netstring> | undefined {
  return (buf) => {
    let len = 0;
    let i = 0;
    for (; i < buf.length; i++) {
      const c = buf[i];
      if (c === 0x3a) break;
      if (c < 0x30 || c > 0x39) return { result: { error: 'format' }, used: i + 1, keep: false };
      len = len * 10 + (c - 0x30);
      if (len > Number.MAX_SAFE_INTEGER / 10) return { result: { error: 'size' }, used: i + 1, keep: false };
    }
    if (i === buf.length) return undefined;
    if (len > limit) return { result: { error: 'size' }, used: i + 1, keep: false };
    const start = i + 1;
    if (buf.length < start + len + 1) return undefined;
    if (buf[start + len] !== 0x2c) return { result: { error: 'format' }, used: start + len + 1, keep: false };
    return { result: { payload: buf.subarray(start, start + len) }, used: start + len + 1, keep: true };
  };
}

/** The request bytes: one netstring of `name SP key`. */
export function netstringEncode(data: Bytes): Buffer {
  const body = Buffer.from(data, 'latin1');
  return Buffer.concat([Buffer.from(`${body.length}:`, 'latin1'), body, Buffer.from(',', 'latin1')]);
}

interface Shared {
  pool: ConnPool;
  refs: number;
}
/** One pool per server, shared by every socketmap table on it (dict_sockmap_handles). */
const pools = new Map<string, Shared>();

export function openSocketmap(opts: TableOpenOptions): Table {
  requireReadOnly(opts);
  const label = `${opts.type}:${opts.name}`;
  if (opts.openFlags & DICT_FLAG.NO_UNAUTH) throw new TableOpenError(`${label} map is not allowed for security-sensitive data`);
  const last = opts.name.lastIndexOf(':');
  if (last < 0) throw new TableOpenError(`${opts.type} requires server:socketmap argument`);
  const service = opts.name.slice(0, last);
  const mapName = opts.name.slice(last + 1);
  const ep = serviceEndpoint(service, opts.param('queue_directory'));
  if ('error' in ep) throw new TableOpenError(ep.error);
  const maxReply = intParam(opts, 'socketmap_max_reply_size', DEFAULT_MAX_REPLY, { min: 1 });
  const utf8 = (opts.openFlags & DICT_FLAG.UTF8_REQUEST) !== 0;
  const reader = netstringReader(maxReply);

  let shared = pools.get(service);
  if (!shared) {
    shared = {
      refs: 0,
      pool: new ConnPool(ep, {
        timeoutMs: () => NET_LIMITS.timeoutMs,
        idleMs: () => NET_LIMITS.sockmapIdleMs,
        ttlMs: () => NET_LIMITS.sockmapTtlMs,
        warn: opts.warn,
      }),
    };
    pools.set(service, shared);
  }
  shared.refs++;
  const pool = shared.pool;
  let closed = false;

  const lookup = async (rawKey: Bytes, flags: number): Promise<LookupResult> => {
    const key = flags & DICT_FLAG.FOLD_MUL ? rawKey.replace(/[A-Z]+/g, (s) => s.toLowerCase()) : rawKey;
    const request = netstringEncode(`${mapName} ${cString(key)}`);
    let r = await pool.exchange(request, reader);
    // one more try on a new connection when the server closed it (not after a time-out)
    if (!r.ok && r.kind === 'eof') r = await pool.exchange(request, reader, true);
    if (!r.ok) {
      if (r.kind === 'connect') opts.warn(`connect to ${ep.label}: ${r.errno}`);
      opts.warn(`table ${label} lookup error: ${r.kind === 'connect' ? r.errno : NETSTRING_TEXT[r.kind]}`);
      return RETRY;
    }
    const ns = r.result;
    if ('error' in ns) {
      opts.warn(`table ${label} lookup error: ${NETSTRING_TEXT[ns.error]}`);
      return RETRY;
    }
    return parseReply(cString(ns.payload.toString('latin1')));
  };

  const parseReply = (reply: Bytes): LookupResult => {
    const sp = reply.indexOf(' ');
    const status = sp < 0 ? reply : reply.slice(0, sp);
    const rest = sp < 0 ? undefined : reply.slice(sp + 1);
    if (status === 'OK') return rest === undefined ? NOT_FOUND : found(rest);
    if (status === 'NOTFOUND') return NOT_FOUND;
    const [cls, error] =
      status === 'TEMP' ? ['temporary', DICT_ERR.RETRY]
      : status === 'TIMEOUT' ? ['timeout', DICT_ERR.RETRY]
      : status === 'PERM' ? ['permanent', DICT_ERR.CONFIG]
      : ['unknown', DICT_ERR.RETRY];
    const reason = (rest ?? '').replace(/^[ \t\n\v\f\r]+/, '');
    opts.warn(`${label} socketmap server ${cls} error${reason ? ': ' + postfixPrintable(reason, utf8).slice(0, 200) : ''}`);
    return { found: false, error };
  };

  return {
    type: opts.type,
    name: opts.name,
    implFlags: DICT_FLAG.PATTERN,
    lookup,
    close() {
      if (closed) return;
      closed = true;
      if (--shared.refs === 0) {
        shared.pool.close();
        pools.delete(service);
      }
    },
  };
}

export const socketmapType: TableType = { name: 'socketmap', open: openSocketmap, implFlags: DICT_FLAG.PATTERN, writable: false };
