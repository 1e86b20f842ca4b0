/**
 * Table types and their registry (dict_open_register/dict_open3 in
 * src/util/dict_open.c, plus what proxymapd's daemon needs to know about a
 * type before any table is opened).
 *
 * Every type module exports one TableType record; src/tables/types.ts lists
 * them in one array, the only place a new type is added. The daemon, the
 * server and the CLI work from a TableRegistry and never name a type.
 */
import type { TableBuilder } from '../build/buildtypes.js';
import { DICT_FLAG } from '../../protocol/flags.js';
import { TableOpenError, type Bytes, type Table, type TableOpenOptions, type TableOpener } from './table.js';

/** What the daemon gives the types before any table is opened. */
export interface TypeContext {
  /** A main.cf parameter ($-expanded), undefined when unset. */
  param(name: string): string | undefined;
  /** The environment the daemon runs with (MAIL_CONFIG set, as Postfix's commands given -c). */
  env: NodeJS.ProcessEnv;
  warn(text: string): void;
}

export interface TableType {
  /** The type in "type:name". */
  readonly name: string;
  readonly open: TableOpener;
  /** FIXED or PATTERN (plus MULTI_WRITER ...), as the opened tables report in implFlags; 0 when only known once opened. */
  readonly implFlags: number;
  /** Whether tables of this type can be opened for writing (proxywrite); the SQL types only when their .cf has an update or delete query. */
  readonly writable: boolean;
  /**
   * Whether the type folds keys and applies the duplicate policy while it
   * loads its source (texthash, inline): such tables get one open instance
   * per fold mode. Others are opened once whatever the request flags.
   */
  readonly loadsSource?: boolean;
  /** Bulk creation from a postmap source (`proxymapd build`), for the types postmap can create. */
  readonly build?: TableBuilder;
  /** The table specs a name is made of (pipemap, unionmap): FIXED-ness and warm-ups follow them. */
  readonly components?: (name: Bytes) => Bytes[] | undefined;
  /** Daemon settings, read once at start before any table is opened (environ: import_environment, ...). */
  readonly configure?: (ctx: TypeContext) => void;
  /**
   * Run once at start when tables of this type are approved, while the
   * server is idle, so that the first open of a large table does not run in
   * the interpreter. Warm-ups run one after another in registry order; one
   * function shared by several types runs once, given all approved types.
   */
  readonly warmUp?: (approved: ReadonlySet<string>) => void | Promise<void>;
  /** Whether this type's work runs on other threads right now (the server then does not busy-poll). */
  readonly offThreadWork?: () => boolean;
}

/** The flags a type states about its tables (what tableTypeInfo() reports). */
export interface TableTypeInfo {
  implFlags: number;
  writable: boolean;
  loadsSource?: boolean;
}

function typeNameError(spec: string): TableOpenError {
  return new TableOpenError(`open dictionary: expecting "type:name" form instead of "${spec}"`);
}

/** Split "type:name" at the first ':'; both parts must be non-empty. */
export function splitTableSpec(spec: Bytes): { type: Bytes; name: Bytes } {
  const s = splitAtColon(spec);
  if (!s || s.type === '' || s.name === '') throw typeNameError(spec);
  return s;
}

/** "type:name" split at the first ':' with no check of the parts, or undefined without a ':'. */
export function splitAtColon(spec: Bytes): { type: Bytes; name: Bytes } | undefined {
  const colon = spec.indexOf(':');
  return colon < 0 ? undefined : { type: spec.slice(0, colon), name: spec.slice(colon + 1) };
}

/** "type:name" split, or undefined when there is no type (no exception). */
function trySplit(spec: Bytes): { type: Bytes; name: Bytes } | undefined {
  const s = splitAtColon(spec);
  return s && s.type !== '' ? s : undefined;
}

const MAX_COMPONENT_DEPTH = 16;

export class TableRegistry {
  private readonly byName = new Map<string, TableType>();

  constructor(types: Iterable<TableType> = []) {
    for (const t of types) this.add(t);
  }

  /** Add (or replace) a type. */
  add(t: TableType): void {
    this.byName.set(t.name, t);
  }

  get(type: string): TableType | undefined {
    return this.byName.get(type);
  }

  /** The registered types, in registration order. */
  names(): string[] {
    return [...this.byName.keys()];
  }

