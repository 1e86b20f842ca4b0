/** static:value (src/util/dict_static.c): every key maps to the same value. */
import { DICT_FLAG } from '../../protocol/flags.js';
import { extpar } from '../../util/braces.js';
import { filesToBase64 } from '../core/rhsfile.js';
import { TableOpenError, found, type Bytes, type LookupResult, type Table, type TableOpenOptions } from '../core/table.js';
import type { TableType } from '../core/registry.js';

/** The value of static:name: the name, or the trimmed inside of one {...} group. */
export function staticValue(opts: TableOpenOptions): Bytes {
  let value = opts.name;
  if (value[0] === '{') {
    const inner = extpar(value, true);
    if (inner.error !== undefined) throw new TableOpenError(`bad static:name syntax: ${inner.error}`);
    value = inner.text;
  }
  if (opts.openFlags & DICT_FLAG.SRC_RHS_IS_FILE) {
    const res = filesToBase64(value);
    if ('error' in res) throw new TableOpenError(res.error);
    value = res.value;
  }
  return value;
}

/** Opener for static:value. */
export function openStatic(opts: TableOpenOptions): Table {
  const result: LookupResult = found(staticValue(opts));
  return {
    type: 'static',
    name: opts.name,
    implFlags: DICT_FLAG.FIXED,
    lookup: () => result,
  };
}

export const staticType: TableType = { name: 'static', open: openStatic, implFlags: DICT_FLAG.FIXED, writable: false };
