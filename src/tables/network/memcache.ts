/**
 * memcache: tables (Postfix 3.7 src/global/dict_memcache.c, memcache_table(5)).
 *
 *   memcache:/etc/postfix/x.cf    parameters from the file
 *   memcache:prefix               parameters prefix_memcache, prefix_backup, ... from main.cf
 *
 * Parameters: memcache (server, default inet:localhost:11211), backup (any
 * table, opened through the registry with the same open options), flags
 * and ttl (sent with `set`), key_format (a query template without quoting),
 * domain, data_size_limit, line_size_limit, max_try, retry_pause, timeout.
 *
 * Key preparation for lookup, update and delete (dict_memcache_valid_key):
 * an empty key, a key outside `domain`, a key that key_format cannot expand
 * and a memcache key with whitespace are skipped: lookups and deletes
 * silently, updates with Postfix's warning. Otherwise the key is folded to
 * lower case (unless opened without folding) and expanded.
 *
 * With a backup, memcache sits in front of it: a lookup that memcache does
 * not answer (not found, or an error) asks the backup with the original
 * key, returns the backup's answer (so a memcache outage is hidden) and
 * stores a found value in memcache; updates and deletes go to memcache and
 * then to the backup, whose status wins; first/next go to the backup.
 * Without a backup a memcache outage is "try again" (RETRY), never "not
 * found".
 *
 * Each command is tried up to max_try times with retry_pause seconds
 * between tries on a fresh connection; a connection that cannot be made is
 * not retried. Warnings are Postfix's, and like Postfix's only from the
 * second try on.
 *
 * Connections: Postfix has one per table and process. Here a table has a
 * small pool (MEMCACHE_POOL_SIZE) because one proxymapd serves many
 * clients; a connection carries one command at a time, request to reply,
 * so replies are never matched to the wrong request.
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { foldKey, lowercaseAscii, utf8Active } from '../core/casefold.js';
import { defaultRegistry, splitAtColon, type TableType } from '../core/registry.js';
import {
  DICT_ERR,
  NOT_FOUND,
  RETRY,
  TableOpenError,
  found,
  type Bytes,
  type DictErr,
  type LookupResult,
  type SequenceResult,
  type Table,
  type TableOpenOptions,
  type WriteResult,
} from '../core/table.js';
import { utf8LayerLookup } from '../core/utf8layer.js';
import { cString } from '../core/util.js';
import { CfParser } from '../dbcommon/cf.js';
import { parseDomainFilter } from '../dbcommon/common.js';
import type { DomainList } from '../dbcommon/domain.js';
import { TemplateContext } from '../dbcommon/template.js';
import { McPool, parseEndpoint, valueReplyLength, type McConn } from './memcache-proto.js';

/** Connections per table. */
export const MEMCACHE_POOL_SIZE = 4;

export interface MemcacheSettings {
  keyFormat: Bytes;
  timeout: number;
  ttl: number;
  flags: number;
  retryPause: number;
  maxTry: number;
  lineLimit: number;
  dataLimit: number;
  server: Bytes;
}

/** Read the parameters in dict_memcache_open()'s order (so the first bad one is the one reported). */
export function readMemcacheSettings(cf: CfParser): MemcacheSettings {
  return {
    keyFormat: cf.getStr('key_format', '%s', 0, 0),
    timeout: cf.getInt('timeout', 2, 0, 0),
    ttl: cf.getInt('ttl', 3600, 0, 0),
    flags: cf.getInt('flags', 0, 0, 0),
    retryPause: cf.getInt('retry_pause', 1, 1, 0),
    maxTry: cf.getInt('max_try', 2, 1, 0),
    lineLimit: cf.getInt('line_size_limit', 1024, 1, 0),
    dataLimit: cf.getInt('data_size_limit', 10240, 1, 0),
    server: cf.getStr('memcache', 'inet:localhost:11211', 0, 0),
  };
}

