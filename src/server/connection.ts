/**
 * One client connection: announcement, streaming decode, in-order replies,
 * I/O deadlines. A malformed stream closes this connection only.
 */
import type net from 'node:net';
import { ProtocolError, RecordDecoder, type AttrRecord } from '../protocol/codec.js';
import { ANNOUNCEMENT, encodeReplyString, parseRequest, type RequestKind } from '../protocol/messages.js';
import { log } from '../log.js';
import type { Outcome, RequestHandler, Service } from './handler.js';
import type { Metrics } from './metrics.js';

export interface ConnectionOptions {
  /** time allowed to finish receiving a started request, and to write a reply (ms); Postfix uses 1 s */
  ioDeadlineMs: number;
  /** cap on one request record's size (bytes) */
  maxRecord: number;
  /** requests received ahead of processing before reading pauses */
  maxQueued: number;
}

const ANNOUNCEMENT_BYTES = ANNOUNCEMENT.toString('latin1');

export const DEFAULT_CONNECTION_OPTIONS: ConnectionOptions = {
  ioDeadlineMs: 1000,
  maxRecord: 4 * 1024 * 1024,
  maxQueued: 64,
};

/**
 * What a connection writes to and closes: a net.Socket (socketTransport) or
 * a slot in a native socket set (src/server/sockset.ts). The transport calls
 * the connection's feed/ended/drained/destroy as things happen.
 */
export interface Transport {
  /** Write bytes (a latin1 string); false when they were queued (drained() follows). */
  write(bytes: string): boolean;
  pause(): void;
  resume(): void;
  /** Close once the queued output is written. */
  end(): void;
  /** Close now. */
  destroy(): void;
  /** The peer closed its side (no more input). */
  readonly readableEnded: boolean;
}

/** A net.Socket as a Transport, read through its 'data' events (the fallback when the addon cannot be loaded). */
export function socketTransport(sock: net.Socket, conn: Connection): Transport {
  sock.on('data', (chunk: Buffer) => conn.feed(chunk.toString('latin1')));
  sock.on('error', () => conn.destroy());
  sock.on('close', () => conn.destroy());
  sock.on('end', () => conn.ended());
  sock.on('drain', () => conn.drained());
  return {
    write: (b) => sock.write(b, 'latin1'),
    pause: () => sock.pause(),
    resume: () => sock.resume(),
    end: () => sock.end(),
    destroy: () => sock.destroy(),
    get readableEnded() {
      return sock.readableEnded;
    },
  };
}

export class Connection {
  private readonly decoder: RecordDecoder;
  private readonly queue: AttrRecord[] = [];
  private busy = false;
  private readTimer: NodeJS.Timeout | null = null;
  private writeTimer: NodeJS.Timeout | null = null;
  private paused = false;
  private closed = false;
  /** the server's busy-poll activity window this connection last sent in */
  activeWindow = 0;
  /** number of requests in progress (for master(8) busy/available accounting) */
  inFlight = 0;
  /** when the request in progress started (Date.now()), 0 when none (for the daemon_timeout watchdog) */
  requestStartedAt = 0;

  private readonly sock: Transport;
  /** metrics of the requests (null: metrics off, one check per request) */
  private readonly metrics: Metrics | null;
  /** the request in progress, for its metrics: table as received, and when it was taken up (performance.now()) */
  private reqTable = '';
  private reqStart = 0;

  constructor(
    transport: (conn: Connection) => Transport,
    readonly service: Service,
    private readonly handler: RequestHandler,
    private readonly opts: ConnectionOptions,
    private readonly hooks: {
      onBusy?: (busy: boolean) => void;
      onClose?: () => void;
      onData?: () => void;
      onReply?: (kind: RequestKind | null) => void;
      metrics?: Metrics | null;
    } = {},
  ) {
    this.metrics = hooks.metrics ?? null;
    this.decoder = new RecordDecoder(opts.maxRecord);
    this.sock = transport(this);
    this.write(ANNOUNCEMENT_BYTES);
  }

  /** The peer closed its side: finish once the requests received are answered. */
  ended(): void {
    if (!this.busy && this.queue.length === 0) this.finish();
  }

  /** Queued output was written. */
  drained(): void {
    this.clearWriteTimer();
  }

