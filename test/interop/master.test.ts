/**
 * proxymapd under a real Postfix master(8): an isolated instance whose
 * master.cf runs proxymapd as its proxymap and proxywrite services.
 *
 * - real postmap through the master-spawned proxymapd; its log lines land
 *   in the instance's maillog (postlogd) as Postfix daemons' lines do;
 * - an SMTP conversation with the instance's real smtpd (local recipients
 *   through proxy:texthash, a proxy:cidr client restriction, an
 *   address-verification cache written through proxywrite) gets the same
 *   replies as the same instance with Postfix's own proxymap;
 * - `postfix reload`, max_idle and max_use end proxymapd processes, and
 *   master logs no warning about them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { CLI, POSTMAP, run as runRaw, skipReason } from './harness.js';
import { skipUnlessPresent } from '../support/skip.js';
import {
  isZombieOrGone,
  postfixAvailable,
  postfixUnavailableReason,
  startPostfixInstance,
  type PostfixInstance,
  type PostfixInstanceOptions,
} from './postfix-instance.js';

function skipMaster(): string | false {
  const s = skipReason();
  if (s) return s;
  return skipUnlessPresent(!postfixAvailable() && `real Postfix instance not available: ${postfixUnavailableReason()}`);
}
const skip = skipMaster();

/** Run a command: exit code and text output. */
async function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await runRaw(cmd, args);
  return { code: r.status, stdout: r.stdout.toString('utf8'), stderr: r.stderr };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * A daemon_directory for the instance: links to Postfix's daemons plus a
 * `proxymapd` wrapper that runs the built CLI (master looks commands up there).
 */
function makeDaemonDir(): string {
  const real = spawnSync('postconf', ['-dh', 'daemon_directory'], { encoding: 'utf8' }).stdout.trim() || '/usr/lib/postfix/sbin';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-sbin-'));
  fs.chmodSync(dir, 0o755);
  for (const f of fs.readdirSync(real)) fs.symlinkSync(path.join(real, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'proxymapd'), `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@"\n`, { mode: 0o755 });
  return dir;
}

/** The master.cf lines that put proxymapd in place of proxymap and proxywrite (as in the README). */
const PROXYMAPD_SERVICES = ['proxymap  unix  -       -       n       -       -       proxymapd',
  'proxywrite unix -       -       n       -       1       proxymapd'];

/** Pids of the instance's processes whose command line runs our CLI, by service (-n value). */
function proxymapdPids(inst: PostfixInstance): Array<{ pid: number; service: string; user: number }> {
  const out: Array<{ pid: number; service: string; user: number }> = [];
  for (const pid of inst.processes()) {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      if (!argv.includes(CLI)) continue;
      const n = argv.indexOf('-n');
      const status = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
      out.push({ pid, service: n >= 0 ? argv[n + 1] : '', user: uid });
    } catch {
      /* gone */
    }
  }
  return out;
}

async function waitFor<T>(what: string, ms: number, f: () => T | undefined | false): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Lines master logs about a misbehaving child. */
const MASTER_COMPLAINTS = /postfix\/master\[\d+\]: (warning|fatal|panic)|bad command startup|throttling|partial status|ignoring status update/;

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** A minimal SMTP client: the reply (code and text, continuation lines joined) to each command. */
async function smtpSession(port: string | number, from: string, commands: string[]): Promise<string[]> {
  const sock = net.connect({ host: '127.0.0.1', port: Number(port), localAddress: from });
  sock.setEncoding('latin1');
  let buf = '';
  const waiters: Array<() => void> = [];
  sock.on('data', (d: string) => {
    buf += d;
    while (waiters.length) waiters.shift()!();
  });
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  sock.on('error', () => {});
  const readReply = async (): Promise<string> => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      // A reply ends with a line "ddd text" (a space after the code).
      const m = /^(?:\d{3}-.*\r\n)*\d{3}(?: .*)?\r\n/.exec(buf);
      if (m) {
        buf = buf.slice(m[0].length);
        return m[0].trimEnd().split('\r\n').map((l) => l.replace(/^(\d{3})[- ]/, '$1 ')).join(' | ');
      }
      if (Date.now() > deadline || sock.destroyed) throw new Error(`no SMTP reply (have ${JSON.stringify(buf)})`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
  };
  const replies: string[] = [];
  replies.push(await readReply());
  for (const c of commands) {
    sock.write(c + '\r\n');
    replies.push(await readReply());
  }
  sock.end();
  await Promise.race([closed, sleep(2000)]);
  sock.destroy();
  return replies;
}

interface SmtpSetup {
  inst: PostfixInstance;
  port: number;
}

/**
 * An instance with an SMTP listener on a loopback port, local recipients
 * through proxy:texthash, a proxy:cidr client check, and an address
 * verification cache through proxywrite (btree).
 */
