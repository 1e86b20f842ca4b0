/**
 * The table side shared by the client/server SQL types (mysql, pgsql): a
 * Table over a shared bounded pool (pool.ts) and the common pipeline of
 * common.ts. Per lookup, as dict_mysql_lookup / dict_pgsql_lookup:
 *
 *  1. the domain filter and the query expansion without quoting decide
 *     whether the key is looked up at all (no server contact otherwise);
 *  2. on a pooled connection the query is expanded again with that
 *     connection's quoting, sent, and the result checked; a failure takes
 *     the host out of service and the next host is tried (pool.ts);
 *  3. the values (rows in order, all columns) go through result_format and
 *     are joined; expansion_limit exceeded is RETRY.
 *
 * With update_query / delete_query / sequence_query (dbcommon/writes.ts, a
 * proxymapd extension) the table also writes and walks, on connections of
 * the same pool with the same failover. A write is acknowledged once the
 * server answered it (autocommit: committed); no host can take it in time:
 * RETRY. A delete that had to be sent again after a failure (its first
 * attempt may have removed the row) and then finds no row answers RETRY,
 * not "not found".
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { DICT_ERR, NOT_FOUND, RETRY, type Bytes, type LookupResult, type SequenceResult, type Table, type WriteResult } from '../core/table.js';
import type { CfParser } from '../dbcommon/cf.js';
import { ResultCollector, planQuery, type QueryPlan, type SqlSettings } from '../dbcommon/common.js';
import { POOL_RETRY, type PoolHost, type PoolView, type SqlPool, type WorkResult } from '../dbcommon/pool.js';
import { SqlSequence, WRITE_FAIL, WRITE_OK, WRITE_RETRY, type PageResult, type SqlWrites } from '../dbcommon/writes.js';

/** Thrown by a backend's quote function when the key cannot be escaped for a connection. */
export class QuoteError extends Error {}

/**
 * Keys whose every character both backends' quoting leaves unchanged and
 * cannot reject in any client encoding: printable ASCII other than the
 * quotes and the backslash (mysql_real_escape_string and
 * PQescapeStringConn touch only those, NUL, control characters and bytes of
 * multi-byte sequences, which start at 0x80).
 */
export const PLAIN_KEY = /^[\x20\x21\x23-\x26\x28-\x5b\x5d-\x7e]*$/;

/** What a backend supplies per connection. */
export interface NetSqlBackend<T, C> {
  /** The quote function for one connection (may throw QuoteError). */
  quoter(conn: C): (raw: Bytes) => Bytes;
  /** What the failed quoting does: Postfix marks the host down for pgsql; see the backend. */
  quoteFailure(host: PoolHost<T>, err: QuoteError): WorkResult<never>;
  /** Run the query; the values (null = SQL NULL, skipped silently), or null for "no result set" (NOTFOUND). */
  run(conn: C, host: PoolHost<T>, query: Bytes): WorkResult<(Bytes | null)[] | null> | Promise<WorkResult<(Bytes | null)[] | null>>;
  /** Run a write statement: the number of rows it affected. */
  exec(conn: C, host: PoolHost<T>, query: Bytes): WorkResult<number> | Promise<WorkResult<number>>;
  /** Run the sequence query: its rows, all columns (null = SQL NULL). */
  rows(conn: C, host: PoolHost<T>, query: Bytes): WorkResult<(Bytes | null)[][]> | Promise<WorkResult<(Bytes | null)[][]>>;
}

export interface NetSqlTableInit<T, C> {
  type: string;
  name: Bytes;
  cf: CfParser;
  settings: SqlSettings;
  /** this table's view of the shared pool (its own host states, the pool's connections) */
  pool: PoolView<T, C>;
  releasePool: () => void;
  backend: NetSqlBackend<T, C>;
  /** time budget of one lookup (ms) */
  timeoutMs: number;
  /** prefix of the expansion-limit warning: `dict_mysql_lookup` / `dict_pgsql_lookup` */
  lookupName: string;
  /** update_query, delete_query, sequence_query */
  writes: SqlWrites;
  warn(text: string): void;
}

export class NetSqlTable<T, C> implements Table {
  readonly type: string;
  readonly name: Bytes;
  readonly implFlags = DICT_FLAG.FIXED;
  private closed = false;

  // present only when configured: the server answers "not supported" for a table without them
  readonly update?: (key: Bytes, value: Bytes) => Promise<WriteResult>;
  readonly delete?: (key: Bytes) => Promise<WriteResult>;
  readonly sequence?: (fn: 0 | 1) => Promise<SequenceResult>;

