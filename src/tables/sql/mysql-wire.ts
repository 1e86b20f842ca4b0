/**
 * MySQL's text protocol on a connection the mysql2 driver opened and set
 * up (mysql-driver.ts): COM_QUERY out, result sets in, several queries in
 * flight.
 */
import type mysql from 'mysql2';
import type { Bytes } from '../core/table.js';
import type { MyConn } from './mysql-driver.js';
import { Outbox } from './outbox.js';

/**
 * What one COM_QUERY answered: its result sets with data (column count > 0),
 * the affected rows of its last OK packet, or the error that ended it.
 */
export interface MyWireResult {
  sets: (Buffer | null)[][][];
  affected: number;
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
  /** affected rows of the last OK packet */
  private affected = 0;
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
    for (const p of this.pending.splice(0)) p({ sets: [], affected: 0, error: this.dead });
  }

  /** Send one query (raw bytes), collect its result sets, and answer what `map` makes of them. */
  query<X>(sql: Bytes, map: (r: MyWireResult) => X): Promise<X> {
    if (this.dead !== undefined) return Promise.resolve(map({ sets: [], affected: 0, error: this.dead }));
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
    const affected = this.affected;
    this.phase = 'start';
    this.sets = [];
    this.rows = null;
    this.affected = 0;
    p?.({ sets, affected, error });
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
          this.affected = p.length > 1 ? lenencInt(p, 1).value : 0;
          const o = lenencSkip(p, lenencSkip(p, 1)); // affected rows, last insert id
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
