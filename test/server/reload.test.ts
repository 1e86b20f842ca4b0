/**
 * Reload without restart: a table rewritten under load is swapped for its new
 * version; no lookup fails or sees a mix; a new version that cannot be opened
 * leaves the old one in service.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProxyConnection } from '../../src/client/client.js';
import { ProxyServer } from '../../src/server/server.js';
import { encodeRecord } from '../../src/protocol/codec.js';
import { openTable, tableTypeInfo } from '../../src/tables/index.js';
import { setLogSink } from '../../src/log.js';

const KEYS = 200;
const lookupRequest = (table: string, key: string) =>
  encodeRecord([['request', 'lookup'], ['table', table], ['flags', 524353], ['key', key]]);
function version(v: number): string {
  let s = '';
  for (let i = 0; i < KEYS; i++) s += `key${i} v${v}-${i}\n`;
  return s;
}

async function withServer(tables: string[], fn: (sock: string, server: ProxyServer, logs: string[]) => Promise<void>) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-reload-'));
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

test('texthash rewritten in place under load: every lookup succeeds, each answer is from one version', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-reload-t-'));
  const file = path.join(dir, 'table');
  fs.writeFileSync(file, version(1));
  const table = `texthash:${file}`;
  try {
    await withServer([table], async (sock, server) => {
      let stop = false;
      const seen = new Set<number>();
      let lookups = 0;
      const client = async (n: number) => {
        const c = await ProxyConnection.connect(sock);
        for (let i = n; !stop; i += 7) {
          const k = i % KEYS;
          const r = await c.exchangeRaw(lookupRequest(table, `key${k}`));
          assert.equal(r[0][1], '0', `lookup key${k} failed: ${JSON.stringify(r)}`);
          const m = /^v(\d+)-(\d+)$/.exec(r[1][1]);
          assert.ok(m && Number(m[2]) === k, `answer ${r[1][1]} for key${k}`);
          seen.add(Number(m[1]));
          lookups++;
        }
        c.close();
      };
      // Settle every client at once, so a failing assertion is reported by this test, not as an unhandled rejection.
      const clients = Promise.allSettled([1, 2, 3, 4].map(client));
      // Rewrite in place, in two writes with a pause between (a slow editor), several times.
      for (let v = 2; v <= 6; v++) {
        await new Promise((r) => setTimeout(r, 150));
        const text = version(v);
        const fd = fs.openSync(file, 'w');
        fs.writeSync(fd, text.slice(0, text.length / 2));
        await new Promise((r) => setTimeout(r, 5));
        fs.writeSync(fd, text.slice(text.length / 2));
        fs.closeSync(fd);
      }
      await new Promise((r) => setTimeout(r, 400));
      stop = true;
      for (const r of await clients) if (r.status === 'rejected') throw r.reason;
      assert.ok(lookups > 500, `lookups ran (${lookups})`);
      assert.ok(server.instances.reloads >= 1, 'reloaded');
      assert.ok(seen.has(6), `the last version is in service (saw ${[...seen].join(',')})`);
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a new version that cannot be opened keeps the old one, with a warning; a later good one is loaded', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-reload-b-'));
  const file = path.join(dir, 'rules');
  fs.writeFileSync(file, '1.2.3.0/24 old\n');
  const table = `cidr:${file}`;
  try {
    await withServer([table], async (sock, server, logs) => {
      const c = await ProxyConnection.connect(sock);
      const ask = async () => (await c.exchangeRaw(lookupRequest(table, '1.2.3.4')))[1][1];
      assert.equal(await ask(), 'old');
      fs.rmSync(file);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await ask(), 'old', 'old version still answers');
      assert.ok(logs.some((l) => /table cidr:\S+ has changed, but the new version cannot be used: open \S+: No such file or directory; keeping the old version/.test(l)), logs.join('\n'));
      fs.writeFileSync(file, '1.2.3.0/24 new\n');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await ask(), 'new');
      assert.ok(logs.some((l) => /table cidr:\S+ has changed -- reloaded/.test(l)));
      assert.ok(server.instances.reloadFailures >= 1);
      c.close();
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
