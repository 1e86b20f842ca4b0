/** Postfix's printable() (src/util/printable.c) for log text. */
type Bytes = string;

/**
 * Postfix's printable()/printable_except(): non-printable ASCII becomes
 * the replacement ('?' by default); with SMTPUTF8
 * enabled, a lead byte followed by continuation bytes passes as UTF-8.
 */
export function postfixPrintable(s: Bytes, utf8: boolean, replacement = '?'): Bytes {
  let out = '';
  let copied = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c < 0x7f) continue;
    if (utf8 && c >= 194 && c <= 254 && (s.charCodeAt(i + 1) & 0xc0) === 0x80) {
      while ((s.charCodeAt(i + 1) & 0xc0) === 0x80) i++;
      continue;
    }
    out += s.slice(copied, i) + replacement;
    copied = i + 1;
  }
  return copied === 0 ? s : out + s.slice(copied);
}
