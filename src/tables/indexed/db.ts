/**
 * hash: and btree: tables (Postfix 3.7 src/util/dict_db.c, mkmap_db.c):
 * `hash:<name>` / `btree:<name>` is the Berkeley DB file `<name>.db`,
 * read and written through libdb 5.3 as Postfix opens it (a private
 * memory-pool environment in the file's directory, DB_FCNTL_LOCKING, 4096
 * initial hash elements, berkeley_db_read_buffer_size of cache), with
 * flock() per operation. The btree sequence is sorted (bytewise), hash's is
 * in hash order. The dict name includes the suffix, as in Postfix's
 * messages (`<name>.db: duplicate entry: ...`).
 *
 * Unlike Postfix, whose process would keep serving from its page cache
 * until it restarts, an open table notices that another process changed
 * the file and reopens it before the next operation.
 */
import { existsSync, fstatSync, rmSync, unlinkSync } from 'node:fs';
import { DICT_FLAG } from '../../protocol/flags.js';
import { KV_KIND, KV_MODE, type KvHandle } from '../../addon/kv.js';
import { BuildError, type BuildEntry, type BuildOptions } from '../build/buildtypes.js';
import { kvNative, openKvTable, TRY_BOTH } from './kvtable.js';
import { intParam } from '../core/params.js';
import { loadAndInstall, setNewFileOwner } from './lmdb.js';
import { strerror } from '../../util/strerror.js';
import type { Bytes, Table, TableOpenOptions } from '../core/table.js';
import type { TableType } from '../core/registry.js';

export type DbType = 'hash' | 'btree';

/** berkeley_db_read_buffer_size and berkeley_db_create_buffer_size defaults. */
export const DB_READ_BUFFER_SIZE = 131072;
export const DB_CREATE_BUFFER_SIZE = 16777216;

function kindOf(type: DbType) {
  return type === 'hash' ? KV_KIND.HASH : KV_KIND.BTREE;
}

function openDb(type: DbType, opts: TableOpenOptions): Table | Promise<Table> {
  const path = opts.name + '.db';
  return openKvTable(opts, {
    kind: kindOf(type),
    path,
    label: path,
    dupName: path,
    multiWriter: false,
    cacheSize: intParam(opts, 'berkeley_db_read_buffer_size', DB_READ_BUFFER_SIZE, { min: 1 }),
  });
}

/** Opener for hash:name (the file name.db). */
export function openHash(opts: TableOpenOptions): Table | Promise<Table> {
  return openDb('hash', opts);
}

/** Opener for btree:name (the file name.db). */
export function openBtree(opts: TableOpenOptions): Table | Promise<Table> {
  return openDb('btree', opts);
}

export interface DbBuildOptions extends BuildOptions {
  /**
   * false (default): build `<name>.db.<pid>.tmp` and rename it over the
   * file, so that readers see the old or the new table, never a partial
   * one. true: truncate and rewrite the file in place, as postmap does
   * (readers that lock wait; writers that lock then write into the new
   * content).
   */
  inPlace?: boolean;
  /** Cache for the build (berkeley_db_create_buffer_size, default 16 MiB). */
  cacheSize?: number;
}

const toPath = (p: Bytes) => Buffer.from(p, 'latin1');

/**
 * Build `<path>.db` as `postmap hash:<path>` / `btree:<path>` does: keys and
 * values with a NUL terminator unless TRY0NULL (-n) alone is set; duplicates
 * per DUP_REPLACE (-r) / DUP_IGNORE (-w), else the first wins with
 * `<path>.db: duplicate entry: "<key>"`. Holds postmap's exclusive flock()
 * on an existing file while it works (a zero-length file is removed, with
 * postmap's warning). Throws BuildError with Postfix's fatal text.
 */
export function buildDb(type: DbType, path: Bytes, entries: Iterable<BuildEntry>, opts: DbBuildOptions): void {
  const n = kvNative();
  const file = path + '.db';
  const flags = opts.dictFlags | DICT_FLAG.DUP_WARN;

  // mkmap_db_before_open(): lock an existing file; remove it when it is empty (Berkeley DB refuses those).
  let lockFd = n.kvLockFile(file, KV_KIND.HASH, 1, 0);
  if (lockFd === -2 /* ENOENT */) lockFd = -1;
  else if (lockFd < 0) throw new BuildError(`open ${file}: ${n.kvStrerror(-lockFd)}`);
  else if (fstatSync(lockFd).size === 0) {
    if (fstatSync(lockFd).nlink > 0) {
      try {
        unlinkSync(toPath(file));
      } catch (err) {
        throw new BuildError(`cannot remove zero-length database file ${file}: ${strerror(err)}`);
      }
      opts.warn(`removing zero-length database file: ${file}`);
    }
    n.kvUnlockFile(lockFd);
    lockFd = -1;
  }

  const target = opts.inPlace ? file : `${file}.${process.pid}.tmp`;
  let h: KvHandle | undefined;
  let ok = false;
  try {
    if (!opts.inPlace) rmSync(toPath(target), { force: true });
    const created = !existsSync(toPath(target));
    const r = n.kvOpen(kindOf(type), target, KV_MODE.BULK, flags & TRY_BOTH, 0, 0, opts.cacheSize ?? DB_CREATE_BUFFER_SIZE, file, 0);
    if (typeof r === 'object' && r !== null && ('error' in r || 'busy' in r)) {
      throw new BuildError('error' in r ? r.error : `open database ${target}: locked`);
    }
    h = r as KvHandle;
    if (created) setNewFileOwner(target, opts);
    if (lockFd < 0 && opts.inPlace) {
      // mkmap_db_after_open(): a file created just now gets locked too.
      const fd = n.kvLockFile(file, KV_KIND.HASH, 1, 0);
      if (fd < 0) throw new BuildError(`lock ${file}: ${n.kvStrerror(-fd)}`);
      lockFd = fd;
    }
    loadAndInstall(n, h, entries, opts, file, target, opts.inPlace ? undefined : file);
    ok = true;
  } finally {
    if (h) n.kvClose(h);
    if (!ok && !opts.inPlace) rmSync(toPath(target), { force: true });
    if (lockFd >= 0) n.kvUnlockFile(lockFd);
  }
}

/** TableBuilder for hash:. */
export function buildHash(path: Bytes, entries: Iterable<BuildEntry>, opts: BuildOptions): void {
  buildDb('hash', path, entries, opts);
}

/** TableBuilder for btree:. */
export function buildBtree(path: Bytes, entries: Iterable<BuildEntry>, opts: BuildOptions): void {
  buildDb('btree', path, entries, opts);
}

export const hashType: TableType = { name: 'hash', open: openHash, implFlags: DICT_FLAG.FIXED, writable: true, build: buildHash };
export const btreeType: TableType = { name: 'btree', open: openBtree, implFlags: DICT_FLAG.FIXED, writable: true, build: buildBtree };
