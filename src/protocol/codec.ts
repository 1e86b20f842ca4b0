/**
 * Postfix's NUL-delimited attribute encoding (attr_print0 / attr_scan0).
 *
 *   record = *( name NUL value NUL ) NUL
 *
 * Pure code, no I/O. Names and values are byte strings (one char per byte,
 * Buffer 'latin1'), so any byte sequence round-trips.
 */

export type Attr = readonly [name: string, value: string];
export type AttrRecord = Attr[];

/** Raised when the input cannot be a valid record (e.g. over the size cap). */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** Default cap on one record's size (Postfix enforces none; values from SQL/LDAP can be long). */
export const DEFAULT_MAX_RECORD = 4 * 1024 * 1024;

/** Encode one record. Numbers are written as unsigned decimal (printf "%u"). */
export function encodeRecord(attrs: ReadonlyArray<readonly [string, string | number]>): Buffer {
  let s = '';
  for (const [name, value] of attrs) {
    s += name + '\0' + (typeof value === 'number' ? String(value >>> 0) : value) + '\0';
  }
  s += '\0';
  return Buffer.from(s, 'latin1');
}

/** Encode one record as a byte string (one char per byte), for writing with the 'latin1' encoding. */
export function encodeRecordString(attrs: ReadonlyArray<readonly [string, string | number]>): string {
  let s = '';
  for (const [name, value] of attrs) {
    s += name + '\0' + (typeof value === 'number' ? String(value >>> 0) : value) + '\0';
  }
  return s + '\0';
}

/**
 * Streaming decoder: push() chunks of any size, then take complete records
 * with next(). next() returns null when it needs more bytes ("need more" is
 * distinct from malformed input, which throws ProtocolError).
 *
 * The bytes are held as a latin1 string (one char per byte): fields are then
 * slices of it, with no per-field conversion.
 */
export class RecordDecoder {
  private buf = '';
  /** scan position inside buf (bytes before it hold no NUL of the current field) */
  private pos = 0;
  /** start of the current field (name or value) */
  private fieldStart = 0;
  /** start of the record being parsed */
  private recStart = 0;
  private pairs: AttrRecord = [];
  private pendingName: string | null = null;

  constructor(private readonly maxRecord = DEFAULT_MAX_RECORD) {}

  push(chunk: Buffer): void {
    if (chunk.length > 0) this.pushBytes(chunk.toString('latin1'));
  }

  /** Push bytes given as a latin1 string (one char per byte). */
  pushBytes(chunk: string): void {
    if (chunk.length === 0) return;
    if (this.buf.length === this.recStart) {
      this.buf = chunk;
      this.pos = 0;
      this.fieldStart = 0;
      this.recStart = 0;
    } else {
      // Drop consumed bytes and append.
      this.buf = (this.recStart > 0 ? this.buf.slice(this.recStart) : this.buf) + chunk;
      this.pos -= this.recStart;
      this.fieldStart -= this.recStart;
      this.recStart = 0;
    }
  }

  /** Bytes buffered that are not yet part of a returned record. */
  get pendingBytes(): number {
    return this.buf.length - this.recStart;
  }

  /** The next complete record, or null if more bytes are needed. */
  next(): AttrRecord | null {
    const buf = this.buf;
    for (;;) {
      const nul = buf.indexOf('\0', this.pos);
      if (nul < 0) {
        if (buf.length - this.recStart > this.maxRecord) {
          throw new ProtocolError(`record exceeds ${this.maxRecord} bytes`);
        }
        this.pos = buf.length;
        return null;
      }
      const field = buf.slice(this.fieldStart, nul);
      this.pos = this.fieldStart = nul + 1;
      if (this.pendingName === null) {
        if (field.length === 0) {
          // Empty name: end of record.
          const rec = this.pairs;
          this.pairs = [];
          this.recStart = this.pos;
          if (this.recStart === buf.length) {
            this.buf = '';
            this.pos = 0;
            this.fieldStart = 0;
            this.recStart = 0;
          }
          return rec;
        }
        this.pendingName = field;
      } else {
        this.pairs.push([this.pendingName, field]);
        this.pendingName = null;
      }
      if (this.pos - this.recStart > this.maxRecord) {
        throw new ProtocolError(`record exceeds ${this.maxRecord} bytes`);
      }
    }
  }
}

/**
 * Parse an INT attribute the way attr_scan0 does (sscanf "%u%c" must convert
 * exactly one number): optional leading blanks and sign, digits, nothing
 * after. Returns the value modulo 2^32, or null when malformed.
 */
export function parseUnsigned(s: string): number | null {
  // Fast path: up to 9 plain digits (every flags value Postfix sends).
  const len = s.length;
  if (len > 0 && len <= 9) {
    let v = 0;
    let i = 0;
    for (; i < len; i++) {
      const d = s.charCodeAt(i) - 48;
      if (d < 0 || d > 9) break;
      v = v * 10 + d;
    }
    if (i === len) return v;
  }
  const m = /^[ \t\n\v\f\r]*([+-]?)([0-9]+)$/.exec(s);
  if (!m) return null;
  // Values beyond 32 bits wrap as strtoul + (unsigned int) conversion would.
  let v = 0;
  for (const c of m[2]) v = (v * 10 + (c.charCodeAt(0) - 48)) % 4294967296;
  if (m[1] === '-') v = (4294967296 - v) % 4294967296;
  return v;
}
