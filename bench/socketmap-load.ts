/**
 * Closed-loop load generator for proxymapd's socketmap front-end (the
 * `socketmap` bench scenario): each connection sends socketmap(5) requests
 * back to back, netstrings `NAME SP KEY`, strictly alternating request and
 * reply, as Postfix's dict_sockmap client does (it holds one connection and
 * waits for each reply). Requests and the expected replies (`OK value` or
 * `NOTFOUND `, as netstrings) are encoded once up front and every reply is
 * compared byte for byte. Main thread only; the C load generator has the
 * same mode (bench/loadgen.c -m NAME).
 *
 * The result has the shape of bench/load.ts's LoadResult, so the bench
 * reports both protocols in the same table.
 */
import net from 'node:net';
import type { LoadResult } from './load.js';

export type SocketmapAddress = { path: string } | { host: string; port: number };

export interface SocketmapLoadOptions {
  address: SocketmapAddress;
  /** the socketmap request name (a key of proxymapd_socketmap_maps) */
  name: string;
  keys: string[];
  /** per key: the value, or null for "not found" */
  expected: (string | null)[];
  connections: number;
  durationMs?: number;
  warmupMs?: number;
  /** measure this many lookups in total (split over the connections, no warm-up) instead of a duration */
  requests?: number;
  /** a request unanswered this long is an error and its connection is dropped (default 5000 ms) */
  requestTimeoutMs?: number;
}

const netstring = (s: string): Buffer => {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([Buffer.from(`${b.length}:`, 'latin1'), b, Buffer.from(',', 'latin1')]);
};

/** Length of the complete netstring at the start of buf, 0 when incomplete, -1 when malformed. */
function netstringLength(buf: Buffer): number {
  const colon = buf.indexOf(0x3a);
  if (colon < 0) return buf.length > 10 ? -1 : 0;
  if (colon === 0 || colon > 10) return -1;
  let n = 0;
  for (let i = 0; i < colon; i++) {
    const d = buf[i]! - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  const total = colon + 1 + n + 1;
  if (buf.length < total) return 0;
  return buf[total - 1] === 0x2c ? total : -1;
}

export async function runSocketmapLoad(o: SocketmapLoadOptions): Promise<LoadResult> {
  const nKeys = o.keys.length;
  if (nKeys === 0) throw new Error('no keys');
  const requests = o.keys.map((k) => netstring(`${o.name} ${k}`));
  const replies = o.expected.map((v) => netstring(v === null ? 'NOTFOUND ' : `OK ${v}`));
  const perConn = o.requests ? Math.max(1, Math.ceil(o.requests / o.connections)) : 0;
  const warmupNs = BigInt(Math.round((o.warmupMs ?? 1000) * 1e6));
  const durationNs = BigInt(Math.round((o.requests ? 0 : (o.durationMs ?? 5000)) * 1e6));
  const timeoutMs = o.requestTimeoutMs ?? 5000;
  const hr = process.hrtime.bigint;
  const lat: number[] = [];
  let errors = 0;
  const errorSamples: string[] = [];
  const error = (m: string) => {
    errors++;
    if (errorSamples.length < 5) errorSamples.push(m);
  };

  // connect all first, then start together
  const socks = await Promise.all(
    Array.from({ length: o.connections }, () =>
      new Promise<net.Socket>((resolve, reject) => {
        const s = 'path' in o.address ? net.connect({ path: o.address.path }) : net.connect({ host: o.address.host, port: o.address.port });
        s.setNoDelay(true);
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      }),
    ),
  );
  const cpu0 = process.cpuUsage();
  const t0 = hr();
  const recStart = t0 + warmupNs;
  const recEnd = recStart + durationNs;
  let lastEnd = t0;
  await Promise.all(
    socks.map(
      (s, id) =>
        new Promise<void>((resolve) => {
          let k = Math.floor((id * nKeys) / o.connections) % nKeys;
          let sentAt = 0n;
          let measured = 0;
          let pending: Buffer = Buffer.alloc(0);
          let done = false;
          const finish = () => {
            if (done) return;
            done = true;
            clearInterval(watchdog);
            s.destroy();
            if (hr() > lastEnd) lastEnd = hr();
            resolve();
          };
          const watchdog = setInterval(() => {
            if (Number(hr() - sentAt) / 1e6 > timeoutMs) {
              error(`conn ${id}: no reply within ${timeoutMs} ms`);
              finish();
            }
          }, 200);
          const send = () => {
            sentAt = hr();
            s.write(requests[k]!);
          };
          s.on('data', (d: Buffer) => {
            if (done) return;
            pending = pending.length ? Buffer.concat([pending, d]) : d;
            for (;;) {
              const n = netstringLength(pending);
              if (n === 0) return;
              if (n < 0) {
                error(`conn ${id}: malformed reply ${JSON.stringify(pending.toString('latin1').slice(0, 80))}`);
                return finish();
              }
              const now = hr();
              const want = replies[k]!;
              if (n !== want.length || pending.compare(want, 0, want.length, 0, n) !== 0) {
                error(`conn ${id}: key ${JSON.stringify(o.keys[k])}: reply ${JSON.stringify(pending.toString('utf8', pending.indexOf(0x3a) + 1, n - 1))}`);
              }
              pending = pending.subarray(n);
              // count mode measures every reply (no warm-up); duration mode the requests sent inside the window
              if (perConn > 0 || (sentAt >= recStart && sentAt < recEnd)) {
                lat.push(Number(now - sentAt));
                measured++;
              }
              k = k + 1 === nKeys ? 0 : k + 1;
              if (perConn > 0 ? measured >= perConn : now >= recEnd) return finish();
              send();
            }
          });
          s.on('error', (e) => {
            if (!done) error(`conn ${id}: ${e.message}`);
            finish();
          });
          s.on('close', () => {
            if (!done) error(`conn ${id}: closed by the server`);
            finish();
          });
          send();
        }),
    ),
  );
  const cpu = process.cpuUsage(cpu0);
  const wallMs = Number(hr() - t0) / 1e6;
  const windowMs = perConn > 0 ? Number(lastEnd - t0) / 1e6 : Number(durationNs) / 1e6;
  lat.sort((a, b) => a - b);
  const q = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.max(0, Math.ceil(p * lat.length) - 1))]! / 1000 : NaN);
  const sum = lat.reduce((a, x) => a + x, 0);
  return {
    connections: o.connections,
    workers: 0,
    lookups: lat.length,
    errors,
    errorSamples,
    elapsedMs: windowMs,
    lookupsPerSec: windowMs > 0 ? (lat.length * 1000) / windowMs : 0,
    p50Us: q(0.5),
    p90Us: q(0.9),
    p99Us: q(0.99),
    maxUs: lat.length ? lat[lat.length - 1]! / 1000 : NaN,
    meanUs: lat.length ? sum / lat.length / 1000 : NaN,
    clientCpuPct: wallMs > 0 ? ((cpu.user + cpu.system) / 1000 / wallMs) * 100 : 0,
  };
}
