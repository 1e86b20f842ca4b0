/**
 * The lookup cache (proxymapd_cache_maps): answers of the tables an operator
 * lists, kept for a positive TTL (found) and an optional negative TTL (not
 * found), in one LRU shared by every cached table and bounded by entries
 * (proxymapd_cache_max_entries) and by bytes (proxymapd_cache_max_bytes).
 *
 * Postfix's proxymap has no cache: every lookup reaches the table. With a
 * table listed here, a change made to the backend directly (an SQL UPDATE,
 * an LDAP modify, a rebuilt file that is not reloaded) is seen only once
 * the entry's TTL has passed. What proxymapd itself sees change drops the
 * table's entries at once: an update or delete through proxywrite of this
 * process, a reload of the table (TableInstances.onReplaced), a purge.
 * Invalidation is per table, not per key: one key is cached in as many
 * variants as clients fold and flag it differently, so a write drops every
 * entry of its table rather than guess which variants it changed.
 *
 * A lookup that read the table while its entries were being dropped must not
 * put the old answer back: every drop advances the table's generation, and
 * an answer is stored only when the generation is the one its lookup started
 * under and no write to the table is in progress.
 *
 * Size accounting: an entry counts the length of its cache key (variant and
 * folded key) and of its value, one byte per character (the byte strings
 * proxymapd handles are one-byte strings in V8), plus ENTRY_OVERHEAD_BYTES
 * for the entry object, its list links, its slot in the table's Map and the
 * string headers. That is an estimate of the heap the entry holds, not an
 * exact measure: on Node 20 x64, 20,000 to 200,000 entries took 200 to 320
 * bytes each beyond their characters (the Map's table grows by doubling).
 * The strings are stored as copies of their own: a key or value that is a
 * slice of a larger string (a network reply, a file) would otherwise keep
 * all of that alive, uncounted.
 */
import { tokenizeQ } from '../util/braces.js';
import { intParam, parseTimeSeconds, type ParamSource } from '../tables/core/params.js';

/** TTLs of one cached table (ms); negTtlMs 0: "not found" answers are not cached. */
export interface CacheTtl {
  posTtlMs: number;
  negTtlMs: number;
}

/** Cached tables by "type:name" (without proxy:). */
export type CacheMaps = Map<string, CacheTtl>;

export interface CacheLimits {
  maxEntries: number;
  maxBytes: number;
}

export interface CacheOptions extends CacheLimits {
  maps: CacheMaps;
  /** clock in ms (default performance.now(): monotonic) */
  now?: () => number;
}

export interface CacheTableStats {
  table: string;
  hits: number;
  misses: number;
  entries: number;
  bytes: number;
  posTtlMs: number;
  negTtlMs: number;
}

export interface CacheStats {
  entries: number;
  bytes: number;
  maxEntries: number;
  maxBytes: number;
  tables: CacheTableStats[];
}

/** Estimated heap per entry beyond its strings: entry object, LRU links, Map slot (see the top of this file). */
export const ENTRY_OVERHEAD_BYTES = 256;

export const DEFAULT_CACHE_MAX_ENTRIES = 100_000;
export const DEFAULT_CACHE_MAX_BYTES = 64 * 1024 * 1024;

interface Entry {
  key: string;
  /** the answer: a value, or null for "not found" */
  value: string | null;
  expires: number;
  bytes: number;
  table: CachedTable;
  /** LRU links: prev is less recently used */
  prev: Entry | null;
  next: Entry | null;
}

/** One cached table: TTLs, counters, entries. The handler holds it for the length of one lookup. */
export class CachedTable {
  hits = 0;
  misses = 0;
  bytes = 0;
  readonly entries = new Map<string, Entry>();
  /** advanced by every drop of the entries; an answer read under an older generation is not stored */
  generation = 0;
  /** updates and deletes in progress */
  writes = 0;

  constructor(
    readonly spec: string,
    public ttl: CacheTtl,
  ) {}
}

export class LookupCache {
  private readonly tables = new Map<string, CachedTable>();
  private maxEntries: number;
  private maxBytes: number;
  private readonly now: () => number;
  private size = 0;
  private bytes = 0;
  /** least / most recently used */
  private head: Entry | null = null;
  private tail: Entry | null = null;

