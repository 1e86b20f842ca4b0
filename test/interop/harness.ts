/**
 * Interop harness: a proxymapd process (the built CLI, dist/cli/main.js)
 * on a temporary queue_directory, and the real Postfix postmap(1) as client
 * and as oracle. Outside CI the interop tests skip when Postfix is missing;
 * in CI (CI=true) a missing Postfix fails them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { skipUnlessPresent } from '../support/skip.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'dist/cli/main.js');
export const POSTMAP = ['/usr/sbin/postmap', '/usr/bin/postmap'].find((p) => fs.existsSync(p));

/** The reason to skip (outside CI), or false. In CI a missing dependency throws instead. */
export function skipReason(): string | false {
  const missing = !POSTMAP ? 'Postfix postmap is not installed' : !fs.existsSync(CLI) ? 'dist/ is not built (npm run build)' : '';
  return skipUnlessPresent(missing);
}

export interface Instance {
  dir: string;
  conf: string;
  queue: string;
  proxymap: string;
  /** `$queue/private/proxywrite` */
  proxywrite: string;
  /** pid of the proxymapd process */
  pid: number;
  /** Send a signal and wait for the process to end (e.g. SIGKILL). */
  kill(signal: NodeJS.Signals): Promise<void>;
  log(): string;
  /** SIGTERM, wait for exit; resolves to the exit code */
  stop(): Promise<number | null>;
}

/** Write a main.cf (mtime backdated: Postfix re-reads a file younger than a second). */
export function writeMainCf(conf: string, lines: Record<string, string>): void {
  fs.mkdirSync(conf, { recursive: true });
  const f = path.join(conf, 'main.cf');
  fs.writeFileSync(f, Object.entries(lines).map(([k, v]) => `${k} = ${v}\n`).join(''));
  fs.utimesSync(f, 1_000_000_000, 1_000_000_000);
}

/** Write a table file and backdate it likewise. */
export function writeTable(file: string, content: string | Buffer): void {
  fs.writeFileSync(file, content);
  fs.utimesSync(file, 1_000_000_000, 1_000_000_000);
}

async function waitForSocket(p: string, child: ChildProcess, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`proxymapd exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createConnection(p);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`proxymapd did not listen on ${p} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Start proxymapd serve with a main.cf made of `params` (queue_directory is set here). */
export async function startProxymapd(params: Record<string, string>, dir?: string): Promise<Instance> {
  const base = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-interop-'));
  const conf = path.join(base, 'conf');
  const queue = path.join(base, 'queue');
  writeMainCf(conf, { queue_directory: queue, ...params });
  const child = spawn(process.execPath, [CLI, 'serve', '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const proxymap = path.join(queue, 'private', 'proxymap');
  try {
    await waitForSocket(proxymap, child, 15_000);
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`${(e as Error).message}\n${stderr}`);
  }
  return {
    dir: base,
    conf,
    queue,
    proxymap,
    proxywrite: path.join(queue, 'private', 'proxywrite'),
    pid: child.pid!,
    async kill(signal: NodeJS.Signals) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill(signal);
      await exited;
    },
    log: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await once(child, 'exit');
        clearTimeout(timer);
      }
      if (!dir) fs.rmSync(base, { recursive: true, force: true });
      return child.exitCode;
    },
  };
}

export interface Run {
  status: number;
  stdout: Buffer;
  stderr: string;
}

/** Run a command; args are UTF-8 strings, stdin raw bytes. */
export async function run(cmd: string, args: string[], input?: Buffer | string, timeoutMs = 60_000): Promise<Run> {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs });
  const out: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => (err += b.toString('utf8')));
  child.stdin.on('error', () => undefined);
  child.stdin.end(input ?? '');
  const [code] = (await once(child, 'close')) as [number | null];
  return { status: code ?? -1, stdout: Buffer.concat(out), stderr: err };
}

export function postmap(args: string[], input?: Buffer | string): Promise<Run> {
  return run(POSTMAP!, args, input);
}
