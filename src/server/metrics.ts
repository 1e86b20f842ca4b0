/**
 * Prometheus metrics of a proxymapd process (Postfix's proxymap has none).
 *
 * Per request the connection calls record() with the service, request kind,
 * table as received, reply status and latency: a few additions on plain
 * numbers in a record per table (the last table's record is kept at hand,
 * as consecutive requests nearly always name the same table). Everything
 * else (open tables, pools, cache, reloads, writes) is read from its owner
 * when /metrics is scraped. prom-client formats the text: each metric here
 * is a small object registered on a private prom-client Registry whose get()
 * builds the values at scrape time, so nothing of prom-client runs per
 * request. Process metrics (process-metrics.ts) are read at scrape time
 * too, under the names of prom-client's default ones, prefixed `proxymapd_`.
 *
 * Tables are labelled `table="type:name"` (proxy: prefixes stripped, as the
 * server resolves them); a request that could not be parsed has table="" and,
 * when not even its kind is known, request="". A client may name any table,
 * so at most MAX_TABLE_LABELS distinct names get a series of their own; the
 * requests for names beyond are counted under table="(other)".
 */
import { Registry, type Metric } from 'prom-client';
import { logBytes } from '../log.js';
import type { RequestKind } from '../protocol/messages.js';
import { livePools, type LivePool } from '../tables/dbcommon/pool.js';
import { Buckets } from '../util/buckets.js';
import { processMetrics } from './process-metrics.js';
import type { Service } from './handler.js';
import type { OpenInstanceInfo } from './instances.js';

/** Status label values, indexed by PROXY_STAT (src/protocol/flags.ts). */
export const STATUS_NAMES = ['OK', 'NOKEY', 'RETRY', 'BAD', 'DENY', 'CONFIG'] as const;

/** Distinct table labels kept apart; further names share table="(other)". */
export const MAX_TABLE_LABELS = 1000;
export const OTHER_TABLE = '(other)';

const SERVICES: readonly Service[] = ['proxymap', 'proxywrite'];
/** request label values by series index; "" for a request whose kind is unknown */
const KINDS: readonly string[] = ['open', 'lookup', 'update', 'delete', 'sequence', ''];
const KIND_INDEX: Readonly<Record<RequestKind, number>> = { open: 0, lookup: 1, update: 2, delete: 3, sequence: 4 };
const PROXY_PREFIX = 'proxy:';

/** One open table instance, as TableInstances lists them. */
export type OpenTableInfo = OpenInstanceInfo;

/** What the lookup cache reports (src/server/cache.ts). */
export interface CacheStats {
  entries: number;
  bytes: number;
  maxEntries: number;
  maxBytes: number;
  tables: ReadonlyArray<{ table: string; hits: number; misses: number; entries: number; bytes: number }>;
}

/** Where the scrape-time metrics come from. */
export interface MetricsSources {
  /** the open table instances */
  tables(): readonly OpenTableInfo[];
  /** table reloads and failed reloads since start */
  reloads(): { reloads: number; failures: number };
  /** the live SQL/LDAP pools (default: every pool of this process) */
  pools?(): readonly LivePool[];
  /** the lookup cache, when one is configured */
  cacheStats?(): CacheStats | undefined;
}

/** Counts and latency of one (service, request, table). */
class Series {
  readonly statuses = [0, 0, 0, 0, 0, 0];
  readonly latency = new Buckets();
}

class TableRecord {
  /** by service (0 proxymap, 6 proxywrite) + kind index */
  readonly series: Array<Series | undefined> = new Array(12).fill(undefined);
  constructor(readonly label: string) {}
}

type Labels = Record<string, string>;
interface Value {
  labels: Labels;
  value: number;
  metricName?: string;
}
type MetricType = 'counter' | 'gauge' | 'histogram';

export class Metrics {
  readonly registry = new Registry();
  private readonly tables = new Map<string, TableRecord>();
  private lastRaw: string | undefined;
  private lastRec: TableRecord | undefined;
  private readonly open = [0, 0];
  private readonly accepted = [0, 0];

  constructor(private readonly sources: MetricsSources) {
    this.define();
    for (const m of processMetrics('proxymapd_')) this.add(m.name, m.help, m.type, m.values);
  }

