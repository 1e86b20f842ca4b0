/**
 * The subset of BER (X.690) that LDAPv3 (RFC 4511) needs: definite
 * lengths, INTEGER/ENUMERATED/BOOLEAN/OCTET STRING and constructed values.
 * Octet strings are byte strings (one char per byte, latin1), as all of
 * proxymapd's keys and values are.
 */
import type { Bytes } from '../core/table.js';

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  ENUMERATED: 0x0a,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const out: number[] = [];
  while (n > 0) {
    out.unshift(n & 0xff);
    n = Math.floor(n / 256);
  }
  return Buffer.from([0x80 | out.length, ...out]);
}

/** One TLV. */
export function tlv(tag: number, content: Buffer | Buffer[]): Buffer {
  const body = Array.isArray(content) ? Buffer.concat(content) : content;
  return Buffer.concat([Buffer.from([tag]), lengthBytes(body.length), body]);
}

export function berInt(n: number, tag: number = TAG.INTEGER): Buffer {
  const out: number[] = [];
  let v = n;
  do {
    out.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v !== 0 && v !== -1);
  if (n >= 0 && (out[0]! & 0x80)) out.unshift(0);
  if (n < 0 && !(out[0]! & 0x80)) out.unshift(0xff);
  return tlv(tag, Buffer.from(out));
}

export function berBool(b: boolean, tag: number = TAG.BOOLEAN): Buffer {
  return tlv(tag, Buffer.from([b ? 0xff : 0]));
}

/** An OCTET STRING (or an implicitly tagged one) from a byte string. */
export function berStr(s: Bytes | Buffer, tag: number = TAG.OCTET_STRING): Buffer {
  return tlv(tag, typeof s === 'string' ? Buffer.from(s, 'latin1') : s);
}

export class BerError extends Error {}

/** A decoded TLV: its tag and content (a view into the message). */
export interface Tlv {
  tag: number;
  body: Buffer;
}

/**
 * The length of the first complete TLV in `buf`, or 0 when more bytes are
 * needed. Throws BerError on an encoding LDAP does not allow.
 */
export function tlvLength(buf: Buffer, maxLen = 64 * 1024 * 1024): number {
  if (buf.length < 2) return 0;
  const first = buf[1]!;
  let len: number;
  let hdr: number;
  if (first < 0x80) {
    len = first;
    hdr = 2;
  } else {
    const n = first & 0x7f;
    if (n === 0 || n > 4) throw new BerError('unsupported BER length');
    if (buf.length < 2 + n) return 0;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[2 + i]!;
    hdr = 2 + n;
  }
  if (len > maxLen) throw new BerError('BER element too long');
  return buf.length >= hdr + len ? hdr + len : 0;
}

/** A reader over the content of a constructed value. */
export class BerReader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  peekTag(): number | undefined {
    return this.done ? undefined : this.buf[this.pos];
  }

  next(): Tlv {
    const rest = this.buf.subarray(this.pos);
    const total = tlvLength(rest);
    if (total === 0) throw new BerError('truncated BER element');
    const first = rest[1]!;
    const hdr = first < 0x80 ? 2 : 2 + (first & 0x7f);
    this.pos += total;
    return { tag: rest[0]!, body: rest.subarray(hdr, total) };
  }

  expect(tag: number): Buffer {
    const t = this.next();
    if (t.tag !== tag) throw new BerError(`unexpected BER tag 0x${t.tag.toString(16)} (wanted 0x${tag.toString(16)})`);
    return t.body;
  }

  int(tag: number = TAG.INTEGER): number {
    const b = this.expect(tag);
    if (b.length === 0 || b.length > 6) throw new BerError('bad BER integer');
    let v = b[0]! & 0x80 ? -1 : 0;
    for (const x of b) v = v * 256 + x;
    return v;
  }

  str(tag: number = TAG.OCTET_STRING): Bytes {
    return this.expect(tag).toString('latin1');
  }

  reader(tag: number): BerReader {
    return new BerReader(this.expect(tag));
  }
}
