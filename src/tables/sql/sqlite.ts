/**
 * sqlite: tables (Postfix 3.7 src/global/dict_sqlite.c, sqlite_table(5)).
 *
 *   sqlite:/etc/postfix/x.cf    parameters from the file
 *   sqlite:prefix               parameters prefix_dbpath, prefix_query, ... from main.cf
 *
 * Parameters: dbpath (required), query (else the legacy select_field /
 * table / where_field / additional_conditions form), result_format,
 * domain, expansion_limit. Keys are expanded into the query with SQLite's
 * %q quoting (' doubled); only the first column of each row is used.
 *
 * The database is the system libsqlite3 through the native addon, opened
 * read-only with a busy timeout; queries run on the libuv thread pool, one
 * at a time per table, so a slow or locked database holds up only the
 * lookups of this table.
 *
 * Where Postfix exits with a fatal error during a lookup (the statement
 * cannot be prepared: an SQL error, a missing table, a database that stays
 * locked) the lookup fails instead, with Postfix's message as a warning:
 * "try again" (RETRY) for a busy/locked database, a configuration error
 * (CONFIG) otherwise. Postfix 3.7 opens dbpath read-write, creates a
 * missing database file and then exits on the first lookup ("no such
 * table"); here, as in Postfix 3.11+, the database is opened read-only and
 * never created: a missing or unreadable database fails the open, so every
 * lookup answers RETRY until the table is opened again (after 10 seconds)
 * and the file is there.
 *
 * As a proxymapd extension, update_query, delete_query and sequence_query
 * (dbcommon/writes.ts, quoted with %q as `query`): a proxywrite open with
 * update_query or delete_query opens the database read-write (never
 * creating it); writes run in the same one-at-a-time queue as lookups, in
 * autocommit, so an acknowledged write is committed. A busy or locked
 * database answers RETRY.
 */
import { stat } from 'node:fs/promises';
import { loadSqlite, type NativeSqlite, type SqliteHandle, type SqliteQueryResult } from '../../addon/sqlite.js';
import { DICT_FLAG } from '../../protocol/flags.js';
import type { CfParser } from '../dbcommon/cf.js';
import { ResultCollector, loadSqlSettings, planQuery, type SqlSettings } from '../dbcommon/common.js';
import { DICT_ERR, RETRY, TableOpenError, type Bytes, type LookupResult, type SequenceResult, type Table, type TableOpenOptions, type WriteResult } from '../core/table.js';
import { passesUtf8Check } from '../core/casefold.js';
import { SqlSequence, SqlWrites, WRITE_CONFIG, WRITE_FAIL, WRITE_OK, WRITE_RETRY, type PageResult } from '../dbcommon/writes.js';
import type { TableType } from '../core/registry.js';

/** How long a lookup waits for a database another process has locked (ms). Postfix waits not at all and exits. */
export const SQLITE_BUSY_TIMEOUT_MS = 1000;

/** SQLite's %q: single quotes doubled, nothing else. */
export function sqliteQuote(raw: Bytes): Bytes {
  return raw.replaceAll("'", "''");
}

/** SQLITE_BUSY or SQLITE_LOCKED (primary codes). */
function isBusy(native: NativeSqlite, code: number): boolean {
  const primary = code & 0xff;
  return primary === native.SQLITE.BUSY || primary === native.SQLITE.LOCKED;
}

interface Job {
  sql: Bytes;
  resolve(r: SqliteQueryResult): void;
}

class SqliteTable implements Table {
  readonly type = 'sqlite';
  readonly implFlags = DICT_FLAG.FIXED;
  private queue: Job[] = [];
  private running = false;
  private closed = false;
  // present only when configured: the server answers "not supported" for a table without them
  readonly update?: (key: Bytes, value: Bytes) => Promise<WriteResult>;
  readonly delete?: (key: Bytes) => Promise<WriteResult>;
  readonly sequence?: (fn: 0 | 1) => Promise<SequenceResult>;

  constructor(
    readonly name: Bytes,
    private readonly native: NativeSqlite,
    private readonly handle: SqliteHandle,
    private readonly settings: SqlSettings,
    private readonly cf: CfParser,
    private readonly dbpath: Bytes,
    /** The database file's identity at open (undefined: not a plain file). */
    private readonly dbId: string | undefined,
    private readonly warn: (text: string) => void,
    writes: SqlWrites,
  ) {
    if (writes.canUpdate) this.update = (key, value) => this.write(key, writes.updateQuery(key, value, sqliteQuote), false);
    if (writes.canDelete) this.delete = (key) => this.write(key, writes.deleteQuery(key, sqliteQuote), true);
    if (writes.canSequence) {
      const seq = new SqlSequence((last) => this.page(writes.sequenceQuery(last, sqliteQuote)), warn, `sqlite:${name}`);
      this.sequence = (fn) => seq.next(fn);
    }
  }

  /** A write statement (null: the key lacks what the template needs, or is not UTF-8 as lookups require). */
  private async write(key: Bytes, sql: Bytes | null, isDelete: boolean): Promise<WriteResult> {
    if (sql === null || !passesUtf8Check(key)) return WRITE_FAIL;
    const res = await this.run(sql);
    const err = res.error;
    if (err !== undefined) {
      this.warn(`dict_sqlite_${isDelete ? 'delete' : 'update'}: ${this.name}: SQL ${err.stage === 'prepare' ? 'prepare' : 'step'} failed: ${err.message}`);
      return err.stage === 'prepare' && !isBusy(this.native, err.code) ? WRITE_CONFIG : WRITE_RETRY;
    }
    return isDelete && res.changes === 0 ? WRITE_FAIL : WRITE_OK;
  }

