/**
 * LDAP search filters as text (RFC 4515, with OpenLDAP libldap's leniency:
 * a filter without outer parentheses such as `objectclass=*`, and the
 * legacy `\c` escape of a single character) encoded as the BER Filter of
 * RFC 4511; and Postfix's quoting of substituted key pieces
 * (dict_ldap.c rfc2253_quote / rfc2254_quote).
 */
import type { Bytes } from '../core/table.js';
import { berBool, berStr, tlv } from './ldap-ber.js';

/** A filter that does not parse (libldap: LDAP_FILTER_ERROR, -7). */
export class FilterError extends Error {}

const hex = (c: string | undefined) => (c !== undefined && /^[0-9A-Fa-f]$/.test(c) ? parseInt(c, 16) : -1);

/** Unescape one assertion value: `\XX` is a byte, `\c` the char c; unescaped ( ) * are errors. */
export function unescapeValue(v: Bytes): Bytes {
  let out = '';
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === '(' || c === ')' || c === '*') throw new FilterError('bad filter value');
    if (c !== '\\') {
      out += c;
      continue;
    }
    if (i + 1 >= v.length) throw new FilterError('bad filter escape');
    const h1 = hex(v[i + 1]);
    if (h1 >= 0) {
      const h2 = hex(v[i + 2]);
      if (h2 < 0) throw new FilterError('bad filter escape');
      out += String.fromCharCode(h1 * 16 + h2);
      i += 2;
    } else {
      out += v[++i]!;
    }
  }
  return out;
}

/** Index of the ')' closing the '(' at `open`, skipping escaped characters, or -1. */
function closingParen(s: Bytes, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') i++;
    else if (c === '(') depth++;
    else if (c === ')' && --depth === 0) return i;
  }
  return -1;
}

const isSpace = (c: string | undefined) => c === ' ' || c === '\t' || c === '\n' || c === '\r';

/** Split at unescaped '*'. */
function splitStars(v: Bytes): Bytes[] {
  const parts: Bytes[] = [];
  let cur = '';
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === '\\' && i + 1 < v.length) {
      cur += c + v[++i]!;
    } else if (c === '*') {
      parts.push(cur);
      cur = '';
    } else cur += c;
  }
  parts.push(cur);
  return parts;
}

const ATTR = /^[A-Za-z0-9][A-Za-z0-9.;-]*$/;

function simple(item: Bytes): Buffer {
  const eq = item.indexOf('=');
  if (eq <= 0) throw new FilterError('missing operator');
  const before = item[eq - 1]!;
  const value = item.slice(eq + 1);
  if (before === '~' || before === '<' || before === '>') {
    const attr = item.slice(0, eq - 1).trim();
    if (!ATTR.test(attr)) throw new FilterError('bad attribute');
    const tag = before === '~' ? 0xa8 : before === '>' ? 0xa5 : 0xa6;
    return tlv(tag, [berStr(attr), berStr(unescapeValue(value))]);
  }
  if (before === ':') {
    // extensible: attr[:dn][:rule]:=value
    const parts = item.slice(0, eq - 1).split(':');
    const attr = parts.shift()!;
    let dn = false;
    let rule = '';
    for (const p of parts) {
      if (p.toLowerCase() === 'dn' && !dn && rule === '') dn = true;
      else if (rule === '' && p !== '') rule = p;
      else throw new FilterError('bad extensible filter');
    }
    if (attr === '' && rule === '') throw new FilterError('bad extensible filter');
    if (attr !== '' && !ATTR.test(attr)) throw new FilterError('bad attribute');
    const body: Buffer[] = [];
    if (rule) body.push(berStr(rule, 0x81));
    if (attr) body.push(berStr(attr, 0x82));
    body.push(berStr(unescapeValue(value), 0x83));
    if (dn) body.push(berBool(true, 0x84));
    return tlv(0xa9, body);
  }
  const attr = item.slice(0, eq);
  if (!ATTR.test(attr)) throw new FilterError('bad attribute');
  if (value === '*') return berStr(attr, 0x87);
  const stars = splitStars(value);
  if (stars.length === 1) return tlv(0xa3, [berStr(attr), berStr(unescapeValue(value))]);
  const subs: Buffer[] = [];
  stars.forEach((p, i) => {
    if (p === '') return;
    const tag = i === 0 ? 0x80 : i === stars.length - 1 ? 0x82 : 0x81;
    subs.push(berStr(unescapeValue(p), tag));
  });
  return tlv(0xa4, [berStr(attr), tlv(0x30, subs)]);
}

/** One parenthesized filter starting at s[open] === '('; returns its encoding and the index after ')'. */
function parenthesized(s: Bytes, open: number): { ber: Buffer; end: number } {
  const close = closingParen(s, open);
  if (close < 0) throw new FilterError('unbalanced parentheses');
  const inner = s.slice(open + 1, close);
  let i = 0;
  while (isSpace(inner[i])) i++;
  const op = inner[i];
  if (op === '&' || op === '|' || op === '!') {
    const list: Buffer[] = [];
    let j = i + 1;
    for (;;) {
      while (isSpace(inner[j])) j++;
      if (j >= inner.length) break;
      if (inner[j] !== '(') throw new FilterError('bad filter list');
      const sub = parenthesized(inner, j);
      list.push(sub.ber);
      j = sub.end;
    }
    if (op === '!') {
      if (list.length !== 1) throw new FilterError('bad not filter');
      return { ber: tlv(0xa2, list[0]!), end: close + 1 };
    }
    if (list.length === 0) throw new FilterError('empty filter list');
    return { ber: tlv(op === '&' ? 0xa0 : 0xa1, list), end: close + 1 };
  }
  return { ber: simple(inner.slice(i)), end: close + 1 };
}

/** Encode a filter string; throws FilterError when libldap would refuse it. */
export function encodeFilter(filter: Bytes): Buffer {
  let i = 0;
  while (isSpace(filter[i])) i++;
  if (filter[i] !== '(') {
    const rest = filter.slice(i).trim();
    if (rest === '') throw new FilterError('empty filter');
    return simple(rest);
  }
  const { ber, end } = parenthesized(filter, i);
  if (filter.slice(end).trim() !== '') throw new FilterError('trailing text after filter');
  return ber;
}

const hex2 = (c: string) => `\\${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`;

/** Postfix's rfc2253_quote(): each of space TAB " # + , ; < > \ becomes \XX (search_base). */
export function rfc2253Quote(s: Bytes): Bytes {
  return s.replace(/[ \t"#+,;<>\\]/g, hex2);
}

/** Postfix's rfc2254_quote(): each of * ( ) \ becomes \XX (query_filter). */
export function rfc2254Quote(s: Bytes): Bytes {
  return s.replace(/[*()\\]/g, hex2);
}
