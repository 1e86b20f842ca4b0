/**
 * Open table instances, shared by every client of the server. One instance
 * per (service mode, table name, fold mode, duplicate policy). A table that
 * fails to open becomes a surrogate: open answers OK, every operation RETRY.
 */
import { DICT_FLAG } from '../protocol/flags.js';
import { log, logBytes } from '../log.js';
import {
  TableOpenError,
  type FoldMode,
  type Table,
  type TableOpenOptions,
  type WriteStats,
} from '../tables/core/table.js';
import { splitAtColon, splitTableSpec } from '../tables/core/registry.js';

export type Opener = (opts: TableOpenOptions) => Table | Promise<Table>;

export interface InstanceKey {
  /** "type:name" with every proxy: prefix stripped */
  spec: string;
  writable: boolean;
  fold: FoldMode;
  /** DUP_IGNORE / DUP_REPLACE bits (0: warn and keep first) */
  dup: number;
  /**
   * Instance flags that give an instance of its own, as in Postfix (which
   * opens one instance per name and flags): TRY0NULL / TRY1NULL (postmap
   * -n / -N) and NO_UNAUTH (a client that must not get unauthenticated
   * data: socketmap, tcp and memcache refuse such an open).
   */
  bits?: number;
}

/** The instance flags that InstanceKey.bits carries. */
export const INSTANCE_BITS = DICT_FLAG.TRY0NULL | DICT_FLAG.TRY1NULL | DICT_FLAG.NO_UNAUTH;

export type Instance =
  | { ok: true; table: Table; openedAt: number }
  | { ok: false; reason: string; openedAt: number };

/** How long a surrogate stays before the next request tries to open the table again (ms). */
export const SURROGATE_RETRY_MS = 10_000;

/** One table instance and its reload state. */
interface Slot {
  key: InstanceKey;
  /** resolves to the instance in service (replaced on reload) */
  pending: Promise<Instance>;
  /** the instance in service once open, for a synchronous fast path */
  current?: Instance;
  reloading: boolean;
  /** times a changed version was swapped in, and when the last one was (Date.now()) */
  reloads: number;
  reloadedAt?: number;
  /** taken out of service by closeUnapproved */
  removed?: boolean;
}

/** One open instance as `proxymapd status` shows it (TableInstances.list). */
export interface InstanceInfo {
  /** "type:name" */
  spec: string;
  writable: boolean;
  fold: FoldMode;
  dup: number;
  bits: number;
  /** false: the table could not be opened (a surrogate answering "try again") */
  ok: boolean;
  /** Date.now() of the open, undefined while it is still in progress */
  openedAt?: number;
  reloads: number;
  reloadedAt?: number;
}

/** The last failed open or reload of a table. */
export interface TableError {
  at: number;
  message: string;
}

export interface ReloadOptions {
  /** how often open tables are checked for changes (ms; 0: never) */
  checkIntervalMs: number;
  /** wait this long after a change is seen before reading the new version (ms) */
  settleMs: number;
  /** keep a replaced version open this long for requests still using it (ms) */
  graceMs: number;
}

export const DEFAULT_RELOAD: ReloadOptions = { checkIntervalMs: 1000, settleMs: 300, graceMs: 10_000 };

export class TableInstances {
  private readonly slots = new Map<string, Slot>();
  /** implFlags of the tables opened so far, by "type:name" */
  private readonly implFlags = new Map<string, number>();
  private readonly reload: ReloadOptions;
  private timer?: NodeJS.Timeout;
  /** the last open or reload failure of each table ("type:name") */
  private readonly errors = new Map<string, TableError>();
  /** counts, for tests and metrics */
  reloads = 0;
  reloadFailures = 0;
  /** told when a reload has swapped a table for its new version (the lookup cache drops its answers) */
  onReplaced?: (spec: string) => void;

  constructor(
    private readonly opener: Opener,
    private readonly param: (name: string) => string | undefined,
    /** whether a type folds keys / applies the duplicate policy while loading its source (texthash, inline) */
    private readonly loadsSource: (type: string) => boolean = () => true,
    reload: Partial<ReloadOptions> = {},
  ) {
    this.reload = { ...DEFAULT_RELOAD, ...reload };
    this.setCheckInterval(this.reload.checkIntervalMs);
  }

