/**
 * PostgreSQL's simple-query protocol on a connection the pg driver opened
 * and authenticated (pgsql-driver.ts): Query out, results until
 * ReadyForQuery in, several queries in flight.
 */
import type pg from 'pg';
import type { PgConn } from './pgsql-driver.js';
import { Outbox } from './outbox.js';

/**
 * What PQexec's last result was: rows (tuples or a command, with the
 * CommandComplete tag such as `DELETE 3`), the server's error, or nothing usable.
 */
export type WireResult =
  | { kind: 'rows'; rows: (Buffer | null)[][]; tag: string }
  | { kind: 'error'; severity: string; message: string }
  | { kind: 'none'; why: string };

/**
 * The query path of one connection: the simple-query protocol spoken
 * directly on the socket the `pg` driver connected and authenticated
 * (startup, passwords, TLS and URIs stay the driver's). It does what a
 * lookup needs and nothing more: send one Query message, collect the
 * result sets until ReadyForQuery, keep the last one (PQexec), values as
 * raw bytes. About half the CPU of the driver's own query machinery.
 */
export class PgWire {
  private buf: Buffer = Buffer.alloc(0);
  private readonly pending: ((r: WireResult) => void)[] = [];
  // the result being built for the query at the head of `pending`
  private current: (Buffer | null)[][] | null = null;
  private last: WireResult | null = null;
  private dead: string | undefined;
  private readonly out: Outbox;

  constructor(raw: pg.Client, private readonly conn: Pick<PgConn, 'standardStrings'>) {
    const c = raw as unknown as { connection: { stream: import('node:net').Socket } };
    const stream = c.connection.stream;
    this.out = new Outbox(stream);
    // from here on the driver no longer reads this socket; it still sees its end and errors
    stream.removeAllListeners('data');
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('close', () => this.fail('server closed the connection unexpectedly'));
    stream.on('error', (e: Error) => this.fail(e.message));
  }

  private fail(why: string): void {
    this.dead ??= why;
    for (const p of this.pending.splice(0)) p({ kind: 'none', why: this.dead });
  }

  /** Send one query and answer what `map` makes of its result. */
  query<X>(text: string, map: (r: WireResult) => X): Promise<X> {
    if (this.dead !== undefined) return Promise.resolve(map({ kind: 'none', why: this.dead }));
    return new Promise((resolve) => {
      const n = Buffer.byteLength(text, 'utf8');
      const m = Buffer.allocUnsafe(n + 6);
      m[0] = 0x51; // 'Q'
      m.writeInt32BE(n + 5, 1);
      m.write(text, 5, 'utf8');
      m[n + 5] = 0;
      this.pending.push((r) => resolve(map(r)));
      this.out.send(m, this.pending.length === 1);
    });
  }

  private onData(chunk: Buffer): void {
    let buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let off = 0;
    while (buf.length - off >= 5) {
      const len = buf.readInt32BE(off + 1);
      if (buf.length - off < len + 1) break;
      this.message(buf[off]!, buf, off + 5, off + 1 + len);
      off += 1 + len;
    }
    this.buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
  }

  private message(type: number, b: Buffer, start: number, end: number): void {
    switch (type) {
      case 0x54: // T RowDescription: a result set starts
        this.current = [];
        break;
      case 0x44: {
        // D DataRow
        const n = b.readInt16BE(start);
        const row: (Buffer | null)[] = [];
        let p = start + 2;
        for (let i = 0; i < n; i++) {
          const l = b.readInt32BE(p);
          p += 4;
          if (l < 0) row.push(null);
          else {
            row.push(b.subarray(p, p + l));
            p += l;
          }
        }
        (this.current ??= []).push(row);
        break;
      }
      case 0x43: // C CommandComplete: a result (rows, or a command without)
        this.last = { kind: 'rows', rows: this.current ?? [], tag: b.toString('latin1', start, Math.max(start, end - 1)) };
        this.current = null;
        break;
      case 0x49: // I EmptyQueryResponse: PGRES_EMPTY_QUERY
        this.last = { kind: 'none', why: 'empty query' };
        break;
      case 0x45: {
        // E ErrorResponse: fields of a type byte and a string
        let severity = '';
        let message = '';
        for (let p = start; p < end && b[p] !== 0; ) {
          const f = b[p]!;
          const z = b.indexOf(0, p + 1);
          const v = b.toString('utf8', p + 1, z < 0 ? end : z);
          if (f === 0x53) severity = v; // S
          else if (f === 0x4d) message = v; // M
          p = z < 0 ? end : z + 1;
        }
        this.last = { kind: 'error', severity, message };
        this.current = null;
        break;
      }
      case 0x53: {
        // S ParameterStatus
        const z = b.indexOf(0, start);
        if (z > 0 && b.toString('latin1', start, z) === 'standard_conforming_strings') {
          this.conn.standardStrings = b.toString('latin1', z + 1, end - 1) === 'on';
        }
        break;
      }
      case 0x5a: {
        // Z ReadyForQuery: the query is done
        const r = this.last ?? { kind: 'none', why: 'no result' };
        this.last = null;
        this.current = null;
        this.pending.shift()?.(r);
        break;
      }
      default:
        // N notices, A notifications, anything else: not part of a result
        break;
    }
  }
}
