/**
 * redis: tables, a proxymapd extension (Postfix has no redis table, so
 * only `proxy:redis:...` through proxymapd works for Postfix programs).
 * Made for the writable caches several Postfix hosts should share
 * (address_verify_map, postscreen_cache_map through proxywrite) and for
 * read-only tables kept in Redis.
 *
 *   redis:/etc/postfix/x.cf    parameters from the file (see redis-cf.ts)
 *   redis:prefix               parameters prefix_hosts, ... from main.cf
 *
 * The key is folded by the server as for any FIXED table, then goes
 * through `domain` (keys outside it are not asked) and `key_format`; an
 * empty key or expansion is not found (an update of it is refused with a
 * warning, as the memcache table does).
 *
 *   lookup    GET (nil: not found; a value is cut at its first NUL, as Postfix's values are C strings)
 *   update    SET key value [EX ttl]
 *   delete    DEL (0 keys removed: not found)
 *   sequence  SCAN cursor MATCH PREFIX*SUFFIX COUNT 1000, then MGET of the
 *             batch; keys come back with PREFIX/SUFFIX stripped. Offered
 *             only when key_format is PREFIX%sSUFFIX. Never KEYS: a walk
 *             over millions of keys is many short commands. SCAN returns
 *             every key present for the whole walk, so deleting the
 *             current key while walking (the verify/postscreen cache
 *             cleanup) is safe; a key that vanished between SCAN and MGET
 *             is skipped. SCAN may return a key twice when Redis resizes
 *             its hash table during the walk: duplicates are dropped within
 *             a batch only (remembering every key of a walk over millions
 *             would cost more than the cleanup visiting a key twice, which
 *             is harmless: it finds the same entry, or none if deleted).
 *
 * Every error (no connection, timeout, an unexpected reply) answers
 * "try again" (DICT_ERR.RETRY), never "not found"; see redis-pool.ts.
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import type { TableType } from '../core/registry.js';
import {
  DICT_ERR,
  NOT_FOUND,
  RETRY,
  found,
  type Bytes,
  type DictErr,
  type LookupResult,
  type SequenceResult,
  type Table,
  type TableOpenOptions,
  type WriteResult,
} from '../core/table.js';
import { cString } from '../core/util.js';
import { CfParser } from '../dbcommon/cf.js';
import { parseDomainFilter } from '../dbcommon/common.js';
import type { DomainList } from '../dbcommon/domain.js';
import { poolLabel, poolSettings, sharedPool } from '../dbcommon/pool.js';
import { TemplateContext } from '../dbcommon/template.js';
import { poolKey } from '../sql/netsql.js';
import { keyAffixes, readRedisSettings, scanPattern, type RedisSettings } from './redis-cf.js';
import { REDIS_RETRY, RedisPool, loadRedisClient } from './redis-pool.js';

/** Keys asked of SCAN per call. */
export const SCAN_COUNT = 1000;

const SUCCESS: WriteResult = { status: 0, error: 0 };
const FAIL: WriteResult = { status: 1, error: 0 };
const WRITE_RETRY: WriteResult = { status: -1, error: DICT_ERR.RETRY };
const SEQ_RETRY: SequenceResult = { found: false, error: DICT_ERR.RETRY };
const SEQ_END: SequenceResult = { found: false, error: DICT_ERR.NONE };

const bytes = (s: Bytes) => Buffer.from(s, 'latin1');

/** The prepared Redis key, or why there is none. */
type Prepared = { ok: true; key: Buffer } | { ok: false; why: string; error: DictErr };

/** One walk of the table: the SCAN cursor and the entries of the current batch. */
interface Walk {
  cursor: string;
  /** SCAN answered cursor 0: the batch is the last one */
  last: boolean;
  batch: { key: Bytes; value: Bytes }[];
  pos: number;
}

class RedisTable implements Table {
  readonly type = 'redis';
  readonly implFlags = DICT_FLAG.FIXED | DICT_FLAG.MULTI_WRITER;
  readonly update?: (key: Bytes, value: Bytes, flags: number) => Promise<WriteResult>;
  readonly delete?: (key: Bytes, flags: number) => Promise<WriteResult>;
  readonly sequence?: (fn: 0 | 1, flags: number) => Promise<SequenceResult>;
  private readonly label: string;
  private walk: Walk | null = null;

  constructor(
    readonly name: Bytes,
    private readonly s: RedisSettings,
    private readonly pool: RedisPool,
    private readonly releasePool: () => void,
    private readonly ctx: TemplateContext,
    private readonly domain: DomainList | null,
    private readonly cf: CfParser,
    opts: TableOpenOptions,
  ) {
    this.label = `redis:${name}`;
    if (opts.writable) {
      this.update = (k, v) => this.set(k, v);
      this.delete = (k) => this.del(k);
    }
    const affixes = keyAffixes(s.keyFormat);
    if (affixes) {
      const pattern = bytes(scanPattern(affixes));
      this.sequence = (fn) => this.seq(fn, pattern, affixes.prefix.length, affixes.suffix.length);
    }
  }

  private prepareKey(name: Bytes): Prepared {
    const key = this.s.keyFormat === '%s' ? name : this.ctx.expandQuery(this.s.keyFormat, name);
    if (key === null || key === '') return { ok: false, why: 'empty lookup key expansion', error: DICT_ERR.NONE };
    return { ok: true, key: bytes(key) };
  }

