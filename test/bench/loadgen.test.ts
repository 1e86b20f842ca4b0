/**
 * The independent C load generator (bench/loadgen.c) against an in-process
 * server: it completes lookups, counts replies that match the plan, and
 * reports every reply that does not.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildLoadgen, runCLoad, writePlan } from '../../bench/cload.js';
import { startTestServer } from '../server/helpers.js';

test('C load generator: counts correct replies and reports wrong ones', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-loadgen-'));
  // The server runs in this process: the generator's blocking threads must not wait on this event loop.
  const ts = await startTestServer(['mem:a=1,b=2']);
  try {
    const bin = buildLoadgen(dir);
    const good = path.join(dir, 'good.plan');
    writePlan(good, ['a', 'b', 'zz'], ['1', '2', null]);
    const r = await runCLoad({ binary: bin, plan: good, socketPath: ts.proxymap, table: 'mem:a=1,b=2', connections: 3, durationMs: 300, warmupMs: 100 });
    assert.equal(r.errors, 0, r.errorSamples.join('; '));
    assert.ok(r.lookups > 50, `only ${r.lookups} lookups`);
    assert.ok(r.p50Us > 0 && r.p99Us >= r.p50Us);

    const bad = path.join(dir, 'bad.plan');
    writePlan(bad, ['a', 'b', 'zz'], ['1', 'wrong', null]);
    const w = await runCLoad({ binary: bin, plan: bad, socketPath: ts.proxymap, table: 'mem:a=1,b=2', connections: 1, durationMs: 200, warmupMs: 0 });
    assert.ok(w.errors > 0, 'a wrong value was not reported');
    assert.match(w.errorSamples[0] ?? '', /key b/);
  } finally {
    await ts.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
