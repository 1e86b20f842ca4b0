/**
 * The listener takes already-listening descriptors (systemd socket
 * activation: LISTEN_FDS from fd 3). A small Python launcher binds the
 * sockets, puts them on fds 3 and 4 and execs proxymapd in the same process.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProxyConnection } from '../../src/client/client.js';
import { CLI, writeMainCf } from './harness.js';

const LAUNCHER = `
import os, socket, sys
paths = sys.argv[1:3]
socks = []
for i, p in enumerate(paths):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(p); s.listen(16)
    os.dup2(s.fileno(), 3 + i)
    os.set_inheritable(3 + i, True)
    socks.append(s)
os.environ['LISTEN_FDS'] = '2'
os.environ['LISTEN_PID'] = str(os.getpid())
os.environ['LISTEN_FDNAMES'] = 'proxymap:proxywrite'
os.execv(sys.argv[3], sys.argv[3:])
`;
import { b } from '../support/bytes.js';


test('serve takes inherited listening sockets (LISTEN_FDS)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-fds-'));
  const conf = path.join(dir, 'conf');
  // queue_directory points elsewhere: nothing may be bound there in this mode
  writeMainCf(conf, { queue_directory: path.join(dir, 'unused'), proxy_read_maps: 'proxy:inline:{a=1}', proxy_write_maps: 'proxy:environ:x' });
  const pm = path.join(dir, 'pm.sock');
  const pw = path.join(dir, 'pw.sock');
  const child = spawn('python3', ['-c', LAUNCHER, pm, pw, process.execPath, CLI, 'serve', '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d: Buffer) => (log += d));
  try {
    for (let i = 0; i < 100 && !log.includes('ready'); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(log, /ready: proxymap on fd 3, proxywrite on fd 4/);
    const c = await ProxyConnection.connect(pm);
    assert.deepEqual(await c.exchangeRaw(b('request|lookup|table|inline:{a=1}|flags|0|key|a||')), [['status', '0'], ['value', '1']]);
    c.close();
    const w = await ProxyConnection.connect(pw);
    assert.deepEqual(await w.exchangeRaw(b('request|lookup|table|environ:x|flags|0|key|MAIL_CONFIG||')), [['status', '0'], ['value', conf]]);
    // the write socket does not serve read-list tables
    assert.deepEqual(await w.exchangeRaw(b('request|lookup|table|inline:{a=1}|flags|0|key|a||')), [['status', '4'], ['value', '']]);
    w.close();
    assert.equal(fs.existsSync(path.join(dir, 'unused')), false);
  } finally {
    child.kill('SIGTERM');
    await once(child, 'exit');
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(child.exitCode, 0, log);
});