  constructor(opts: CacheOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.maxEntries = opts.maxEntries;
    this.maxBytes = opts.maxBytes;
    this.configure(opts.maps);
  }

  /**
   * Apply a (new) list of cached tables and limits: a table no longer listed
   * loses its entries and counters, a changed TTL applies to entries stored
   * from now on, smaller limits evict at once.
   */
  configure(maps: CacheMaps, limits?: CacheLimits): void {
    for (const [spec, t] of this.tables) {
      if (!maps.has(spec)) {
        this.drop(t);
        this.tables.delete(spec);
      }
    }
    for (const [spec, ttl] of maps) {
      const t = this.tables.get(spec);
      if (t) t.ttl = { ...ttl };
      else this.tables.set(spec, new CachedTable(spec, { ...ttl }));
    }
    if (limits) {
      this.maxEntries = limits.maxEntries;
      this.maxBytes = limits.maxBytes;
      this.evict();
    }
  }

  /** The cached table of a spec ("type:name"), or undefined when it is not cached. */
  table(spec: string): CachedTable | undefined {
    return this.tables.get(spec);
  }

  /** A cached answer: the value, null for "not found", undefined for a miss. Counts the hit or miss. */
  get(t: CachedTable, key: string): string | null | undefined {
    const e = t.entries.get(key);
    if (e === undefined) {
      t.misses++;
      return undefined;
    }
    if (e.expires <= this.now()) {
      this.remove(e);
      t.misses++;
      return undefined;
    }
    t.hits++;
    if (e !== this.tail) {
      this.unlink(e);
      this.append(e);
    }
    return e.value;
  }

  /**
   * Store an answer read by a lookup that started under `generation`
   * (t.generation when it began). Nothing is stored for a table no longer
   * cached, after a drop, while a write is in progress, for a "not found"
   * without a negative TTL, or for an entry larger than the byte bound.
   */
  set(t: CachedTable, key: string, value: string | null, generation: number): void {
    if (this.tables.get(t.spec) !== t || t.generation !== generation || t.writes > 0) return;
    const ttl = value === null ? t.ttl.negTtlMs : t.ttl.posTtlMs;
    if (ttl <= 0) return;
    const bytes = key.length + (value?.length ?? 0) + ENTRY_OVERHEAD_BYTES;
    if (bytes > this.maxBytes || this.maxEntries <= 0) return;
    const old = t.entries.get(key);
    if (old) this.remove(old);
    key = detach(key);
    if (value !== null) value = detach(value);
    const e: Entry = { key, value, expires: this.now() + ttl, bytes, table: t, prev: null, next: null };
    t.entries.set(key, e);
    t.bytes += bytes;
    this.size++;
    this.bytes += bytes;
    this.append(e);
    this.evict();
  }

  /** A write to the table begins: its entries go, and no answer is stored until it ends. */
  writeStarted(t: CachedTable): void {
    t.writes++;
    this.drop(t);
  }

  /** The write has completed (or failed); lookups that overlapped it store nothing (new generation). */
  writeDone(t: CachedTable): void {
    t.writes--;
    this.drop(t);
  }

  /** Drop a table's entries (the table was reloaded); returns how many there were. */
  invalidate(spec: string): number {
    const t = this.tables.get(spec);
    return t ? this.drop(t) : 0;
  }

  /** Drop every entry, or those of one table ("type:name", proxy: prefixes allowed); returns how many. */
  purge(spec?: string): number {
    if (spec === undefined) {
      let n = 0;
      for (const t of this.tables.values()) n += this.drop(t);
      return n;
    }
    while (spec.startsWith('proxy:')) spec = spec.slice('proxy:'.length);
    return this.invalidate(spec);
  }

  stats(): CacheStats {
    return {
      entries: this.size,
      bytes: this.bytes,
      maxEntries: this.maxEntries,
      maxBytes: this.maxBytes,
      tables: [...this.tables.values()].map((t) => ({
        table: t.spec,
        hits: t.hits,
        misses: t.misses,
        entries: t.entries.size,
        bytes: t.bytes,
        posTtlMs: t.ttl.posTtlMs,
        negTtlMs: t.ttl.negTtlMs,
      })),
    };
  }