  /**
   * Open a table of a registered type. Errors (unknown type, bad name,
   * missing source ...) reject with a TableOpenError carrying Postfix's message.
   */
  readonly open = async (opts: TableOpenOptions): Promise<Table> => {
    if (opts.type === '' || opts.name === '') throw typeNameError(`${opts.type}:${opts.name}`);
    const t = this.byName.get(opts.type);
    if (!t) throw new TableOpenError(`unsupported dictionary type: ${opts.type}`);
    return t.open(opts);
  };

  info(type: string): TableTypeInfo | undefined {
    const t = this.byName.get(type);
    if (!t) return undefined;
    const info: TableTypeInfo = { implFlags: t.implFlags, writable: t.writable };
    if (t.loadsSource) info.loadsSource = true;
    return info;
  }

  builder(type: string): TableBuilder | undefined {
    return this.byName.get(type)?.build;
  }

  /** The types with a builder. */
  buildable(): string[] {
    return [...this.byName.values()].filter((t) => t.build).map((t) => t.name);
  }

  loadsSource(type: string): boolean {
    return this.byName.get(type)?.loadsSource ?? false;
  }

  /** FIXED or not, known before opening: the type's flags, or those of the first component of a composite. */
  typeFixed(spec: Bytes, depth = 0): boolean | undefined {
    const s = trySplit(spec);
    const t = s && this.byName.get(s.type);
    if (!s || !t) return undefined;
    if (t.components) {
      const first = depth < MAX_COMPONENT_DEPTH ? t.components(s.name)?.[0] : undefined;
      return first === undefined ? undefined : this.typeFixed(first, depth + 1);
    }
    return (t.implFlags & DICT_FLAG.FIXED) !== 0;
  }

  /** The types named by table specs, composites' components included (proxy: prefixes skipped). */
  typesIn(specs: Iterable<Bytes>): Set<string> {
    const out = new Set<string>();
    const visit = (spec: Bytes, depth: number): void => {
      const s = trySplit(spec.replace(/^(proxy:)+/, ''));
      if (!s) return;
      out.add(s.type);
      const t = this.byName.get(s.type);
      if (t?.components && depth < MAX_COMPONENT_DEPTH) for (const c of t.components(s.name) ?? []) visit(c, depth + 1);
    };
    for (const spec of specs) visit(spec, 0);
    return out;
  }

  /** Hand the daemon's settings to every type that reads some (a function shared by several types, once). */
  configure(ctx: TypeContext): void {
    const done = new Set<unknown>();
    for (const t of this.byName.values()) {
      if (!t.configure || done.has(t.configure)) continue;
      done.add(t.configure);
      t.configure(ctx);
    }
  }

  /** Whether any type has work on other threads. */
  readonly offThreadWork = (): boolean => {
    for (const t of this.byName.values()) if (t.offThreadWork?.()) return true;
    return false;
  };

  /** The warm-ups of the given types, one after another in registry order; failures are reported, not thrown. */
  async warmUp(types: ReadonlySet<string>, warn: (text: string) => void): Promise<void> {
    const done = new Set<unknown>();
    for (const t of this.byName.values()) {
      if (!t.warmUp || !types.has(t.name) || done.has(t.warmUp)) continue;
      done.add(t.warmUp);
      try {
        await t.warmUp(types);
      } catch (e) {
        warn(`start-up warm-up of ${t.name}: ${(e as Error).message}`);
      }
    }
  }
}

/**
 * The registry the built-in types are added to (src/tables/types.ts) and
 * the one composites open their components through.
 */
export const defaultRegistry = new TableRegistry();

/** Open a table through the default registry. */
export function openTable(opts: TableOpenOptions): Promise<Table> {
  return defaultRegistry.open(opts);
}

/** Register (or replace) a type in the default registry, from an opener and its flags. */
export function registerTableType(type: string, opener: TableOpener, info: TableTypeInfo = { implFlags: 0, writable: false }): void {
  defaultRegistry.add({ name: type, open: opener, ...info });
}

/** The default registry's types, in registration order. */
export function tableTypes(): string[] {
  return defaultRegistry.names();
}

/** A type's flags in the default registry; undefined for unknown types. */
export function tableTypeInfo(type: string): TableTypeInfo | undefined {
  return defaultRegistry.info(type);
}