  /** Change how often open tables are checked for changes (ms; 0: never), e.g. on a configuration reload. */
  setCheckInterval(ms: number): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.reload.checkIntervalMs = ms;
    if (ms > 0) {
      this.timer = setInterval(() => void this.checkChanges(), ms);
      this.timer.unref();
    }
  }

  /** The open instances (and opens in progress), for status displays. */
  list(): InstanceInfo[] {
    return [...this.slots.values()].map((s) => ({
      spec: s.key.spec,
      writable: s.key.writable,
      fold: s.key.fold,
      dup: s.key.dup,
      bits: s.key.bits ?? 0,
      ok: s.current?.ok ?? true,
      openedAt: s.current?.openedAt,
      reloads: s.reloads,
      reloadedAt: s.reloadedAt,
    }));
  }

  /** The last failed open or reload of each table that had one. */
  lastErrors(): ReadonlyMap<string, TableError> {
    return this.errors;
  }

  /**
   * Close the instances that `approved(spec, writable)` no longer allows (a
   * configuration reload withdrew them). They leave the table set at once;
   * the tables themselves close after the grace period, since requests that
   * started before may still be using them. Returns how many were removed.
   */
  closeUnapproved(approved: (spec: string, writable: boolean) => boolean): number {
    let n = 0;
    for (const [ks, slot] of this.slots) {
      if (approved(slot.key.spec, slot.key.writable)) continue;
      this.slots.delete(ks);
      slot.removed = true;
      if (this.lastKey?.ks === ks) this.lastKey = undefined;
      n++;
      void slot.pending.then((inst) => {
        const tables = new Set([slot.current, inst].filter((i): i is Instance & { ok: true } => !!i?.ok).map((i) => i.table));
        setTimeout(() => {
          for (const t of tables) void Promise.resolve(t.close?.()).catch(() => undefined);
        }, this.reload.graceMs).unref();
      });
    }
    for (const spec of this.errors.keys()) {
      if (!approved(spec, false) && !approved(spec, true)) this.errors.delete(spec);
    }
    return n;
  }

  /**
   * One instance per table, except that tables which fold keys while loading
   * their source (texthash, inline, and composites whose components may) get
   * one instance per fold mode and duplicate policy. Writable instances are
   * never split: every writer must see the same table.
   */
  private isSplit(k: InstanceKey): boolean {
    return !k.writable && this.loadsSource(splitAtColon(k.spec)?.type ?? '');
  }

  private keyString(k: InstanceKey): string {
    // Consecutive requests nearly always name the same instance: comparing the fields is cheaper than building
    // and hashing the key string again.
    const last = this.lastKey;
    if (last && last.spec === k.spec && last.writable === k.writable && last.fold === k.fold && last.dup === k.dup && last.bits === (k.bits ?? 0)) {
      return last.ks;
    }
    const bits = k.bits ?? 0;
    const ks = this.isSplit(k) ? `r\0${k.fold}\0${k.dup}\0${bits}\0${k.spec}` : `${k.writable ? 'w' : 'r'}\0\0\0${bits}\0${k.spec}`;
    this.lastKey = { spec: k.spec, writable: k.writable, fold: k.fold, dup: k.dup, bits, ks };
    return ks;
  }

  private lastKey?: { spec: string; writable: boolean; fold: FoldMode; dup: number; bits: number; ks: string };

  /** The type bits of a table opened before (any instance), or undefined. */
  knownImplFlags(spec: string): number | undefined {
    return this.implFlags.get(spec);
  }

  /** The instance if it is already open (no waiting), else undefined. */
  peek(k: InstanceKey): Instance | undefined {
    return this.slots.get(this.keyString(k))?.current;
  }

  get(k: InstanceKey): Promise<Instance> {
    const ks = this.keyString(k);
    const existing = this.slots.get(ks);
    if (existing) return existing.pending;
    // A table opened once for every fold mode is opened without load-time folding.
    const key = this.isSplit(k) ? k : { ...k, fold: 'none' as const, dup: 0 };
    const slot: Slot = { key, pending: this.open(key), reloading: false, reloads: 0 };
    slot.pending.then((inst) => {
      if (this.slots.get(ks) !== slot) return;
      slot.current = inst;
      if (!inst.ok) {
        // Let a later request try again: a missing file may appear, a backend may come back.
        setTimeout(() => {
          if (this.slots.get(ks) === slot && slot.current === inst) this.slots.delete(ks);
        }, SURROGATE_RETRY_MS).unref();
      }
    });
    this.slots.set(ks, slot);
    return slot.pending;
  }

  /**
   * Reload without restart: where Postfix's proxymap exits when a table file
   * changed, check the open read-only tables and swap a changed one for its
   * new version. A version that cannot be opened leaves the old one in
   * service, with a warning. Requests hold the table they started with, so
   * each sees one version.
   */
  async checkChanges(): Promise<void> {
    for (const [ks, slot] of this.slots) {
      const inst = slot.current;
      if (!inst?.ok || slot.reloading || slot.key.writable || !inst.table.changed) continue;
      let changed = false;
      try {
        changed = await inst.table.changed();
      } catch {
        changed = false;
      }
      if (changed && this.slots.get(ks) === slot && slot.current === inst) await this.reopen(slot, inst);
    }
  }

  private async reopen(slot: Slot, old: Instance & { ok: true }): Promise<void> {
    slot.reloading = true;
    const name = logBytes(slot.key.spec);
    try {
      await new Promise((r) => setTimeout(r, this.reload.settleMs));
      const next = await this.open(slot.key, true);
      if (!next.ok) {
        this.reloadFailures++;
        this.errors.set(slot.key.spec, { at: Date.now(), message: `reload: ${next.reason}` });
        log.warn(`table ${name} has changed, but the new version cannot be used: ${logBytes(next.reason)}; keeping the old version`);
        return;
      }
      // Withdrawn meanwhile (closeUnapproved), or written to again while we read it (try again at the next check).
      if (slot.removed || (await next.table.changed?.())) {
        await next.table.close?.();
        return;
      }
      slot.current = next;
      slot.pending = Promise.resolve(next);
      this.onReplaced?.(slot.key.spec);
      this.reloads++;
      slot.reloads++;
      slot.reloadedAt = Date.now();
      log.info(`table ${name} has changed -- reloaded`);
      setTimeout(() => void Promise.resolve(old.table.close?.()).catch(() => undefined), this.reload.graceMs).unref();
    } finally {
      slot.reloading = false;
    }
  }

  private async open(k: InstanceKey, quiet = false): Promise<Instance> {
    const openedAt = Date.now();
    let type: string, name: string;
    try {
      ({ type, name } = splitTableSpec(k.spec));
    } catch (e) {
      const reason = (e as Error).message;
      log.error(logBytes(reason));
      this.errors.set(k.spec, { at: openedAt, message: reason });
      return { ok: false, reason, openedAt };
    }
    const opts: TableOpenOptions = {
      type,
      name,
      openFlags:
        k.dup |
        ((k.bits ?? 0) & INSTANCE_BITS) |
        (k.fold !== 'none' ? DICT_FLAG.FOLD_FIX : 0) |
        (k.fold === 'utf8' ? DICT_FLAG.UTF8_REQUEST : 0),
      fold: k.fold,
      writable: k.writable,
      param: this.param,
      warn: (text) => log.warn(logBytes(text)),
    };
    try {
      const table = await this.opener(opts);
      this.implFlags.set(k.spec, table.implFlags);
      return { ok: true, table, openedAt };
    } catch (e) {
      const reason = e instanceof TableOpenError ? e.message : `${k.spec}: ${(e as Error).message ?? String(e)}`;
      if (!(e instanceof TableOpenError)) log.warn(`unexpected error opening ${logBytes(k.spec)}: ${(e as Error).stack ?? e}`);
      if (!quiet) {
        log.error(logBytes(reason));
        this.errors.set(k.spec, { at: openedAt, message: reason });
      }
      return { ok: false, reason, openedAt };
    }
  }

  /** Close every open table (shutdown). */
  async closeAll(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    const all = [...this.slots.values()].map((s) => s.pending);
    this.slots.clear();
    for (const p of all) {
      const inst = await p;
      if (inst.ok) {
        try {
          await inst.table.close?.();
        } catch {
          /* closing is best effort */
        }
      }
    }
  }

  get size(): number {
    return this.slots.size;
  }

  /** The instances opened (or failed to open) so far, for metrics; instances still opening are left out. */
  opened(): OpenInstanceInfo[] {
    const out: OpenInstanceInfo[] = [];
    for (const slot of this.slots.values()) {
      const inst = slot.current;
      if (!inst) continue;
      out.push(
        inst.ok
          ? { spec: slot.key.spec, writable: slot.key.writable, ok: true, openedAt: inst.openedAt, writeStats: inst.table.writeStats }
          : { spec: slot.key.spec, writable: slot.key.writable, ok: false, reason: inst.reason, openedAt: inst.openedAt },
      );
    }
    return out;
  }

  /**
   * An instance of a table for a readiness check: one in service or being
   * opened (any fold mode), else one opened as a client's open with `fold`
   * would open it, which then serves the clients that come. A table that
   * failed to open is tried again at once (the check is the operator asking
   * whether it works now), and the new instance serves the clients too.
   */
  probe(spec: string, writable: boolean, fold: FoldMode): Promise<Instance> {
    let failed: { ks: string; key: InstanceKey } | undefined;
    for (const [ks, slot] of this.slots) {
      if (slot.key.spec !== spec || slot.key.writable !== writable) continue;
      if (slot.current?.ok !== false) return slot.pending;
      failed ??= { ks, key: slot.key };
    }
    if (!failed) return this.get({ spec, writable, fold, dup: 0, bits: 0 });
    this.slots.delete(failed.ks);
    return this.get(failed.key);
  }
}

/** What opened() tells of one instance (metrics). */
export interface OpenInstanceInfo {
  spec: string;
  writable: boolean;
  ok: boolean;
  reason?: string;
  openedAt: number;
  writeStats?: WriteStats;
}