  /** Domain filter and key_format; synchronous without a domain list (the hot path). */
  private prepare(key: Bytes): Prepared | Promise<Prepared> {
    const name = cString(key);
    if (name === '') return { ok: false, why: 'empty lookup key', error: DICT_ERR.NONE };
    if (this.domain === null) return this.prepareKey(name);
    return this.domain.check(name).then((rc): Prepared => {
      if (rc === 0) return { ok: false, why: 'domain mismatch', error: DICT_ERR.NONE };
      if (rc < 0) return { ok: false, why: '', error: rc as DictErr };
      return this.prepareKey(name);
    });
  }

  async lookup(key: Bytes, _flags: number): Promise<LookupResult> {
    const p = await this.prepare(key);
    if (!p.ok) return p.error === DICT_ERR.NONE ? NOT_FOUND : { found: false, error: p.error };
    const r = await this.pool.run(`${this.label}: lookup`, (c) => c.getBuffer(p.key));
    if (r === REDIS_RETRY) return RETRY;
    return r === null ? NOT_FOUND : found(cString(r.toString('latin1')));
  }

  private async set(key: Bytes, value: Bytes): Promise<WriteResult> {
    const p = await this.prepare(key);
    if (!p.ok) {
      if (p.error !== DICT_ERR.NONE) return { status: -1, error: p.error };
      this.pool.warn(`${this.label}: skipping update for name "${cString(key)}": ${p.why}`);
      return FAIL;
    }
    const v = bytes(cString(value));
    const ttl = this.s.ttl;
    const r = await this.pool.run(`${this.label}: update`, (c) => (ttl > 0 ? c.set(p.key, v, 'EX', ttl) : c.set(p.key, v)));
    return r === 'OK' ? SUCCESS : WRITE_RETRY;
  }

  private async del(key: Bytes): Promise<WriteResult> {
    const p = await this.prepare(key);
    if (!p.ok) return p.error === DICT_ERR.NONE ? FAIL : { status: -1, error: p.error };
    const r = await this.pool.run(`${this.label}: delete`, (c) => c.del(p.key));
    if (r === REDIS_RETRY) return WRITE_RETRY;
    return r > 0 ? SUCCESS : FAIL;
  }

  /** First (0) or next (1) entry; a next without a walk starts one. */
  private async seq(fn: 0 | 1, pattern: Buffer, prefixLen: number, suffixLen: number): Promise<SequenceResult> {
    if (fn === 0 || this.walk === null) this.walk = { cursor: '0', last: false, batch: [], pos: 0 };
    const w = this.walk;
    for (;;) {
      const e = w.batch[w.pos];
      if (e) {
        w.pos++;
        return { found: true, key: e.key, value: e.value };
      }
      if (w.last) {
        if (this.walk === w) this.walk = null;
        return SEQ_END;
      }
      // a failed SCAN or MGET leaves the walk where it was: the next request asks again
      const r = await this.pool.run(`${this.label}: sequence`, async (c) => {
        // callBuffer: the pattern goes as bytes (the typed scanBuffer takes a string, sent as UTF-8)
        const [cursor, keys] = (await c.callBuffer('SCAN', w.cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT)) as [Buffer, Buffer[]];
        const unique = [...new Map(keys.map((k) => [k.toString('latin1'), k])).values()];
        const values = unique.length > 0 ? await c.mgetBuffer(...unique) : [];
        return { cursor: cursor.toString('latin1'), unique, values };
      });
      if (r === REDIS_RETRY) return SEQ_RETRY;
      w.batch = [];
      w.pos = 0;
      r.unique.forEach((k, i) => {
        const v = r.values[i];
        if (v === null || v === undefined || k.length < prefixLen + suffixLen) return;
        w.batch.push({ key: k.subarray(prefixLen, k.length - suffixLen).toString('latin1'), value: cString(v.toString('latin1')) });
      });
      w.cursor = r.cursor;
      w.last = r.cursor === '0';
    }
  }

  changed(): Promise<boolean> {
    return this.cf.changed();
  }

  async close(): Promise<void> {
    this.releasePool();
    await this.domain?.close();
  }
}

export async function openRedis(opts: TableOpenOptions): Promise<Table> {
  const cf = await CfParser.open(opts.name, opts);
  const where = `${opts.type}:${opts.name}`;
  const s = readRedisSettings(cf, where, opts.warn);
  const Client = await loadRedisClient();
  const ctx = new TemplateContext({ type: opts.type, name: opts.name }, opts.warn);
  ctx.parse(s.keyFormat, 'query');
  const domain = await parseDomainFilter(cf, opts);
  const ps = poolSettings(opts.param, opts.warn);
  const c = s.connect;
  const key = poolKey('redis', {
    hosts: c.hosts.map((h) => [h.label, h.password ?? '']),
    sentinels: c.sentinels,
    master: c.sentinelMaster,
    sentinelUser: c.sentinelUser,
    sentinelPassword: c.sentinelPassword,
    user: c.user,
    password: c.password,
    database: c.database,
    tls: c.tlsFiles,
    timeout: c.timeoutMs,
    max: ps.maxConnections,
  });
  const hostLabels = c.sentinels.length > 0 ? c.sentinels.map((x) => `sentinel:${x.host}:${x.port}/${c.sentinelMaster}`) : c.hosts.map((h) => h.label);
  const label = poolLabel('redis', hostLabels, { database: String(c.database), user: c.user });
  const shared = sharedPool(key, () => new RedisPool(Client, c, ps.maxConnections, label, opts.warn));
  return new RedisTable(opts.name, s, shared.pool, shared.release, ctx, domain, cf, opts);
}

export const redisType: TableType = {
  name: 'redis',
  open: openRedis,
  implFlags: DICT_FLAG.FIXED | DICT_FLAG.MULTI_WRITER,
  writable: true,
};
