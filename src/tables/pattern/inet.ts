/**
 * Text <-> binary IP addresses with the exact rules of glibc's inet_pton()
 * and inet_ntop() (what Postfix's cidr_match.c relies on). Node's net.isIP
 * differs in details (zone ids, some "::" forms), so the parsers are here.
 *
 * IPv4 (inet_pton4): exactly four dotted decimal octets 0..255, no leading
 * zeros, nothing else. IPv6 (inet_pton6): RFC 4291 text, groups of 1-4 hex
 * digits, at most one "::", an optional dotted IPv4 tail, no zone id.
 */
import type { Bytes } from '../core/table.js';

/**
 * Parse s[start, end) as a dotted IPv4 address; the address as an unsigned
 * 32-bit number, or -1 when inet_pton would reject it.
 */
export function parseIPv4At(s: Bytes, start: number, end: number): number {
  let octets = 0;
  let sawDigit = false;
  let cur = 0;
  let addr = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) {
      if (sawDigit && cur === 0) return -1; // leading zero
      cur = cur * 10 + (c - 0x30);
      if (cur > 255) return -1;
      if (!sawDigit) {
        if (++octets > 4) return -1;
        sawDigit = true;
      }
    } else if (c === 0x2e && sawDigit) {
      if (octets === 4) return -1;
      addr = addr * 256 + cur;
      cur = 0;
      sawDigit = false;
    } else {
      return -1;
    }
  }
  if (octets < 4) return -1;
  return addr * 256 + cur;
}

/** inet_pton(AF_INET, s): 4 bytes, or null. */
export function inetPton4(s: Bytes): Uint8Array | null {
  const a = parseIPv4At(s, 0, s.length);
  if (a < 0) return null;
  return Uint8Array.of(a >>> 24, (a >>> 16) & 0xff, (a >>> 8) & 0xff, a & 0xff);
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  c |= 0x20;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/**
 * Parse s[start, end) as an IPv6 address into out[0..16); false (out
 * unspecified) when inet_pton would reject it.
 */
export function parseIPv6Into(s: Bytes, out: Uint8Array, start = 0, end = s.length): boolean {
  let i = start;
  if (end <= start) return false;
  // A leading "::" needs its second colon.
  if (s.charCodeAt(i) === 0x3a) {
    i++;
    if (i === end || s.charCodeAt(i) !== 0x3a) return false;
  }
  out.fill(0);
  let tp = 0;
  let colonp = -1;
  let curtok = i;
  let xdigits = 0;
  let val = 0;
  while (i < end) {
    const c = s.charCodeAt(i++);
    const d = hexValue(c);
    if (d >= 0) {
      if (xdigits === 4) return false;
      val = (val << 4) | d;
      xdigits++;
      continue;
    }
    if (c === 0x3a) {
      curtok = i;
      if (xdigits === 0) {
        if (colonp >= 0) return false;
        colonp = tp;
        continue;
      } else if (i === end) {
        return false;
      }
      if (tp + 2 > 16) return false;
      out[tp++] = val >> 8;
      out[tp++] = val & 0xff;
      xdigits = 0;
      val = 0;
      continue;
    }
    if (c === 0x2e && tp + 4 <= 16) {
      const a = parseIPv4At(s, curtok, end);
      if (a >= 0) {
        out[tp++] = a >>> 24;
        out[tp++] = (a >>> 16) & 0xff;
        out[tp++] = (a >>> 8) & 0xff;
        out[tp++] = a & 0xff;
        xdigits = 0;
        break;
      }
    }
    return false;
  }
  if (xdigits > 0) {
    if (tp + 2 > 16) return false;
    out[tp++] = val >> 8;
    out[tp++] = val & 0xff;
  }
  if (colonp >= 0) {
    // "::" must stand for at least one zero group.
    if (tp === 16) return false;
    const n = tp - colonp;
    out.copyWithin(16 - n, colonp, tp);
    out.fill(0, colonp, 16 - n);
    tp = 16;
  }
  return tp === 16;
}

/** inet_pton(AF_INET6, s): 16 bytes, or null. */
export function inetPton6(s: Bytes): Uint8Array | null {
  const out = new Uint8Array(16);
  return parseIPv6Into(s, out) ? out : null;
}

/**
 * The address family Postfix's cidr code picks for a text (IPv6 iff it has
 * a ':'), and inet_pton for that family: the bytes, or null.
 */
export function inetPton(s: Bytes): Uint8Array | null {
  return s.includes(':') ? inetPton6(s) : inetPton4(s);
}

/** inet_ntop() for 4 or 16 bytes, glibc formatting (longest zero run as "::", IPv4 tails for ::a.b.c.d and ::ffff:a.b.c.d). */
export function inetNtop(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) throw new RangeError('inetNtop: need 4 or 16 bytes');
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((b[i] << 8) | b[i + 1]);
  let bestBase = -1;
  let bestLen = 0;
  let curBase = -1;
  let curLen = 0;
  for (let i = 0; i < 8; i++) {
    if (words[i] === 0) {
      if (curBase < 0) {
        curBase = i;
        curLen = 1;
      } else curLen++;
    } else if (curBase >= 0) {
      if (bestBase < 0 || curLen > bestLen) {
        bestBase = curBase;
        bestLen = curLen;
      }
      curBase = -1;
    }
  }
  if (curBase >= 0 && (bestBase < 0 || curLen > bestLen)) {
    bestBase = curBase;
    bestLen = curLen;
  }
  if (bestBase >= 0 && bestLen < 2) bestBase = -1;
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase >= 0 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) out += ':';
      continue;
    }
    if (i !== 0) out += ':';
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))) {
      out += `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
      return out;
    }
    out += words[i].toString(16);
  }
  if (bestBase >= 0 && bestBase + bestLen === 8) out += ':';
  return out;
}
