/**
 * What lmdb: (lmdb.ts) and hash:/btree: (db.ts) share: a Table over a file
 * opened through the native addon (src/addon/kv.ts, native/kv.c), and the
 * bulk loader their builders use.
 *
 * Semantics are Postfix 3.7's dict_lmdb.c / dict_db.c, which the addon
 * reproduces on the same libraries: the NUL-terminator state (TRY1NULL,
 * TRY0NULL) is kept per open table and becomes sticky at the first hit,
 * updates honour DUP_REPLACE / DUP_IGNORE / DUP_WARN, and the per-operation
 * lock is taken when the request flags carry DICT_FLAG.LOCK (shared for
 * lookups and sequence). Updates and deletes always take the exclusive lock,
 * so that a concurrent `postmap -d` (which locks) never interleaves with
 * them. Keys arrive folded by the caller (the server folds keys of FIXED
 * tables), so the table never folds.
 *
 * Waiting for a lock never blocks the event loop: when another process
 * holds it, the operation returns a promise and tries again a little later.
 * Errors that make Postfix's process exit (msg_fatal) are logged with the
 * same text and answered with DICT_ERR.RETRY.
 */
import { statSync } from 'node:fs';
import { DICT_FLAG } from '../../protocol/flags.js';
import { KV, KV_MODE, KV_NONBLOCK, KV_OP_DELETE, loadKv, type KvHandle, type KvKind, type NativeKv } from '../../addon/kv.js';
import { BuildError, type BuildEntry, type BuildOptions } from '../build/buildtypes.js';
import {
  DICT_ERR,
  NOT_FOUND,
  TableOpenError,
  found,
  type Bytes,
  type LookupResult,
  type SequenceResult,
  type Table,
  type TableOpenOptions,
  type WriteResult,
  type WriteStats,
} from '../core/table.js';
import { Buckets } from '../../util/buckets.js';

const { FIXED, MULTI_WRITER, LOCK, TRY0NULL, TRY1NULL, DUP_IGNORE, DUP_REPLACE, DUP_WARN, SYNC_UPDATE } = DICT_FLAG;
export const TRY_BOTH = TRY0NULL | TRY1NULL;

const BUSY = Symbol('busy');
type Busy = typeof BUSY;

/** Delays between lock attempts (ms); the last one repeats. */
const RETRY_DELAYS = [1, 2, 4, 8, 16, 25];

/**
 * Run `attempt` now; while it reports that another process holds the lock,
 * run it again later. Synchronous when the lock was free.
 */
export function whenUnlocked<T>(attempt: () => T | Busy): T | Promise<T> {
  const first = attempt();
  if (first !== BUSY) return first;
  return new Promise<T>((resolve, reject) => {
    let n = 0;
    const tick = () => {
      let r: T | Busy;
      try {
        r = attempt();
      } catch (err) {
        reject(err);
        return;
      }
      if (r !== BUSY) resolve(r);
      else setTimeout(tick, RETRY_DELAYS[Math.min(n++, RETRY_DELAYS.length - 1)]);
    };
    setTimeout(tick, RETRY_DELAYS[n++]);
  });
}

/** The addon, or a TableOpenError naming why it cannot be loaded. */
export function kvNative(): NativeKv {
  try {
    return loadKv();
  } catch (err) {
    throw new TableOpenError((err as Error).message);
  }
}

export interface KvTableInfo {
  kind: KvKind;
  /** The file (suffix included). */
  path: Bytes;
  /** How error texts name the table: "lmdb:<name>" or "<name>.db". */
  label: Bytes;
  /** Prefix of duplicate-entry warnings: "lmdb:<name>" or "<name>.db". */
  dupName: Bytes;
  multiWriter: boolean;
  mapSize?: number;
  cacheSize?: number;
}

/** A table over an open key-value file. */
export class KvTable implements Table {
  private nul: number;
  private closed = false;

  constructor(
    private readonly n: NativeKv,
    private readonly h: KvHandle,
    readonly type: string,
    readonly name: string,
    private readonly info: KvTableInfo,
    private readonly warn: (text: string) => void,
    writable: boolean,
  ) {
    this.nul = n.kvFlags(h);
    if (writable) {
      this.update = (key, value, flags) => this.enqueue(flags & (DUP_REPLACE | SYNC_UPDATE), key, value, flags);
      this.delete = (key, flags) => this.enqueue(KV_OP_DELETE | (flags & SYNC_UPDATE), key, '', flags);
    }
  }

  /** FIXED, the current TRY0NULL/TRY1NULL state, and MULTI_WRITER for lmdb. */
  get implFlags(): number {
    return FIXED | this.nul | (this.info.multiWriter ? MULTI_WRITER : 0);
  }

