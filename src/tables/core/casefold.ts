/**
 * Key folding with Postfix's semantics (src/util/lowercase.c, casefold.c,
 * valid_utf8_string.c, allascii.c). All functions work on byte strings.
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import type { Bytes, FoldMode } from './table.js';
import { FULL_FOLDS, SIMPLE_RUNS } from './casefold-data.js';

const NON_ASCII = /[^\x00-\x7f]/;
const UPPER = /[A-Z]+/g;

/** True when every byte is below 0x80 (the empty string included). */
export function isAscii(s: Bytes): boolean {
  return !NON_ASCII.test(s);
}

/**
 * Postfix's allascii(): like isAscii, but false for the empty string and
 * only the bytes before the first NUL count.
 */
export function allAscii(s: Bytes): boolean {
  const nul = s.indexOf('\0');
  const head = nul < 0 ? s : s.slice(0, nul);
  return head.length > 0 && isAscii(head);
}

/** ASCII-only lower-casing (lowercase()): only A-Z change. */
export function lowercaseAscii(s: Bytes): Bytes {
  // Most keys are lower case already: scan before building a new string.
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) return s.replace(UPPER, (m) => m.toLowerCase());
  }
  return s;
}

/**
 * Length of the well-formed UTF-8 sequence at s[i], or 0 if the bytes there
 * are not one (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF). ASCII bytes, NUL included, are sequences of length 1.
 */
function utf8SeqLen(s: Bytes, i: number): number {
  const c0 = s.charCodeAt(i);
  if (c0 < 0x80) return 1;
  if (c0 < 0xc2 || c0 > 0xf4) return 0;
  // NaN (past the end) fails every range test below.
  const c1 = s.charCodeAt(i + 1);
  if (c0 <= 0xdf) return c1 >= 0x80 && c1 <= 0xbf ? 2 : 0;
  const c2 = s.charCodeAt(i + 2);
  if (c0 <= 0xef) {
    const lo = c0 === 0xe0 ? 0xa0 : 0x80;
    const hi = c0 === 0xed ? 0x9f : 0xbf;
    return c1 >= lo && c1 <= hi && c2 >= 0x80 && c2 <= 0xbf ? 3 : 0;
  }
  const c3 = s.charCodeAt(i + 3);
  const lo = c0 === 0xf0 ? 0x90 : 0x80;
  const hi = c0 === 0xf4 ? 0x8f : 0xbf;
  return c1 >= lo && c1 <= hi && c2 >= 0x80 && c2 <= 0xbf && c3 >= 0x80 && c3 <= 0xbf ? 4 : 0;
}

/** valid_utf8_string(): well-formed UTF-8 per RFC 3629 (NUL bytes allowed). The UTF-8 layer checks with passesUtf8Check. */
export function isValidUtf8(s: Bytes): boolean {
  if (isAscii(s)) return true;
  for (let i = 0; i < s.length; ) {
    const len = utf8SeqLen(s, i);
    if (len === 0) return false;
    i += len;
  }
  return true;
}

/**
 * The check Postfix's UTF-8 layer applies to keys, values and source lines:
 * all-ASCII (allascii()) or well-formed UTF-8.
 */
export function passesUtf8Check(s: Bytes): boolean {
  return allAscii(s) || isValidUtf8(s);
}

let foldMap: Map<number, Bytes> | undefined;

function getFoldMap(): Map<number, Bytes> {
  if (foldMap) return foldMap;
  const enc = (cps: readonly number[]) => Buffer.from(String.fromCodePoint(...cps), 'utf8').toString('latin1');
  const m = new Map<number, Bytes>();
  for (let r = 0; r < SIMPLE_RUNS.length; r += 4) {
    const [first, count, stride, delta] = SIMPLE_RUNS.slice(r, r + 4);
    for (let k = 0; k < count; k++) {
      const cp = first + k * stride;
      m.set(cp, enc([cp + delta]));
    }
  }
  for (const [cp, to] of FULL_FOLDS) m.set(cp, enc(to));
  foldMap = m;
  return m;
}

function decode(s: Bytes, i: number, len: number): number {
  const c0 = s.charCodeAt(i);
  if (len === 2) return ((c0 & 0x1f) << 6) | (s.charCodeAt(i + 1) & 0x3f);
  if (len === 3) return ((c0 & 0x0f) << 12) | ((s.charCodeAt(i + 1) & 0x3f) << 6) | (s.charCodeAt(i + 2) & 0x3f);
  return (
    ((c0 & 0x07) << 18) |
    ((s.charCodeAt(i + 1) & 0x3f) << 12) |
    ((s.charCodeAt(i + 2) & 0x3f) << 6) |
    (s.charCodeAt(i + 3) & 0x3f)
  );
}

/**
 * Unicode full case folding of UTF-8 bytes (CaseFolding C+F, no Turkic
 * rules), as ICU's ucasemap_utf8FoldCase() does for Postfix. Bytes that are
 * not well-formed UTF-8 are copied unchanged. All-ASCII input only has A-Z
 * lowered.
 */
export function foldUtf8(s: Bytes): Bytes {
  if (isAscii(s)) return lowercaseAscii(s);
  const map = getFoldMap();
  const parts: string[] = [];
  let copied = 0;
  for (let i = 0; i < s.length; ) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      if (c >= 0x41 && c <= 0x5a) {
        parts.push(s.slice(copied, i), String.fromCharCode(c | 0x20));
        copied = i + 1;
      }
      i++;
      continue;
    }
    const len = utf8SeqLen(s, i);
    if (len === 0) {
      i++;
      continue;
    }
    const folded = map.get(decode(s, i, len));
    if (folded !== undefined) {
      parts.push(s.slice(copied, i), folded);
      copied = i + len;
    }
    i += len;
  }
  if (copied === 0) return s;
  parts.push(s.slice(copied));
  return parts.join('');
}

/** Fold a key the way a FIXED table with the given fold mode stores and finds it. */
export function foldKey(key: Bytes, mode: FoldMode): Bytes {
  switch (mode) {
    case 'none':
      return key;
    case 'ascii':
      return lowercaseAscii(key);
    case 'utf8':
      return foldUtf8(key);
  }
}

/**
 * Whether Postfix's UTF-8 layer is active for a table: fold mode 'utf8'
 * implies it; with other fold modes the caller says so with the
 * DICT_FLAG.UTF8_ACTIVE open flag (smtputf8_enable=yes plus `postmap -f`).
 */
export function utf8Active(fold: FoldMode, openFlags: number): boolean {
  return fold === 'utf8' || (openFlags & DICT_FLAG.UTF8_ACTIVE) !== 0;
}