async function startSmtpInstance(useProxymapd: boolean, daemonDir: string): Promise<SmtpSetup> {
  const port = await freePort();
  const mainCf: Record<string, string> = {
    mydestination: 'localhost, example.com',
    myhostname: 'pfinst.localdomain',
    mynetworks: '127.0.0.0/8',
    alias_maps: '',
    alias_database: '',
    local_recipient_maps: 'proxy:texthash:$DIR/users',
    smtpd_client_restrictions: 'check_client_access proxy:cidr:$DIR/clients',
    smtpd_recipient_restrictions: 'check_recipient_access inline:{verifyme@example.com=reject_unverified_recipient}, permit',
    address_verify_map: 'proxy:btree:$DIR/data/verify',
    address_verify_poll_count: '1',
    unverified_recipient_reject_code: '550',
    proxy_read_maps: '$local_recipient_maps $smtpd_client_restrictions',
    proxy_write_maps: '$address_verify_map',
    smtpd_banner: '$myhostname ESMTP',
    biff: 'no',
    max_idle: '30s',
  };
  const removed = ['smtp/inet'];
  const append = [`127.0.0.1:${port} inet n - n - - smtpd`];
  if (useProxymapd) {
    mainCf.daemon_directory = daemonDir;
    removed.push('proxymap', 'proxywrite');
    append.push(...PROXYMAPD_SERVICES);
  }
  const opts: PostfixInstanceOptions = {
    mainCf,
    masterCfEdits: {
      remove: removed,
      append,
      transform: (t) => t, // master_service_disable is cleared below
    },
    files: {
      users: 'alice@example.com x\nverifyme@example.com x\nbob x\n',
      clients: '127.0.0.2 REJECT listed client\n127.0.0.0/8 OK\n',
    },
  };
  opts.mainCf!.master_service_disable = '';
  const inst = await startPostfixInstance(opts);
  return { inst, port };
}

/** The SMTP replies to compare between the two instances. */
async function conversation(s: SmtpSetup): Promise<Record<string, string[]>> {
  const mail = ['EHLO client.example', 'MAIL FROM:<sender@example.org>'];
  const known = await smtpSession(s.port, '127.0.0.1', [...mail, 'RCPT TO:<alice@example.com>', 'RSET', 'QUIT']);
  const unknown = await smtpSession(s.port, '127.0.0.1', [...mail, 'RCPT TO:<nobody@example.com>', 'QUIT']);
  const listed = await smtpSession(s.port, '127.0.0.2', [...mail, 'RCPT TO:<alice@example.com>', 'QUIT']);
  // First the probe is sent (450, in progress); once the probe bounced, the cached result rejects (550).
  const unverified = await smtpSession(s.port, '127.0.0.1', [...mail, 'RCPT TO:<verifyme@example.com>', 'QUIT']);
  let verified: string[] = [];
  for (const until = Date.now() + 15_000; Date.now() < until; await sleep(300)) {
    verified = await smtpSession(s.port, '127.0.0.1', [...mail, 'RCPT TO:<verifyme@example.com>', 'QUIT']);
    if (!verified[3].startsWith('450')) break;
  }
  // Drop the greeting and the EHLO capability list (identical by construction) from the comparison.
  const strip = (r: string[]) => r.slice(2);
  return { known: strip(known), unknown: strip(unknown), listed: strip(listed), unverified: strip(unverified), verified: strip(verified) };
}

