/**
 * Update load for the `proxywrite` bench scenario: connections to a
 * proxywrite socket, each sending `update` requests back to back (legacy
 * dialect, the flags Postfix's verify(8) cache sends: DUP_REPLACE |
 * SYNC_UPDATE | OPEN_LOCK | UTF8_REQUEST), every reply checked for status 0.
 * Keys cycle through a fixed set (as a cache rewrites its entries), values
 * carry a counter.
 */
import { ANNOUNCEMENT, SequentialClient, show } from './load.js';

/** VERIFY_DICT_OPEN_FLAGS of Postfix 3.7's verify.c, as a legacy client sends them with every request. */
export const VERIFY_UPDATE_FLAGS = 0x80 | 0x100 | 0x10000 | 0x80000;

function record(attrs: Array<[string, string]>): Buffer {
  return Buffer.from(attrs.map(([n, v]) => `${n}\0${v}\0`).join('') + '\0', 'latin1');
}

export interface UpdateLoadResult {
  connections: number;
  updates: number;
  errors: number;
  errorSamples: string[];
  elapsedMs: number;
  updatesPerSec: number;
  p50Us: number;
  p99Us: number;
}

export async function runUpdates(opts: {
  socketPath: string;
  table: string;
  connections: number;
  durationMs: number;
  warmupMs: number;
  /** distinct keys cycled through (default 10000) */
  keys?: number;
}): Promise<UpdateLoadResult> {
  const nkeys = opts.keys ?? 10_000;
  const clients: SequentialClient[] = [];
  const lat: number[] = [];
  let updates = 0;
  let errors = 0;
  const samples: string[] = [];
  try {
    for (let i = 0; i < opts.connections; i++) {
      const c = SequentialClient.connect(opts.socketPath);
      clients.push(c);
      const ann = await c.next(null, 10_000);
      if (!ann.equals(ANNOUNCEMENT)) throw new Error(`bad announcement ${show(ann)}`);
      const r = await c.next(record([['request', 'open'], ['table', opts.table], ['flags', String(VERIFY_UPDATE_FLAGS & 0xfff3060c)]]), 10_000);
      if (!r.toString('latin1').startsWith('status\x000\x00')) throw new Error(`open ${opts.table}: ${show(r)}`);
    }
    const start = process.hrtime.bigint();
    const measureFrom = start + BigInt(opts.warmupMs) * 1_000_000n;
    const end = measureFrom + BigInt(opts.durationMs) * 1_000_000n;
    let counter = 0;
    await Promise.all(
      clients.map(async (c, ci) => {
        for (;;) {
          const now = process.hrtime.bigint();
          if (now >= end) return;
          const n = counter++;
          const key = `sender${(n * 7919 + ci) % nkeys}@example.com`;
          const value = `${n % 2 ? 1 : 0}:${Math.floor(Date.now() / 1000)}:${n}:250 2.1.5 Ok`;
          const req = record([['request', 'update'], ['table', opts.table], ['flags', String(VERIFY_UPDATE_FLAGS)], ['key', key], ['value', value]]);
          const t0 = process.hrtime.bigint();
          let ok = false;
          let text = '';
          try {
            const r = await c.next(req, 30_000);
            text = show(r);
            ok = r.toString('latin1').startsWith('status\x000\x00');
          } catch (e) {
            text = (e as Error).message;
          }
          const t1 = process.hrtime.bigint();
          if (t0 < measureFrom) continue;
          if (t1 > end) return;
          if (ok) {
            updates++;
            lat.push(Number(t1 - t0) / 1000);
          } else {
            errors++;
            if (samples.length < 3) samples.push(`${key}: ${text}`);
            if (/closed|no reply/.test(text)) return;
          }
        }
      }),
    );
    lat.sort((a, b) => a - b);
    const q = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! : NaN);
    return {
      connections: opts.connections,
      updates,
      errors,
      errorSamples: samples,
      elapsedMs: opts.durationMs,
      updatesPerSec: updates / (opts.durationMs / 1000),
      p50Us: q(0.5),
      p99Us: q(0.99),
    };
  } finally {
    for (const c of clients) c.close();
  }
}