  /** The sticky NUL state changes at most once, at the first hit. */
  private noteNul(): void {
    if (this.nul === TRY_BOTH) this.nul = this.n.kvFlags(this.h);
  }

  private failure(): { found: false; error: typeof DICT_ERR.RETRY } {
    if (!this.closed) this.warn(this.n.kvError(this.h).message);
    return { found: false, error: DICT_ERR.RETRY };
  }

  lookup(key: Bytes, flags: number): LookupResult | Promise<LookupResult> {
    return this.whenIdle(() => this.lookupNow(key, flags));
  }

  private lookupNow(key: Bytes, flags: number): LookupResult | Promise<LookupResult> {
    return whenUnlocked(() => {
      const r = this.n.kvGet(this.h, key, (flags & LOCK) | KV_NONBLOCK);
      if (typeof r === 'string') {
        this.noteNul();
        return found(r);
      }
      if (r === KV.NOTFOUND) return NOT_FOUND;
      if (r === KV.BUSY) return BUSY;
      return this.failure();
    });
  }

  sequence(fn: 0 | 1, flags: number): SequenceResult | Promise<SequenceResult> {
    return this.whenIdle(() => this.sequenceNow(fn, flags));
  }

  private sequenceNow(fn: 0 | 1, flags: number): SequenceResult | Promise<SequenceResult> {
    return whenUnlocked((): SequenceResult | Busy => {
      const r = this.n.kvSeq(this.h, fn, (flags & LOCK) | KV_NONBLOCK);
      if (Array.isArray(r)) return { found: true, key: r[0], value: r[1] };
      if (r === KV.NOTFOUND) return { found: false, error: DICT_ERR.NONE };
      if (r === KV.BUSY) return BUSY;
      return this.failure();
    });
  }

  /** Writes exist on a writable open only (as Postfix's read-only dictionaries have no update). */
  readonly update?: (key: Bytes, value: Bytes, flags: number) => Promise<WriteResult>;
  readonly delete?: (key: Bytes, flags: number) => Promise<WriteResult>;

  // -------------------------------------------------------------------------
  // Writes: group commit on a worker thread
  //
  // Updates and deletes are queued and applied in batches by kvBatch on a
  // libuv pool thread: one exclusive lock, the writes, one flush (LMDB
  // commit / Berkeley DB sync). Each is answered only after the flush that
  // covers it; writes that arrive while a batch runs go into the next one.
  // While a batch runs the handle belongs to the worker: lookups and
  // sequence steps on this table wait for it to finish (as another
  // process's locked reads wait for our exclusive lock), other tables and
  // the event loop do not wait at all.

  /** Batches handed to the worker and the writes they carried (tests and diagnostics). */
  readonly writeStats: WriteStats = { batches: 0, writes: 0, alone: 0, commit: new Buckets() };
  /** when the running batch was handed to the worker (performance.now()) */
  private batchStart = 0;
  private startScheduled = false;
  private queued: PendingWrite[] = [];
  private inflight = false;
  private lockWait: NodeJS.Timeout | undefined;
  private lockTries = 0;
  private idleWaiters: Array<() => void> = [];
  private closeWaiters: Array<() => void> = [];
  private closing = false;

  private enqueue(opFlags: number, key: Bytes, value: Bytes, reqFlags: number): Promise<WriteResult> {
    return new Promise<WriteResult>((resolve) => {
      if (this.closed) {
        resolve({ status: -1, error: DICT_ERR.RETRY });
        return;
      }
      this.queued.push({ opFlags, key, value, reqFlags, resolve });
      this.scheduleStart();
    });
  }

  /**
   * Start the queued writes at the end of this event-loop turn, so that the
   * writes that arrived in the same turn (from several connections) go into
   * one batch.
   */
  private scheduleStart(): void {
    if (this.inflight || this.lockWait !== undefined || this.startScheduled) return;
    this.startScheduled = true;
    setImmediate(() => {
      this.startScheduled = false;
      if (!this.inflight && this.lockWait === undefined) this.startBatch();
    });
  }

  /**
   * A write that nothing competes with (the only one queued when its turn
   * ends) is done at once on this thread, write and flush, as Postfix's
   * proxywrite does: a hand-off to the worker would only add latency. True
   * when it was done; false when another process holds the lock (the batch
   * path then waits for it).
   */
  private writeAlone(): boolean {
    const w = this.queued[0]!;
    let r: number;
    const t0 = performance.now();
    try {
      r =
        w.opFlags & KV_OP_DELETE
          ? this.n.kvDel(this.h, w.key, LOCK | (w.opFlags & SYNC_UPDATE) | KV_NONBLOCK)
          : this.n.kvPut(this.h, w.key, w.value, LOCK | (w.opFlags & (DUP_REPLACE | SYNC_UPDATE)) | KV_NONBLOCK);
    } catch (err) {
      this.warn(`${this.info.label}: ${(err as Error).message}`);
      r = KV.ERROR;
    }
    if (r === KV.BUSY) return false;
    this.writeStats.commit.observe((performance.now() - t0) / 1000);
    this.queued.shift();
    this.writeStats.alone++;
    this.batchDone([w], [r]);
    return true;
  }