describe('proxymapd under a real master(8)', { skip, concurrency: 1 }, () => {
  let daemonDir = '';
  before(() => {
    daemonDir = makeDaemonDir();
  });
  after(() => {
    if (daemonDir) fs.rmSync(daemonDir, { recursive: true, force: true });
  });

  it('serves real postmap as the proxymap service, unprivileged, logging to the maillog', async () => {
    const inst = await startPostfixInstance({
      mainCf: { daemon_directory: daemonDir, proxy_read_maps: 'proxy:texthash:$DIR/users', max_idle: '30s' },
      masterCfEdits: { remove: ['proxymap', 'proxywrite'], append: PROXYMAPD_SERVICES },
      files: { users: 'alice ok\nBob bobval\n' },
    });
    try {
      const table = `texthash:${inst.dir}/users`;
      for (const key of ['alice', 'bob', 'BOB', 'nobody']) {
        const via = await run(POSTMAP!, ['-c', inst.confDir, '-q', key, `proxy:${table}`]);
        const direct = await run(POSTMAP!, ['-c', inst.confDir, '-q', key, table]);
        assert.equal(via.stdout, direct.stdout, key);
        assert.equal(via.code, direct.code, key);
      }
      const denied = await run(POSTMAP!, ['-c', inst.confDir, '-q', 'x', `proxy:texthash:${inst.dir}/other`]);
      assert.equal(denied.code, 1);
      assert.match(denied.stderr, /proxymap service is not configured for table "texthash:.*\/other"/);

      const [p] = await waitFor('a proxymapd process', 5000, () => {
        const l = proxymapdPids(inst).filter((x) => x.service === 'proxymap');
        return l.length ? l : undefined;
      });
      const postfixUid = Number(spawnSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).stdout.trim());
      assert.equal(p.user, postfixUid, 'runs as mail_owner after -u');
      // The warnings about the unapproved table reach the maillog through postlogd, tagged like Postfix's.
      const line = await waitFor('the warning in the maillog', 5000, () =>
        inst.maillog().split('\n').find((l) => l.includes(`postfix/proxymap[${p.pid}]: warning: request for unapproved table`)),
      );
      assert.match(line, /^\w{3} [ \d]\d \d\d:\d\d:\d\d pfinst postfix\/proxymap\[\d+\]: warning: request for unapproved table: "texthash:/);
      assert.doesNotMatch(inst.maillog(), MASTER_COMPLAINTS);
    } finally {
      await inst.stop();
    }
  });

  it('an SMTP conversation gets the same replies as with Postfix\'s own proxymap; proxywrite keeps the verify cache', async () => {
    const results: Record<string, Record<string, string[]>> = {};
    for (const mode of ['postfix', 'proxymapd'] as const) {
      const s = await startSmtpInstance(mode === 'proxymapd', daemonDir);
      try {
        results[mode] = await conversation(s);
        if (mode === 'proxymapd') {
          // The verify daemon wrote the probe's status through proxywrite into the btree cache, and it is on disk
          // at once (with Postfix's own proxywrite a locking postmap -q waits here until that process exits, since it
          // holds the btree cache's exclusive lock for as long as it runs).
          const cache = path.join(s.inst.dir, 'data', 'verify');
          const q = await waitFor('the verify cache entry', 10_000, () => {
            const r = spawnSync(POSTMAP!, ['-q', 'verifyme@example.com', `btree:${cache}`], { encoding: 'utf8' });
            return r.status === 0 ? r : undefined;
          }).catch((e: Error) => {
            throw new Error(`${mode}: ${e.message}\n${s.inst.maillog()}`);
          });
          assert.equal(q.status, 0, `${mode}: verify cache entry (${q.stderr})`);
          const services = new Set(proxymapdPids(s.inst).map((p) => p.service));
          assert.ok(services.has('proxymap') && services.has('proxywrite'), `proxymapd serves both services: ${[...services]}`);
        }
        assert.doesNotMatch(s.inst.maillog(), MASTER_COMPLAINTS, `${mode}: master complaints`);
      } finally {
        await s.inst.stop();
      }
    }
    const { postfix, proxymapd } = results;
    assert.match(postfix.known[1], /^250 /, `known recipient: ${postfix.known[1]}`);
    assert.match(postfix.unknown[1], /^550 .*User unknown in local recipient table/, postfix.unknown[1]);
    assert.match(postfix.listed[1], /^554 .*Client host rejected: listed client/, postfix.listed[1]);
    assert.match(postfix.unverified[1], /^450 .*unverified address: Address verification in progress/, postfix.unverified[1]);
    assert.match(postfix.verified[1], /^550 .*undeliverable address: unknown user/, postfix.verified[1]);
    assert.deepEqual(proxymapd, postfix);
  });

  it('exits on postfix reload, after max_idle, and after max_use connections, without complaints from master', async () => {
    const inst = await startPostfixInstance({
      mainCf: { daemon_directory: daemonDir, proxy_read_maps: 'proxy:texthash:$DIR/users', max_idle: '2s', max_use: '3' },
      masterCfEdits: { remove: ['proxymap', 'proxywrite'], append: PROXYMAPD_SERVICES },
      files: { users: 'alice ok\n' },
    });
    try {
      const table = `proxy:texthash:${inst.dir}/users`;
      const q = () => run(POSTMAP!, ['-c', inst.confDir, '-q', 'alice', table]);
      const pidsNow = () => proxymapdPids(inst).filter((x) => x.service === 'proxymap').map((x) => x.pid);

      // max_idle: the process started for the readiness probe goes away after 2 s without clients.
      const first = await waitFor('a proxymapd process', 5000, () => pidsNow()[0]);
      await waitFor('the idle process to exit', 10_000, () => isZombieOrGone(first));

      // max_use = 3: three client connections, then the process exits once the last one closed.
      assert.equal((await q()).stdout, 'ok\n');
      const second = await waitFor('a new proxymapd process', 5000, () => pidsNow()[0]);
      assert.notEqual(second, first);
      assert.equal((await q()).stdout, 'ok\n');
      assert.equal((await q()).stdout, 'ok\n');
      await waitFor('the process to exit after max_use', 1500, () => isZombieOrGone(second));

      // postfix reload: master closes the status channel, the child exits at once; the next client gets a new one.
      assert.equal((await q()).stdout, 'ok\n');
      const third = await waitFor('a new proxymapd process', 5000, () => pidsNow()[0]);
      const r = await run('postfix', ['-c', inst.confDir, 'reload']);
      assert.equal(r.code, 0, r.stderr);
      await waitFor('the process to exit on reload', 1500, () => isZombieOrGone(third));
      assert.equal((await q()).stdout, 'ok\n');
      const fourth = await waitFor('a new proxymapd process', 5000, () => pidsNow()[0]);
      assert.notEqual(fourth, third);

      await sleep(300);
      assert.doesNotMatch(inst.maillog(), MASTER_COMPLAINTS);
    } finally {
      await inst.stop();
    }
  });

  it('metrics under master: one UNIX socket per process (%p), created before privileges are dropped', async () => {
    // the directory belongs to mail_owner, so that the process (unprivileged by then) removes its socket when it exits
    const mdir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-msock-'));
    const postfixUid = Number(spawnSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).stdout.trim());
    fs.chownSync(mdir, postfixUid, -1);
    const inst = await startPostfixInstance({
      mainCf: { daemon_directory: daemonDir, proxy_read_maps: 'proxy:texthash:$DIR/users', max_idle: '30s', proxymapd_metrics_listen: `${mdir}/pm-%p.sock` },
      masterCfEdits: { remove: ['proxymap', 'proxywrite'], append: PROXYMAPD_SERVICES },
      files: { users: 'alice ok\n' },
    });
    try {
      const table = `texthash:${inst.dir}/users`;
      for (const key of ['alice', 'alice', 'nobody']) await run(POSTMAP!, ['-c', inst.confDir, '-q', key, `proxy:${table}`]);
      const [p] = await waitFor('a proxymapd process', 5000, () => {
        const l = proxymapdPids(inst).filter((x) => x.service === 'proxymap');
        return l.length ? l : undefined;
      });
      assert.equal(p.user, postfixUid, 'runs as mail_owner');
      const sock = path.join(mdir, `pm-${p.pid}.sock`);
      const body = await new Promise<string>((resolve, reject) => {
        const req = http.get({ socketPath: sock, path: '/metrics', agent: false }, (res) => {
          let d = '';
          res.on('data', (c: Buffer) => (d += c.toString('utf8')));
          res.on('end', () => resolve(d));
        });
        req.on('error', reject);
      });
      const count = (status: string) =>
        Number(new RegExp(`^proxymapd_requests_total\\{service="proxymap",request="lookup",table="${table.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}",status="${status}"\\} (\\d+)$`, 'm').exec(body)?.[1]);
      assert.equal(count('OK'), 2);
      assert.equal(count('NOKEY'), 1);
      assert.doesNotMatch(inst.maillog(), MASTER_COMPLAINTS);
    } finally {
      await inst.stop();
      fs.rmSync(mdir, { recursive: true, force: true });
    }
  });

  it('daemon_timeout: a request that hangs ends the process with "fatal: watchdog timeout"', async () => {
    // A "database server" that accepts connections and never says anything: the mysql lookup hangs.
    const silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as net.AddressInfo).port;
    const inst = await startPostfixInstance({
      mainCf: {
        daemon_directory: daemonDir,
        proxy_read_maps: 'proxy:mysql:$DIR/hang.cf',
        daemon_timeout: '2s',
        max_idle: '30s',
      },
      masterCfEdits: { remove: ['proxymap', 'proxywrite'], append: PROXYMAPD_SERVICES },
      files: { 'hang.cf': `hosts = inet:127.0.0.1:${port}\nuser = u\npassword = p\ndbname = d\nquery = SELECT v FROM t WHERE k='%s'\n` },
    });
    try {
      const pid = await waitFor('a proxymapd process', 5000, () => proxymapdPids(inst).find((x) => x.service === 'proxymap')?.pid);
      const t0 = Date.now();
      // The client retries forever after losing its server; it is stopped once the watchdog has fired.
      const client = spawn(POSTMAP!, ['-c', inst.confDir, '-q', 'k', `proxy:mysql:${inst.dir}/hang.cf`], { stdio: 'ignore' });
      try {
        await waitFor('the process to exit', 10_000, () => isZombieOrGone(pid));
        assert.ok(Date.now() - t0 >= 1500, 'not before daemon_timeout');
        await waitFor('the fatal line', 5000, () => inst.maillog().includes(`postfix/proxymap[${pid}]: fatal: watchdog timeout`));
      } finally {
        client.kill('SIGKILL');
      }
    } finally {
      await inst.stop();
      silent.close();
    }
  });
});