  constructor(private readonly t: NetSqlTableInit<T, C>) {
    this.type = t.type;
    this.name = t.name;
    const w = t.writes;
    if (w.canUpdate) this.update = (key, value) => this.write((quote) => w.updateQuery(key, value, quote), false);
    if (w.canDelete) this.delete = (key) => this.write((quote) => w.deleteQuery(key, quote), true);
    if (w.canSequence) {
      const seq = new SqlSequence((last) => this.page(last), t.warn, `${t.type}:${t.name}`);
      this.sequence = (fn) => (this.closed ? Promise.resolve({ found: false, error: DICT_ERR.RETRY }) : seq.next(fn));
    }
  }

  /** One write statement through the pool; `isDelete`: no affected row is "not found". */
  private async write(expand: (quote?: (raw: Bytes) => Bytes) => Bytes | null, isDelete: boolean): Promise<WriteResult> {
    if (this.closed) return WRITE_RETRY;
    // the key lacks what the templates need: nothing to write
    if (expand() === null) return WRITE_FAIL;
    const t = this.t;
    let sent = 0;
    const n = await t.pool.use(
      (conn, host) => {
        let query: Bytes | null;
        try {
          query = expand(t.backend.quoter(conn));
        } catch (e) {
          if (e instanceof QuoteError) return t.backend.quoteFailure(host, e);
          throw e;
        }
        if (query === null) return { kind: 'ok', value: 0 };
        sent++;
        return t.backend.exec(conn, host, query);
      },
      { deadline: Date.now() + t.timeoutMs, warn: t.warn },
    );
    if (n === POOL_RETRY) return WRITE_RETRY;
    if (isDelete && n === 0) return sent > 1 ? WRITE_RETRY : WRITE_FAIL;
    return WRITE_OK;
  }

  /** One page of the sequence query. */
  private async page(last: Bytes): Promise<PageResult> {
    const t = this.t;
    const rows = await t.pool.use(
      (conn, host) => {
        let query: Bytes;
        try {
          query = t.writes.sequenceQuery(last, t.backend.quoter(conn));
        } catch (e) {
          if (e instanceof QuoteError) return t.backend.quoteFailure(host, e);
          throw e;
        }
        return t.backend.rows(conn, host, query);
      },
      { deadline: Date.now() + t.timeoutMs, warn: t.warn },
    );
    return rows === POOL_RETRY ? { error: DICT_ERR.RETRY } : { rows };
  }

  /** The pool this table uses (shared with every table that connects the same way). */
  get pool(): SqlPool<T, C> {
    return this.t.pool.pool;
  }

  lookup(key: Bytes): LookupResult | Promise<LookupResult> {
    if (this.closed) return RETRY;
    const plan = planQuery(this.t.settings, key, { utf8Check: false });
    return plan instanceof Promise ? plan.then((p) => this.run(key, p)) : this.run(key, plan);
  }

  private run(key: Bytes, plan: QueryPlan): LookupResult | Promise<LookupResult> {
    if (plan.kind === 'skip') return plan.result;
    const t = this.t;
    return t.pool
      .use(
        (conn, host) => {
          let query: Bytes | null;
          try {
            // Quoting leaves such a key's pieces as they are: the pre-check's text is the query.
            query = PLAIN_KEY.test(key) ? plan.query : t.settings.ctx.expandQuery(t.settings.query, key, t.backend.quoter(conn));
          } catch (e) {
            if (e instanceof QuoteError) return t.backend.quoteFailure(host, e);
            throw e;
          }
          if (query === null) return { kind: 'ok', value: null };
          return t.backend.run(conn, host, query);
        },
        { deadline: Date.now() + t.timeoutMs, warn: t.warn },
      )
      .then((values) => this.collect(key, values));
  }

  private collect(key: Bytes, values: (Bytes | null)[] | null | typeof POOL_RETRY): LookupResult {
    if (values === POOL_RETRY) return RETRY;
    if (values === null) return NOT_FOUND;
    const t = this.t;
    const out = new ResultCollector(t.settings, key);
    for (const v of values) {
      if (!out.add(v)) {
        t.warn(`${t.lookupName}: ${t.cf.name}: Expansion limit exceeded for key: '${key}'`);
        break;
      }
    }
    return out.result();
  }

  changed(): Promise<boolean> {
    return this.t.cf.changed();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.t.releasePool();
    await this.t.settings.domain?.close();
  }
}

/**
 * A pool key from everything that decides how connections are made (type,
 * hosts, credentials, database, client settings, idle_interval, pool
 * size): tables that differ only in their queries share one pool.
 */
export function poolKey(type: string, parts: Record<string, unknown>): string {
  return JSON.stringify([type, Object.entries(parts).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
}
