/**
 * The independent load generator (bench/loadgen.c): compiled once per bench
 * run with the system C compiler, fed a plan file of keys and expected
 * answers, run as its own process. One thread per connection, blocking
 * write-then-read as a Postfix process's dict_proxy client does, so that its
 * figures do not depend on the project's own client or on Node's event loop.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LEGACY_LOOKUP_FLAGS, type LoadResult } from './load.js';

const SOURCE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'loadgen.c');

/** Compile loadgen.c into dir; returns the binary's path or throws with the compiler's message. */
export function buildLoadgen(dir: string): string {
  const out = path.join(dir, 'loadgen');
  const cc = process.env.CC || 'cc';
  const r = spawnSync(cc, ['-O2', '-Wall', '-pthread', '-o', out, SOURCE], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`${cc} ${SOURCE}: ${r.stderr || r.error?.message || `exit ${r.status}`}`);
  return out;
}

/** Write the plan file: key NUL status NUL value NUL per key (status 0 found, 1 not found). */
export function writePlan(file: string, keys: string[], expected: (string | null)[]): void {
  const parts: Buffer[] = [];
  for (let i = 0; i < keys.length; i++) {
    const v = expected[i];
    parts.push(Buffer.from(`${keys[i]}\0${v === null || v === undefined ? 1 : 0}\0${v ?? ''}\0`, 'latin1'));
  }
  fs.writeFileSync(file, Buffer.concat(parts));
}

export interface CLoadOptions {
  binary: string;
  plan: string;
  socketPath: string;
  table: string;
  connections: number;
  durationMs: number;
  warmupMs: number;
  lookupFlags?: number;
  /** speak socketmap with this request name instead of proxymap (socketPath may then be inet:HOST:PORT) */
  socketmap?: string;
}

/** Run the C generator once; its JSON line becomes a LoadResult. */
export function runCLoad(o: CLoadOptions): Promise<LoadResult> {
  const args = [
    '-s', o.socketPath, '-t', o.table, '-k', o.plan, '-c', String(o.connections),
    '-d', String(o.durationMs / 1000), '-w', String(o.warmupMs / 1000), '-f', String(o.lookupFlags ?? LEGACY_LOOKUP_FLAGS),
    ...(o.socketmap ? ['-m', o.socketmap] : []),
  ];
  return new Promise((resolve, reject) => {
    const p = spawn(o.binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const limit = setTimeout(() => p.kill('SIGKILL'), o.durationMs + o.warmupMs + 30_000);
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', (e) => {
      clearTimeout(limit);
      reject(e);
    });
    p.on('close', (code, sig) => {
      clearTimeout(limit);
      const line = out.trim().split('\n').pop() ?? '';
      let j: Record<string, number | string>;
      try {
        j = JSON.parse(line);
      } catch {
        reject(new Error(`loadgen exited ${sig ?? code}: ${err.trim() || out.trim() || 'no output'}`));
        return;
      }
      const n = (k: string) => Number(j[k]);
      resolve({
        connections: n('connections'),
        workers: 0,
        lookups: n('lookups'),
        errors: n('errors'),
        errorSamples: j.error_sample ? [String(j.error_sample)] : [],
        elapsedMs: n('elapsed_ms'),
        lookupsPerSec: n('lookups_per_sec'),
        p50Us: n('p50_us'),
        p90Us: n('p90_us'),
        p99Us: n('p99_us'),
        maxUs: n('max_us'),
        meanUs: n('mean_us'),
        clientCpuPct: n('client_cpu_pct'),
      });
    });
  });
}
