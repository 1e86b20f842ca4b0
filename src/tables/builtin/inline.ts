/** inline:{key=value, ...} (src/util/dict_inline.c). */
import { DICT_FLAG } from '../../protocol/flags.js';
import { balpar, extpar, splitQNameVal, tokenizeQ } from '../../util/braces.js';
import { foldKey, passesUtf8Check, utf8Active } from '../core/casefold.js';
import { MemoryTable } from '../core/memory.js';
import { filesToBase64 } from '../core/rhsfile.js';
import { TableOpenError, type Bytes, type Table, type TableOpenOptions } from '../core/table.js';
import { requireReadOnly } from '../core/util.js';
import type { TableType } from '../core/registry.js';

/** Parse an inline table name into stored (folded) key -> value; last duplicate wins. */
export function parseInline(opts: TableOpenOptions): Map<Bytes, Bytes> {
  const { name, openFlags, fold } = opts;
  const rhsIsFile = (openFlags & DICT_FLAG.SRC_RHS_IS_FILE) !== 0;
  const spec = `"inline:${name}"`;
  if (utf8Active(fold, openFlags) && !passesUtf8Check(name)) {
    throw new TableOpenError(`bad UTF-8 syntax: ${spec}; need "inline:{name=value...}"`);
  }
  const len = balpar(name);
  if (len === 0 || len !== name.length || len === 2) {
    throw new TableOpenError(`bad syntax: ${spec}; need "inline:{name=value...}"`);
  }
  const fail = (err: string) =>
    new TableOpenError(`${err}: ${spec}; need "inline:{name=${rhsIsFile ? 'filename' : 'value'}...}"`);
  const entries = new Map<Bytes, Bytes>();
  for (let token of tokenizeQ(name.slice(1, -1), ', \t\r\n')) {
    if (token[0] === '{') {
      const inner = extpar(token, true);
      if (inner.error !== undefined) throw fail(inner.error);
      token = inner.text;
    }
    const nv = splitQNameVal(token);
    if ('error' in nv) throw fail(nv.error);
    let value = nv.value;
    if (rhsIsFile) {
      const res = filesToBase64(value);
      if ('error' in res) throw fail(res.error);
      value = res.value;
    }
    entries.set(foldKey(nv.key, fold), value);
  }
  if (entries.size === 0) throw fail('empty table');
  return entries;
}

/** Opener for inline:{...}. */
export function openInline(opts: TableOpenOptions): Table {
  requireReadOnly(opts);
  return new MemoryTable('inline', opts.name, parseInline(opts));
}

export const inlineType: TableType = { name: 'inline', open: openInline, implFlags: DICT_FLAG.FIXED, writable: false, loadsSource: true };
