/**
 * lmdb: tables (Postfix 3.7 src/util/dict_lmdb.c, slmdb.c, mkmap_lmdb.c):
 * `lmdb:<name>` is the file `<name>.lmdb`, read and written through the
 * system LMDB library exactly as Postfix opens it (MDB_NOSUBDIR|MDB_NOLOCK,
 * fcntl locks on the file, map size from lmdb_map_size or the file size,
 * doubled on MDB_MAP_FULL). Keys sort bytewise, so the sequence is sorted.
 * MULTI_WRITER: changes by other writers are seen at once (every operation
 * is its own transaction), and only a replaced file counts as "changed".
 */
import { existsSync, chmodSync, chownSync, renameSync, rmSync, statSync } from 'node:fs';
import { DICT_FLAG } from '../../protocol/flags.js';
import { KV_KIND, KV_MODE, type KvHandle } from '../../addon/kv.js';
import { BuildError, type BuildEntry, type BuildOptions } from '../build/buildtypes.js';
import { bulkLoad, kvNative, newFileMode, openKvTable, TRY_BOTH } from './kvtable.js';
import { intParam } from '../core/params.js';
import { strerror } from '../../util/strerror.js';
import type { Bytes, Table, TableOpenOptions } from '../core/table.js';
import type { TableType } from '../core/registry.js';

/** lmdb_map_size default. */
export const LMDB_MAP_SIZE = 16777216;

/** Opener for lmdb:name (the file name.lmdb). */
export function openLmdb(opts: TableOpenOptions): Table | Promise<Table> {
  const path = opts.name + '.lmdb';
  return openKvTable(opts, {
    kind: KV_KIND.LMDB,
    path,
    label: `lmdb:${opts.name}`,
    dupName: `lmdb:${opts.name}`,
    multiWriter: true,
    mapSize: intParam(opts, 'lmdb_map_size', LMDB_MAP_SIZE, { min: 1 }),
  });
}

export interface LmdbBuildOptions extends BuildOptions {
  /**
   * false (default): rebuild the existing file in place in one write
   * transaction, as postmap does (atomic for readers: they see the old
   * content until the commit; writers that lock wait and then write into
   * the new content). true: build `<name>.lmdb.<pid>.tmp` and rename it
   * over the file (compact result; a writer holding the old file loses its
   * later writes).
   */
  replace?: boolean;
  /** Initial map size for the build (default: 64 GiB of address space, so the map never has to grow). */
  mapSize?: number;
}

const BUILD_MAP_SIZE = 2 ** 36;

const toPath = (p: Bytes) => Buffer.from(p, 'latin1');

/**
 * Build `<path>.lmdb` from entries in order, as `postmap lmdb:<path>` does:
 * keys and values with a NUL terminator unless TRY0NULL (-n) alone is set;
 * duplicates per DUP_REPLACE (-r) / DUP_IGNORE (-w), else the first wins
 * with `lmdb:<path>: duplicate entry: "<key>"`. Throws BuildError with
 * Postfix's fatal text.
 */
/**
 * The end of a bulk build (lmdb, hash, btree): load the entries, close the
 * handle (the flush), and, for a build made beside the file (`into`), give
 * it the file's owner and mode and rename it into place.
 */
export function loadAndInstall(
  n: ReturnType<typeof kvNative>,
  h: KvHandle,
  entries: Iterable<BuildEntry>,
  opts: BuildOptions,
  dupName: Bytes,
  target: Bytes,
  into: Bytes | undefined,
): void {
  bulkLoad(n, h, entries, opts, dupName);
  if (n.kvClose(h) !== 0) throw new BuildError(n.kvError(h).message);
  if (into === undefined) return;
  copyOwner(into, target);
  try {
    renameSync(toPath(target), toPath(into));
  } catch (err) {
    throw new BuildError(`rename database from ${target} to ${into}: ${strerror(err)}`);
  }
}

export function buildLmdb(path: Bytes, entries: Iterable<BuildEntry>, opts: LmdbBuildOptions): void {
  const n = kvNative();
  const file = path + '.lmdb';
  const target = opts.replace ? `${file}.${process.pid}.tmp` : file;
  const label = `lmdb:${path}`;
  const flags = opts.dictFlags | DICT_FLAG.DUP_WARN;
  if (opts.replace) rmSync(toPath(target), { force: true });
  const created = !existsSync(toPath(target));
  const open = (mapSize: number) =>
    n.kvOpen(KV_KIND.LMDB, target, KV_MODE.BULK, flags & TRY_BOTH, 0, mapSize, 0, label, opts.replace ? 0 : DICT_FLAG.LOCK);
  let h = open(Math.max(opts.mapSize ?? BUILD_MAP_SIZE, LMDB_MAP_SIZE));
  if (typeof h === 'object' && 'error' in h && /Cannot allocate memory/.test(h.error)) h = open(LMDB_MAP_SIZE);
  if (typeof h === 'object' && h !== null && ('error' in h || 'busy' in h)) {
    throw new BuildError('error' in h ? h.error : `open database ${target}: locked`);
  }
  const handle = h as KvHandle;
  let ok = false;
  try {
    if (created) setNewFileOwner(target, opts);
    loadAndInstall(n, handle, entries, opts, label, target, opts.replace ? file : undefined);
    ok = true;
  } finally {
    n.kvClose(handle);
    if (!ok && opts.replace) rmSync(toPath(target), { force: true });
  }
}

/** A new file gets postmap's permissions from the source file, and its owner when we run as root. */
export function setNewFileOwner(file: Bytes, opts: BuildOptions): void {
  if (!opts.source) return;
  try {
    chmodSync(toPath(file), newFileMode(opts.source));
    const euid = process.geteuid?.();
    if (euid === 0 && (opts.source.uid !== 0 || opts.source.gid !== (process.getegid?.() ?? 0))) {
      chownSync(toPath(file), opts.source.uid, opts.source.gid);
    }
  } catch (err) {
    throw new BuildError(`initialize database ${file}: ${strerror(err)}`);
  }
}

/** A replacement keeps the mode and owner of the file it replaces. */
export function copyOwner(from: Bytes, to: Bytes): void {
  let st;
  try {
    st = statSync(toPath(from));
  } catch {
    return; // nothing replaced
  }
  try {
    chmodSync(toPath(to), st.mode & 0o7777);
    if (process.geteuid?.() === 0) chownSync(toPath(to), st.uid, st.gid);
  } catch (err) {
    throw new BuildError(`initialize database ${to}: ${strerror(err)}`);
  }
}

// Read-write for proxywrite (through the system liblmdb, native/kv.c); several writers may share the file.
export const lmdbType: TableType = {
  name: 'lmdb',
  open: openLmdb,
  implFlags: DICT_FLAG.FIXED | DICT_FLAG.MULTI_WRITER,
  writable: true,
  build: (path, entries, opts) => buildLmdb(path, entries, opts),
};
