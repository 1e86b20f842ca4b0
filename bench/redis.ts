/**
 * The redis bench scenario's server side (`--scenario redis`): a throwaway
 * redis-server (test/tables/network/redis.ts, the tests' helper) loaded with
 * the same entries as the scenario's lmdb table, and the .cf files of the
 * redis: tables proxymapd serves from it over its UNIX socket:
 *
 *   lookups   `redis:DIR/redis-N.cf` (key_format %s), copies for the open timing
 *   updates   `redis:DIR/redis-verify.cf` with key_format = verify:%s (a
 *             verify(8) cache's prefix), written through proxywrite
 *
 * Postfix has no redis table: the comparison is redis vs lmdb, both through
 * the same proxymapd.
 */
import fs from 'node:fs';
import path from 'node:path';
import { startRedis, type RedisServer } from '../test/tables/network/redis.js';

const UPDATE_PREFIX = 'verify:';

export interface RedisScenario {
  /** `redis:CF` per open sample; the first is the measured table */
  lookupTables: string[];
  /** `redis:CF` written by the update runs */
  updateTable: string;
  /** the redis-server's pid, whose CPU the report shows apart from the rest of the machine's */
  pid(): number[];
  /** keys the update table has written (SCAN MATCH verify:*, counted on the server) */
  written(): Promise<number>;
  stop(): Promise<void>;
}

/** Start redis-server in dir, SET every `key value` line of `text` (a postmap source), write the .cf files. */
export async function startRedisScenario(dir: string, text: string, copies: number): Promise<RedisScenario> {
  const redis: RedisServer = await startRedis([], { dir: path.join(dir, 'redis') });
  try {
    const c = redis.client();
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i += 10_000) {
      const args: string[] = [];
      for (const l of lines.slice(i, i + 10_000)) {
        const sp = l.indexOf(' ');
        if (sp > 0) args.push(l.slice(0, sp), l.slice(sp + 1));
      }
      if (args.length) await c.mset(...args);
    }
    const pid = Number((await c.info('server')).match(/^process_id:(\d+)/m)?.[1]);
    const cf = (file: string, extra = '') => {
      const f = path.join(dir, file);
      fs.writeFileSync(f, `hosts = ${redis.unix}\n${extra}`, { mode: 0o644 });
      return `redis:${f}`;
    };
    return {
      lookupTables: Array.from({ length: copies }, (_, i) => cf(`redis-${i}.cf`)),
      updateTable: cf('redis-verify.cf', `key_format = ${UPDATE_PREFIX}%s\n`),
      pid: () => (Number.isFinite(pid) ? [pid] : []),
      async written() {
        let n = 0;
        let cursor = '0';
        do {
          const [next, keys] = await c.scan(cursor, 'MATCH', `${UPDATE_PREFIX}*`, 'COUNT', 1000);
          n += keys.length;
          cursor = next;
        } while (cursor !== '0');
        return n;
      },
      stop: () => redis.stop(),
    };
  } catch (e) {
    await redis.stop();
    throw e;
  }
}
