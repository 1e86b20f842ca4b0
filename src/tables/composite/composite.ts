/**
 * pipemap:{t1:n1, t2:n2, ...} and unionmap:{t1:n1, t2:n2, ...}
 * (src/util/dict_pipe.c, dict_union.c, Postfix 3.7 semantics).
 *
 * Components are opened with the composite's own open options. As in
 * Postfix, where every component sits behind its own dictionary layer, each
 * component gets the key folded when it is FIXED, and with the UTF-8 layer
 * active a component's non-UTF-8 value is a configuration error. The
 * composite reports the FIXED/PATTERN bits of its first component.
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { balpar, tokenizeQ } from '../../util/braces.js';
import { utf8Active } from '../core/casefold.js';
import { utf8LayerLookup } from '../core/utf8layer.js';
import { openTable, splitAtColon } from '../core/registry.js';
import {
  DICT_ERR,
  NOT_FOUND,
  TableOpenError,
  found,
  type Bytes,
  type LookupResult,
  type Table,
  type TableOpenOptions,
} from '../core/table.js';
import { requireReadOnly } from '../core/util.js';
import type { TableType } from '../core/registry.js';


/** A component: its table and "type:name" as given. */
interface Component {
  spec: Bytes;
  table: Table;
}

/**
 * Split a composite name into component specs: one balanced `{...}` whose
 * inside is split at commas and whitespace outside braces. null for bad syntax.
 */
export function splitCompositeName(name: Bytes): Bytes[] | null {
  const len = balpar(name);
  if (len === 0 || len !== name.length) return null;
  const inner = name.slice(1, len - 1);
  if (inner === '') return null;
  const parts = tokenizeQ(inner, ', \t\r\n');
  return parts.length === 0 ? null : parts;
}

/** Open the components in order; the first failure (bad syntax or a component's open error) aborts. */
async function openComponents(opts: TableOpenOptions): Promise<Component[]> {
  requireReadOnly(opts);
  const syntax = () =>
    new TableOpenError(`bad syntax: "${opts.type}:${opts.name}"; need "${opts.type}:{type:name...}"`);
  const specs = splitCompositeName(opts.name);
  if (!specs) throw syntax();
  const out: Component[] = [];
  try {
    for (const spec of specs) {
      const parts = splitAtColon(spec);
      if (!parts) throw syntax();
      const table = await openTable({ ...opts, ...parts });
      out.push({ spec, table });
    }
  } catch (err) {
    await closeAll(out);
    throw err;
  }
  return out;
}

async function closeAll(components: readonly Component[]): Promise<void> {
  for (const c of components) {
    try {
      await c.table.close?.();
    } catch {
      /* best effort */
    }
  }
}

/** Base of the two composites: component lookups through a per-component dictionary layer. */
abstract class CompositeTable implements Table {
  readonly implFlags: number;
  readonly foldsKeys = true;
  private readonly utf8: boolean;

  constructor(
    readonly type: string,
    readonly name: Bytes,
    protected readonly components: readonly Component[],
    private readonly opts: TableOpenOptions,
  ) {
    this.implFlags = components[0].table.implFlags & (DICT_FLAG.FIXED | DICT_FLAG.PATTERN);
    this.utf8 = utf8Active(opts.fold, opts.openFlags);
  }

  abstract lookup(key: Bytes, flags: number): LookupResult | Promise<LookupResult>;

  /**
   * Look a key up in one component the way Postfix's dict_get() on the
   * component does: UTF-8 key check, folding for FIXED components, UTF-8
   * value check.
   */
  protected componentLookup(c: Component, key: Bytes, flags: number): LookupResult | Promise<LookupResult> {
    return utf8LayerLookup(c.table, c.spec, key, this.opts.fold, this.utf8, flags, this.opts.warn);
  }

  /** True when any component's source changed. */
  async changed(): Promise<boolean> {
    for (const c of this.components) if (await c.table.changed?.()) return true;
    return false;
  }

  async close(): Promise<void> {
    await closeAll(this.components);
  }
}

/** pipemap: each found value is the next component's key; the last value is the result. */
class PipeTable extends CompositeTable {
  lookup(key: Bytes, flags: number): LookupResult | Promise<LookupResult> {
    return this.step(0, key, flags);
  }

  private step(from: number, query: Bytes, flags: number): LookupResult | Promise<LookupResult> {
    for (let i = from; i < this.components.length; i++) {
      const res = this.componentLookup(this.components[i], query, flags);
      if (res instanceof Promise) {
        return res.then((r) => (r.found ? (i + 1 < this.components.length ? this.step(i + 1, r.value, flags) : r) : r));
      }
      if (!res.found) return res;
      query = res.value;
    }
    return found(query);
  }
}

/** unionmap: every component gets the same key; found values are joined with ','. */
class UnionTable extends CompositeTable {
  lookup(key: Bytes, flags: number): LookupResult | Promise<LookupResult> {
    return this.step(0, '', key, flags);
  }

  private step(from: number, acc: Bytes, key: Bytes, flags: number): LookupResult | Promise<LookupResult> {
    for (let i = from; i < this.components.length; i++) {
      const res = this.componentLookup(this.components[i], key, flags);
      if (res instanceof Promise) {
        return res.then((r) => {
          if (!r.found && r.error !== DICT_ERR.NONE) return r;
          return this.step(i + 1, r.found ? join(acc, r.value) : acc, key, flags);
        });
      }
      if (res.found) acc = join(acc, res.value);
      else if (res.error !== DICT_ERR.NONE) return res;
    }
    // Postfix tests the joined length: only empty values found means not found.
    return acc.length > 0 ? found(acc) : NOT_FOUND;
  }
}

/** Postfix appends ',' only when the buffer is non-empty, so empty values vanish. */
function join(acc: Bytes, value: Bytes): Bytes {
  return acc.length > 0 ? `${acc},${value}` : value;
}

/** Opener for pipemap:{type:name, ...}. */
export async function openPipemap(opts: TableOpenOptions): Promise<Table> {
  return new PipeTable('pipemap', opts.name, await openComponents(opts), opts);
}

/** Opener for unionmap:{type:name, ...}. */
export async function openUnionmap(opts: TableOpenOptions): Promise<Table> {
  return new UnionTable('unionmap', opts.name, await openComponents(opts), opts);
}

// FIXED/PATTERN come from the first component (0 here: known only once opened, see Table.implFlags);
// components may fold keys while loading, so composites get one instance per fold mode.
const components = (name: Bytes): Bytes[] | undefined => splitCompositeName(name) ?? undefined;
export const pipemapType: TableType = { name: 'pipemap', open: openPipemap, implFlags: 0, writable: false, loadsSource: true, components };
export const unionmapType: TableType = { name: 'unionmap', open: openUnionmap, implFlags: 0, writable: false, loadsSource: true, components };
