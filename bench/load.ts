/**
 * Closed-loop load generator for a proxymap-compatible UNIX socket.
 *
 * Each connection reads the 28-byte announcement, sends one `open`, then
 * back-to-back `lookup` requests in the legacy dialect (what Debian 3.7's
 * postmap sends), strictly alternating request and reply:
 *
 *   C->S request\0lookup\0table\0T\0flags\0524353\0key\0K\0\0
 *   S->C status\0N\0value\0V\0\0
 *
 * Requests and the expected replies are encoded once up front; a reply is
 * found by scanning for the record terminator (an empty attribute name) and
 * checked with one memcmp. Connections can be spread over worker threads.
 *
 * Usage as a program:
 *   node --import tsx bench/load.ts --socket PATH --table texthash:/x \
 *     (--keys k1,k2 | --keys-file FILE) [--conns 20] [--duration 5] [--warmup 1]
 *     [--workers 0] [--requests N] [--oracle [--postmap-config DIR]]
 *
 * Replies are checked byte for byte when the expected answers are known:
 * `expected[i]` is the value (status 0) or null for "not found" (status 1);
 * --oracle asks the real `postmap -q -` for them (postmapOracle()).
 */
import net from 'node:net';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';

export const LEGACY_LOOKUP_FLAGS = 524353; // DUP_WARN|LOCK|UTF8_REQUEST, as sent by 3.7 postmap
export const ANNOUNCEMENT = Buffer.from('protocol\0proxymap_protocol\0\0', 'latin1');

export interface LoadOptions {
  socketPath: string;
  /** table name as sent on the wire (without `proxy:`), e.g. `texthash:/tmp/users` */
  table: string;
  keys: string[];
  /**
   * Expected value per key (same index), or null for "not found" (status 1).
   * Without it, only status 0 is checked.
   */
  expected?: (string | null)[];
  connections: number;
  /** measured period, ms (default 5000); ignored when `requests` is given */
  durationMs?: number;
  /** lookups before measuring starts, ms (default 1000) */
  warmupMs?: number;
  /** measure this many lookups in total (split over the connections) instead of a duration */
  requests?: number;
  /** worker threads to run the connections in; 0 = this thread (default 0) */
  workers?: number;
  lookupFlags?: number;
  openFlags?: number;
  /** a request unanswered this long is an error and its connection is dropped (default 5000 ms) */
  requestTimeoutMs?: number;
  /** bound on connect + announcement + open, ms (default 10000) */
  setupTimeoutMs?: number;
}

export interface LoadResult {
  connections: number;
  workers: number;
  /** lookups completed inside the measured window */
  lookups: number;
  errors: number;
  errorSamples: string[];
  /** measured window, ms */
  elapsedMs: number;
  lookupsPerSec: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
  meanUs: number;
  /** CPU used by this process (all threads) during warm-up + measurement, % of one core */
  clientCpuPct: number;
}

/** What one thread runs: a slice of the connections. */
export interface ThreadSpec {
  socketPath: string;
  table: string;
  keys: string[];
  expected?: (string | null)[];
  /** global indices of the connections run by this thread */
  connIds: number[];
  totalConnections: number;
  warmupMs: number;
  durationMs: number;
  /** lookups per connection to measure (count mode) or 0 (duration mode) */
  requestsPerConn: number;
  lookupFlags: number;
  openFlags: number;
  requestTimeoutMs: number;
  setupTimeoutMs: number;
}

export interface ThreadResult {
  lookups: number;
  errors: number;
  errorSamples: string[];
  /** measured window of this thread, ms */
  windowMs: number;
  /** latencies in ns (capped at 2^32-1) */
  latencies: Uint32Array;
}

function attrRecord(pairs: [string, string][]): Buffer {
  let s = '';
  for (const [k, v] of pairs) s += `${k}\0${v}\0`;
  return Buffer.from(s + '\0', 'utf8');
}

