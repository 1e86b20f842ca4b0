/**
 * proxymapd's side of the master(8) child protocol, observed from a fake
 * master (a small Python program): the inherited listening socket on fd 6,
 * status messages on fd 5 with the GENERATION, "taken"/"available" as
 * documented in src/server/master.ts, exit when the status channel closes.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CLI, skipReason, writeMainCf, writeTable } from './harness.js';
import { ProxyConnection } from '../../src/client/client.js';
import { ProxyTable } from '../../src/client/table.js';
import { BUSY_REPORT_MS } from '../../src/server/master.js';
import { skipUnlessPresent } from '../support/skip.js';

const PYTHON = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => fs.existsSync(p));
function skipFake(): string | false {
  const s = skipReason();
  if (s) return s;
  return skipUnlessPresent(!PYTHON && 'python3 not installed');
}
const skip = skipFake();

/** The fake master: listen, pass fds 5 (status) and 6 (listener), print each status message; EOF on stdin closes fd 5. */
const FAKE_MASTER = String.raw`
import os, socket, struct, subprocess, sys, threading, fcntl
path, cmd = sys.argv[1], sys.argv[2:]
ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); ls.bind(path); ls.listen(64); os.chmod(path, 0o666)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
hb = fcntl.fcntl(b.fileno(), fcntl.F_DUPFD, 100); hl = fcntl.fcntl(ls.fileno(), fcntl.F_DUPFD, 100)
def pre():
    os.dup2(hb, 5); os.dup2(hl, 6)
env = dict(os.environ, GENERATION='0123')
p = subprocess.Popen(cmd, pass_fds=(5, 6), preexec_fn=pre, env=env)
b.close(); os.close(hb)
print('child', p.pid, flush=True)
def reader():
    buf = b''
    while True:
        d = a.recv(4096)
        if not d: return
        buf += d
        while len(buf) >= 12:
            pid, gen, avail = struct.unpack('=iIi', buf[:12]); buf = buf[12:]
            print('status', pid, oct(gen), avail, flush=True)
threading.Thread(target=reader, daemon=True).start()
sys.stdin.read()
a.shutdown(socket.SHUT_RDWR); a.close()
print('exit', p.wait(), flush=True)
`;

interface Fake {
  proc: ChildProcessWithoutNullStreams;
  lines: string[];
  socket: string;
  childPid: number;
  waitLine(re: RegExp, ms: number): Promise<string>;
}

async function startFake(dir: string, args: string[]): Promise<Fake> {
  const script = path.join(dir, 'fake-master.py');
  fs.writeFileSync(script, FAKE_MASTER);
  const socket = path.join(dir, 'listen');
  const proc = spawn(PYTHON!, [script, socket, process.execPath, CLI, ...args], {
    env: { ...process.env, MAIL_CONFIG: path.join(dir, 'conf') },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let partial = '';
  proc.stdout.on('data', (d: Buffer) => {
    partial += d.toString();
    const parts = partial.split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
  });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const waitLine = async (re: RegExp, ms: number) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const l = lines.find((x) => re.test(x));
      if (l) return l;
      if (Date.now() > deadline) throw new Error(`no line ${re} in ${JSON.stringify(lines)}; stderr: ${stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const childPid = Number((await waitLine(/^child /, 10_000)).split(' ')[1]);
  return { proc, lines, socket, childPid, waitLine };
}

describe('master child protocol against a fake master', { skip }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-fake-master-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('status messages carry pid and generation; one cycle, then "taken" only for long requests; exit on EOF', async () => {
    // A "database" that accepts and stays silent for 300 ms, then hangs up: a lookup that takes a while.
    const slow = net.createServer((s) => setTimeout(() => s.destroy(), 300));
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    const port = (slow.address() as net.AddressInfo).port;
    const conf = path.join(dir, 'conf');
    writeTable(path.join(dir, 'users'), 'alice ok\n');
    fs.writeFileSync(path.join(dir, 'slow.cf'), `hosts = inet:127.0.0.1:${port}\nuser = u\npassword = p\ndbname = d\nquery = SELECT 1 WHERE '%s'\n`);
    writeMainCf(conf, {
      queue_directory: path.join(dir, 'queue'),
      proxy_read_maps: `proxy:texthash:${dir}/users proxy:mysql:${dir}/slow.cf`,
      maillog_file: '',
      max_idle: '100s',
    });
    const fake = await startFake(dir, ['-n', 'proxymap', '-t', 'unix', '-V']);
    try {
      const conn = await ProxyConnection.connect(fake.socket);
      const t = new ProxyTable(conn, `texthash:${dir}/users`, { dialect: 'legacy', smtputf8: false });
      assert.deepEqual(await t.lookup('alice'), { status: 'found', value: 'ok' });
      const statuses = () => fake.lines.filter((l) => l.startsWith('status '));
      const settle = async () => {
        // wait until the last message says "available" and nothing new arrived for a while
        let n = -1;
        for (const until = Date.now() + 5000; Date.now() < until; await new Promise((r) => setTimeout(r, 3 * BUSY_REPORT_MS))) {
          const st = statuses();
          if (st.length === n && st.length > 0 && st[st.length - 1].endsWith(' 1')) break;
          n = st.length;
        }
        const st = statuses();
        // taken and available alternate, from this process and generation 0123 (octal)
        st.forEach((l, i) => assert.equal(l, `status ${fake.childPid} 0o123 ${i % 2}`));
        return st.length;
      };
      const first = await settle();
      assert.ok(first >= 2, 'a taken/available cycle for the first request');
      // Fast requests: (almost) no status traffic.
      for (let i = 0; i < 200; i++) await t.lookup('alice');
      const afterFast = await settle();
      assert.ok(afterFast - first <= 10, `${afterFast - first} status messages for 200 quick lookups`);
      // A request that lasts longer than BUSY_REPORT_MS: taken, then available.
      const conn2 = await ProxyConnection.connect(fake.socket);
      const m = new ProxyTable(conn2, `mysql:${dir}/slow.cf`, { dialect: 'legacy', smtputf8: false });
      const r = await m.lookup('x');
      assert.equal(r.status, 'error');
      const afterSlow = await settle();
      assert.ok(afterSlow - afterFast >= 2, 'taken/available around the slow request');
      conn.close();
      conn2.close();
      // master goes away (reload/stop): the child exits with status 0.
      fake.proc.stdin.end();
      assert.equal(await fake.waitLine(/^exit /, 10_000), 'exit 0');
    } finally {
      fake.proc.kill('SIGKILL');
      try {
        process.kill(fake.childPid, 'SIGKILL');
      } catch {
        /* gone */
      }
      slow.close();
    }
  });
});
