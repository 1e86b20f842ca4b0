/**
 * The key-value part of the native addon (native/kv.c): LMDB files through
 * the system liblmdb and Berkeley DB hash/btree files through libdb 5.3,
 * the libraries Postfix's lmdb:, hash: and btree: tables use, opened the
 * way Postfix opens them.
 *
 * A handle is one open file. Keys and values are byte strings (char codes
 * 0..255; Buffers are accepted as input). In the default "dict" mode a
 * handle behaves like Postfix's dict_lmdb/dict_db: keys are C strings (cut
 * at the first NUL), lookups and deletes try `key\0` then `key` according
 * to the handle's sticky TRY1NULL/TRY0NULL state, updates add the NUL
 * terminator when the handle is in TRY1NULL mode, and values come back cut
 * at their first NUL. In "raw" mode keys and values are exact bytes.
 *
 * Calls are synchronous except kvBatch (writes on a worker thread). With `nonblock`, a lock held by another process
 * makes a call return KV.BUSY at once instead of waiting.
 */
import { loadNative } from './load.js';

declare const brand: unique symbol;
/** An open file in the addon (closed by kvClose or the garbage collector). */
export type KvHandle = { readonly [brand]: 'kv' };

export const KV_KIND = { LMDB: 1, HASH: 2, BTREE: 3 } as const;
export type KvKind = (typeof KV_KIND)[keyof typeof KV_KIND];

/** Open modes: read-only (O_RDONLY), read-write creating a missing file (O_RDWR|O_CREAT), bulk creation (O_TRUNC, one transaction). */
export const KV_MODE = { READ: 0, WRITE: 1, BULK: 2 } as const;
export type KvMode = (typeof KV_MODE)[keyof typeof KV_MODE];

/** Status codes the calls return instead of a value. */
export const KV = {
  OK: 0,
  /** not found (get, del, end of sequence) or key exists (put without DUP_REPLACE) */
  NOTFOUND: 1,
  /** the lock is held by another process (nonblock) */
  BUSY: 2,
  /** bulk LMDB transaction restarted with a bigger map: put every entry again */
  RESTART: 3,
  ERROR: -1,
} as const;
export type KvStatus = (typeof KV)[keyof typeof KV];

/** Flag of ours, next to the DICT_FLAG_* bits the calls understand (LOCK, DUP_REPLACE, SYNC_UPDATE). */
export const KV_NONBLOCK = 0x40000000;
/** kvBatch op flag of ours: the operation is a delete. */
export const KV_OP_DELETE = 0x20000000;

type Input = string | Buffer;

export interface NativeKv {
  /**
   * Open `path` (the file itself, suffix included). nulFlags: TRY0NULL/TRY1NULL
   * as requested (neither = both). mapSize: lmdb_map_size; cacheSize: the
   * Berkeley DB cache (berkeley_db_read_buffer_size or _create_buffer_size).
   * label names the table in error texts ("lmdb:<name>", "<name>.db").
   * lockFlags: DICT_FLAG.LOCK for a bulk LMDB build takes Postfix's
   * exclusive-then-shared lock; KV_NONBLOCK makes a Berkeley DB open that
   * finds the file locked return { busy } instead of waiting. On failure
   * { error } with Postfix's text.
   */
  kvOpen(
    kind: KvKind,
    path: Input,
    mode: KvMode,
    nulFlags: number,
    raw: 0 | 1,
    mapSize: number,
    cacheSize: number,
    label: Input,
    lockFlags: number,
  ): KvHandle | { error: string; detail?: string } | { busy: 1 };
  /** A value, or NOTFOUND / BUSY / ERROR. flags: LOCK (shared lock), KV_NONBLOCK. */
  kvGet(h: KvHandle, key: Input, flags: number): string | number;
  /** OK, NOTFOUND (exists, not replaced), BUSY, RESTART (bulk), ERROR. flags: LOCK, DUP_REPLACE, SYNC_UPDATE, KV_NONBLOCK. */
  kvPut(h: KvHandle, key: Input, value: Input, flags: number): number;
  /** OK, NOTFOUND, BUSY, ERROR. flags: LOCK, SYNC_UPDATE, KV_NONBLOCK. */
  kvDel(h: KvHandle, key: Input, flags: number): number;
  /** fn 0 = first, 1 = next: [key, value], or NOTFOUND (end) / BUSY / ERROR. */
  kvSeq(h: KvHandle, fn: 0 | 1, flags: number): [string, string] | number;
  /** Bulk mode: commit (LMDB) or flush (Berkeley DB). OK, RESTART (LMDB map grown: put everything again), ERROR. */
  kvCommit(h: KvHandle): number;
  /**
   * Apply writes on a libuv pool thread: ops = [flags, key, value, ...]
   * (flags: DUP_REPLACE, SYNC_UPDATE, KV_OP_DELETE; a delete's value is
   * ignored). LMDB: one write transaction and one commit; Berkeley DB: the
   * writes, then one sync when any asked for SYNC_UPDATE. The exclusive lock
   * is taken now (without waiting) and held until the data is on disk; then
   * done(statuses) runs on the main thread with OK / NOTFOUND (key exists,
   * or not found for a delete) / ERROR per op. Returns OK (queued), BUSY
   * (locked by another process, or a batch already runs: nothing queued)
   * or ERROR (kvError). While the batch runs every other call on the handle
   * answers BUSY and kvClose is deferred to its end.
   */
  kvBatch(h: KvHandle, ops: Array<number | Input>, done: (statuses: number[]) => void): number;
  /** Flush to disk. OK or ERROR. */
  kvSync(h: KvHandle): number;
  /** Close (flushes Berkeley DB; abandons an uncommitted bulk LMDB transaction). OK or ERROR. */
  kvClose(h: KvHandle): number;
  /** The handle's current TRY0NULL|TRY1NULL bits. */
  kvFlags(h: KvHandle): number;
  /** The last error's text (Postfix's wording), and Berkeley DB's own last message if any. */
  kvError(h: KvHandle): { message: string; detail?: string };
  /** Whether the file at the path is no longer the one opened (or, with content, its size/mtime changed). */
  kvChanged(h: KvHandle, content: boolean): boolean;
  /** Lock a file on a descriptor of its own (style KV_KIND.LMDB = fcntl, else flock): fd, -errno, or -1000 (busy). */
  kvLockFile(path: Input, style: KvKind, exclusive: 0 | 1, nonblock: 0 | 1): number;
  /** Release such a lock (closes the descriptor). */
  kvUnlockFile(fd: number): number;
  /** strerror(errno): the C library's text, as Postfix's %m prints it. */
  kvStrerror(errno: number): string;
  /** Run-time library versions. */
  kvVersions(): { lmdb: string; db: string };
}

/** The addon's key-value functions; throws like loadNative() when the addon cannot be loaded. */
export function loadKv(): NativeKv {
  const native = loadNative() as unknown as Partial<NativeKv>;
  if (typeof native.kvOpen !== 'function') throw new Error('the native addon was built without LMDB/Berkeley DB support: run `npm install`');
  return native as NativeKv;
}
