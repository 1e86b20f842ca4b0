/**
 * Reload without restart for the indexed types: cdb, lmdb, hash and btree
 * tables rebuilt under load by the real postmap (cdb: new file renamed into
 * place; lmdb: one write transaction in place; hash/btree: truncated and
 * rewritten in place under an exclusive lock) and by `proxymapd build`. No
 * lookup fails, every answer is from one version (old or new), the new
 * version comes into service, and a new version that cannot be opened
 * leaves the old one serving.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProxyConnection } from '../../src/client/client.js';
import { ProxyServer } from '../../src/server/server.js';
import { encodeRecord } from '../../src/protocol/codec.js';
import { openTable, tableTypeInfo } from '../../src/tables/index.js';
import { setLogSink } from '../../src/log.js';
import { skipUnlessPresent } from '../support/skip.js';

const POSTMAP = ['/usr/sbin/postmap', '/usr/bin/postmap'].find((p) => fs.existsSync(p));
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/main.js');
const skip = skipUnlessPresent(!(POSTMAP && fs.existsSync(CLI)) && 'postmap or dist/ missing');

const KEYS = 300;
/** postmap -q style (LOCK|UTF8_REQUEST|DUP_WARN) and daemon style (no LOCK) lookups. */
const FLAGS = [524353, 524288];
const lookupRequest = (table: string, key: string, flags: number) =>
  encodeRecord([['request', 'lookup'], ['table', table], ['flags', flags], ['key', key]]);

function version(v: number): string {
  let s = '';
  for (let i = 0; i < KEYS; i++) s += `key${i} v${v}-${i}${'.'.repeat(i % 37)}\n`;
  return s;
}

async function runCmd(cmd: string, args: string[]): Promise<void> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d));
  const [code] = (await once(child, 'close')) as [number];
  assert.equal(code, 0, `${cmd} ${args.join(' ')}: ${err}`);
}

