/**
 * tcp: tables (Postfix src/util/dict_tcp.c, hex_quote.c, tcp_table(5)).
 *
 *   tcp:host:port    tcp:[addr]:port    (inet only, as Postfix's inet_connect)
 *
 * Lookup only. A request is `get SP hexquote(key) LF`; the reply is one
 * line of at most 4096 bytes (LF included): three digits, one white-space
 * character, then %XX-quoted text. Only the first digit counts: 2 found (the
 * unquoted text, possibly empty), 5 not found (the text is ignored and the
 * connection kept), 4 try again (the connection is closed), any other
 * digit a warning "bad status code", try again. A line that does not parse
 * is a warning "malformed reply", try again.
 *
 * Connections: a pool per table (client.ts: at most 4 connections, one
 * request in flight on each, the rest queued in order), opened at the first
 * lookup and kept with no idle limit; connect and I/O limit 100 s. When the
 * connect fails or no complete line arrives (the server closed, or sent
 * more than 4096 bytes without LF), the connection is dropped and the
 * request tried again after 1 s, 10 attempts in all, then "try again", as
 * dict_tcp does (each failed attempt logs Postfix's warning).
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { isDigitCode, isSpaceCode } from '../../util/ctype.js';
import { postfixPrintable } from '../../util/printable.js';
import type { TableType } from '../core/registry.js';
import { NOT_FOUND, RETRY, TableOpenError, found, type Bytes, type LookupResult, type Table, type TableOpenOptions } from '../core/table.js';
import { cString, requireReadOnly } from '../core/util.js';
import { ConnPool, NET_LIMITS, inetEndpoint, type ReadDone } from './client.js';

const MAX_TRY = 10;
const MAX_LEN = 4096;

/** hex_quote(): `%`, white space, and every byte that is not printable ASCII become %XX (upper case). */
export function hexQuote(raw: Bytes): Bytes {
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0) break;
    out += c !== 0x25 && c > 0x20 && c < 0x7f ? raw[i] : '%' + c.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/** hex_unquote(): %XX in either case; a `%` without two hex digits is an error (undefined). */
export function hexUnquote(hex: Bytes): Bytes | undefined {
  let out = '';
  for (let i = 0; i < hex.length; i++) {
    if (hex[i] !== '%') {
      out += hex[i];
      continue;
    }
    const hi = hexDigit(hex.charCodeAt(i + 1));
    const lo = hi < 0 ? -1 : hexDigit(hex.charCodeAt(i + 2));
    if (lo < 0) return undefined;
    out += String.fromCharCode((hi << 4) | lo);
    i += 2;
  }
  return out;
}

/** A reply line's outcome: a lookup result, the warning it logs, and whether the connection is kept. */
type Reply = { result: LookupResult; warning?: string } | { tooLong: true };

/**
 * vstring_get_nonl_bound(buf, fp, 4096) (a line ending in LF within 4096
 * bytes), then dict_tcp's reply check, which decides whether the
 * connection is kept (only 2xx and 5xx keep it).
 */
function replyReader(utf8: boolean): (buf: Buffer) => ReadDone<Reply> | undefined {
  return (buf) => {
    const lf = buf.indexOf(0x0a);
    if (lf < 0 || lf >= MAX_LEN) return buf.length >= MAX_LEN ? { result: { tooLong: true }, used: buf.length, keep: false } : undefined;
    const used = lf + 1;
    const line = buf.subarray(0, lf).toString('latin1');
    const shown = () => postfixPrintable(cString(line), utf8, '_').slice(0, 100);
    const text = cString(line);
    const value =
      text.length >= 4 && isDigitCode(text.charCodeAt(0)) && isDigitCode(text.charCodeAt(1)) && isDigitCode(text.charCodeAt(2)) && isSpaceCode(text.charCodeAt(3))
        ? hexUnquote(text.slice(4))
        : undefined;
    if (value === undefined) return { result: { result: RETRY, warning: `malformed reply: ${shown()}` }, used, keep: false };
    switch (text[0]) {
      case '2':
        return { result: { result: found(cString(value)) }, used, keep: true };
      case '5':
        return { result: { result: NOT_FOUND }, used, keep: true };
      case '4':
        return { result: { result: RETRY }, used, keep: false };
      default:
        return { result: { result: RETRY, warning: `bad status code: ${shown()}` }, used, keep: false };
    }
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function openTcp(opts: TableOpenOptions): Table {
  const label = `${opts.type}:${opts.name}`;
  if (opts.openFlags & DICT_FLAG.NO_UNAUTH) throw new TableOpenError(`${label} map is not allowed for security sensitive data`);
  requireReadOnly(opts);
  const ep = inetEndpoint(opts.name);
  if ('error' in ep) throw new TableOpenError(ep.error);
  const utf8 = (opts.openFlags & DICT_FLAG.UTF8_REQUEST) !== 0;
  const pool = new ConnPool(ep, { timeoutMs: () => NET_LIMITS.timeoutMs, warn: opts.warn });
  const reader = replyReader(utf8);
  let closed = false;

  const lookup = async (rawKey: Bytes, flags: number): Promise<LookupResult> => {
    const key = flags & DICT_FLAG.FOLD_MUL ? rawKey.replace(/[A-Z]+/g, (s) => s.toLowerCase()) : rawKey;
    const request = Buffer.from(`get ${hexQuote(key)}\n`, 'latin1');
    for (let tries = 0; ; ) {
      if (closed) return RETRY;
      const r = await pool.exchange(request, reader);
      if (r.ok && !('tooLong' in r.result)) {
        if (r.result.warning) opts.warn(`read TCP map reply from ${opts.name}: ${r.result.warning}`);
        return r.result.result;
      }
      if (!r.ok && r.kind === 'connect') opts.warn(`connect to TCP map ${opts.name}: ${r.errno}`);
      // vstring_get_nonl_bound returns EOF only when nothing at all was read
      else if (!r.ok && r.received.length === 0) opts.warn(`read TCP map reply from ${opts.name}: unexpected EOF (${r.errno})`);
      else opts.warn(`read TCP map reply from ${opts.name}: text longer than ${MAX_LEN}`);
      if (++tries >= MAX_TRY) return RETRY;
      await sleep(NET_LIMITS.tcpRetryPauseMs);
    }
  };

  return {
    type: opts.type,
    name: opts.name,
    implFlags: DICT_FLAG.PATTERN,
    lookup,
    close() {
      closed = true;
      pool.close();
    },
  };
}

export const tcpType: TableType = { name: 'tcp', open: openTcp, implFlags: DICT_FLAG.PATTERN, writable: false };