export function encodeLookup(table: string, flags: number, key: string): Buffer {
  return attrRecord([['request', 'lookup'], ['table', table], ['flags', String(flags)], ['key', key]]);
}
export function encodeOpen(table: string, flags: number): Buffer {
  return attrRecord([['request', 'open'], ['table', table], ['flags', String(flags)]]);
}
export function encodeLookupReply(status: number, value: string): Buffer {
  return attrRecord([['status', String(status)], ['value', value]]);
}

export const show = (b: Buffer) => b.toString('latin1').replace(/\0/g, '|');

class LatencyLog {
  buf = new Uint32Array(1 << 16);
  n = 0;
  push(ns: number): void {
    if (this.n === this.buf.length) {
      const nb = new Uint32Array(this.buf.length * 2);
      nb.set(this.buf);
      this.buf = nb;
    }
    this.buf[this.n++] = ns > 0xffffffff ? 0xffffffff : ns;
  }
  take(): Uint32Array {
    return this.buf.slice(0, this.n);
  }
}

/**
 * Run a slice of the connections in the current thread. `ready` resolves once
 * every connection has opened the table; the load starts when `go` resolves.
 */
export function runThread(spec: ThreadSpec, onReady: () => void, go: Promise<void>): Promise<ThreadResult> {
  const nKeys = spec.keys.length;
  if (nKeys === 0) throw new Error('no keys');
  const requests = spec.keys.map((k) => encodeLookup(spec.table, spec.lookupFlags, k));
  const replies = spec.expected?.map((v) => (v === null ? encodeLookupReply(1, '') : encodeLookupReply(0, v)));
  const openReq = encodeOpen(spec.table, spec.openFlags);
  const lat = new LatencyLog();
  let lookups = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  const hr = process.hrtime.bigint;

  const error = (msg: string) => {
    errors++;
    if (errorSamples.length < 5) errorSamples.push(msg);
  };

  // timing, set when `go` resolves
  let recStart = 0n; // measurement window start
  let recEnd = 0n; // measurement window end (duration mode)
  let measuring = false;
  let windowEndActual = 0n;

  type Phase = 'announce' | 'open' | 'ready' | 'run' | 'done';
  interface Conn {
    id: number;
    sock: net.Socket;
    phase: Phase;
    pending: Buffer | null; // partial record carried between reads
    keyIdx: number;
    sentAt: bigint;
    measured: number;
    outstanding: boolean;
  }

  const conns: Conn[] = [];
  let readyCount = 0;
  let doneCount = 0;
  let resolveAll!: () => void;
  const allDone = new Promise<void>((r) => (resolveAll = r));
  let setupFailed: ((e: Error) => void) | null = null;

  const finishConn = (c: Conn) => {
    if (c.phase === 'done') return;
    const wasSetup = c.phase !== 'run' && c.phase !== 'ready';
    c.phase = 'done';
    c.outstanding = false;
    c.sock.destroy();
    doneCount++;
    if (wasSetup && setupFailed) setupFailed(new Error(`connection ${c.id} failed during setup: ${errorSamples.at(-1) ?? 'closed'}`));
    if (doneCount === conns.length) resolveAll();
  };

  const send = (c: Conn) => {
    const i = c.keyIdx;
    c.keyIdx = i + 1 === nKeys ? 0 : i + 1;
    c.outstanding = true;
    c.sentAt = hr();
    c.sock.write(requests[i]!);
  };

  /** Called with one complete reply record buf[start, end] (end = index after terminator). */
  const onRecord = (c: Conn, buf: Buffer, start: number, end: number) => {
    if (c.phase === 'announce') {
      if (buf.compare(ANNOUNCEMENT, 0, ANNOUNCEMENT.length, start, end) !== 0) {
        error(`conn ${c.id}: bad announcement ${show(buf.subarray(start, end))}`);
        finishConn(c);
        return;
      }
      c.phase = 'open';
      c.sock.write(openReq);
      return;
    }
    if (c.phase === 'open') {
      // status\0 0 \0 flags\0 N \0\0
      if (!(buf[start + 7] === 0x30 && buf[start + 8] === 0)) {
        error(`conn ${c.id}: open failed: ${show(buf.subarray(start, end))}`);
        finishConn(c);
        return;
      }
      c.phase = 'ready';
      if (++readyCount === conns.length) onReady();
      return;
    }
    if (c.phase !== 'run') {
      error(`conn ${c.id}: unexpected record ${show(buf.subarray(start, end))}`);
      finishConn(c);
      return;
    }
    const now = hr();
    c.outstanding = false;
    const k = c.keyIdx === 0 ? nKeys - 1 : c.keyIdx - 1;
    let ok: boolean;
    if (replies) {
      const want = replies[k]!;
      ok = end - start === want.length && buf.compare(want, 0, want.length, start, end) === 0;
    } else {
      ok = buf[start + 7] === 0x30 && buf[start + 8] === 0;
    }
    if (!ok) error(`conn ${c.id}: key ${JSON.stringify(spec.keys[k])}: reply ${show(buf.subarray(start, end))}`);
    if (spec.requestsPerConn > 0) {
      if (measuring) {
        lookups++;
        lat.push(Number(now - c.sentAt));
        if (++c.measured >= spec.requestsPerConn) {
          finishConn(c);
          return;
        }
      } else if (now >= recStart) {
        measuring = true;
      }
      send(c);
      return;
    }
    if (now >= recEnd) {
      // the last reply that started inside the window still counts
      if (c.sentAt < recEnd && c.sentAt >= recStart) {
        lookups++;
        lat.push(Number(now - c.sentAt));
      }
      finishConn(c);
      return;
    }
    if (c.sentAt >= recStart) {
      lookups++;
      lat.push(Number(now - c.sentAt));
    }
    send(c);
  };

  const onBytes = (c: Conn, nread: number, chunk: Buffer) => {
    if (c.phase === 'done') return;
    let buf: Buffer;
    let len: number;
    if (c.pending) {
      buf = Buffer.concat([c.pending, chunk.subarray(0, nread)]);
      len = buf.length;
      c.pending = null;
    } else {
      buf = chunk;
      len = nread;
    }
    // scan records: strings alternate name/value; an empty name ends the record
    let recStartPos = 0;
    let pos = 0;
    let strings = 0;
    while (pos < len) {
      const z = buf.indexOf(0, pos);
      if (z === -1 || z >= len) break;
      if (z === pos && (strings & 1) === 0) {
        onRecord(c, buf, recStartPos, z + 1);
        if ((c.phase as Phase) === 'done') return; // onRecord may finish the connection
        recStartPos = z + 1;
        strings = 0;
      } else {
        strings++;
      }
      pos = z + 1;
    }
    if (recStartPos < len) c.pending = Buffer.from(buf.subarray(recStartPos, len)); // copy: `chunk` is reused
  };

  for (const id of spec.connIds) {
    const readBuf = Buffer.allocUnsafe(64 * 1024);
    const c: Conn = {
      id,
      sock: undefined as unknown as net.Socket,
      phase: 'announce',
      pending: null,
      keyIdx: Math.floor((id * nKeys) / spec.totalConnections) % nKeys,
      sentAt: 0n,
      measured: 0,
      outstanding: false,
    };
    c.sock = net.connect({
      path: spec.socketPath,
      onread: { buffer: readBuf, callback: (n: number, b: Uint8Array) => (onBytes(c, n, b as Buffer), true) },
    });
    c.sock.on('error', (e) => {
      if (c.phase !== 'done') {
        error(`conn ${id}: ${e.message}`);
        finishConn(c);
      }
    });
    c.sock.on('close', () => {
      if (c.phase !== 'done') {
        error(`conn ${id}: closed by server in phase ${c.phase}`);
        finishConn(c);
      }
    });
    conns.push(c);
  }

  return new Promise<ThreadResult>((resolve, reject) => {
    const setupTimer = setTimeout(() => {
      for (const c of conns) if (c.phase !== 'ready') error(`conn ${c.id}: setup timed out in phase ${c.phase}`);
      cleanup();
      reject(new Error(`setup timed out after ${spec.setupTimeoutMs} ms: ${errorSamples.join('; ')}`));
    }, spec.setupTimeoutMs);
    let watchdog: NodeJS.Timeout | undefined;
    const cleanup = () => {
      clearTimeout(setupTimer);
      if (watchdog) clearInterval(watchdog);
      for (const c of conns) c.sock.destroy();
    };
    setupFailed = (e) => {
      cleanup();
      reject(e);
    };
    if (conns.length === 0) {
      clearTimeout(setupTimer);
      onReady();
    }
    go.then(() => {
      clearTimeout(setupTimer);
      setupFailed = null;
      const t0 = hr();
      recStart = t0 + BigInt(Math.round(spec.warmupMs * 1e6));
      recEnd = recStart + BigInt(Math.round(spec.durationMs * 1e6));
      measuring = spec.warmupMs <= 0;
      const timeoutNs = BigInt(spec.requestTimeoutMs) * 1_000_000n;
      watchdog = setInterval(() => {
        const now = hr();
        for (const c of conns) {
          if (c.phase === 'run' && c.outstanding && now - c.sentAt > timeoutNs) {
            error(`conn ${c.id}: no reply within ${spec.requestTimeoutMs} ms`);
            finishConn(c);
          }
        }
        // count mode: a hard bound (warm-up + timeout + generous time per request)
      }, 200);
      watchdog.unref();
      for (const c of conns) {
        if (c.phase !== 'ready') continue;
        c.phase = 'run';
        send(c);
      }
      if (conns.length === 0) resolveAll();
      allDone.then(() => {
        windowEndActual = hr();
        cleanup();
        const windowMs =
          spec.requestsPerConn > 0 ? Number(windowEndActual - recStart) / 1e6 : spec.durationMs;
        resolve({ lookups, errors, errorSamples, windowMs, latencies: lat.take() });
      });
    }, reject);
  });
}