const SUCCESS: WriteResult = { status: 0, error: 0 };
const FAIL: WriteResult = { status: 1, error: 0 };
const WRITE_RETRY: WriteResult = { status: -1, error: DICT_ERR.RETRY };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A backup that could not be opened: what Postfix's surrogate does in a daemon. */
function surrogateBackup(type: Bytes, name: Bytes, reason: string, warn: (t: string) => void): Table {
  const say = () => warn(`${type}:${name} is unavailable. ${reason}`);
  return {
    type,
    name,
    implFlags: DICT_FLAG.PATTERN,
    lookup: () => (say(), RETRY),
    update: () => (say(), WRITE_RETRY),
    delete: () => (say(), WRITE_RETRY),
    sequence: () => (say(), { found: false, error: DICT_ERR.RETRY }),
  };
}

/** Why a key is skipped (dict_memcache_valid_key), or the prepared memcache key. */
type Prepared = { ok: true; key: Bytes } | { ok: false; why: string; error: DictErr };

class MemcacheTable implements Table {
  readonly type = 'memcache';
  readonly implFlags = DICT_FLAG.FIXED | DICT_FLAG.MULTI_WRITER;
  /** The key arrives unfolded in ASCII mode: the backup must see the original key. */
  readonly foldsKeys = true;
  readonly update?: (key: Bytes, value: Bytes, flags: number) => Promise<WriteResult>;
  readonly delete?: (key: Bytes, flags: number) => Promise<WriteResult>;
  private readonly utf8: boolean;
  private readonly label: Bytes;

  constructor(
    readonly name: Bytes,
    private readonly s: MemcacheSettings,
    private readonly pool: McPool,
    private readonly ctx: TemplateContext,
    private readonly domain: DomainList | null,
    private readonly backup: { spec: Bytes; table: Table } | null,
    private readonly cf: CfParser,
    private readonly opts: TableOpenOptions,
  ) {
    this.utf8 = utf8Active(opts.fold, opts.openFlags);
    this.label = `memcache:${name}`;
    if (opts.writable) {
      this.update = (k, v, f) => this.doUpdate(k, v, f);
      this.delete = (k, f) => this.doDelete(k, f);
    }
  }

  private warn(text: string): void {
    this.opts.warn(text);
  }

  /** dict_memcache_valid_key() with dict_memcache_prepare_key(). */
  private async prepare(name: Bytes): Promise<Prepared> {
    if (name === '') return { ok: false, why: 'empty lookup key', error: DICT_ERR.NONE };
    if (this.domain !== null) {
      const rc = await this.domain.check(name);
      if (rc === 0) return { ok: false, why: 'domain mismatch', error: DICT_ERR.NONE };
      if (rc < 0) return { ok: false, why: '', error: rc as DictErr };
    }
    const folded = this.opts.fold === 'none' ? name : lowercaseAscii(name);
    let key: Bytes | null = folded;
    if (this.s.keyFormat !== '%s') key = this.ctx.expandQuery(this.s.keyFormat, folded);
    if (key === null || key.length === 0) return { ok: false, why: 'empty lookup key expansion', error: DICT_ERR.NONE };
    if (/[ \t\n\v\f\r]/.test(key)) return { ok: false, why: 'name contains space', error: DICT_ERR.NONE };
    return { ok: true, key };
  }

  private ioWarning(errno: string | null): string {
    return errno !== null ? `database ${this.label}: I/O error: ${errno}` : `database ${this.label}: I/O error`;
  }

  /**
   * Run one command with Postfix's retry loop on one connection: up to
   * max_try tries, retry_pause seconds apart, the connection closed after
   * each failed try; no retry when the server cannot be reached.
   * `once` gives a final answer, or a warning (logged from the 2nd try on).
   */
  private attempt<T>(fail: T, once: (c: McConn) => Promise<{ done: T } | { warning: string }>): Promise<T> {
    if (this.pool.isClosed) return Promise.resolve(fail);
    return this.pool.use(async (c) => {
      for (let count = 0; count < this.s.maxTry; count++) {
        if (count > 0) await sleep(this.s.retryPause * 1000);
        if (this.pool.isClosed || !(await c.access())) break;
        const r = await once(c);
        if ('done' in r) return r.done;
        if (count > 0) this.warn(r.warning);
        c.recover();
      }
      return fail;
    });
  }

