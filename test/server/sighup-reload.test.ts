/**
 * Configuration reload (src/server/reload.ts): in-process against a server
 * with test-double tables (withdrawn tables close after the grace period,
 * a request in flight finishes, a broken main.cf changes nothing), and the
 * acceptance test: a `proxymapd serve` child, 20 clients querying two
 * tables in a loop while main.cf swaps their approvals under SIGHUP.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProxyConnection } from '../../src/client/client.js';
import type { AttrRecord } from '../../src/protocol/codec.js';
import { Config } from '../../src/config/params.js';
import { setLogSink } from '../../src/log.js';
import { ProxyServer } from '../../src/server/server.js';
import { ConfigReloader, type LiveConfig } from '../../src/server/reload.js';
import type { Table, TableOpenOptions } from '../../src/tables/core/table.js';
import { b } from '../support/bytes.js';
import { CLI, startProxymapd, writeMainCf, writeTable } from '../interop/harness.js';
import { testOpener } from './helpers.js';

const lookup = (table: string, key: string) => b(`request|lookup|table|${table}|flags|0|key|${key}||`);
const statusOf = (rec: AttrRecord) => rec.find(([k]) => k === 'status')?.[1];

/** Wait until cond() holds, checking at every turn of the event loop that has I/O to do (never a fixed sleep). */
async function until(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Fixture {
  server: ProxyServer;
  reloader: ConfigReloader;
  live: LiveConfig;
  conf: string;
  proxymap: string;
  proxywrite: string;
  logs: string[];
  closed: string[];
  closeWaiters: Array<() => void>;
  done(): Promise<void>;
}

async function fixture(params: Record<string, string>): Promise<Fixture> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-hup-'));
  const conf = path.join(dir, 'conf');
  writeMainCf(conf, params);
  const logs: string[] = [];
  const oldSink = setLogSink((line) => logs.push(line));
  const closed: string[] = [];
  const closeWaiters: Array<() => void> = [];
  const opener = (o: TableOpenOptions): Table => {
    const t = testOpener(o);
    return {
      ...t,
      close: () => {
        closed.push(`${o.type}:${o.name}`);
        for (const w of closeWaiters.splice(0)) w();
      },
    };
  };
  const load = () => Config.load(conf, { processName: 'proxymapd' });
  const live: LiveConfig = { config: load() };
  const server = new ProxyServer({
    opener,
    authorized: { proxymap: new Set(['mem:a=1', 'slow:300']), proxywrite: new Set(['mem:w=1']) },
    smtputf8: true,
    param: (n) => live.config.lookup(n),
    reload: { graceMs: 0, checkIntervalMs: 0 },
  });
  const proxymap = path.join(dir, 'private', 'proxymap');
  const proxywrite = path.join(dir, 'private', 'proxywrite');
  await server.listenPath(proxymap, 'proxymap');
  await server.listenPath(proxywrite, 'proxywrite');
  const reloader = new ConfigReloader(server, live, load);
  return {
    server, reloader, live, conf, proxymap, proxywrite, logs, closed, closeWaiters,
    async done() {
      await server.close();
      setLogSink(oldSink);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

test('reload: new approvals apply, withdrawn tables are denied and closed, requests in flight finish', async () => {
  const f = await fixture({ proxy_read_maps: 'proxy:mem:a=1 proxy:slow:300', proxy_write_maps: 'proxy:mem:w=1', my_param: 'old' });
  try {
    const c = await ProxyConnection.connect(f.proxymap);
    const w = await ProxyConnection.connect(f.proxywrite);
    assert.deepEqual(await c.exchangeRaw(lookup('mem:a=1', 'a')), [['status', '0'], ['value', '1']]);
    assert.deepEqual(await w.exchangeRaw(lookup('mem:w=1', 'w')), [['status', '0'], ['value', '1']]);
    assert.deepEqual(await c.exchangeRaw(lookup('mem:b=2', 'b')), [['status', '4'], ['value', '']]);
    // a slow lookup in flight across the reload that withdraws its table
    const c2 = await ProxyConnection.connect(f.proxymap);
    const inFlight = c2.exchangeRaw(lookup('slow:300', 'k'));
    await until(() => f.server.instances.list().some((i) => i.spec === 'slow:300'), 'the slow table to open');
    const seen: string[] = [];
    f.reloader.onReload.push((cfg) => seen.push(cfg.get('my_param')));
    writeMainCf(f.conf, { proxy_read_maps: 'proxy:mem:b=2', proxy_write_maps: 'proxy:mem:w=1', my_param: 'new', proxymapd_table_check_interval: '5s' });
    const closing = new Promise<void>((r) => f.closeWaiters.push(r));
    assert.equal(f.reloader.reload(), true);
    assert.deepEqual(seen, ['new']);
    assert.equal(f.live.config.get('my_param'), 'new');
    assert.deepEqual(await c.exchangeRaw(lookup('mem:a=1', 'a')), [['status', '4'], ['value', '']]);
    assert.deepEqual(await c.exchangeRaw(lookup('mem:b=2', 'b')), [['status', '0'], ['value', '2']]);
    // the write table stays approved and open: the same instance answers
    assert.deepEqual(await w.exchangeRaw(lookup('mem:w=1', 'w')), [['status', '0'], ['value', '1']]);
    assert.deepEqual(await inFlight, [['status', '0'], ['value', 'slow:k']]);
    await closing;
    await until(() => f.closed.length === 2, 'both withdrawn tables to close');
    assert.deepEqual(f.closed.sort(), ['mem:a=1', 'slow:300']);
    assert.deepEqual(f.server.instances.list().map((i) => `${i.writable ? 'w' : 'r'} ${i.spec}`).sort(), ['r mem:b=2', 'w mem:w=1']);
    assert.ok(f.logs.some((l) => /: closing 2 table instances no longer approved$/.test(l)), f.logs.join('\n'));
    assert.ok(f.logs.some((l) => /: reloaded configuration: 1 read, 1 write tables approved$/.test(l)), f.logs.join('\n'));
    assert.deepEqual(f.reloader.status().reloads, 1);
    // the connections were kept
    assert.equal(c.closed, false);
    assert.equal(w.closed, false);
    c.close();
    c2.close();
    w.close();
  } finally {
    await f.done();
  }
});

test('reload: a main.cf that does not parse, or does not expand, keeps the old configuration', async () => {
  const f = await fixture({ proxy_read_maps: 'proxy:mem:a=1', proxy_write_maps: '' });
  try {
    const c = await ProxyConnection.connect(f.proxymap);
    assert.deepEqual(await c.exchangeRaw(lookup('mem:a=1', 'a')), [['status', '0'], ['value', '1']]);
    const mainCf = path.join(f.conf, 'main.cf');
    fs.writeFileSync(mainCf, 'proxy_read_maps = proxy:mem:b=2\nthis line has no equals sign\n');
    const before = f.live.config;
    assert.equal(f.reloader.reload(), false);
    assert.equal(f.live.config, before);
    assert.ok(f.logs.some((l) => /error: cannot reload configuration: .*main\.cf, line 2: .*; keeping the current configuration$/.test(l)), f.logs.join('\n'));
    // an expansion that fails (unbalanced ${...}) in the authorization list
    fs.writeFileSync(mainCf, 'proxy_read_maps = proxy:mem:b=2 ${foo\n');
    assert.equal(f.reloader.reload(), false);
    assert.deepEqual(await c.exchangeRaw(lookup('mem:a=1', 'a')), [['status', '0'], ['value', '1']]);
    assert.deepEqual(await c.exchangeRaw(lookup('mem:b=2', 'b')), [['status', '4'], ['value', '']]);
    const st = f.reloader.status();
    assert.equal(st.failures, 2);
    assert.equal(st.reloads, 0);
    assert.ok(st.lastError && st.lastFailure);
    assert.deepEqual(f.closed, []);
    // a parameter that needs a restart is named
    writeMainCf(f.conf, { proxy_read_maps: 'proxy:mem:a=1', proxymap_service_name: 'other' });
    assert.equal(f.reloader.reload(), true);
    assert.ok(f.logs.some((l) => /warning: parameter proxymap_service_name has changed; restart proxymapd to apply it$/.test(l)), f.logs.join('\n'));
    c.close();
  } finally {
    await f.done();
  }
});

test('SIGHUP under load from 20 clients: nothing fails, approvals swap, a broken main.cf keeps the old one', async (t) => {
  if (!fs.existsSync(CLI)) return t.skip('dist/ is not built (npm run build)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-hup-load-'));
  const tableB = path.join(dir, 'b.txt');
  writeTable(tableB, 'b two\n');
  const A = 'inline:{a=one}';
  const B = `texthash:${tableB}`;
  const pm = await startProxymapd({ proxy_read_maps: `proxy:${A}`, proxy_write_maps: '' }, dir);
  type Phase = 'before' | 'reloading' | 'after' | 'broken' | 'kept';
  let phase: Phase = 'before';
  let stop = false;
  const results: Array<{ table: 'A' | 'B'; status: string | undefined; start: Phase; end: Phase }> = [];
  const errors: string[] = [];
  const clients = await Promise.all(Array.from({ length: 20 }, () => ProxyConnection.connect(pm.proxymap)));
  const loops = clients.map(async (c, i) => {
    for (let n = i; !stop; n++) {
      const table = n % 2 === 0 ? 'A' : 'B';
      const start = phase;
      try {
        const rec = await c.exchangeRaw(table === 'A' ? lookup(A, 'a') : lookup(B, 'b'));
        results.push({ table, status: statusOf(rec), start, end: phase });
      } catch (e) {
        errors.push(String(e));
        return;
      }
    }
  });
  const count = (p: Phase) => results.filter((r) => r.start === p && r.end === p).length;
  try {
    await until(() => count('before') >= 400, 'requests before the reload');
    writeMainCf(pm.conf, { queue_directory: pm.queue, proxy_read_maps: `proxy:${B}`, proxy_write_maps: '' });
    phase = 'reloading';
    const seenAt = pm.log().length;
    process.kill(pm.pid, 'SIGHUP');
    await until(() => pm.log().slice(seenAt).includes('reloaded configuration: 1 read, 0 write tables approved'), 'the reload');
    phase = 'after';
    await until(() => count('after') >= 400, 'requests after the reload');
    fs.appendFileSync(path.join(pm.conf, 'main.cf'), 'this line has no equals sign\n');
    phase = 'broken';
    const brokenAt = pm.log().length;
    process.kill(pm.pid, 'SIGHUP');
    await until(() => /error: cannot reload configuration: .*; keeping the current configuration/.test(pm.log().slice(brokenAt)), 'the failed reload');
    phase = 'kept';
    await until(() => count('kept') >= 400, 'requests after the failed reload');
  } finally {
    stop = true;
    await Promise.all(loops);
  }
  try {
    assert.deepEqual(errors, []);
    for (const c of clients) assert.equal(c.closed, false);
    // never anything but found or denied: no RETRY, no connection lost
    assert.deepEqual([...new Set(results.map((r) => r.status))].sort(), ['0', '4']);
    const answers = (p: Phase, table: 'A' | 'B') => [...new Set(results.filter((r) => r.start === p && r.end === p && r.table === table).map((r) => r.status))];
    assert.deepEqual(answers('before', 'A'), ['0']);
    assert.deepEqual(answers('before', 'B'), ['4']);
    assert.deepEqual(answers('after', 'A'), ['4']);
    assert.deepEqual(answers('after', 'B'), ['0']);
    assert.deepEqual(answers('kept', 'A'), ['4']);
    assert.deepEqual(answers('kept', 'B'), ['0']);
    assert.match(pm.log(), /SIGHUP: reloading configuration/);
    for (const c of clients) c.close();
  } finally {
    assert.equal(await pm.stop(), 0, pm.log());
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