/**
 * The worker's entry module. Under tsx (this file is .ts), Node 20 does not
 * carry tsx's loader hooks into worker threads, so the worker starts from a
 * small ESM data: module that registers tsx and then imports the TS entry.
 */
function workerEntry(): URL {
  const self = fileURLToPath(import.meta.url);
  if (!self.endsWith('.ts')) return new URL('./load-worker.js', import.meta.url);
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./load-worker.ts', import.meta.url).href;
  const code = `import { register } from ${JSON.stringify(tsxApi)}; register(); await import(${JSON.stringify(entry)});`;
  return new URL('data:text/javascript,' + encodeURIComponent(code));
}

function percentile(sorted: Uint32Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

/** Split the connections over `workers` threads (0 = this thread) and run the load. */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const workers = Math.min(opts.workers ?? 0, opts.connections);
  const warmupMs = opts.warmupMs ?? 1000;
  const durationMs = opts.requests ? 0 : (opts.durationMs ?? 5000);
  const base: Omit<ThreadSpec, 'connIds'> = {
    socketPath: opts.socketPath,
    table: opts.table,
    keys: opts.keys,
    expected: opts.expected,
    totalConnections: opts.connections,
    warmupMs,
    durationMs,
    requestsPerConn: opts.requests ? Math.max(1, Math.ceil(opts.requests / opts.connections)) : 0,
    lookupFlags: opts.lookupFlags ?? LEGACY_LOOKUP_FLAGS,
    openFlags: opts.openFlags ?? 0,
    requestTimeoutMs: opts.requestTimeoutMs ?? 5000,
    setupTimeoutMs: opts.setupTimeoutMs ?? 10_000,
  };
  const slices: number[][] = Array.from({ length: Math.max(1, workers) }, () => []);
  for (let i = 0; i < opts.connections; i++) slices[i % slices.length]!.push(i);

  let results: ThreadResult[];
  let cpu0: NodeJS.CpuUsage;
  let t0: bigint;
  if (workers === 0) {
    let go!: () => void;
    const goP = new Promise<void>((r) => (go = r));
    let ready!: () => void;
    const readyP = new Promise<void>((r) => (ready = r));
    const p = runThread({ ...base, connIds: slices[0]! }, ready, goP);
    await Promise.race([readyP, p]);
    cpu0 = process.cpuUsage();
    t0 = process.hrtime.bigint();
    go();
    results = [await p];
  } else {
    const threads = slices.map((connIds) => new Worker(workerEntry(), { workerData: { ...base, connIds } satisfies ThreadSpec }));
    const hardLimit = base.setupTimeoutMs + warmupMs + (durationMs || 600_000) + base.requestTimeoutMs + 10_000;
    try {
      const readies = threads.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            w.once('message', (m: { type: string }) => (m.type === 'ready' ? resolve() : reject(new Error(`worker: unexpected ${m.type}`))));
            w.once('error', reject);
            w.once('exit', (code) => reject(new Error(`worker exited (${code}) before ready`)));
          }),
      );
      await Promise.all(readies);
      const done = threads.map(
        (w) =>
          new Promise<ThreadResult>((resolve, reject) => {
            w.removeAllListeners('exit');
            w.removeAllListeners('error');
            w.once('message', (m: { type: string; result?: ThreadResult; error?: string }) =>
              m.type === 'result' ? resolve(m.result!) : reject(new Error(m.error ?? m.type)),
            );
            w.once('error', reject);
            w.once('exit', (code) => reject(new Error(`worker exited (${code}) without a result`)));
          }),
      );
      cpu0 = process.cpuUsage();
      t0 = process.hrtime.bigint();
      for (const w of threads) w.postMessage('go');
      let timer: NodeJS.Timeout | undefined;
      const limit = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`load run exceeded ${hardLimit} ms`)), hardLimit);
      });
      try {
        results = await Promise.race([Promise.all(done), limit]);
      } finally {
        clearTimeout(timer);
      }
    } finally {
      await Promise.all(threads.map((w) => w.terminate().catch(() => 0)));
    }
  }
  const cpu = process.cpuUsage(cpu0);
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;

  const total = results.reduce((a, r) => a + r.latencies.length, 0);
  const all = new Uint32Array(total);
  let off = 0;
  for (const r of results) {
    all.set(r.latencies, off);
    off += r.latencies.length;
  }
  all.sort();
  let sum = 0;
  for (let i = 0; i < all.length; i++) sum += all[i]!;
  const lookups = results.reduce((a, r) => a + r.lookups, 0);
  const windowMs = Math.max(...results.map((r) => r.windowMs));
  return {
    connections: opts.connections,
    workers,
    lookups,
    errors: results.reduce((a, r) => a + r.errors, 0),
    errorSamples: results.flatMap((r) => r.errorSamples).slice(0, 5),
    elapsedMs: windowMs,
    lookupsPerSec: windowMs > 0 ? (lookups * 1000) / windowMs : 0,
    p50Us: percentile(all, 50) / 1000,
    p90Us: percentile(all, 90) / 1000,
    p99Us: percentile(all, 99) / 1000,
    maxUs: all.length ? all[all.length - 1]! / 1000 : NaN,
    meanUs: all.length ? sum / all.length / 1000 : NaN,
    clientCpuPct: wallMs > 0 ? ((cpu.user + cpu.system) / 1000 / wallMs) * 100 : 0,
  };
}

