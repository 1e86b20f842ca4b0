/** randmap:{value, ...} (src/util/dict_random.c): every lookup returns a random item. */
import { randomInt } from 'node:crypto';
import { DICT_FLAG } from '../../protocol/flags.js';
import { balpar, tokenizeQ } from '../../util/braces.js';
import { filesToBase64 } from '../core/rhsfile.js';
import { TableOpenError, found, type Bytes, type LookupResult, type Table, type TableOpenOptions } from '../core/table.js';
import { requireReadOnly } from '../core/util.js';
import type { TableType } from '../core/registry.js';

/** The items of a randmap name (braces kept inside items); Postfix's error text when there are none or a file fails. */
export function parseRandmapName(opts: TableOpenOptions): Bytes[] {
  const { name } = opts;
  const syntax = () => new TableOpenError(`bad syntax: "randmap:${name}"; need "randmap:{value...}"`);
  const len = balpar(name);
  if (len === 0 || len !== name.length || len === 2) throw syntax();
  const items: Bytes[] = [];
  for (const item of tokenizeQ(name.slice(1, -1), ', \t\r\n')) {
    if (opts.openFlags & DICT_FLAG.SRC_RHS_IS_FILE) {
      const res = filesToBase64(item);
      if ('error' in res) throw new TableOpenError(res.error);
      items.push(res.value);
    } else {
      items.push(item);
    }
  }
  if (items.length === 0) throw syntax();
  return items;
}

/** Opener for randmap:{...}. */
export function openRandmap(opts: TableOpenOptions): Table {
  requireReadOnly(opts);
  const results: LookupResult[] = parseRandmapName(opts).map((v) => Object.freeze(found(v)));
  return {
    type: 'randmap',
    name: opts.name,
    implFlags: DICT_FLAG.PATTERN,
    lookup: () => results[results.length === 1 ? 0 : randomInt(results.length)],
  };
}

export const randmapType: TableType = { name: 'randmap', open: openRandmap, implFlags: DICT_FLAG.PATTERN, writable: false };