  private async page(sql: Bytes): Promise<PageResult> {
    const res = await this.run(sql);
    const err = res.error;
    if (err === undefined) return { rows: res.rows };
    this.warn(`dict_sqlite_sequence: ${this.name}: SQL ${err.stage === 'prepare' ? 'prepare' : 'step'} failed: ${err.message}`);
    return { error: err.stage === 'prepare' && !isBusy(this.native, err.code) ? DICT_ERR.CONFIG : DICT_ERR.RETRY };
  }

  async lookup(key: Bytes): Promise<LookupResult> {
    const plan = await planQuery(this.settings, key, { utf8Check: true, quote: sqliteQuote });
    if (plan.kind === 'skip') return plan.result;
    const query = plan.query;
    const res = await this.run(query);
    const err = res.error;
    if (err !== undefined && err.stage !== 'step') {
      // Postfix: fatal "SQL prepare failed".
      this.warn(`dict_sqlite_lookup: ${this.name}: SQL prepare failed: ${err.message}\n`);
      return err.stage === 'prepare' && !isBusy(this.native, err.code) ? { found: false, error: DICT_ERR.CONFIG } : RETRY;
    }
    const out = new ResultCollector(this.settings, key);
    for (const row of res.rows) {
      // sqlite3_column_text(stmt, 0): NULL for a NULL value or a statement without columns.
      if (!out.add(row.length > 0 ? row[0] : null)) {
        this.warn(`dict_sqlite_lookup: ${this.name}: Expansion limit exceeded for key '${key}'`);
        return RETRY;
      }
    }
    if (err !== undefined) {
      this.warn(`dict_sqlite_lookup: ${this.name}: SQL step failed for query '${query}': ${err.message}\n`);
      return RETRY;
    }
    return out.result();
  }

  /**
   * Queries run one at a time per table. When one finds the database busy
   * or locked (after the busy timeout), the lookups waiting behind it get
   * the same answer at once instead of each waiting out the timeout again.
   */
  private run(sql: Bytes): Promise<SqliteQueryResult> {
    return new Promise((resolve) => {
      this.queue.push({ sql, resolve });
      if (!this.running) void this.pump();
    });
  }

  private async pump(): Promise<void> {
    this.running = true;
    try {
      for (let job = this.queue.shift(); job !== undefined; job = this.queue.shift()) {
        let res: SqliteQueryResult;
        if (this.closed) {
          res = { rows: [], changes: 0, error: { stage: 'closed', message: 'database is closed', code: 21 } };
        } else {
          try {
            res = await this.native.sqliteQuery(this.handle, job.sql);
          } catch (e) {
            res = { rows: [], changes: 0, error: { stage: 'closed', message: String((e as Error).message ?? e), code: 21 } };
          }
        }
        job.resolve(res);
        if (res.error !== undefined && isBusy(this.native, res.error.code)) {
          const error = { ...res.error };
          for (const w of this.queue.splice(0)) w.resolve({ rows: [], changes: 0, error });
        }
      }
    } finally {
      this.running = false;
    }
  }

  /**
   * The parameter file changed, or the database file was replaced by another one (the open connection
   * would go on reading the old one). Changes inside the database need no
   * reopening: SQLite reads them.
   */
  async changed(): Promise<boolean> {
    if (await this.cf.changed()) return true;
    const now = await fileId(this.dbpath);
    return now !== undefined && this.dbId !== undefined && now !== this.dbId;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.native.sqliteClose(this.handle);
    await this.settings.domain?.close();
  }
}

/** dev:ino of a file, or undefined when it cannot be stat()ed. */
async function fileId(path: Bytes): Promise<string | undefined> {
  try {
    const st = await stat(Buffer.from(path, 'latin1'));
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

export async function openSqlite(opts: TableOpenOptions): Promise<Table> {
  const { cf, writes } = await SqlWrites.open(opts);
  const dbpath = cf.getStr('dbpath', '', 1, 0);
  const settings = await loadSqlSettings(cf, opts);

  let native: NativeSqlite;
  try {
    native = loadSqlite();
  } catch (err) {
    await settings.domain?.close();
    throw new TableOpenError(`${opts.type}:${opts.name}: ${(err as Error).message}`);
  }
  // Identity first: a file replaced while we open it shows as a change at the next check.
  const dbId = await fileId(dbpath);
  const opened = native.sqliteOpen(dbpath, SQLITE_BUSY_TIMEOUT_MS, writes.canUpdate || writes.canDelete);
  if ('error' in opened) {
    await settings.domain?.close();
    throw new TableOpenError(`${opts.type}:${opts.name}: open database ${dbpath}: ${opened.error}`);
  }
  return new SqliteTable(opts.name, native, opened.handle, settings, cf, dbpath, dbId, opts.warn, writes);
}

export const sqliteType: TableType = { name: 'sqlite', open: openSqlite, implFlags: DICT_FLAG.FIXED, writable: true };
