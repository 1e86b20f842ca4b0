/**
 * The tcp_table(5) front-end (a proxymapd extension; Postfix has only the
 * client side, dict_tcp.c): each address of proxymapd_tcp_maps serves one
 * table to `tcp:host:port` clients, with the listeners, allow-list, limits
 * and lookups of the socketmap front-end (socketmap-server.ts).
 *
 * A request is one line `get SP key`, the key %XX-quoted (any case; a
 * trailing CR is dropped, for interactive use); the reply one line: `200
 * value` (%XX-quoted as Postfix's hex_quote does), `500 not found`, or
 * `400 reason` for every failure (try again, table errors, an unapproved
 * table, a malformed or unsupported request, no answer within the request
 * deadline), since the protocol has no "permanent error" that Postfix would
 * not read as "not found". A value whose reply line would exceed the 4096
 * bytes Postfix's client reads gets `400` at once, where the client would
 * otherwise retry for 10 s before giving up. A line over the request size
 * limit gets `400` and the connection is closed.
 */
import { PROXY_STAT } from '../protocol/flags.js';
import { BufferedDecoder, FramingError } from '../protocol/netstring.js';
import { logBytes } from '../log.js';
import { hexQuote, hexUnquote } from '../tables/network/tcp.js';
import type { LookupAnswer, SocketmapServer, WireCodec } from './socketmap-server.js';

/** Postfix's tcp client reads reply lines of at most this many bytes, LF included. */
export const TCP_MAX_REPLY_LINE = 4096;

/** Requests as LF-terminated lines of at most `maxLength` bytes (without the LF). */
export class LineDecoder extends BufferedDecoder {

  next(): string | null {
    const nl = this.buf.indexOf('\n');
    if (nl > this.maxLength || (nl < 0 && this.buf.length > this.maxLength)) {
      throw new FramingError(`request line longer than ${this.maxLength} bytes`, 'size');
    }
    if (nl < 0) return null;
    const line = this.buf.slice(0, nl);
    this.buf = this.buf.length === nl + 1 ? '' : this.buf.slice(nl + 1);
    return line.endsWith('\r') ? line.slice(0, -1) : line;
  }
}

/** The tcp_table protocol for the listener of `spec`. */
export function tcpCodec(server: SocketmapServer, spec: string): WireCodec {
  const what = `tcp_table: lookup in "${logBytes(spec)}"`;
  return {
    decoder: new LineDecoder(server.limits.maxRequest),
    answer(line) {
      if (!line.startsWith('get ')) {
        server.clientWarning.warn(`${what}: unsupported request (only "get key" is served)`);
        return '400 unsupported request';
      }
      const key = hexUnquote(line.slice(4));
      if (key === undefined) {
        server.clientWarning.warn(`${what}: malformed %XX encoding in the request`);
        return '400 malformed request';
      }
      const out = server.lookup(spec, key, what);
      return out instanceof Promise ? out.then(tcpReply) : tcpReply(out);
    },
    timeout: (_line, seconds) => `400 no answer within ${seconds}s`,
    framingError: (message) => `400 ${message}`,
    encode: (reply) => reply + '\n',
  };
}

function tcpReply(a: LookupAnswer): string {
  switch (a.status) {
    case PROXY_STAT.OK: {
      const line = `200 ${hexQuote(a.value)}`;
      return line.length < TCP_MAX_REPLY_LINE ? line : '400 value too long for the tcp_table protocol';
    }
    case PROXY_STAT.NOKEY:
      return '500 not found';
    case PROXY_STAT.RETRY:
      return '400 temporary lookup failure';
    case PROXY_STAT.DENY:
      return '400 table not approved';
    default:
      return '400 table configuration error';
  }
}