  /** Hand the queued writes (up to MAX_BATCH) to the worker, or retry later when another process holds the lock. */
  private startBatch(): void {
    this.lockWait = undefined;
    if (this.queued.length === 0) {
      this.drainIdle();
      return this.settled();
    }
    if (this.queued.length === 1 && this.lockTries === 0 && this.writeAlone()) return;
    const batch = this.queued.splice(0, MAX_BATCH);
    const ops: Array<number | Bytes> = [];
    for (const w of batch) ops.push(w.opFlags, w.key, w.value);
    let r: number;
    this.batchStart = performance.now();
    try {
      r = this.n.kvBatch(this.h, ops, (statuses) => this.batchDone(batch, statuses));
    } catch (err) {
      this.warn(`${this.info.label}: ${(err as Error).message}`);
      r = KV.ERROR;
    }
    if (r === KV.OK) {
      this.inflight = true;
      this.lockTries = 0;
      this.writeStats.batches++;
      this.writeStats.writes += batch.length;
      return;
    }
    if (r === KV.BUSY) {
      this.queued.unshift(...batch);
      this.lockWait = setTimeout(() => this.startBatch(), RETRY_DELAYS[Math.min(this.lockTries++, RETRY_DELAYS.length - 1)]);
      return;
    }
    const error = this.failure().error;
    for (const w of batch) w.resolve({ status: -1, error });
    this.startBatch();
  }

  private batchDone(batch: PendingWrite[], statuses: number[]): void {
    if (this.inflight) this.writeStats.commit.observe((performance.now() - this.batchStart) / 1000);
    this.inflight = false;
    let failed = false;
    for (let i = 0; i < batch.length; i++) {
      const w = batch[i]!;
      const r = statuses[i];
      if (r === KV.OK) w.resolve({ status: 0, error: 0 });
      else if (r === KV.NOTFOUND) {
        // Postfix: silent with DUP_IGNORE, a warning with DUP_WARN, else fatal (here: a warning too).
        if (!(w.opFlags & KV_OP_DELETE) && !(w.reqFlags & DUP_IGNORE)) this.warn(`${this.info.dupName}: duplicate entry: "${w.key}"`);
        w.resolve({ status: 1, error: 0 });
      } else {
        if (!failed && !this.closed) this.warn(this.n.kvError(this.h).message);
        failed = true;
        w.resolve({ status: -1, error: DICT_ERR.RETRY });
      }
    }
    this.noteNul();
    // Reads that waited for this batch go first, then the writes that queued up meanwhile.
    this.drainIdle();
    if (!this.inflight && this.lockWait === undefined) this.startBatch();
  }

  /** Nothing queued or running: a pending close can go ahead. */
  private settled(): void {
    if (!this.closing || this.inflight || this.queued.length > 0 || this.lockWait !== undefined) return;
    this.closeNow();
    const waiters = this.closeWaiters;
    this.closeWaiters = [];
    for (const done of waiters) done();
  }

  /** Run the reads that waited for the writes before them. */
  private drainIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const run of waiters) run();
  }

  /** Run `op` now, or once the running write batch has finished with the handle. */
  private whenIdle<T>(op: () => T | Promise<T>): T | Promise<T> {
    // Writes accepted before this read (queued for the end of the turn, or running) go first.
    if (!this.inflight && this.queued.length === 0) return op();
    return new Promise<T>((resolve, reject) => {
      this.idleWaiters.push(() => {
        try {
          const r = op();
          if (r instanceof Promise) r.then(resolve, reject);
          else resolve(r);
        } catch (err) {
          reject(err);
        }
      });
    });
  }

  /**
   * dict_changed_name(): the file was removed or replaced (link count 0),
   * or, except for MULTI_WRITER tables (lmdb), modified since open.
   */
  changed(): boolean {
    return this.n.kvChanged(this.h, !this.info.multiWriter);
  }

  /** Closes once the writes already accepted are on disk (they are answered first). */
  close(): void | Promise<void> {
    if (this.closed || this.closing) return this.closed ? undefined : new Promise<void>((done) => this.closeWaiters.push(done));
    this.closing = true;
    if (!this.inflight && this.queued.length === 0 && this.lockWait === undefined) return this.closeNow();
    return new Promise<void>((done) => this.closeWaiters.push(done));
  }

  private closeNow(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.n.kvClose(this.h) !== KV.OK) this.warn(this.n.kvError(this.h).message);
  }
}

