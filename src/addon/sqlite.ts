/**
 * The SQLite part of the native addon (native/sqlite.c): the system
 * libsqlite3, the library Postfix's sqlite: tables use. Queries run on the
 * libuv thread pool, never on the main thread.
 */
import { loadNative } from './load.js';

declare const brand: unique symbol;
/** An open database connection, read-only or read-write (closed by sqliteClose or the garbage collector). */
export type SqliteHandle = { readonly [brand]: 'sqlite' };

export interface SqliteQueryError {
  /** Where it failed: prepare, step, closed (handle closed meanwhile), nomem (out of memory collecting rows). */
  stage: 'prepare' | 'step' | 'closed' | 'nomem';
  /** sqlite3_errmsg() right after the failure. */
  message: string;
  /** The primary SQLite result code (SQLITE_BUSY = 5, SQLITE_LOCKED = 6, ...). */
  code: number;
}

export interface SqliteQueryResult {
  /** Every row stepped before the end or the failure: all columns, as sqlite3_column_text() bytes; null = SQL NULL. */
  rows: Array<Array<string | null>>;
  /** Text after the first statement (not run). */
  tail?: string;
  /** Rows the statement inserted, updated or deleted (sqlite3_changes64); 0 for a read-only statement. */
  changes: number;
  error?: SqliteQueryError;
}

export interface NativeSqlite {
  readonly SQLITE: { VERSION: string; VERSION_NUMBER: number; BUSY: number; LOCKED: number; CANTOPEN: number; NOMEM: number };
  /**
   * sqlite3_open_v2(path, SQLITE_OPEN_READONLY, or SQLITE_OPEN_READWRITE when `writable`: never
   * created) plus sqlite3_busy_timeout(busyTimeoutMs; 0 = none).
   */
  sqliteOpen(path: string, busyTimeoutMs: number, writable?: boolean): { handle: SqliteHandle } | { error: string; code: number };
  /** Prepare the first statement of sql and step it to the end, on the thread pool. Never rejects for database errors. */
  sqliteQuery(handle: SqliteHandle, sql: string): Promise<SqliteQueryResult>;
  /** Close now, or once the queries still running are done. */
  sqliteClose(handle: SqliteHandle): void;
  /** Run an SQL script on a database (created if missing), synchronously. Tools and tests only. */
  sqliteExec(path: string, sql: string): null | { error: string; code: number };
}

/** The addon's SQLite functions; throws like loadNative() when the addon cannot be loaded. */
export function loadSqlite(): NativeSqlite {
  const native = loadNative() as unknown as Partial<NativeSqlite>;
  if (typeof native.sqliteOpen !== 'function') throw new Error('the native addon was built without SQLite support: run `npm install`');
  return native as NativeSqlite;
}