  /** Bytes received, as a latin1 string (one char per byte). */
  feed(chunk: string): void {
    if (this.closed) return;
    this.hooks.onData?.();
    this.decoder.pushBytes(chunk);
    try {
      let rec: AttrRecord | null;
      while ((rec = this.decoder.next()) !== null) this.queue.push(rec);
    } catch (e) {
      if (e instanceof ProtocolError) {
        log.warn(`${this.service}: ${e.message}; closing connection`);
        this.destroy();
        return;
      }
      throw e;
    }
    // Deadline for the rest of a partially received request.
    if (this.decoder.pendingBytes > 0) {
      if (!this.readTimer) {
        this.readTimer = setTimeout(() => {
          log.warn(`${this.service}: timeout receiving request; closing connection`);
          this.destroy();
        }, this.opts.ioDeadlineMs);
      }
    } else if (this.readTimer) {
      clearTimeout(this.readTimer);
      this.readTimer = null;
    }
    if (this.queue.length >= this.opts.maxQueued && !this.paused) {
      this.paused = true;
      this.sock.pause();
    }
    this.pump();
  }

  /** Process queued requests one at a time, replies in order. */
  private pump(): void {
    while (!this.busy && !this.closed && this.queue.length > 0) {
      const rec = this.queue.shift()!;
      const { request, warnings } = parseRequest(rec);
      if (this.metrics !== null) {
        this.reqTable = request.kind === 'bad' ? '' : request.table;
        this.reqStart = performance.now();
      }
      for (const w of warnings) log.warn(w);
      this.setBusy(true);
      let out: Outcome | Promise<Outcome>;
      try {
        out = this.handler.handle(request, this.service);
      } catch (e) {
        log.warn(`internal error: ${(e as Error).stack ?? e}`);
        this.setBusy(false);
        this.destroy();
        return;
      }
      if (out instanceof Promise) {
        this.busy = true;
        out.then(
          (o) => {
            this.busy = false;
            this.reply(o);
            this.pump();
          },
          (e) => {
            this.busy = false;
            log.warn(`internal error: ${(e as Error)?.stack ?? e}`);
            this.setBusy(false);
            this.destroy();
          },
        );
        return;
      }
      this.reply(out);
    }
    if (this.paused && this.queue.length < this.opts.maxQueued / 2 && !this.closed) {
      this.paused = false;
      this.sock.resume();
    }
    if (!this.busy && this.queue.length === 0 && this.sock.readableEnded) this.finish();
  }

  private setBusy(b: boolean): void {
    if (b) {
      if (this.inFlight++ === 0) {
        this.requestStartedAt = Date.now();
        this.hooks.onBusy?.(true);
      }
    } else if (this.inFlight > 0 && --this.inFlight === 0) {
      this.requestStartedAt = 0;
      this.hooks.onBusy?.(false);
    }
  }

  private reply(o: Outcome): void {
    this.write(encodeReplyString(o.kind, o.dialect, o.reply));
    if (this.metrics !== null) this.metrics.record(this.service, o.kind, this.reqTable, o.reply.status, performance.now() - this.reqStart);
    this.setBusy(false);
    this.hooks.onReply?.(o.kind);
  }

  private write(b: string): void {
    if (this.closed) return;
    const ok = this.sock.write(b);
    if (!ok && !this.writeTimer) {
      this.writeTimer = setTimeout(() => {
        log.warn(`${this.service}: timeout sending reply; closing connection`);
        this.destroy();
      }, this.opts.ioDeadlineMs);
    }
  }

  private clearWriteTimer(): void {
    if (this.writeTimer) {
      clearTimeout(this.writeTimer);
      this.writeTimer = null;
    }
  }

  /** Close after the client closed its side: flush what was written, then close. */
  private finish(): void {
    if (this.closed) return;
    this.sock.end();
    this.cleanup();
  }

  destroy(): void {
    if (this.closed) return;
    this.sock.destroy();
    this.cleanup();
  }

  private cleanup(): void {
    this.closed = true;
    if (this.readTimer) clearTimeout(this.readTimer);
    this.clearWriteTimer();
    this.queue.length = 0;
    if (this.inFlight > 0) {
      this.inFlight = 0;
      this.requestStartedAt = 0;
      this.hooks.onBusy?.(false);
    }
    this.hooks.onClose?.();
  }
}