interface PendingWrite {
  /** kvBatch op flags: DUP_REPLACE, SYNC_UPDATE, KV_OP_DELETE */
  opFlags: number;
  key: Bytes;
  value: Bytes;
  /** the request's flags (DUP_IGNORE decides about the duplicate warning) */
  reqFlags: number;
  resolve: (r: WriteResult) => void;
}

/** Writes per batch at most (a batch holds the exclusive lock while it runs). */
const MAX_BATCH = 256;

/**
 * Open a key-value file as a table: read-only, or read-write creating a
 * missing file (proxywrite's O_RDWR|O_CREAT). A Berkeley DB file that
 * another process holds locked is opened once the lock is released.
 */
export function openKvTable(opts: TableOpenOptions, info: KvTableInfo): Table | Promise<Table> {
  const n = kvNative();
  const mode = opts.writable ? KV_MODE.WRITE : KV_MODE.READ;
  const attempt = (): KvHandle | Busy => {
    const h = n.kvOpen(info.kind, info.path, mode, opts.openFlags & TRY_BOTH, 0, info.mapSize ?? 0, info.cacheSize ?? 0, info.label, KV_NONBLOCK);
    if (typeof h === 'object' && h !== null && 'busy' in h) return BUSY;
    if (typeof h === 'object' && h !== null && 'error' in h) throw new TableOpenError(h.error);
    return h as KvHandle;
  };
  const make = (h: KvHandle): Table => {
    warnIfOlder(opts, info.path);
    return new KvTable(n, h, opts.type, opts.name, info, opts.warn, opts.writable);
  };
  const h = whenUnlocked(attempt);
  return h instanceof Promise ? h.then(make) : make(h);
}

/**
 * dict_lmdb_open()/dict_db_open() with DICT_FLAG_LOCK: warn when the source
 * file is newer than the indexed file, unless it changed in the last 100 s.
 */
function warnIfOlder(opts: TableOpenOptions, path: Bytes): void {
  if (!(opts.openFlags & LOCK)) return;
  try {
    const db = Math.floor(statSync(Buffer.from(path, 'latin1')).mtimeMs / 1000);
    const src = Math.floor(statSync(Buffer.from(opts.name, 'latin1')).mtimeMs / 1000);
    if (src > db && src < Math.floor(Date.now() / 1000) - 100) opts.warn(`database ${path} is older than source file ${opts.name}`);
  } catch {
    // no source file: nothing to compare
  }
}

// ---------------------------------------------------------------------------
// Bulk loading (postmap's mkmap_append loop)

/**
 * Store entries in a bulk-mode handle in order, with postmap's duplicate
 * policy: DUP_REPLACE = last wins, DUP_IGNORE = first wins silently,
 * otherwise first wins with `<dupName>: duplicate entry: "<key>"` (mkmap
 * always sets DUP_WARN). Keys are stored as given (the source reader folded
 * them); the NUL terminator follows the handle's mode. Returns the number of
 * entries read. An LMDB map that fills up is grown and loaded again from
 * the start (entries must then be an array; duplicate warnings are not
 * repeated).
 */
export function bulkLoad(n: NativeKv, h: KvHandle, entries: Iterable<BuildEntry>, opts: BuildOptions, dupName: Bytes): number {
  const flags = opts.dictFlags | DUP_WARN;
  const putFlags = flags & DUP_REPLACE;
  const replayable = Array.isArray(entries) ? (entries as BuildEntry[]) : undefined;
  let warnedUpTo = 0;
  const fail = (): never => {
    throw new BuildError(n.kvError(h).message);
  };
  for (;;) {
    let i = 0;
    let restart = false;
    for (const e of entries) {
      const r = n.kvPut(h, e.key, e.value, putFlags);
      if (r === KV.RESTART) {
        restart = true;
        break;
      }
      if (r === KV.NOTFOUND && !(flags & DUP_IGNORE) && i >= warnedUpTo) {
        const text = `${dupName}: duplicate entry: "${e.key}"`;
        if (!(flags & DUP_WARN)) throw new BuildError(text);
        opts.warn(text);
      } else if (r !== KV.OK && r !== KV.NOTFOUND) {
        fail();
      }
      i++;
    }
    if (!restart) {
      const c = n.kvCommit(h);
      if (c === KV.OK) return i;
      if (c !== KV.RESTART) fail();
    }
    if (!replayable) throw new BuildError(`error updating ${dupName}: MDB_MAP_FULL: Environment mapsize limit reached`);
    warnedUpTo = Math.max(warnedUpTo, i);
  }
}

/** postmap's umask(022 | (~source_mode & 077)) applied to a new file's 0644. */
export function newFileMode(source: BuildOptions['source']): number {
  return source ? 0o644 & ~(0o022 | (~source.mode & 0o077)) : 0o644;
}
