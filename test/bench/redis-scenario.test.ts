/**
 * The redis bench scenario's server side (bench/redis.ts) with a real
 * redis-server and a standalone proxymapd: the tables it writes answer
 * what the scenario's postmap source says (found values and misses, checked
 * by the bench's own load generator), and the update table's writes, made
 * through proxywrite by the bench's update generator, are counted under
 * their key_format prefix.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { runLoad } from '../../bench/load.js';
import { startRedisScenario } from '../../bench/redis.js';
import { runUpdates } from '../../bench/updates.js';
import { skipReason, startProxymapd } from '../interop/harness.js';
import { redisSkipReason } from '../tables/network/redis.js';

test('bench redis scenario: lookups answer the source, updates are counted', { skip: skipReason() || redisSkipReason(), timeout: 120_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-bench-redis-'));
  fs.chmodSync(dir, 0o755);
  const keys = Array.from({ length: 25_000 }, (_, i) => `user${i}@d${i % 7}.example`);
  const text = keys.map((k, i) => `${k} user${i}@mailstore${i % 16}.example.net, second ${i}\n`).join('');
  const rs = await startRedisScenario(dir, text, 2);
  try {
    assert.equal(rs.lookupTables.length, 2);
    const inst = await startProxymapd({ proxy_read_maps: rs.lookupTables.map((t) => `proxy:${t}`).join(' '), proxy_write_maps: `proxy:${rs.updateTable}` }, dir);
    try {
      const asked = [keys[0]!, keys[24_999]!, keys[12_345]!, 'nobody@d1.example'];
      const expected = ['user0@mailstore0.example.net, second 0', 'user24999@mailstore7.example.net, second 24999', 'user12345@mailstore9.example.net, second 12345', null];
      for (const table of rs.lookupTables) {
        const r = await runLoad({ socketPath: inst.proxymap, table, keys: asked, expected, connections: 2, requests: 40, warmupMs: 0 });
        assert.equal(r.errors, 0, r.errorSamples.join('; '));
        assert.equal(r.lookups, 40);
      }
      assert.equal(await rs.written(), 0);
      const u = await runUpdates({ socketPath: inst.proxywrite, table: rs.updateTable, connections: 1, durationMs: 200, warmupMs: 0, keys: 7 });
      assert.equal(u.errors, 0, u.errorSamples.join('; '));
      assert.ok(u.updates >= 7, `only ${u.updates} updates`);
      assert.equal(await rs.written(), 7);
    } finally {
      await inst.stop();
    }
  } finally {
    await rs.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