// ---- open time ---------------------------------------------------------------

/** One connection, one request at a time; replies split into records. */
export class SequentialClient {
  private buf: Buffer = Buffer.alloc(0);
  private readonly records: Buffer[] = [];
  private waiter: ((r: Buffer | Error) => void) | null = null;
  private failure: Error | null = null;
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      // strings alternate name/value; an empty name ends the record
      let start = 0;
      let pos = 0;
      let strings = 0;
      for (;;) {
        const z = this.buf.indexOf(0, pos);
        if (z < 0) break;
        if (z === pos && (strings & 1) === 0) {
          this.records.push(Buffer.from(this.buf.subarray(start, z + 1)));
          start = z + 1;
          strings = 0;
        } else {
          strings++;
        }
        pos = z + 1;
      }
      this.buf = this.buf.subarray(start);
      this.deliver();
    });
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new Error('connection closed by the server')));
  }

  static connect(socketPath: string): SequentialClient {
    return new SequentialClient(net.connect({ path: socketPath }));
  }

  private fail(e: Error): void {
    this.failure ??= e;
    this.deliver();
  }

  private deliver(): void {
    if (!this.waiter) return;
    const rec = this.records.shift();
    if (rec) {
      const w = this.waiter;
      this.waiter = null;
      w(rec);
    } else if (this.failure) {
      const w = this.waiter;
      this.waiter = null;
      w(this.failure);
    }
  }

  /** The next record (after writing `request`, if given), bounded by timeoutMs. */
  next(request: Buffer | null, timeoutMs: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (r) => {
        clearTimeout(timer);
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
      if (request) this.sock.write(request);
      this.deliver();
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

const statusOf = (rec: Buffer): string | undefined => {
  const parts = rec.toString('latin1').split('\0');
  const i = parts.indexOf('status');
  return i >= 0 && i % 2 === 0 ? parts[i + 1] : undefined;
};

export interface OpenTiming {
  /** per table: ms from writing `open` to its complete reply */
  openMs: number[];
  /** per table: ms of the first lookup on it, right after the open (when `check` was given) */
  firstLookupMs: number[];
}

/**
 * Time `open` requests as a client sees them on a warm connection: connect,
 * read the announcement, open `warmTable` and look up `warmKey` in it (so
 * the server process exists and has served a request), then for each of
 * `tables` in turn time `open` until its reply, and (with `check`) look up
 * one key in the freshly opened table and compare the reply. Every table is
 * expected to be opened for the first time by this server.
 */
export async function timeOpens(opts: {
  socketPath: string;
  warmTable: string;
  warmKey: string;
  tables: string[];
  check?: { key: string; expected: string | null };
  openFlags?: number;
  lookupFlags?: number;
  timeoutMs?: number;
}): Promise<OpenTiming> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const openFlags = opts.openFlags ?? 0;
  const lookupFlags = opts.lookupFlags ?? LEGACY_LOOKUP_FLAGS;
  const c = SequentialClient.connect(opts.socketPath);
  try {
    const ann = await c.next(null, timeoutMs);
    if (!ann.equals(ANNOUNCEMENT)) throw new Error(`bad announcement ${show(ann)}`);
    let r = await c.next(encodeOpen(opts.warmTable, openFlags), timeoutMs);
    if (statusOf(r) !== '0') throw new Error(`open ${opts.warmTable}: ${show(r)}`);
    r = await c.next(encodeLookup(opts.warmTable, lookupFlags, opts.warmKey), timeoutMs);
    if (statusOf(r) !== '0') throw new Error(`lookup ${opts.warmKey} in ${opts.warmTable}: ${show(r)}`);
    const openMs: number[] = [];
    const firstLookupMs: number[] = [];
    for (const t of opts.tables) {
      const t0 = process.hrtime.bigint();
      r = await c.next(encodeOpen(t, openFlags), timeoutMs);
      openMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (statusOf(r) !== '0') throw new Error(`open ${t}: ${show(r)}`);
      if (opts.check) {
        const want = opts.check.expected === null ? encodeLookupReply(1, '') : encodeLookupReply(0, opts.check.expected);
        const t1 = process.hrtime.bigint();
        r = await c.next(encodeLookup(t, lookupFlags, opts.check.key), timeoutMs);
        firstLookupMs.push(Number(process.hrtime.bigint() - t1) / 1e6);
        if (!r.equals(want)) throw new Error(`${t}: key ${JSON.stringify(opts.check.key)}: reply ${show(r)}, expected ${show(want)}`);
      }
    }
    return { openMs, firstLookupMs };
  } finally {
    c.close();
  }
}

// ---- expected answers ------------------------------------------------------

function findPostmap(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/usr/bin', '/sbin', '/usr/local/sbin'];
  for (const d of dirs) {
    try {
      fs.accessSync(`${d}/postmap`, fs.constants.X_OK);
      return `${d}/postmap`;
    } catch {
      /* next */
    }
  }
  return undefined;
}

export interface OracleResult {
  /** per key (same index): the value, or null for "not found" */
  expected: (string | null)[];
  /** keys found */
  found: number;
  /** wall time of the postmap run, ms */
  elapsedMs: number;
  /** what postmap wrote to stderr (warnings about the table, ...) */
  stderr: string;
}

/**
 * The expected answer for every key, from the real Postfix: one run of
 * `postmap [-c DIR] -q - TYPE:FILE` with the keys on stdin, one a line.
 * postmap prints `key<TAB>value` for each key found and nothing for the
 * others, which are expected to be not found (status 1). Keys must be
 * non-empty and free of NUL, TAB and newline.
 */
export function postmapOracle(table: string, keys: string[], opts: { configDir?: string; timeoutMs?: number } = {}): OracleResult {
  const postmap = findPostmap();
  if (!postmap) throw new Error('postmap not installed: cannot compute the expected answers');
  for (const k of keys) {
    if (k === '' || /[\0\t\n\r]/.test(k)) throw new Error(`key ${JSON.stringify(k)} cannot be asked with postmap -q -`);
  }
  const t0 = process.hrtime.bigint();
  const r = spawnSync(postmap, [...(opts.configDir ? ['-c', opts.configDir] : []), '-q', '-', table], {
    input: keys.join('\n') + '\n',
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    timeout: opts.timeoutMs ?? 120_000,
    killSignal: 'SIGKILL',
  });
  const elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.error) throw new Error(`postmap -q - ${table}: ${r.error.message}`);
  if (r.status !== 0 && r.status !== 1) {
    throw new Error(`postmap -q - ${table}: ${r.signal ? `signal ${r.signal}` : `exit status ${r.status}`}: ${r.stderr.trim()}`);
  }
  if (/\b(fatal|panic):/.test(r.stderr)) throw new Error(`postmap -q - ${table}: ${r.stderr.trim()}`);
  const answers = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    if (line === '') continue;
    const tab = line.indexOf('\t');
    if (tab < 0) throw new Error(`postmap -q - ${table}: unexpected output line ${JSON.stringify(line)}`);
    answers.set(line.slice(0, tab), line.slice(tab + 1));
  }
  const wanted = new Set(keys);
  for (const k of answers.keys()) {
    if (!wanted.has(k)) throw new Error(`postmap -q - ${table}: answered for ${JSON.stringify(k)}, which was not asked`);
  }
  const expected = keys.map((k) => answers.get(k) ?? null);
  return { expected, found: expected.filter((v) => v !== null).length, elapsedMs, stderr: r.stderr };
}

