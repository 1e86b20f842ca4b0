/**
 * systemd readiness (src/server/notify.ts, native/notify.c): a Python
 * AF_UNIX datagram receiver stands in for systemd, on a socket path and on
 * an abstract name; `proxymapd serve` reports READY=1, RELOADING=1 with
 * MONOTONIC_USEC then READY=1 around a SIGHUP, and STOPPING=1 on SIGTERM.
 * Also the unit files in contrib/systemd, checked by systemd-analyze.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setLogSink } from '../../src/log.js';
import { Config } from '../../src/config/params.js';
import { socketPaths, systemdListenFds } from '../../src/server/daemon.js';
import { SystemdNotifier } from '../../src/server/notify.js';
import { CLI, ROOT, writeMainCf } from '../interop/harness.js';

/** Prints "bound", then one JSON line per datagram: [text, CLOCK_MONOTONIC µs at receipt]. */
const RECEIVER = `
import json, socket, sys, time
addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\\0' + addr[1:] if addr.startswith('@') else addr)
print('bound', flush=True)
while True:
    data = s.recv(65536)
    print(json.dumps([data.decode(), time.monotonic_ns() // 1000]), flush=True)
`;

interface Receiver {
  messages: Array<{ lines: string[]; at: number }>;
  child: ChildProcess;
  next(pred: (lines: string[]) => boolean, what: string): Promise<{ lines: string[]; at: number }>;
}

async function receiver(address: string): Promise<Receiver> {
  const child = spawn('python3', ['-c', RECEIVER, address], { stdio: ['ignore', 'pipe', 'inherit'] });
  const messages: Receiver['messages'] = [];
  const waiters: Array<() => void> = [];
  const rl = createInterface({ input: child.stdout! });
  let bound!: () => void;
  const isBound = new Promise<void>((r) => (bound = r));
  rl.on('line', (line) => {
    if (line === 'bound') return bound();
    const [text, at] = JSON.parse(line) as [string, number];
    messages.push({ lines: text.split('\n').filter((l) => l !== ''), at });
    for (const w of waiters.splice(0)) w();
  });
  await isBound;
  let seen = 0;
  return {
    messages,
    child,
    async next(pred, what) {
      const deadline = Date.now() + 20_000;
      for (;;) {
        while (seen < messages.length) {
          const m = messages[seen++];
          if (pred(m.lines)) return m;
        }
        if (Date.now() > deadline) throw new Error(`no ${what} notification; got ${JSON.stringify(messages)}`);
        await Promise.race([new Promise<void>((r) => waiters.push(r)), new Promise((r) => setTimeout(r, 1000))]);
      }
    },
  };
}

