/**
 * redis: with Redis Sentinel: one master, one replica, one redis-sentinel
 * (quorum 1, down after 1 s). The table knows only the Sentinel and the
 * master's name. The master is killed under concurrent lookups: every
 * answer is the right value or RETRY (never not found for an existing
 * key), and after Sentinel promotes the replica the table answers and
 * writes again through the new master, without being reopened.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { DICT_ERR, openTable, type Table } from '../../../src/tables/index.js';
import { openOptions } from '../conformance.js';
import { sentinelSkipReason, startRedis, startSentinel, until, type RedisServer, type Sentinel } from './redis.js';

const skip = sentinelSkipReason();
const MASTER = 'pmdmaster';

describe('redis with Sentinel: failover of the master', { skip, timeout: 180_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-sentinel-'));
  const servers: RedisServer[] = [];
  let sentinel: Sentinel | undefined;
  let sq: Redis | undefined;
  let table: Table | undefined;
  after(async () => {
    await table?.close?.();
    sq?.disconnect();
    await sentinel?.stop();
    for (const s of servers) await s.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lookups answer the right value or RETRY during the switch, and the right value after it', async () => {
    const master = await startRedis([], { dir: path.join(dir, 'm') });
    servers.push(master);
    const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)], { dir: path.join(dir, 'r') });
    servers.push(replica);
    const m = master.client();
    const keys = Array.from({ length: 50 }, (_, i) => `s${i}`);
    for (const k of keys) await m.set(k, `val-${k}`);
    await until('the replica to sync', 30_000, async () => ((await m.call('WAIT', '1', '1000')) as number) >= 1);
    sentinel = await startSentinel(dir, MASTER, master.port);
    sq = new Redis({ host: '127.0.0.1', port: sentinel.port, maxRetriesPerRequest: 1 });
    sq.on('error', () => undefined);
    await until('Sentinel to see the replica', 30_000, async () => ((await sq!.call('SENTINEL', 'REPLICAS', MASTER)) as unknown[]).length >= 1);

    const cf = path.join(dir, 'sentinel.cf');
    fs.writeFileSync(cf, `sentinels = 127.0.0.1:${sentinel.port}\nsentinel_master = ${MASTER}\ntimeout = 1\n`);
    const warnings: string[] = [];
    table = await openTable(openOptions('redis', cf, { fold: 'ascii', writable: true }, warnings));
    const t = table;
    assert.deepEqual(await t.lookup('s1', 0), { found: true, value: 'val-s1' });

    const tally = { found: 0, retry: 0, wrong: [] as string[] };
    let stop = false;
    const worker = async (w: number) => {
      for (let i = 0; !stop; i++) {
        const k = keys[(i * 7 + w) % keys.length]!;
        const a = await t.lookup(k, 0);
        if (a.found && a.value === `val-${k}`) tally.found++;
        else if (!a.found && a.error === DICT_ERR.RETRY) tally.retry++;
        else tally.wrong.push(`${k}: ${JSON.stringify(a)}`);
        await new Promise((res) => setTimeout(res, 2));
      }
    };
    const workers = Array.from({ length: 6 }, (_, w) => worker(w));
    await until('lookups to run', 10_000, () => tally.found > 100);
    await master.halt();
    await until('Sentinel to promote the replica', 60_000, async () => {
      const addr = (await sq!.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER)) as string[] | null;
      return addr?.[1] === String(replica.port);
    });
    const foundAtSwitch = tally.found;
    await until('lookups through the new master', 30_000, () => tally.found > foundAtSwitch + 200);
    stop = true;
    await Promise.all(workers);
    assert.deepEqual(tally.wrong, []);
    assert.ok(tally.retry > 0, 'the outage was seen');
    // writes go to the new master
    assert.deepEqual(await t.update!('after-failover', 'yes', 0), { status: 0, error: 0 });
    assert.equal(await replica.client().get('after-failover'), 'yes');
    assert.deepEqual(await t.lookup('after-failover', 0), { found: true, value: 'yes' });
  });
});