// ---- command line -------------------------------------------------------

function parseArgs(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else if (a === '--oracle') out.oracle = '';
    else out[a.slice(2)] = argv[++i] ?? '';
  }
  return out;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (!a.socket || !a.table || !(a.keys || a['keys-file'])) {
    console.error(
      'usage: load.ts --socket PATH --table TYPE:NAME (--keys k1,k2 | --keys-file FILE) [--conns N] [--duration SEC] [--warmup SEC] [--workers N] [--requests N]\n' +
        '               [--oracle [--postmap-config DIR]]   check every reply against postmap -q - (found value or not found)',
    );
    process.exit(2);
  }
  const keys = a.keys
    ? a.keys.split(',')
    : fs
        .readFileSync(a['keys-file']!, 'utf8')
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[0]!)
        .filter((k) => k && !k.startsWith('#'));
  const table = a.table.replace(/^(proxy:)+/, '');
  let expected: (string | null)[] | undefined;
  if ('oracle' in a) {
    const o = postmapOracle(table, keys, { configDir: a['postmap-config'] || undefined });
    if (o.stderr.trim()) console.error(o.stderr.trim());
    console.error(`postmap -q -: ${o.found} of ${keys.length} keys found; the others are expected not found`);
    expected = o.expected;
  }
  const r = await runLoad({
    socketPath: a.socket,
    table,
    keys,
    expected,
    connections: Number(a.conns ?? 1),
    durationMs: Number(a.duration ?? 5) * 1000,
    warmupMs: Number(a.warmup ?? 1) * 1000,
    workers: Number(a.workers ?? 0),
    requests: a.requests ? Number(a.requests) : undefined,
  });
  console.log(JSON.stringify(r, null, 2));
  process.exit(r.errors ? 1 : 0);
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url))) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
