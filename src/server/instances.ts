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
} from '../tables/table.js';

export type Opener = (opts: TableOpenOptions) => Table | Promise<Table>;

export interface InstanceKey {
  /** "type:name" with every proxy: prefix stripped */
  spec: string;
  writable: boolean;
  fold: FoldMode;
  /** DUP_IGNORE / DUP_REPLACE bits (0: warn and keep first) */
  dup: number;
}

export type Instance =
  | { ok: true; table: Table; openedAt: number }
  | { ok: false; reason: string; openedAt: number };

/** How long a surrogate stays before the next request tries to open the table again (ms). */
export const SURROGATE_RETRY_MS = 10_000;

export class TableInstances {
  private readonly instances = new Map<string, Promise<Instance>>();
  /** resolved instances, for a synchronous fast path */
  private readonly resolved = new Map<string, Instance>();
  /** implFlags of the tables opened so far, by "type:name" */
  private readonly implFlags = new Map<string, number>();

  constructor(
    private readonly opener: Opener,
    private readonly param: (name: string) => string | undefined,
    /** whether a type folds keys / applies the duplicate policy while loading its source (texthash, inline) */
    private readonly loadsSource: (type: string) => boolean = () => true,
  ) {}

  /**
   * One instance per table, except that tables which fold keys while loading
   * their source (texthash, inline, and composites whose components may) get
   * one instance per fold mode and duplicate policy. Writable instances are
   * never split: every writer must see the same table.
   */
  private keyString(k: InstanceKey): string {
    const type = k.spec.slice(0, k.spec.indexOf(':'));
    const split = !k.writable && this.loadsSource(type);
    return split ? `r\0${k.fold}\0${k.dup}\0${k.spec}` : `${k.writable ? 'w' : 'r'}\0\0\0${k.spec}`;
  }

  /** The type bits of a table opened before (any instance), or undefined. */
  knownImplFlags(spec: string): number | undefined {
    return this.implFlags.get(spec);
  }

  /** The instance if it is already open (no waiting), else undefined. */
  peek(k: InstanceKey): Instance | undefined {
    return this.resolved.get(this.keyString(k));
  }

  get(k: InstanceKey): Promise<Instance> {
    const ks = this.keyString(k);
    const existing = this.instances.get(ks);
    if (existing) return existing;
    const split = ks.charCodeAt(2) !== 0;
    const p = this.open(split ? k : { ...k, fold: 'none', dup: 0 }).then((inst) => {
      if (this.instances.get(ks) === p) this.resolved.set(ks, inst);
      if (!inst.ok) {
        // Let a later request try again: a missing file may appear, a backend may come back.
        setTimeout(() => {
          if (this.instances.get(ks) === p) {
            this.instances.delete(ks);
            this.resolved.delete(ks);
          }
        }, SURROGATE_RETRY_MS).unref();
      }
      return inst;
    });
    this.instances.set(ks, p);
    return p;
  }

  private async open(k: InstanceKey): Promise<Instance> {
    const colon = k.spec.indexOf(':');
    const type = k.spec.slice(0, colon);
    const name = k.spec.slice(colon + 1);
    const openedAt = Date.now();
    if (colon <= 0 || name.length === 0) {
      const reason = `open dictionary: expecting "type:name" form instead of "${k.spec}"`;
      log.error(logBytes(reason));
      return { ok: false, reason, openedAt };
    }
    const opts: TableOpenOptions = {
      type,
      name,
      openFlags: k.dup | (k.fold !== 'none' ? DICT_FLAG.FOLD_FIX : 0) | (k.fold === 'utf8' ? DICT_FLAG.UTF8_REQUEST : 0),
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
      log.error(logBytes(reason));
      return { ok: false, reason, openedAt };
    }
  }

  /** Close every open table (shutdown). */
  async closeAll(): Promise<void> {
    const all = [...this.instances.values()];
    this.instances.clear();
    this.resolved.clear();
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
    return this.instances.size;
  }
}