  /** dict_memcache_get(). */
  private get(key: Bytes): Promise<LookupResult> {
    return this.attempt<LookupResult>(RETRY, async (c) => {
      c.send(`get ${key}\r\n`);
      const r = await c.readLine(this.s.lineLimit);
      if (!r.ok) return { warning: this.ioWarning(r.errno) };
      const line = cString(r.line);
      if (line === 'END') return { done: NOT_FOUND };
      const todo = valueReplyLength(line);
      if (todo === null || todo < 0 || todo > this.s.dataLimit) {
        return { warning: `${this.name}: unexpected memcache server reply: ${line.slice(0, 30)}` };
      }
      const d = await c.readData(todo);
      if (!d.ok) return { warning: `${this.name}: EOF receiving memcache server reply` };
      const end = await c.readLine(this.s.lineLimit);
      if (!end.ok || cString(end.line) !== 'END') c.recover();
      return { done: found(cString(d.data)) };
    });
  }

  /** dict_memcache_set(). */
  private set(key: Bytes, value: Bytes): Promise<WriteResult> {
    const data = cString(value);
    if (data.length > this.s.dataLimit) {
      this.warn(
        `database ${this.label}: data for key ${key} is too long (data_size_limit=${this.s.dataLimit}) -- not stored`,
      );
      return Promise.resolve(FAIL);
    }
    return this.attempt<WriteResult>(WRITE_RETRY, async (c) => {
      c.send(`set ${key} ${this.s.flags} ${this.s.ttl} ${data.length}\r\n${data}\r\n`);
      const r = await c.readLine(this.s.lineLimit);
      if (!r.ok) return { warning: this.ioWarning(r.errno) };
      const line = cString(r.line);
      if (line === 'STORED') return { done: SUCCESS };
      return { warning: `database ${this.label}: update failed: ${line.slice(0, 30)}` };
    });
  }

  /** dict_memcache_del(). */
  private del(key: Bytes): Promise<WriteResult> {
    return this.attempt<WriteResult>(WRITE_RETRY, async (c) => {
      c.send(`delete ${key}\r\n`);
      const r = await c.readLine(this.s.lineLimit);
      if (!r.ok) return { warning: this.ioWarning(r.errno) };
      const line = cString(r.line);
      if (line === 'DELETED') return { done: SUCCESS };
      if (line === 'NOT_FOUND') return { done: FAIL };
      return { warning: `database ${this.label}: delete failed: ${line.slice(0, 30)}` };
    });
  }

  /** The key the backup sees: the original one, folded if the backup folds (its own dictionary layer). */
  private backupKey(table: Table, key: Bytes): Bytes {
    return table.implFlags & DICT_FLAG.FIXED ? foldKey(key, this.opts.fold) : key;
  }

  async lookup(key: Bytes, _flags: number): Promise<LookupResult> {
    const name = cString(key);
    const p = await this.prepare(name);
    if (!p.ok) return p.error === DICT_ERR.NONE ? NOT_FOUND : { found: false, error: p.error };
    const res = await this.get(p.key);
    if (res.found || !this.backup) return res;
    const b = this.backup;
    // Postfix calls the backup with its own flags only (backup->lookup(backup, name)): no request bits.
    const r = await utf8LayerLookup(b.table, b.spec, name, this.opts.fold, this.utf8, 0, this.opts.warn);
    if (r.found) await this.set(p.key, r.value);
    return r;
  }

  private async doUpdate(key: Bytes, value: Bytes, flags: number): Promise<WriteResult> {
    const name = cString(key);
    const p = await this.prepare(name);
    if (!p.ok) {
      if (p.error === DICT_ERR.NONE) this.warn(`${this.name}: skipping update for name "${name}": ${p.why}`);
      return FAIL;
    }
    let res = await this.set(p.key, value);
    const b = this.backup;
    if (b) res = b.table.update ? await b.table.update(this.backupKey(b.table, name), value, flags) : this.unsupported(b.spec, 'update');
    return res;
  }

