/**
 * socketmap: and tcp: through a running proxymapd against the real postmap:
 * for every key, `postmap -q - TYPE:NAME` (direct) and `postmap -q -
 * proxy:TYPE:NAME` (through proxymapd) against the same test server give
 * the same output, exit status, fatal message (less the errno text, which
 * is noise) and warnings (the direct postmap's; through the proxy:
 * postmap's own plus those in proxymapd's log). Then: a slow server, a
 * server that closes after every reply, and a server stopped and started
 * again under 20 concurrent clients.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { postmap, skipReason, startProxymapd, type Instance } from '../../interop/harness.js';
import { SOCKMAP_REPLIES, TCP_REPLIES, sockmapResponder, tcpResponder } from './fixtures.js';
import { lineFramer, netstringFramer, ns, startServer, type TestServer } from './servers.js';

const skip = skipReason();

interface Outcome {
  status: number;
  stdout: string;
  fatal?: string;
  warnings: string[];
}

const WARNING = /^\S+\[\d+\]: warning: (.*)$|^postmap: warning: (.*)$/;

function essence(stderr: string): { fatal?: string; warnings: string[] } {
  const lines = stderr.split('\n').filter(Boolean);
  const fatal = lines.find((l) => l.startsWith('postmap: fatal: '))?.slice(16).replace(/^(table \S+: query error).*/, '$1');
  const warnings = lines.map((l) => WARNING.exec(l)).filter((m) => m !== null).map((m) => m![1] ?? m![2]);
  return { fatal, warnings };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('socketmap and tcp through proxymapd vs direct postmap', { skip }, () => {
  let inst: Instance;
  let dir: string;
  let sockmap: TestServer;
  let unixSockmap: TestServer;
  let tcp: TestServer;
  let closer: TestServer;
  let slow: TestServer;
  let outSock: TestServer;
  let outTcp: TestServer;
  const tables: Record<string, string> = {};

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-net-'));
    const extraSock: Record<string, string> = { ...SOCKMAP_REPLIES, 'Foo@Example.COM': ns('OK mixed'), 'foo@example.com': ns('OK lower') };
    sockmap = await startServer(netstringFramer, (r) => extraSock[r.slice(r.indexOf(' ') + 1)] ?? sockmapResponder(r));
    unixSockmap = await startServer(netstringFramer, sockmapResponder, { path: path.join(dir, 'sm.sock') });
    tcp = await startServer(lineFramer, (r) => (r === 'get x%09y' ? '200 tab%09key\n' : tcpResponder(r)));
    closer = await startServer(netstringFramer, (r) => ({ reply: ns('OK ' + r), thenClose: true }));
    slow = await startServer(netstringFramer, (r) => (r.endsWith(' slow') ? { delayMs: 2500, reply: ns('OK late') } : ns('OK quick')));
    outSock = await startServer(netstringFramer, (r) => ns('OK value-' + r.slice(r.indexOf(' ') + 1)));
    outTcp = await startServer(lineFramer, (r) => `200 value-${r.slice(4)}\n`);
    tables.sockmap = `socketmap:inet:127.0.0.1:${sockmap.port}:mymap`;
    tables.unix = `socketmap:unix:${unixSockmap.path}:other`;
    tables.tcp = `tcp:127.0.0.1:${tcp.port}`;
    tables.closer = `socketmap:inet:127.0.0.1:${closer.port}:c`;
    tables.slow = `socketmap:inet:127.0.0.1:${slow.port}:s`;
    tables.outSock = `socketmap:inet:127.0.0.1:${outSock.port}:o`;
    tables.outTcp = `tcp:127.0.0.1:${outTcp.port}`;
    inst = await startProxymapd(
      { compatibility_level: '3.6', proxy_read_maps: Object.values(tables).map((t) => `proxy:${t}`).join(' ') },
      dir,
    );
  });
  after(async () => {
    await inst?.stop();
    for (const s of [sockmap, unixSockmap, tcp, closer, slow, outSock, outTcp]) await s?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function query(table: string, key: string): Promise<Outcome> {
    const r = await postmap(['-c', inst.conf, '-q', '-', table], Buffer.from(key + '\n', 'latin1'));
    return { status: r.status, stdout: r.stdout.toString('latin1'), ...essence(r.stderr) };
  }

  /** The direct lookup, and the same through proxymapd with proxymapd's warnings added. */
  async function both(table: string, key: string): Promise<[Outcome, Outcome]> {
    const direct = await query(table, key);
    const logBefore = inst.log().length;
    const proxied = await query(`proxy:${table}`, key);
    await sleep(30);
    const daemon = essence(inst.log().slice(logBefore)).warnings;
    const strip = (s: string) => s.replace(`proxy:${table}`, table);
    return [
      direct,
      { ...proxied, fatal: proxied.fatal && strip(proxied.fatal), warnings: [...proxied.warnings.map(strip), ...daemon] },
    ];
  }

  const SOCK_KEYS = [...Object.keys(SOCKMAP_REPLIES), 'Foo@Example.COM', 'unknown', 'sp ace', '\xff\xfe', ''];
  const TCP_KEYS = [...Object.keys(TCP_REPLIES), 'x\ty', 'unknown', 'sp ace%', '\xff', ''];

  for (const [which, keys] of [['sockmap', SOCK_KEYS], ['unix', ['ok', 'empty', 'temp', 'malformed']], ['tcp', TCP_KEYS]] as const) {
    it(`${which}: every key gives the same output, status, fatal error and warnings`, async () => {
      let warned = 0;
      let failed = 0;
      for (const key of keys) {
        const [direct, proxied] = await both(tables[which], key);
        if (direct.warnings.length > 0) warned++;
        if (direct.fatal) failed++;
        assert.deepEqual(
          { ...proxied, warnings: proxied.warnings.sort() },
          { ...direct, warnings: direct.warnings.sort() },
          `key ${JSON.stringify(key)}`,
        );
      }
      // the comparison saw warnings and failures, not only quiet answers
      assert.ok(warned > 0 && failed > 0, `${warned} keys warned, ${failed} failed`);
    });
  }

  it('after oversized and malformed replies the daemon keeps serving (same table and others)', async () => {
    for (const key of ['big', 'malformed', 'badlen']) {
      const [, p] = await both(tables.sockmap, key);
      assert.equal(p.status, 1);
    }
    const r = await query(`proxy:${tables.sockmap}`, 'ok');
    assert.equal(r.stdout, 'ok\tvalue with spaces\n');
    assert.equal((await query(`proxy:${tables.tcp}`, 'ok')).stdout, 'ok\tvalue with space\n');
  });

  it('a server that closes after every reply: every lookup through the proxy succeeds', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await query(`proxy:${tables.closer}`, `k${i}`);
      assert.deepEqual([r.status, r.stdout, r.warnings], [0, `k${i}\tc k${i}\n`, []]);
      await sleep(30);
    }
    assert.ok(closer.connections >= 5);
  });

  it('a slow reply holds up only its own lookup', async () => {
    const t0 = Date.now();
    const slowOne = query(`proxy:${tables.slow}`, 'slow');
    await sleep(200);
    const quick = await Promise.all(Array.from({ length: 5 }, (_, i) => query(`proxy:${tables.slow}`, `q${i}`)));
    const quickDone = Date.now() - t0;
    quick.forEach((r, i) => assert.equal(r.stdout, `q${i}\tquick\n`));
    assert.ok(quickDone < 2000, `quick lookups took ${quickDone} ms`);
    assert.equal((await slowOne).stdout, 'slow\tlate\n');
  });

  for (const [which, table, server] of [
    ['socketmap', () => tables.outSock, () => outSock],
    ['tcp', () => tables.outTcp, () => outTcp],
  ] as const) {
    it(`${which}: server stopped under 20 concurrent clients: RETRY during the outage, answers again after it, same proxymapd`, async () => {
      const pid = inst.pid;
      let state: 'up' | 'down' | 'again' = 'up';
      let stop = false;
      const seen: Array<{ during: string; key: string; r: Outcome }> = [];
      const clients = Array.from({ length: 20 }, async (_, i) => {
        const key = `k${i}`;
        let afterOk = 0;
        while (!stop || afterOk === 0) {
          const at = state;
          const r = await query(`proxy:${table()}`, key);
          const during = at === state ? at : `${at}->${state}`;
          seen.push({ during, key, r });
          if (during === 'again' && r.status === 0) afterOk++;
          if (stop && afterOk > 0) break;
        }
      });
      await sleep(1500);
      await server().stop();
      state = 'down';
      await sleep(which === 'tcp' ? 12_000 : 2000);
      await server().start();
      state = 'again';
      stop = true;
      await Promise.all(clients);
      for (const { during, key, r } of seen) {
        const right = r.status === 0 && r.stdout === `${key}\tvalue-${key}\n`;
        const retry = r.status === 1 && r.stdout === '' && r.fatal === `table proxy:${table()}: query error`;
        assert.ok(right || retry, `${during} ${key}: ${JSON.stringify(r)}`);
        if (during === 'up') assert.ok(right, `before the outage ${key}: ${JSON.stringify(r)}`);
        if (during === 'down') assert.ok(retry, `during the outage ${key}: ${JSON.stringify(r)}`);
      }
      assert.ok(seen.some((s) => s.during === 'down'), 'lookups ran during the outage');
      assert.equal(inst.pid, pid);
      process.kill(pid, 0);
    });
  }
});
