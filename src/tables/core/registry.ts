/**
 * Table type registry (dict_open_register/dict_open3 in src/util/dict_open.c).
 */
import { TableOpenError, type Bytes, type Table, type TableOpenOptions, type TableOpener } from './table.js';

/** What a type tells about itself before any table is opened. */
export interface TableTypeInfo {
  /** FIXED or PATTERN (plus MULTI_WRITER ...), as the opened tables report in implFlags. */
  implFlags: number;
  /** Whether tables of this type can be opened for writing. */
  writable: boolean;
  /**
   * Whether the type folds keys and applies the duplicate policy while it
   * loads its source (texthash, inline): such tables get one open instance
   * per fold mode. Others are opened once whatever the request flags.
   */
  loadsSource?: boolean;
}

interface Registration {
  opener: TableOpener;
  info?: TableTypeInfo;
}

const registry = new Map<string, Registration>();

/** Register (or replace) the opener for a table type. */
export function registerTableType(type: string, opener: TableOpener, info?: TableTypeInfo): void {
  registry.set(type, { opener, info });
}

/** The registered types, in registration order. */
export function tableTypes(): string[] {
  return [...registry.keys()];
}

/** Info given at registration, if any; undefined for unknown types. */
export function tableTypeInfo(type: string): TableTypeInfo | undefined {
  return registry.get(type)?.info;
}

function typeNameError(spec: string): TableOpenError {
  return new TableOpenError(`open dictionary: expecting "type:name" form instead of "${spec}"`);
}

/** Split "type:name" at the first ':'; both parts must be non-empty. */
export function splitTableSpec(spec: Bytes): { type: Bytes; name: Bytes } {
  const colon = spec.indexOf(':');
  if (colon <= 0 || colon === spec.length - 1) throw typeNameError(spec);
  return { type: spec.slice(0, colon), name: spec.slice(colon + 1) };
}

/**
 * Open a table of a registered type. Errors (unknown type, bad name, missing
 * source ...) reject with a TableOpenError carrying Postfix's message.
 */
export async function openTable(opts: TableOpenOptions): Promise<Table> {
  if (opts.type === '' || opts.name === '') throw typeNameError(`${opts.type}:${opts.name}`);
  const reg = registry.get(opts.type);
  if (!reg) throw new TableOpenError(`unsupported dictionary type: ${opts.type}`);
  return reg.opener(opts);
}