  private async doDelete(key: Bytes, flags: number): Promise<WriteResult> {
    const name = cString(key);
    const p = await this.prepare(name);
    if (!p.ok) return p.error === DICT_ERR.NONE ? FAIL : { status: -1, error: p.error };
    let res = await this.del(p.key);
    const b = this.backup;
    if (b) res = b.table.delete ? await b.table.delete(this.backupKey(b.table, name), flags) : this.unsupported(b.spec, 'delete');
    return res;
  }

  /** A backup without the operation (Postfix: fatal in the process). */
  private unsupported(spec: Bytes, op: string): WriteResult {
    this.warn(`table ${spec}: ${op} operation is not supported`);
    return { status: -1, error: DICT_ERR.CONFIG };
  }

  async sequence(fn: 0 | 1, flags: number): Promise<SequenceResult> {
    const b = this.backup;
    if (!b) {
      this.warn(`database ${this.label}: first/next support requires backup database`);
      return { found: false, error: DICT_ERR.NONE };
    }
    if (!b.table.sequence) {
      this.warn(`table ${b.spec}: sequence operation is not supported`);
      return { found: false, error: DICT_ERR.CONFIG };
    }
    return b.table.sequence(fn, flags);
  }

  async changed(): Promise<boolean> {
    if (await this.cf.changed()) return true;
    return (await this.backup?.table.changed?.()) ?? false;
  }

  async close(): Promise<void> {
    this.pool.close();
    await this.domain?.close();
    await this.backup?.table.close?.();
  }
}

/** Open the `backup` table like dict_open(): a bad spec or unknown type fails the open; other failures give a surrogate. */
async function openBackup(spec: Bytes, opts: TableOpenOptions): Promise<{ spec: Bytes; table: Table }> {
  const parts = splitAtColon(spec);
  if (!parts || parts.type === '' || parts.name === '') {
    throw new TableOpenError(`open dictionary: expecting "type:name" form instead of "${spec}"`);
  }
  if (!defaultRegistry.get(parts.type)) throw new TableOpenError(`unsupported dictionary type: ${parts.type}`);
  try {
    return { spec, table: await defaultRegistry.open({ ...opts, type: parts.type, name: parts.name }) };
  } catch (e) {
    if (!(e instanceof TableOpenError)) throw e;
    return { spec, table: surrogateBackup(parts.type, parts.name, e.message, opts.warn) };
  }
}

export async function openMemcache(opts: TableOpenOptions): Promise<Table> {
  if (opts.openFlags & DICT_FLAG.NO_UNAUTH) {
    throw new TableOpenError(`memcache:${opts.name} map is not allowed for security-sensitive data`);
  }
  const cf = await CfParser.open(opts.name, opts);
  const s = readMemcacheSettings(cf);
  const endpoint = parseEndpoint(s.server);
  const backupSpec = cf.getStr('backup', null, 0, 0);
  const backup = backupSpec !== null ? await openBackup(backupSpec, opts) : null;
  let domain: DomainList | null = null;
  try {
    const ctx = new TemplateContext({ type: opts.type, name: opts.name }, opts.warn);
    ctx.parse(s.keyFormat, 'query');
    domain = await parseDomainFilter(cf, opts);
    const pool = new McPool(endpoint, s.timeout > 0 ? s.timeout * 1000 : 0, MEMCACHE_POOL_SIZE, opts.warn);
    return new MemcacheTable(opts.name, s, pool, ctx, domain, backup, cf, opts);
  } catch (e) {
    await domain?.close();
    await backup?.table.close?.();
    throw e;
  }
}

export const memcacheType: TableType = {
  name: 'memcache',
  open: openMemcache,
  implFlags: DICT_FLAG.FIXED | DICT_FLAG.MULTI_WRITER,
  writable: true,
  // the backup may fold keys while it loads (texthash): one instance per fold mode
  loadsSource: true,
};
