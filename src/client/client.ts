/**
 * proxymap protocol client: one connection, strictly alternating
 * request/reply (as Postfix's dict_proxy client), both dialects.
 */
import net from 'node:net';
import { RecordDecoder, type AttrRecord } from '../protocol/codec.js';
import {
  encodeRequest,
  parseReply,
  type Dialect,
  type Reply,
  type Request,
} from '../protocol/messages.js';

export class ClientError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClientError';
  }
}

export interface ConnectOptions {
  /** per-exchange timeout in ms (default 30000; Postfix's ipc_timeout is 3600 s) */
  timeoutMs?: number;
  /** expect and check the server announcement (default true) */
  announcement?: boolean;
}

/** One client connection. Requests are queued and sent one at a time. */
export class ProxyConnection {
  private readonly decoder = new RecordDecoder();
  private waiter: { resolve: (r: AttrRecord) => void; reject: (e: Error) => void } | null = null;
  private ready: AttrRecord[] = [];
  private chain: Promise<unknown> = Promise.resolve();
  private closedError: Error | null = null;

  private constructor(private readonly sock: net.Socket, private readonly timeoutMs: number) {
    sock.on('data', (chunk) => {
      this.decoder.push(chunk);
      let rec: AttrRecord | null;
      try {
        while ((rec = this.decoder.next()) !== null) this.deliver(rec);
      } catch (e) {
        this.fail(e as Error);
      }
    });
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new ClientError('connection closed by server')));
  }

  static async connect(path: string, opts: ConnectOptions = {}): Promise<ProxyConnection> {
    const timeoutMs = opts.timeoutMs ?? 30000;
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(path);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
    sock.setNoDelay?.(true);
    const conn = new ProxyConnection(sock, timeoutMs);
    if (opts.announcement !== false) {
      const rec = await conn.read();
      if (rec.length > 0 && !(rec.length === 1 && rec[0][0] === 'protocol' && rec[0][1] === 'proxymap_protocol')) {
        conn.close();
        throw new ClientError(`unexpected protocol announcement: ${JSON.stringify(rec)}`);
      }
    }
    return conn;
  }

  private deliver(rec: AttrRecord): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve(rec);
    } else {
      this.ready.push(rec);
    }
  }

  private fail(e: Error): void {
    if (!this.closedError) this.closedError = e;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(e);
    }
  }

  /** Read the next record from the server. */
  read(): Promise<AttrRecord> {
    const r = this.ready.shift();
    if (r) return Promise.resolve(r);
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new ClientError('timeout waiting for server reply'));
      }, this.timeoutMs);
      this.waiter = {
        resolve: (rec) => {
          clearTimeout(timer);
          resolve(rec);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  /** Write raw bytes (tests). */
  writeRaw(b: Buffer): void {
    this.sock.write(b);
  }

  /** Send raw bytes and read one record, serialized with other requests. */
  exchangeRaw(b: Buffer): Promise<AttrRecord> {
    const p = this.chain.then(() => {
      if (this.closedError) throw this.closedError;
      this.sock.write(b);
      return this.read();
    });
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** Send one request and parse its reply strictly. */
  async request(req: Request): Promise<Reply> {
    const rec = await this.exchangeRaw(encodeRequest(req));
    return parseReply(req.kind, req.dialect, rec);
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }

  get closed(): boolean {
    return this.closedError !== null;
  }
}

export type { Dialect, Reply };
