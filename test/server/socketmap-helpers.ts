/** Test helpers for the socketmap front-end: a netstring client, a controllable clock, settings. */
import net from 'node:net';
import { NetstringDecoder, encodeNetstring } from '../../src/protocol/netstring.js';
import type { Clock } from '../../src/server/socketmap-server.js';
import {
  DEFAULT_SOCKETMAP_CLIENTS,
  DEFAULT_SOCKETMAP_IDLE_TIMEOUT,
  DEFAULT_SOCKETMAP_MAX_REQUEST,
  DEFAULT_SOCKETMAP_REQUEST_TIMEOUT,
  type SocketmapSettings,
} from '../../src/server/socketmap-settings.js';

/** Settings with the defaults, listening on a free loopback port; `over` replaces any of them. */
export function settings(maps: Record<string, string>, over: Partial<SocketmapSettings> = {}): SocketmapSettings {
  return {
    listen: [{ kind: 'inet', host: '127.0.0.1', port: 0 }],
    maps: new Map(Object.entries(maps)),
    tcpMaps: [],
    clients: DEFAULT_SOCKETMAP_CLIENTS,
    maxRequest: DEFAULT_SOCKETMAP_MAX_REQUEST,
    idleTimeoutMs: DEFAULT_SOCKETMAP_IDLE_TIMEOUT * 1000,
    requestTimeoutMs: DEFAULT_SOCKETMAP_REQUEST_TIMEOUT * 1000,
    maxConnections: 0,
    ...over,
  };
}

/** Timers that fire only when the test advances the clock. */
export class FakeClock implements Clock {
  private t = 1_000_000;
  private readonly timers = new Map<number, { at: number; ms: number; fn: () => void }>();
  private nextId = 1;

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + ms, ms, fn });
    return id;
  }

  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }

  /** Number of timers pending. */
  get pending(): number {
    return this.timers.size;
  }

  /** Number of timers pending that were set for `ms`. */
  pendingFor(ms: number): number {
    let n = 0;
    for (const t of this.timers.values()) if (t.ms === ms) n++;
    return n;
  }

  /** Move time forward, firing the timers that come due, in order. */
  advance(ms: number): void {
    const until = this.t + ms;
    for (;;) {
      let first: [number, { at: number; ms: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= until && (!first || e[1].at < first[1].at)) first = e;
      if (!first) break;
      this.timers.delete(first[0]);
      this.t = first[1].at;
      first[1].fn();
    }
    this.t = until;
  }
}

/** Where a listener address of SocketmapServer.listen() connects. */
export function connectOptions(where: string): net.NetConnectOpts {
  if (where.startsWith('unix:')) return { path: where.slice(5) };
  const m = /^inet:(?:\[(.+)\]|([^:]+)):(\d+)$/.exec(where)!;
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

/** A socketmap client: netstrings out, replies in order; `closed` resolves when the server closes. */
export class SmClient {
  private readonly dec = new NetstringDecoder(100_000_000);
  private readonly replies: string[] = [];
  private readonly waiters: Array<{ resolve: (s: string) => void; reject: (e: Error) => void }> = [];
  private isClosed = false;
  readonly closed: Promise<void>;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (b: Buffer) => {
      this.dec.push(b.toString('latin1'));
      let p: string | null;
      while ((p = this.dec.next()) !== null) {
        const w = this.waiters.shift();
        if (w) w.resolve(p);
        else this.replies.push(p);
      }
    });
    sock.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      sock.once('close', () => {
        this.isClosed = true;
        for (const w of this.waiters.splice(0)) w.reject(new Error('connection closed'));
        resolve();
      }),
    );
  }

  static connect(where: string | net.Socket): Promise<SmClient> {
    const sock = typeof where === 'string' ? net.createConnection(connectOptions(where)) : where;
    return new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.once(sock instanceof net.Socket && 'encrypted' in sock ? 'secureConnect' : 'connect', () => {
        sock.off('error', reject);
        resolve(new SmClient(sock));
      });
    });
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  /** Send raw bytes (a latin1 string). */
  send(bytes: string): void {
    this.sock.write(bytes, 'latin1');
  }

  /** The next reply payload; rejects when the connection closes first. */
  next(): Promise<string> {
    const r = this.replies.shift();
    if (r !== undefined) return Promise.resolve(r);
    if (this.isClosed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** One request ("name key") and its reply. */
  ask(payload: string): Promise<string> {
    this.send(encodeNetstring(payload));
    return this.next();
  }

  close(): void {
    this.sock.destroy();
  }
}
