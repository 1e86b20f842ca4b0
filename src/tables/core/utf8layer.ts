/**
 * Postfix's UTF-8 layer around a table (src/util/dict_utf8.c): with it
 * active, a key that is not UTF-8 is not looked up (not found, with a
 * warning), a FIXED table's key is case-folded, and a value that is not
 * UTF-8 is a configuration error (with a warning). The server, the
 * composites' components and the tests' oracle all go through here.
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { foldKey, passesUtf8Check } from './casefold.js';
import { DICT_ERR, NOT_FOUND, type Bytes, type FoldMode, type LookupResult, type Table } from './table.js';

const CONFIG_ERROR: LookupResult = Object.freeze({ found: false, error: DICT_ERR.CONFIG }) as LookupResult;

/** The warning for a key the layer refuses. */
export function nonUtf8KeyWarning(spec: Bytes, key: Bytes): string {
  return `${spec}: non-UTF-8 key "${key}": malformed UTF-8 or invalid codepoint`;
}

/** The warning for a value the layer refuses. */
export function nonUtf8ValueWarning(spec: Bytes, key: Bytes, value: Bytes): string {
  return `${spec}: key "${key}": non-UTF-8 value "${value}": malformed UTF-8 or invalid codepoint`;
}

/**
 * A lookup through the layer (dict_get() on a table behind dict_utf8):
 * with `utf8` the key and value checks; a FIXED table's key folded per
 * `fold`. `spec` ("type:name") names the table in the warnings.
 */
export function utf8LayerLookup(
  table: Table,
  spec: Bytes,
  key: Bytes,
  fold: FoldMode,
  utf8: boolean,
  flags: number,
  warn: (text: string) => void,
): LookupResult | Promise<LookupResult> {
  if (utf8 && !passesUtf8Check(key)) {
    warn(nonUtf8KeyWarning(spec, key));
    return NOT_FOUND;
  }
  const k = table.implFlags & DICT_FLAG.FIXED ? foldKey(key, fold) : key;
  const res = table.lookup(k, flags);
  if (!utf8) return res;
  const check = (r: LookupResult): LookupResult => {
    if (r.found && !passesUtf8Check(r.value)) {
      warn(nonUtf8ValueWarning(spec, k, r.value));
      return CONFIG_ERROR;
    }
    return r;
  };
  return res instanceof Promise ? res.then(check) : check(res);
}