  private drop(t: CachedTable): number {
    t.generation++;
    const n = t.entries.size;
    for (const e of t.entries.values()) {
      this.unlink(e);
      this.size--;
      this.bytes -= e.bytes;
    }
    t.entries.clear();
    t.bytes = 0;
    return n;
  }

  private evict(): void {
    while (this.head && (this.size > this.maxEntries || this.bytes > this.maxBytes)) this.remove(this.head);
  }

  private remove(e: Entry): void {
    this.unlink(e);
    e.table.entries.delete(e.key);
    e.table.bytes -= e.bytes;
    this.size--;
    this.bytes -= e.bytes;
  }

  private append(e: Entry): void {
    e.prev = this.tail;
    e.next = null;
    if (this.tail) this.tail.next = e;
    else this.head = e;
    this.tail = e;
  }

  private unlink(e: Entry): void {
    if (e.prev) e.prev.next = e.next;
    else this.head = e.next;
    if (e.next) e.next.prev = e.prev;
    else this.tail = e.prev;
    e.prev = e.next = null;
  }
}

/**
 * A copy of s that holds no other string: V8 answers slice() of a string of
 * 13 characters or more with a view into it, and a concatenation with a
 * rope of both parts; slicing a fresh concatenation makes it flat first.
 */
function detach(s: string): string {
  return s.length < 13 ? s : (s + ' ').slice(0, -1);
}

const PARAM = 'proxymapd_cache_maps';

/**
 * Parse proxymapd_cache_maps: entries `type:name=TTL[/NEGATIVE_TTL]`
 * separated by blanks or commas (commas and blanks inside `{...}` belong to
 * the name), TTLs in Postfix time units (s, m, h, d, w; default seconds),
 * proxy: prefixes stripped. The TTLs follow the last `=`, so a name may
 * contain `=` and `/`. A malformed entry is skipped with a warning.
 */
export function parseCacheMaps(value: string, warn: (text: string) => void): CacheMaps {
  const maps: CacheMaps = new Map();
  for (const token of tokenizeQ(value)) {
    const bad = (why: string) => warn(`${PARAM}: ignoring entry "${token}": ${why}`);
    const eq = token.lastIndexOf('=');
    if (eq < 0) {
      bad('expected type:name=ttl or type:name=ttl/negative_ttl');
      continue;
    }
    let spec = token.slice(0, eq);
    while (spec.startsWith('proxy:')) spec = spec.slice('proxy:'.length);
    const colon = spec.indexOf(':');
    if (colon <= 0 || colon === spec.length - 1) {
      bad('expected a table as type:name before the "="');
      continue;
    }
    const ttls = token.slice(eq + 1).split('/');
    if (ttls.length > 2) {
      bad('expected ttl or ttl/negative_ttl after the "="');
      continue;
    }
    const pos = parseTimeSeconds(ttls[0]!);
    const neg = ttls.length === 2 ? parseTimeSeconds(ttls[1]!) : 0;
    if (pos === undefined || neg === undefined) {
      bad('bad time value or unit (a number with an optional unit s, m, h, d or w)');
      continue;
    }
    if (pos === 0) {
      bad('the positive ttl must be greater than zero');
      continue;
    }
    if (maps.has(spec)) warn(`${PARAM}: table "${spec}" is listed more than once; using its last entry`);
    maps.set(spec, { posTtlMs: pos * 1000, negTtlMs: neg * 1000 });
  }
  return maps;
}

/** The cache settings of main.cf: the tables (possibly none) and the limits. */
export function cacheSettings(src: ParamSource): CacheLimits & { maps: CacheMaps } {
  return {
    maps: parseCacheMaps(src.param(PARAM) ?? '', src.warn),
    maxEntries: intParam(src, 'proxymapd_cache_max_entries', DEFAULT_CACHE_MAX_ENTRIES, { min: 1 }),
    maxBytes: intParam(src, 'proxymapd_cache_max_bytes', DEFAULT_CACHE_MAX_BYTES, { min: 1 }),
  };
}
