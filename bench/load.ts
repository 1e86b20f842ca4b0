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
 *     [--workers 0] [--requests N]
 */
import net from 'node:net';
import fs from 'node:fs';
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

const show = (b: Buffer) => b.toString('latin1').replace(/\0/g, '|');

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

// ---- command line -------------------------------------------------------

function parseArgs(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else out[a.slice(2)] = argv[++i] ?? '';
  }
  return out;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (!a.socket || !a.table || !(a.keys || a['keys-file'])) {
    console.error('usage: load.ts --socket PATH --table TYPE:NAME (--keys k1,k2 | --keys-file FILE) [--conns N] [--duration SEC] [--warmup SEC] [--workers N] [--requests N]');
    process.exit(2);
  }
  const keys = a.keys
    ? a.keys.split(',')
    : fs
        .readFileSync(a['keys-file']!, 'utf8')
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[0]!)
        .filter((k) => k && !k.startsWith('#'));
  const r = await runLoad({
    socketPath: a.socket,
    table: a.table.replace(/^(proxy:)+/, ''),
    keys,
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
