/**
 * The record grammar of postmap(1) source files, shared by texthash: tables
 * (dict_thash.c) and postmap builds (postmap.c): `key whitespace value`
 * logical lines, a key that may be quoted, the UTF-8 check, and values that
 * name files (postmap -F). Warnings are Postfix's.
 */
import { passesUtf8Check } from './casefold.js';
import { filesToBase64 } from './rhsfile.js';
import type { Bytes } from './table.js';
import { cString } from './util.js';
import { isSpaceCode } from '../../util/ctype.js';

/** Split a source line into key and value (the key keeps quotes and backslashes). */
export function splitKeyValue(line: Bytes): { key: Bytes; value: Bytes } | { unbalanced: true } {
  const n = line.length;
  let inQuotes = false;
  let i = 0;
  for (; i < n; i++) {
    const c = line.charCodeAt(i);
    if (c === 0x5c) {
      if (++i >= n) break;
    } else if (isSpaceCode(c)) {
      if (!inQuotes) break;
    } else if (c === 0x22) {
      inQuotes = !inQuotes;
    }
  }
  if (inQuotes) return { unbalanced: true };
  let a = i + 1;
  let b = n;
  while (a < b && isSpaceCode(line.charCodeAt(a))) a++;
  while (b > a && isSpaceCode(line.charCodeAt(b - 1))) b--;
  return { key: line.slice(0, i), value: a < b ? line.slice(a, b) : '' };
}

export interface SourceLineOptions {
  /** the UTF-8 layer is active: lines that are not valid UTF-8 are skipped */
  utf8Check: boolean;
  /** values are file names whose contents become the value, base64-encoded (SRC_RHS_IS_FILE) */
  rhsIsFile: boolean;
  /** what follows "expected format: key whitespace value" (texthash: " -- ignoring this line"; postmap: nothing) */
  badFormatSuffix: string;
  warn(text: string): void;
}

/**
 * One logical line of a source as a record: the key as written (not
 * folded) and the value, or null after Postfix's warning for a line it
 * skips. `at` is the "<file>, line <n>" prefix of the warnings.
 */
export function parseSourceLine(raw: Bytes, at: string, o: SourceLineOptions): { key: Bytes; value: Bytes } | null {
  const { warn } = o;
  // C string semantics: bytes after a NUL are lost, except to the UTF-8 check.
  const line = cString(raw);
  if (o.utf8Check && !passesUtf8Check(raw)) {
    warn(`${at}: non-UTF-8 input "${line}" -- ignoring this line`);
    return null;
  }
  const split = splitKeyValue(line);
  if ('unbalanced' in split) {
    warn(`${at}: unbalanced '"' in '${line}' -- ignoring this line`);
    return null;
  }
  if (split.key === '' || split.value === '') {
    warn(`${at}: expected format: key whitespace value${o.badFormatSuffix}`);
    return null;
  }
  if (split.key.endsWith(':')) warn(`${at}: record is in "key: value" format; is this an alias file?`);
  if (o.rhsIsFile) {
    const res = filesToBase64(split.value);
    if ('error' in res) {
      warn(`${at}: ${res.error}: skipping this entry`);
      return null;
    }
    split.value = res.value;
  }
  return split;
}
