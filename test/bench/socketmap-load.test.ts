/**
 * The socketmap load generators of the bench (bench/socketmap-load.ts and
 * bench/loadgen.c -m) against an in-process socketmap front-end, over TCP
 * and a UNIX socket: they complete lookups, count replies that match the
 * expected answers, and report every reply that does not (a wrong value, a
 * found key expected missing).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildLoadgen, runCLoad, writePlan } from '../../bench/cload.js';
import { runSocketmapLoad } from '../../bench/socketmap-load.js';
import { SocketmapServer } from '../../src/server/socketmap-server.js';
import { startTestServer } from '../server/helpers.js';
import { settings } from '../server/socketmap-helpers.js';

const TABLE = 'mem:a=1,b=2';
const KEYS = ['a', 'b', 'zz'];

test('socketmap load generators: count correct replies and report wrong ones', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-smload-'));
  const ts = await startTestServer([TABLE]);
  const unix = path.join(dir, 'sm.sock');
  const sm = new SocketmapServer(ts.server, settings({ t: TABLE }, { listen: [{ kind: 'inet', host: '127.0.0.1', port: 0 }, { kind: 'unix', path: unix }] }));
  try {
    const where = await sm.listen();
    const inet = where.find((w) => w.startsWith('inet:'))!;
    const port = Number(inet.slice(inet.lastIndexOf(':') + 1));
    for (const address of [{ host: '127.0.0.1', port }, { path: unix }]) {
      const r = await runSocketmapLoad({ address, name: 't', keys: KEYS, expected: ['1', '2', null], connections: 3, durationMs: 300, warmupMs: 100 });
      assert.equal(r.errors, 0, r.errorSamples.join('; '));
      assert.ok(r.lookups > 50, `only ${r.lookups} lookups`);
      assert.ok(r.p50Us > 0 && r.p99Us >= r.p50Us);
      const v = await runSocketmapLoad({ address, name: 't', keys: KEYS, expected: ['1', '2', null], connections: 2, requests: 30 });
      assert.equal(v.lookups, 30);
      assert.equal(v.errors, 0, v.errorSamples.join('; '));
      const w = await runSocketmapLoad({ address, name: 't', keys: KEYS, expected: ['1', 'wrong', '3'], connections: 1, requests: 30 });
      assert.equal(w.errors, 20, 'every wrong value and every unexpected not-found is reported');
      assert.match(w.errorSamples.join('\n'), /key "b": reply "OK 2"/);
      assert.match(w.errorSamples.join('\n'), /key "zz": reply "NOTFOUND "/);
    }

    // The C generator runs in its own process: its blocking threads do not wait on this event loop.
    const bin = buildLoadgen(dir);
    const good = path.join(dir, 'good.plan');
    writePlan(good, KEYS, ['1', '2', null]);
    const bad = path.join(dir, 'bad.plan');
    writePlan(bad, KEYS, ['1', 'wrong', null]);
    for (const socketPath of [inet, unix]) {
      const r = await runCLoad({ binary: bin, plan: good, socketPath, table: TABLE, socketmap: 't', connections: 3, durationMs: 300, warmupMs: 100 });
      assert.equal(r.errors, 0, r.errorSamples.join('; '));
      assert.ok(r.lookups > 50, `only ${r.lookups} lookups`);
      const w = await runCLoad({ binary: bin, plan: bad, socketPath, table: TABLE, socketmap: 't', connections: 1, durationMs: 200, warmupMs: 0 });
      assert.ok(w.errors > 0, 'a wrong value was not reported');
      assert.match(w.errorSamples[0] ?? '', /key b/);
    }
  } finally {
    await sm.close();
    await ts.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
