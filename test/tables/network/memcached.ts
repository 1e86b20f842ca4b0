/**
 * A throwaway memcached for the memcache table tests
 * (shared/spec/test-servers.md): listens on a free 127.0.0.1 port and on a
 * UNIX socket in its own temporary directory, runs as `nobody` when the
 * tests run as root (memcached refuses root without -u), and can be
 * stopped and started again on the same port and socket (outage tests).
 * Every wait is bounded. Outside CI a missing memcached makes the tests
 * skip; in CI (CI=true) it is a failure.
 *
 * Also a tiny scripted fake server (startFakeMemcache) for the malformed
 * replies a real memcached never sends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../sql/servers.js';
import { skipUnlessPresent } from '../../support/skip.js';

const MEMCACHED = ['/usr/bin/memcached', '/usr/sbin/memcached'].find((p) => fs.existsSync(p));

/** Why memcached tests must skip (outside CI), or false. */
export function memcachedSkipReason(): string | false {
  return skipUnlessPresent(!MEMCACHED && 'memcached is not installed (apt-get install memcached)');
}

export interface Memcached {
  readonly dir: string;
  readonly port: number;
  readonly socket: string;
  /** `inet:127.0.0.1:PORT` */
  readonly inet: string;
  /** `unix:PATH` */
  readonly unix: string;
  /** Send raw commands on a fresh connection; resolves with everything the server sent until it went quiet. */
  raw(text: string): Promise<string>;
  /** The value stored under a key (or undefined), read with our own connection. */
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string): Promise<void>;
  flush(): Promise<void>;
  halt(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly running: boolean;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

async function until(what: string, ms: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One request/response exchange: resolves when `done(buffered)` holds or after `ms`. */
function exchange(port: number, text: string, done: (s: string) => boolean, ms = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let got = '';
    const timer = setTimeout(() => (s.destroy(), resolve(got)), ms);
    s.on('data', (b: Buffer) => {
      got += b.toString('latin1');
      if (done(got)) {
        clearTimeout(timer);
        s.destroy();
        resolve(got);
      }
    });
    s.once('error', (e) => (clearTimeout(timer), reject(e)));
    s.once('connect', () => s.write(Buffer.from(text, 'latin1')));
  });
}

export async function startMemcached(): Promise<Memcached> {
  if (!MEMCACHED) throw new Error('memcached is not installed');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-mc-'));
  fs.chmodSync(dir, 0o777);
  const port = await freePort();
  const socket = path.join(dir, 'mc.sock');
  let child: ChildProcess | null = null;
  const asRoot = process.getuid?.() === 0;

  const start = async () => {
    if (child) return;
    try {
      fs.unlinkSync(socket);
    } catch {
      /* not there */
    }
    // memcached serves either a UNIX socket or TCP, so the socket is a second server (its own cache).
    const args = ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-m', '16', '-c', '256', '-t', '2'];
    if (asRoot) args.unshift('-u', 'nobody');
    const c = spawn(MEMCACHED, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const u = spawn(MEMCACHED, [...(asRoot ? ['-u', 'nobody'] : []), '-s', socket, '-a', '0666', '-m', '16', '-t', '1'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child = c;
    unixChild = u;
    await until('memcached on TCP', 15_000, () => canConnect(port));
    await until('memcached on its socket', 15_000, async () => fs.existsSync(socket));
  };
  let unixChild: ChildProcess | null = null;

  const kill = async (p: ChildProcess | null) => {
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = once(p, 'exit');
    p.kill('SIGKILL');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
  };
  const halt = async () => {
    const c = child;
    const u = unixChild;
    child = null;
    unixChild = null;
    await Promise.all([kill(c), kill(u)]);
    await until('memcached to stop', 10_000, async () => !(await canConnect(port)));
  };

  await start();
  return {
    dir,
    port,
    socket,
    inet: `inet:127.0.0.1:${port}`,
    unix: `unix:${socket}`,
    raw: (text) => exchange(port, text, () => false, 300),
    async get(key) {
      const r = await exchange(port, `get ${key}\r\n`, (s) => s.endsWith('END\r\n'));
      const m = /^VALUE \S+ \d+ (\d+)\r\n/.exec(r);
      if (!m) return undefined;
      const start = m[0].length;
      return r.slice(start, start + Number(m[1]));
    },
    async set(key, value) {
      const r = await exchange(port, `set ${key} 0 0 ${Buffer.byteLength(value, 'latin1')}\r\n${value}\r\n`, (s) => s.includes('\r\n'));
      if (r !== 'STORED\r\n') throw new Error(`set ${key}: ${r}`);
    },
    async flush() {
      await exchange(port, 'flush_all\r\n', (s) => s.includes('\r\n'));
    },
    halt,
    start,
    async stop() {
      await halt();
      fs.rmSync(dir, { recursive: true, force: true });
    },
    get running() {
      return child !== null;
    },
  };
}

/** A scripted server: each received line is answered by `reply(line)` (raw bytes), or the connection closed when it returns null. */
export interface FakeMemcache {
  readonly port: number;
  readonly inet: string;
  /** Every line received, across connections. */
  readonly lines: string[];
  connections: number;
  close(): Promise<void>;
}

export async function startFakeMemcache(reply: (line: string) => string | null): Promise<FakeMemcache> {
  const lines: string[] = [];
  const sockets = new Set<net.Socket>();
  const state = { connections: 0 };
  const srv = net.createServer((s) => {
    state.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = '';
    let pendingData = 0;
    s.on('data', (b: Buffer) => {
      buf += b.toString('latin1');
      for (;;) {
        if (pendingData > 0) {
          if (buf.length < pendingData + 2) return;
          lines.push(buf.slice(0, pendingData));
          buf = buf.slice(pendingData + 2);
          pendingData = 0;
          const r = reply('<data>');
          if (r === null) return void s.destroy();
          if (r) s.write(Buffer.from(r, 'latin1'));
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        lines.push(line);
        const m = /^set \S+ \d+ -?\d+ (\d+)$/.exec(line);
        if (m) {
          pendingData = Number(m[1]);
          continue;
        }
        const r = reply(line);
        if (r === null) return void s.destroy();
        if (r) s.write(Buffer.from(r, 'latin1'));
      }
    });
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  return {
    port,
    inet: `inet:127.0.0.1:${port}`,
    lines,
    get connections() {
      return state.connections;
    },
    set connections(v: number) {
      state.connections = v;
    },
    async close() {
      for (const s of sockets) s.destroy();
      srv.close();
      await Promise.race([once(srv, 'close'), new Promise((r) => setTimeout(r, 5000))]);
    },
  };
}