async function serveWithNotify(address: string): Promise<void> {
  const recv = await receiver(address);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-notify-'));
  const conf = path.join(dir, 'conf');
  writeMainCf(conf, { queue_directory: path.join(dir, 'queue'), proxy_read_maps: 'proxy:inline:{a=1} proxy:static:x', proxy_write_maps: '' });
  const child = spawn(process.execPath, [CLI, 'serve', '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NOTIFY_SOCKET: address } });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d));
  child.on('exit', (code, sig) => (log += `[exit ${code} ${sig}]`));
  try {
    const ready = await recv.next((l) => l.includes('READY=1'), 'READY=1');
    assert.ok(ready.lines.includes('STATUS=2 read, 0 write tables approved'), JSON.stringify(ready.lines));
    // the sockets listen by the time READY=1 is sent
    assert.ok(fs.existsSync(path.join(dir, 'queue', 'private', 'proxymap')));
    child.kill('SIGHUP');
    const reloading = await recv.next((l) => l.includes('RELOADING=1'), 'RELOADING=1');
    const usec = Number(reloading.lines.find((l) => l.startsWith('MONOTONIC_USEC='))?.slice('MONOTONIC_USEC='.length));
    // CLOCK_MONOTONIC, as systemd reads it: within a few seconds of the receiver's clock at receipt
    assert.ok(Number.isInteger(usec) && Math.abs(recv.messages.at(-1)!.at - usec) < 5_000_000, `${usec} vs ${reloading.at}`);
    const again = await recv.next((l) => l.includes('READY=1'), 'READY=1 after the reload');
    assert.ok(again.lines.includes('STATUS=2 read, 0 write tables approved'));
    child.kill('SIGTERM');
    await recv.next((l) => l.includes('STOPPING=1'), 'STOPPING=1');
    await once(child, 'exit');
    assert.equal(child.exitCode, 0, log);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${log}`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    recv.child.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const skipCli = () => (fs.existsSync(CLI) ? false : 'dist/ is not built (npm run build)');

test('sd_notify to a socket path: READY, RELOADING/READY on SIGHUP, STOPPING on SIGTERM', { skip: skipCli() }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-nsock-'));
  try {
    await serveWithNotify(path.join(dir, 'notify'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('sd_notify to an abstract socket name (@name)', { skip: skipCli() }, async () => {
  await serveWithNotify(`@proxymapd-test-${process.pid}-${Date.now()}`);
});

test('SystemdNotifier: NOTIFY_SOCKET is taken out of the environment; a dead socket is one warning', () => {
  assert.equal(SystemdNotifier.fromEnv({}), null);
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: path.join(os.tmpdir(), `pmd-none-${process.pid}`), OTHER: 'x' };
  const n = SystemdNotifier.fromEnv(env);
  assert.deepEqual(env, { OTHER: 'x' });
  assert.ok(n, 'the addon is built');
  const logs: string[] = [];
  const old = setLogSink((line) => logs.push(line));
  try {
    n.ready();
    n.status('still nobody there');
  } finally {
    setLogSink(old);
  }
  assert.equal(logs.length, 1);
  assert.match(logs[0], /warning: cannot notify systemd at .*pmd-none-\d+: No such file or directory$/);
});

const UNITS = path.join(ROOT, 'contrib', 'systemd');
const SYSTEMD_ANALYZE = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => fs.existsSync(p));

test('contrib/systemd units pass systemd-analyze verify', { skip: SYSTEMD_ANALYZE ? false : 'systemd-analyze is not installed' }, () => {
  const units = ['proxymapd.service', 'proxymapd.socket', 'proxymapd-write.socket'].map((u) => path.join(UNITS, u));
  const r = spawnSync(SYSTEMD_ANALYZE!, ['verify', ...units], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  // verify exits 0 on mere warnings (an unknown setting, a bad value): there must be none
  assert.equal(r.stderr, '');
  assert.equal(r.stdout, '');
});

test('contrib/systemd units agree with proxymapd: notify type, descriptor names, default socket paths', () => {
  const service = fs.readFileSync(path.join(UNITS, 'proxymapd.service'), 'utf8');
  assert.match(service, /^Type=notify$/m);
  assert.match(service, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
  const paths = socketPaths(Config.fromEntries({}));
  const fds: Array<{ name: string; path: string }> = [];
  for (const unit of ['proxymapd.socket', 'proxymapd-write.socket']) {
    const text = fs.readFileSync(path.join(UNITS, unit), 'utf8');
    assert.match(text, /^Service=proxymapd\.service$/m);
    assert.match(text, /^SocketMode=0666$/m);
    fds.push({ name: /^FileDescriptorName=(.*)$/m.exec(text)![1], path: /^ListenStream=(.*)$/m.exec(text)![1] });
  }
  assert.deepEqual(fds, [
    { name: 'proxymap', path: paths.proxymap },
    { name: 'proxywrite', path: paths.proxywrite },
  ]);
  // what systemd passes for these units (in either order) maps to the right services
  const pid = String(process.pid);
  assert.deepEqual(systemdListenFds({ LISTEN_FDS: '2', LISTEN_PID: pid, LISTEN_FDNAMES: 'proxywrite:proxymap' }), [
    { fd: 3, service: 'proxywrite' },
    { fd: 4, service: 'proxymap' },
  ]);
});