  /** The table as the request names it ("" when malformed); `ms`: from the request parsed to its reply written. */
  record(service: Service, kind: RequestKind | null, table: string, status: number, ms: number): void {
    let rec = this.lastRec;
    if (table !== this.lastRaw || rec === undefined) {
      rec = this.recordFor(table);
      this.lastRaw = table;
      this.lastRec = rec;
    }
    const i = (service === 'proxymap' ? 0 : 6) + (kind === null ? 5 : KIND_INDEX[kind]);
    const s = (rec.series[i] ??= new Series());
    if (status >= 0 && status < 6) s.statuses[status]!++;
    s.latency.observe(ms / 1000);
  }

  connectionOpened(service: Service): void {
    const i = service === 'proxymap' ? 0 : 1;
    this.open[i]!++;
    this.accepted[i]!++;
  }

  connectionClosed(service: Service): void {
    this.open[service === 'proxymap' ? 0 : 1]!--;
  }

  /** The Prometheus text of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private recordFor(raw: string): TableRecord {
    let spec = raw;
    while (spec.startsWith(PROXY_PREFIX)) spec = spec.slice(PROXY_PREFIX.length);
    let label = logBytes(spec);
    let rec = this.tables.get(label);
    if (rec) return rec;
    if (this.tables.size >= MAX_TABLE_LABELS) label = OTHER_TABLE;
    rec = this.tables.get(label);
    if (!rec) {
      rec = new TableRecord(label);
      this.tables.set(label, rec);
    }
    return rec;
  }

  // ------------------------------------------------------------------ scrape

  private add(name: string, help: string, type: MetricType, values: () => Value[]): void {
    // A metric object in prom-client's shape (what Registry.metrics() reads), built at scrape time.
    const metric = { name, help, type, aggregator: 'sum', get: () => ({ name, help, type, aggregator: 'sum', values: values() }) };
    this.registry.registerMetric(metric as unknown as Metric);
  }

  private eachSeries(fn: (labels: Labels, s: Series) => void): void {
    for (const rec of this.tables.values()) {
      rec.series.forEach((s, i) => {
        if (s) fn({ service: SERVICES[i < 6 ? 0 : 1]!, request: KINDS[i % 6]!, table: rec.label }, s);
      });
    }
  }

  private define(): void {
    const src = this.sources;
    this.add('proxymapd_requests_total', 'Requests answered, by service, request, table and reply status.', 'counter', () => {
      const out: Value[] = [];
      this.eachSeries((labels, s) => s.statuses.forEach((n, st) => out.push({ labels: { ...labels, status: STATUS_NAMES[st]! }, value: n })));
      return out;
    });
    this.add('proxymapd_request_duration_seconds', 'Time from a request received to its reply written.', 'histogram', () => {
      const out: Value[] = [];
      this.eachSeries((labels, s) => histogram(out, 'proxymapd_request_duration_seconds', labels, s.latency));
      return out;
    });
    this.add('proxymapd_client_connections', 'Client connections open.', 'gauge', () =>
      SERVICES.map((service, i) => ({ labels: { service }, value: this.open[i]! })),
    );
    this.add('proxymapd_client_connections_accepted_total', 'Client connections accepted.', 'counter', () =>
      SERVICES.map((service, i) => ({ labels: { service }, value: this.accepted[i]! })),
    );
    this.add('proxymapd_open_tables', 'Table instances open and usable.', 'gauge', () => [
      { labels: {}, value: src.tables().filter((t) => t.ok).length },
    ]);
    this.add('proxymapd_table_instances', 'Table instances by table, mode (read, write) and state (ok, failed: answering "try again").', 'gauge', () => {
      const n = new Map<string, Value>();
      for (const t of src.tables()) {
        const labels = { table: logBytes(t.spec), mode: t.writable ? 'write' : 'read', state: t.ok ? 'ok' : 'failed' };
        const k = `${labels.table}\0${labels.mode}\0${labels.state}`;
        const v = n.get(k);
        if (v) v.value++;
        else n.set(k, { labels, value: 1 });
      }
      return [...n.values()];
    });
    this.add('proxymapd_table_reloads_total', 'Changed tables reopened and swapped in.', 'counter', () => [{ labels: {}, value: src.reloads().reloads }]);
    this.add('proxymapd_table_reload_failures_total', 'Changed tables whose new version could not be opened (the old one stayed).', 'counter', () => [
      { labels: {}, value: src.reloads().failures },
    ]);
    this.defineWrites();
    this.definePools();
    this.defineCache();
  }

  private defineWrites(): void {
    /** write stats summed per table (one writable instance per table and instance flags) */
    const perTable = (): Map<string, { batches: number; writes: number; commit: Buckets }> => {
      const m = new Map<string, { batches: number; writes: number; commit: Buckets }>();
      for (const t of this.sources.tables()) {
        const w = t.writeStats;
        if (!w) continue;
        const label = logBytes(t.spec);
        let e = m.get(label);
        if (!e) m.set(label, (e = { batches: 0, writes: 0, commit: new Buckets(w.commit.bounds) }));
        e.batches += w.batches + w.alone;
        e.writes += w.writes + w.alone;
        w.commit.counts.forEach((c, i) => (e!.commit.counts[i]! += c));
        e.commit.sum += w.commit.sum;
        e.commit.count += w.commit.count;
      }
      return m;
    };
    this.add('proxymapd_write_batches_total', 'proxywrite commits (one lock, the writes, one flush), by table.', 'counter', () =>
      [...perTable()].map(([table, e]) => ({ labels: { table }, value: e.batches })),
    );
    this.add('proxymapd_writes_total', 'proxywrite updates and deletes committed, by table.', 'counter', () =>
      [...perTable()].map(([table, e]) => ({ labels: { table }, value: e.writes })),
    );
    this.add('proxymapd_write_commit_seconds', 'Time of one proxywrite commit (writes and flush), by table.', 'histogram', () => {
      const out: Value[] = [];
      for (const [table, e] of perTable()) histogram(out, 'proxymapd_write_commit_seconds', { table }, e.commit);
      return out;
    });
  }

  private definePools(): void {
    const pools = () => {
      const list = this.sources.pools ? this.sources.pools() : livePools();
      // pools differing only in what the label leaves out (the password, ...) are told apart by a number
      const seen = new Map<string, number>();
      return list.map((p) => {
        const n = (seen.get(p.label) ?? 0) + 1;
        seen.set(p.label, n);
        return { pool: n === 1 ? p.label : `${p.label} #${n}`, stats: p.stats() };
      });
    };
    const gauge = (name: string, help: string, pick: (s: ReturnType<LivePool['stats']>) => number) =>
      this.add(name, help, 'gauge', () => pools().map((p) => ({ labels: { pool: p.pool }, value: pick(p.stats) })));
    gauge('proxymapd_pool_connections', 'Connections of an SQL/LDAP pool open (idle, busy or being opened).', (s) => s.open);
    gauge('proxymapd_pool_connections_in_use', 'Connections of an SQL/LDAP pool running queries or being opened.', (s) => s.busy);
    gauge('proxymapd_pool_waiting', 'Lookups waiting for a connection of an SQL/LDAP pool.', (s) => s.waiting);
    gauge('proxymapd_pool_max_connections', 'The most connections an SQL/LDAP pool may hold.', (s) => s.max);
  }

  private defineCache(): void {
    const cache = () => this.sources.cacheStats?.();
    const total = (name: string, help: string, pick: (c: CacheStats) => number) =>
      this.add(name, help, 'gauge', () => {
        const c = cache();
        return c ? [{ labels: {}, value: pick(c) }] : [];
      });
    const perTable = (name: string, help: string, pick: (t: CacheStats['tables'][number]) => number) =>
      this.add(name, help, 'counter', () => (cache()?.tables ?? []).map((t) => ({ labels: { table: t.table }, value: pick(t) })));
    perTable('proxymapd_cache_hits_total', 'Lookups answered from the lookup cache, by table.', (t) => t.hits);
    perTable('proxymapd_cache_misses_total', 'Lookups of a cached table that went to the table, by table.', (t) => t.misses);
    total('proxymapd_cache_entries', 'Entries in the lookup cache.', (c) => c.entries);
    total('proxymapd_cache_bytes', 'Bytes the lookup cache holds (keys, values and bookkeeping).', (c) => c.bytes);
    total('proxymapd_cache_max_entries', 'The most entries the lookup cache holds.', (c) => c.maxEntries);
    total('proxymapd_cache_max_bytes', 'The most bytes the lookup cache holds.', (c) => c.maxBytes);
  }
}

/** A histogram's `_bucket` (cumulative, with `le`), `_sum` and `_count` values. */
function histogram(out: Value[], name: string, labels: Labels, b: Buckets): void {
  const cum = b.cumulative();
  b.bounds.forEach((le, i) => out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: String(le) }, value: cum[i]! }));
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: cum[cum.length - 1]! });
  out.push({ metricName: `${name}_sum`, labels, value: b.sum });
  out.push({ metricName: `${name}_count`, labels, value: b.count });
}
