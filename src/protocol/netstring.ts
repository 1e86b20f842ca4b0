/**
 * Netstrings (`<decimal length>:<bytes>,`), the framing of the socketmap(5)
 * protocol, for the server side. Pure code, no I/O; payloads are byte
 * strings (one char per byte, Buffer 'latin1').
 *
 * Reading follows the rules of Postfix's netstring reader: ASCII digits up
 * to the ':' (leading zeros allowed, no whitespace), then exactly that many
 * bytes, then ','. Unlike Postfix, an oversized length is refused as soon as
 * its digits are read, before any of the payload arrives, and the length
 * text itself is bounded (a stream of leading zeros is a format error).
 */

/** Why a stream of requests cannot be read further: a framing error or a request over the size limit. */
export class FramingError extends Error {
  constructor(
    message: string,
    readonly kind: 'format' | 'size',
  ) {
    super(message);
    this.name = 'FramingError';
  }
}

/** What frames received bytes into requests (netstrings here, lines for tcp_table). */
export interface RequestDecoder {
  /** Append received bytes (a latin1 string). */
  push(chunk: string): void;
  /** The next complete request, or null until more bytes arrive. Throws FramingError. */
  next(): string | null;
  /** Bytes received that are not yet part of a returned request. */
  readonly pendingBytes: number;
}

/** Most characters of a length (with leading zeros) before it is a format error. */
const MAX_LENGTH_DIGITS = 20;

/** The buffer of received bytes that the request decoders share. */
export abstract class BufferedDecoder implements RequestDecoder {
  protected buf = '';

  /** @param maxLength the longest request accepted (bytes) */
  constructor(protected readonly maxLength: number) {}

  /** Append received bytes. */
  push(chunk: string): void {
    this.buf = this.buf.length === 0 ? chunk : this.buf + chunk;
  }

  /** Bytes received that are not yet part of a returned request. */
  get pendingBytes(): number {
    return this.buf.length;
  }

  abstract next(): string | null;
}

export class NetstringDecoder extends BufferedDecoder {

  /** The next complete payload, or null until more bytes arrive. Throws FramingError on a malformed stream. */
  next(): string | null {
    const b = this.buf;
    let len = 0;
    let i = 0;
    for (; i < b.length; i++) {
      const c = b.charCodeAt(i);
      if (c === 0x3a) break;
      if (c < 0x30 || c > 0x39) throw new FramingError(i === 0 ? 'malformed netstring: expected a length' : 'malformed netstring: non-digit in length', 'format');
      if (i >= MAX_LENGTH_DIGITS) throw new FramingError('malformed netstring: length too long', 'format');
      len = len * 10 + (c - 0x30);
      if (len > this.maxLength) throw new FramingError(`netstring length exceeds ${this.maxLength} bytes`, 'size');
    }
    if (i === b.length) return null;
    if (i === 0) throw new FramingError('malformed netstring: expected a length', 'format');
    const end = i + 1 + len;
    if (b.length <= end) return null;
    if (b.charCodeAt(end) !== 0x2c) throw new FramingError('malformed netstring: missing "," after the data', 'format');
    const payload = b.slice(i + 1, end);
    this.buf = b.length === end + 1 ? '' : b.slice(end + 1);
    return payload;
  }
}

/** One netstring, as a byte string. */
export function encodeNetstring(payload: string): string {
  return `${payload.length}:${payload},`;
}
