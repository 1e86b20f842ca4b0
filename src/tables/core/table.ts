/**
 * The one Table interface every table type implements.
 *
 * Byte semantics: keys, values and table names are "byte strings": JS strings
 * whose every char code is one byte (0..255), i.e. Buffer 'latin1' decoding.
 * Postfix works on C strings (bytes), and so do we; use bytesToUtf8/utf8ToBytes
 * at the edges where text is needed (casefolding, logging, SQL drivers).
 */
import type { Buckets } from '../../util/buckets.js';

/** Lookup/update error codes (DICT_ERR_* in src/util/dict.h). */
export const DICT_ERR = { NONE: 0, RETRY: -1, CONFIG: -2 } as const;
export type DictErr = (typeof DICT_ERR)[keyof typeof DICT_ERR];

/** A byte string: each char code is one byte. */
export type Bytes = string;

export type LookupResult =
  | { found: true; value: Bytes }
  | { found: false; error: DictErr };

export type SequenceResult =
  | { found: true; key: Bytes; value: Bytes }
  | { found: false; error: DictErr };

/** update/delete outcome: SUCCESS (0), FAIL (1: nothing deleted / dup refused), or an error. */
export type WriteResult = { status: 0 | 1; error: 0 } | { status: -1; error: DictErr };

/** How keys are case-folded, both when a table loads its source and at lookup. */
export type FoldMode = 'none' | 'ascii' | 'utf8';

export interface TableOpenOptions {
  /** table type, e.g. "texthash" */
  type: Bytes;
  /** table name: everything after the first ':' */
  name: Bytes;
  /** DICT_FLAG_* bits the table is opened with (dup policy, NUL mode, ...). */
  openFlags: number;
  /** Folding applied to keys of FIXED tables (load time and lookup time). */
  fold: FoldMode;
  /** Whether the table is opened for writing (proxywrite). */
  writable: boolean;
  /** Parameter lookup in the daemon's main.cf (already $-expanded), for tables that need it. */
  param(name: string): string | undefined;
  /** Warning sink (Postfix-style message text without prefix). */
  warn(text: string): void;
}

export interface Table {
  readonly type: string;
  readonly name: string;
  /** Bits the type imposes: FIXED or PATTERN, MULTI_WRITER, TRY0NULL/TRY1NULL ... */
  readonly implFlags: number;
  /**
   * The table folds keys itself when no UTF-8 layer is in place (composites
   * fold per component). The server then passes such a table's keys
   * unfolded in ASCII mode.
   */
  readonly foldsKeys?: boolean;
  /**
   * Look up a key. The key was already folded by the caller according to
   * `fold` for FIXED tables; pattern tables get the key unfolded.
   * `flags` are the request's DICT_FLAG_* bits (e.g. NO_REGSUB).
   */
  lookup(key: Bytes, flags: number): LookupResult | Promise<LookupResult>;
  /** First (fn 0) / next (fn 1) entry; absent when the type has no sequence. */
  sequence?(fn: 0 | 1, flags: number): SequenceResult | Promise<SequenceResult>;
  update?(key: Bytes, value: Bytes, flags: number): WriteResult | Promise<WriteResult>;
  delete?(key: Bytes, flags: number): WriteResult | Promise<WriteResult>;
  /** True when the backing source changed since open (the caller may reopen). */
  changed?(): boolean | Promise<boolean>;
  close?(): void | Promise<void>;
  /** A writable table's commits so far (metrics), when it keeps count. */
  readonly writeStats?: WriteStats;
}

/** The commits of a writable table: worker batches, writes they carried, writes done alone, and how long each commit took. */
export interface WriteStats {
  batches: number;
  writes: number;
  alone: number;
  /** seconds per commit (batch or lone write), lock to flush */
  readonly commit: Buckets;
}

/** Thrown by an opener when the table cannot be opened (becomes a surrogate). */
export class TableOpenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TableOpenError';
  }
}

export type TableOpener = (opts: TableOpenOptions) => Table | Promise<Table>;

export function bytesToUtf8(b: Bytes): string {
  return Buffer.from(b, 'latin1').toString('utf8');
}
export function utf8ToBytes(s: string): Bytes {
  return Buffer.from(s, 'utf8').toString('latin1');
}

export const NOT_FOUND: LookupResult = Object.freeze({ found: false, error: DICT_ERR.NONE }) as LookupResult;
export const RETRY: LookupResult = Object.freeze({ found: false, error: DICT_ERR.RETRY }) as LookupResult;
export function found(value: Bytes): LookupResult {
  return { found: true, value };
}