async function withServer(tables: string[], fn: (sock: string, server: ProxyServer, logs: string[]) => Promise<void>) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-reload-ix-'));
  const logs: string[] = [];
  const old = setLogSink((l) => logs.push(l));
  const server = new ProxyServer({
    opener: openTable,
    authorized: { proxymap: new Set(tables), proxywrite: new Set() },
    smtputf8: true,
    param: () => undefined,
    loadsSource: (t) => tableTypeInfo(t)?.loadsSource ?? false,
    reload: { checkIntervalMs: 50, settleMs: 30, graceMs: 2000 },
  });
  const sock = path.join(dir, 'private', 'proxymap');
  await server.listenPath(sock, 'proxymap');
  try {
    await fn(sock, server, logs);
  } finally {
    await server.close();
    setLogSink(old);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const CASES: Array<{ type: string; builder: 'postmap' | 'proxymapd' }> = [
  { type: 'cdb', builder: 'postmap' },
  { type: 'lmdb', builder: 'postmap' },
  { type: 'hash', builder: 'postmap' },
  { type: 'btree', builder: 'postmap' },
  { type: 'cdb', builder: 'proxymapd' },
  { type: 'lmdb', builder: 'proxymapd' },
  { type: 'hash', builder: 'proxymapd' },
];

for (const { type, builder } of CASES) {
  test(`${type} rebuilt by ${builder} under load: every lookup succeeds, each answer is from one version`, { skip }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pmd-reload-${type}-`));
    const conf = path.join(dir, 'conf');
    fs.mkdirSync(conf);
    fs.writeFileSync(path.join(conf, 'main.cf'), 'compatibility_level = 3.6\n');
    fs.utimesSync(path.join(conf, 'main.cf'), 1_000_000_000, 1_000_000_000);
    const file = path.join(dir, 'table');
    const build = async (v: number) => {
      fs.writeFileSync(file, version(v));
      if (builder === 'postmap') await runCmd(POSTMAP!, ['-c', conf, `${type}:${file}`]);
      else await runCmd(process.execPath, [CLI, 'build', '-c', conf, `${type}:${file}`]);
    };
    await build(1);
    const table = `${type}:${file}`;
    try {
      await withServer([table], async (sock, _server, logs) => {
        let stop = false;
        let lookups = 0;
        let last = 0;
        const seen = new Set<number>();
        const client = async (n: number) => {
          const c = await ProxyConnection.connect(sock);
          for (let i = n; !stop; i += 7) {
            const k = i % KEYS;
            const r = await c.exchangeRaw(lookupRequest(table, `key${k}`, FLAGS[n % 2]));
            assert.equal(r[0][1], '0', `lookup key${k} failed: ${JSON.stringify(r)}; log: ${logs.slice(-6).join(" | ")}`);
            const m = /^v(\d+)-(\d+)(\.*)$/.exec(r[1][1]);
            assert.ok(m && Number(m[2]) === k && m[3].length === k % 37, `answer ${r[1][1]} for key${k}`);
            const v = Number(m[1]);
            assert.ok(v >= last - 1, `key${k} answered from version ${v} after version ${last} was seen`);
            last = Math.max(last, v);
            seen.add(v);
            lookups++;
          }
          c.close();
        };
        const clients = Promise.allSettled([1, 2, 3, 4].map(client));
        for (let v = 2; v <= 5; v++) {
          await new Promise((r) => setTimeout(r, 120));
          await build(v);
        }
        // The last version comes into service.
        const deadline = Date.now() + 5000;
        while (!seen.has(5) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        await new Promise((r) => setTimeout(r, 100));
        stop = true;
        for (const r of await clients) if (r.status === 'rejected') throw r.reason;
        assert.ok(lookups > 300, `lookups ran (${lookups})`);
        assert.ok(seen.has(5), `the last version is in service (saw ${[...seen].join(',')})`);
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('a new version that cannot be opened keeps the old one serving (cdb, lmdb, hash replaced by a broken file)', { skip }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-reload-bad-'));
  const conf = path.join(dir, 'conf');
  fs.mkdirSync(conf);
  fs.writeFileSync(path.join(conf, 'main.cf'), 'compatibility_level = 3.6\n');
  const types = ['cdb', 'lmdb', 'hash'];
  const tables = types.map((t) => `${t}:${path.join(dir, t)}`);
  for (const [i, t] of types.entries()) {
    fs.writeFileSync(path.join(dir, t), 'key old\n');
    await runCmd(POSTMAP!, ['-c', conf, tables[i]]);
  }
  try {
    await withServer(tables, async (sock, server, logs) => {
      const c = await ProxyConnection.connect(sock);
      const ask = async (table: string) => {
        const r = await c.exchangeRaw(lookupRequest(table, 'key', FLAGS[1]));
        return `${r[0][1]}:${r[1][1]}`;
      };
      for (const t of tables) assert.equal(await ask(t), '0:old');
      for (const t of types) {
        const suffix = t === 'hash' ? '.db' : `.${t}`;
        const tmp = path.join(dir, `broken${suffix}`);
        fs.writeFileSync(tmp, Buffer.alloc(t === 'cdb' ? 100 : 8192, 0x5a));
        fs.renameSync(tmp, path.join(dir, t + suffix));
      }
      await new Promise((r) => setTimeout(r, 400));
      for (const t of tables) assert.equal(await ask(t), '0:old', `${t}: the old version still answers`);
      for (const t of tables) {
        assert.ok(
          logs.some((l) => l.includes(`table ${t} has changed, but the new version cannot be used: `) && l.endsWith('; keeping the old version')),
          `${t}: warning\n${logs.join('\n')}`,
        );
      }
      assert.ok(server.instances.reloadFailures >= 3);
      // A good version is taken once it appears.
      for (const [i, t] of types.entries()) {
        fs.rmSync(path.join(dir, t + (t === 'hash' ? '.db' : `.${t}`))); // postmap will not rebuild over a broken file
        fs.writeFileSync(path.join(dir, t), 'key new\n');
        await runCmd(POSTMAP!, ['-c', conf, tables[i]]);
      }
      await new Promise((r) => setTimeout(r, 400));
      for (const t of tables) assert.equal(await ask(t), '0:new', t);
      c.close();
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
