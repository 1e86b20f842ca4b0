/**
 * Parsing cidr: tables (src/util/dict_cidr.c, cidr_match.c, Postfix 3.7
 * semantics) into typed-array rule columns: address patterns parsed in
 * place, values kept as ranges of the source text until used, and the
 * common plain-IPv4 rule on a fast path. Warnings are Postfix's.
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { inetNtop, parseIPv4At, parseIPv6Into } from './inet.js';
import { filesToBase64 } from '../core/rhsfile.js';
import { type Bytes, type TableOpenOptions } from '../core/table.js';
import { isAlnumCode, isSpaceCode } from '../../util/ctype.js';
import { scanLogicalLines, type LineSink } from '../../util/lines.js';

export const OP_MATCH = 1;
export const OP_IF = 2;
export const OP_ENDIF = 3;
export const F_V6 = 1;
export const F_POSITIVE = 2;

/**
 * An address pattern: network and mask as big-endian 32-bit words stored as
 * int32 (IPv4 uses word 0 only; the others are 0).
 */
export interface CidrPattern {
  v6: boolean;
  /** prefix length (after Postfix's unsigned-byte wrap) */
  prefix: number;
  /** network words, host bits zero */
  net: [number, number, number, number];
  /** mask words */
  mask: [number, number, number, number];
}

/** One parsed rule, as an object (the tables themselves keep rules in columns). */
export interface CidrRule extends CidrPattern {
  op: typeof OP_MATCH | typeof OP_IF | typeof OP_ENDIF;
  /** false for a negated pattern (`!1.2.3.0/24`) */
  positive: boolean;
  value: Bytes;
  lineNo: number;
}

export type PatternResult = CidrPattern | { error: string };

/** The char code at s[i] with bit 0x20 set (ASCII lower case), or -1 at or past the end e. */
function lowerAt(s: string, i: number, e: number): number {
  return i < e ? s.charCodeAt(i) | 0x20 : -1;
}

/** Index of char code c in s[from, to), or -1 (never looks past `to`). */
function find(s: string, c: number, from: number, to: number): number {
  for (let i = from; i < to; i++) if (s.charCodeAt(i) === c) return i;
  return -1;
}

/** The mask word for bits [32*i, 32*i+32) of a prefix. */
export function maskWord(prefix: number, i: number): number {
  const bits = prefix - 32 * i;
  if (bits >= 32) return -1;
  if (bits <= 0) return 0;
  return (-1 << (32 - bits)) | 0;
}

const LONG_MAX = '9223372036854775807';

/**
 * What Postfix stores for a /len of digits s[b, e): atoi() (strtol
 * saturating at LONG_MAX, truncated to int) assigned to an unsigned char.
 * -1 when the text is not all digits or empty ("bad mask value").
 */
function maskShiftAt(s: string, b: number, e: number): number {
  if (b >= e) return -1;
  let v = 0;
  let significant = 0;
  for (let i = b; i < e; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return -1;
    if (significant > 0 || c !== 0x30) significant++;
    v = (v * 10 + c - 0x30) & 0xff;
  }
  if (significant > LONG_MAX.length) return 255;
  if (significant === LONG_MAX.length && s.slice(e - significant, e) > LONG_MAX) return 255;
  return v;
}

const scratch16 = new Uint8Array(16);
/** Words of the last address parsed by parseWords(). */
export const W = new Int32Array(4);

/** Parse s[b, e) as an address of the given family into W; false when inet_pton rejects it. */
export function parseWords(s: string, b: number, e: number, v6: boolean): boolean {
  if (!v6) {
    const a = parseIPv4At(s, b, e);
    if (a < 0) return false;
    W[0] = a;
    W[1] = W[2] = W[3] = 0;
    return true;
  }
  if (!parseIPv6Into(s, scratch16, b, e)) return false;
  const x = scratch16;
  W[0] = (x[0] << 24) | (x[1] << 16) | (x[2] << 8) | x[3];
  W[1] = (x[4] << 24) | (x[5] << 16) | (x[6] << 8) | x[7];
  W[2] = (x[8] << 24) | (x[9] << 16) | (x[10] << 8) | x[11];
  W[3] = (x[12] << 24) | (x[13] << 16) | (x[14] << 8) | x[15];
  return true;
}

function wordsToBytes(words: readonly number[]): Uint8Array {
  const b = new Uint8Array(words.length * 4);
  words.forEach((x, i) => {
    b[i * 4] = x >>> 24;
    b[i * 4 + 1] = (x >>> 16) & 0xff;
    b[i * 4 + 2] = (x >>> 8) & 0xff;
    b[i * 4 + 3] = x & 0xff;
  });
  return b;
}

/**
 * The rules of a table in columns. Values are ranges of `text` unless
 * listed in `computed` (continuation lines, -F values).
 */
export class CidrRules {
  length = 0;
  op: Uint8Array;
  flags: Uint8Array;
  prefix: Uint8Array;
  /** 4 words per rule */
  net: Int32Array;
  mask: Int32Array;
  lineNo: Int32Array;
  valueStart: Int32Array;
  valueEnd: Int32Array;
  /** for each IF rule, the index of its ENDIF rule, or -1 */
  blockEnd: Int32Array;
  readonly computed = new Map<number, Bytes>();

  constructor(
    readonly text: Bytes,
    capacity = 16,
  ) {
    capacity = Math.max(capacity, 4);
    this.op = new Uint8Array(capacity);
    this.flags = new Uint8Array(capacity);
    this.prefix = new Uint8Array(capacity);
    this.net = new Int32Array(capacity * 4);
    this.mask = new Int32Array(capacity * 4);
    this.lineNo = new Int32Array(capacity);
    this.valueStart = new Int32Array(capacity);
    this.valueEnd = new Int32Array(capacity);
    this.blockEnd = new Int32Array(capacity);
  }

  /** Make room for one more rule. */
  reserve(): void {
    if (this.length === this.op.length) this.grow();
  }

  /** Double the capacity (kept out of reserve() so that the hot path stays small). */
  private grow(): void {
    const size = this.op.length * 2;
    const g8 = (a: Uint8Array) => {
      const b = new Uint8Array(size);
      b.set(a);
      return b;
    };
    const g32 = (a: Int32Array, per: number) => {
      const b = new Int32Array(size * per);
      b.set(a);
      return b;
    };
    this.net = g32(this.net, 4);
    this.mask = g32(this.mask, 4);
    this.lineNo = g32(this.lineNo, 1);
    this.valueStart = g32(this.valueStart, 1);
    this.valueEnd = g32(this.valueEnd, 1);
    this.blockEnd = g32(this.blockEnd, 1);
    this.flags = g8(this.flags);
    this.prefix = g8(this.prefix);
    this.op = g8(this.op);
  }

  value(r: number): Bytes {
    const v = this.computed.get(r);
    return v !== undefined ? v : this.text.slice(this.valueStart[r], this.valueEnd[r]);
  }

  /** Rule r as an object. */
  rule(r: number): CidrRule {
    const o = r * 4;
    return {
      op: this.op[r] as CidrRule['op'],
      v6: (this.flags[r] & F_V6) !== 0,
      positive: (this.flags[r] & F_POSITIVE) !== 0,
      prefix: this.prefix[r],
      net: [this.net[o], this.net[o + 1], this.net[o + 2], this.net[o + 3]],
      mask: [this.mask[o], this.mask[o + 1], this.mask[o + 2], this.mask[o + 3]],
      value: this.value(r),
      lineNo: this.lineNo[r],
    };
  }
}

/**
 * Parse the address pattern s[b, e) (`addr`, `addr/len`, `[addr]`,
 * `[addr/len]`, `[addr]/len`) the way cidr_match_parse() does into slot r
 * of `rules` (family, prefix, net, mask); Postfix's error text, or undefined.
 */
function parsePatternAt(rules: CidrRules, r: number, s: string, b: number, e: number): string | undefined {
  let ab = b;
  let ae = e;
  let mb = -1;
  let me = -1;
  let searchInAddr = true;
  if (s.charCodeAt(b) === 0x5b /* [ */) {
    ab = b + 1;
    const close = find(s, 0x5d /* ] */, ab, e);
    if (close < 0) return `missing ']' character after "[${s.slice(ab, e)}"`;
    ae = close;
    if (close + 1 < e && s.charCodeAt(close + 1) === 0x2f /* / */) {
      mb = close + 2;
      me = e;
      searchInAddr = false;
    } else if (close + 1 < e) {
      return `garbage after "[${s.slice(ab, ae)}]"`;
    }
  }
  let v6 = false;
  if (searchInAddr) {
    // One pass: the first '/' ends the address; a ':' before it makes it IPv6.
    for (let i = ab; i < ae; i++) {
      const c = s.charCodeAt(i);
      if (c === 0x2f /* / */) {
        mb = i + 1;
        me = ae;
        ae = i;
        break;
      }
      if (c === 0x3a /* : */) v6 = true;
    }
  } else {
    v6 = find(s, 0x3a /* : */, ab, ae) >= 0;
  }
  const bits = v6 ? 128 : 32;
  let prefix: number;
  if (mb < 0) {
    if (!parseWords(s, ab, ae, v6)) return `bad address pattern: "${s.slice(ab, ae)}"`;
    prefix = bits;
  } else {
    const shift = maskShiftAt(s, mb, me);
    const why = shift < 0 ? 'bad mask value' : shift > bits ? 'bad mask length' : !parseWords(s, ab, ae, v6) ? 'bad network value' : '';
    if (why) return `${why} in "${s.slice(ab, ae)}/${s.slice(mb, me)}"`;
    prefix = shift;
  }
  const m0 = maskWord(prefix, 0);
  const m1 = v6 ? maskWord(prefix, 1) : 0;
  const m2 = v6 ? maskWord(prefix, 2) : 0;
  const m3 = v6 ? maskWord(prefix, 3) : 0;
  if ((W[0] & ~m0) | (W[1] & ~m1) | (W[2] & ~m2) | (W[3] & ~m3)) {
    const net = [W[0] & m0, W[1] & m1, W[2] & m2, W[3] & m3].slice(0, v6 ? 4 : 1);
    return (
      `non-null host address bits in "${s.slice(ab, ae)}/${s.slice(mb, me)}", ` +
      `perhaps you should use "${inetNtop(wordsToBytes(net))}/${prefix}" instead`
    );
  }
  const o = r * 4;
  rules.net[o] = W[0];
  rules.net[o + 1] = W[1];
  rules.net[o + 2] = W[2];
  rules.net[o + 3] = W[3];
  rules.mask[o] = m0;
  rules.mask[o + 1] = m1;
  rules.mask[o + 2] = m2;
  rules.mask[o + 3] = m3;
  rules.prefix[r] = prefix;
  if (v6) rules.flags[r] |= F_V6;
  return undefined;
}

/** Parse an address pattern the way cidr_match_parse() does; errors are Postfix's texts. */
export function parseCidrPattern(pattern: Bytes): PatternResult {
  const rules = new CidrRules('', 1);
  const error = parsePatternAt(rules, 0, pattern, 0, pattern.length);
  if (error !== undefined) return { error };
  const { v6, prefix, net, mask } = rules.rule(0);
  return { v6, prefix, net, mask };
}

/**
 * Parse the logical line s[b, e) (dict_cidr_parse_rule) and append it to
 * `rules`; the reason when it is skipped. `nesting` = number of open IFs.
 */
function parseRuleAt(rules: CidrRules, s: string, b: number, e: number, lineNo: number, nesting: number, rhsIsFile: boolean): string | undefined {
  rules.reserve();
  const r = rules.length;
  rules.flags[r] = F_POSITIVE;
  rules.lineNo[r] = lineNo;
  rules.valueStart[r] = rules.valueEnd[r] = 0;
  rules.blockEnd[r] = -1;
  let op: number;
  let vb = 0;
  let ve = 0;
  let error: string | undefined;
  if (lowerAt(s, b, e) === 0x69 /* i */ && lowerAt(s, b + 1, e) === 0x66 /* f */ && !(b + 2 < e && isAlnumCode(s.charCodeAt(b + 2)))) {
    // IF [!...]pattern: the rest of the line, right-trimmed, is the pattern.
    let p = b + 2;
    for (; p < e; p++) {
      const c = s.charCodeAt(p);
      if (c === 0x21 /* ! */) rules.flags[r] ^= F_POSITIVE;
      else if (!isSpaceCode(c)) break;
    }
    if (p >= e) return 'no address pattern';
    let pe = e;
    while (pe > p && isSpaceCode(s.charCodeAt(pe - 1))) pe--;
    if ((error = parsePatternAt(rules, r, s, p, pe)) !== undefined) return error;
    op = OP_IF;
  } else if (
    lowerAt(s, b, e) === 0x65 /* e */ && lowerAt(s, b + 1, e) === 0x6e /* n */ && lowerAt(s, b + 2, e) === 0x64 /* d */ &&
    lowerAt(s, b + 3, e) === 0x69 /* i */ && lowerAt(s, b + 4, e) === 0x66 /* f */ && !(b + 5 < e && isAlnumCode(s.charCodeAt(b + 5)))
  ) {
    let p = b + 5;
    while (p < e && isSpaceCode(s.charCodeAt(p))) p++;
    if (p < e) return 'garbage after ENDIF';
    if (nesting === 0) return 'ENDIF without IF';
    op = OP_ENDIF;
    rules.prefix[r] = 0;
    rules.net.fill(0, r * 4, r * 4 + 4);
    rules.mask.fill(0, r * 4, r * 4 + 4);
  } else {
    let p = b;
    for (; p < e; p++) {
      const c = s.charCodeAt(p);
      if (c === 0x21 /* ! */) rules.flags[r] ^= F_POSITIVE;
      else if (!isSpaceCode(c)) break;
    }
    const pb = p;
    while (p < e && !isSpaceCode(s.charCodeAt(p))) p++;
    const pe = p;
    while (p < e && isSpaceCode(s.charCodeAt(p))) p++;
    vb = p;
    ve = e;
    while (ve > vb && isSpaceCode(s.charCodeAt(ve - 1))) ve--;
    if (pe === pb) return 'no address pattern';
    if ((error = parsePatternAt(rules, r, s, pb, pe)) !== undefined) return error;
    if (ve === vb) return 'no lookup result';
    op = OP_MATCH;
  }
  if (rhsIsFile) {
    // Postfix does this for IF and ENDIF too: their empty value is an empty file list.
    const res = filesToBase64(s.slice(vb, ve));
    if ('error' in res) return res.error;
    rules.computed.set(r, res.value);
  } else if (s !== rules.text) {
    rules.computed.set(r, s.slice(vb, ve));
  } else {
    rules.valueStart[r] = vb;
    rules.valueEnd[r] = ve;
  }
  rules.op[r] = op;
  rules.length++;
  return undefined;
}

/** Parse one logical line (dict_cidr_parse_rule); `nesting` is the number of open IFs. */
export function parseCidrRule(line: Bytes, lineNo: number, nesting: number, rhsIsFile: boolean): { rule: CidrRule } | { error: string } {
  const rules = new CidrRules(line, 1);
  const error = parseRuleAt(rules, line, 0, line.length, lineNo, nesting, rhsIsFile);
  return error === undefined ? { rule: rules.rule(0) } : { error };
}

/**
 * The common rule `a.b.c.d[/len] value` with a plain IPv4 network, parsed
 * straight into the columns. False (nothing added) for anything else,
 * errors included: parseRuleAt() then decides, with Postfix's messages.
 */
function addPlainIPv4(rules: CidrRules, s: string, b: number, e: number, lineNo: number): boolean {
  // One pass, no calls: this runs for most lines, often before the JIT has optimized it.
  let p = b;
  let c = -1;
  let addr = 0;
  let dots = 0;
  let v = -1; // the octet so far (-1: no digit yet)
  for (; p < e; p++) {
    c = s.charCodeAt(p);
    if (c >= 0x30 && c <= 0x39) {
      if (v === 0) return false; // a leading zero: left to the general parser
      v = v < 0 ? c - 0x30 : v * 10 + c - 0x30;
      if (v > 255) return false;
    } else if (c === 0x2e /* . */) {
      if (v < 0 || dots === 3) return false;
      addr = (addr << 8) | v;
      dots++;
      v = -1;
    } else break;
  }
  if (dots !== 3 || v < 0 || p >= e) return false;
  addr = (addr << 8) | v;
  let prefix = 32;
  if (c === 0x2f /* / */) {
    prefix = -1;
    for (p++; p < e; p++) {
      c = s.charCodeAt(p);
      if (c < 0x30 || c > 0x39) break;
      if (prefix === 0) return false;
      prefix = prefix < 0 ? c - 0x30 : prefix * 10 + c - 0x30;
      if (prefix > 32) return false;
    }
    if (prefix < 0 || p >= e) return false;
  }
  // The pattern ends at white space; the value is the rest, trimmed.
  if (!(c === 32 || (c >= 9 && c <= 13))) return false;
  for (p++; p < e; p++) {
    c = s.charCodeAt(p);
    if (!(c === 32 || (c >= 9 && c <= 13))) break;
  }
  let ve = e;
  for (; ve > p; ve--) {
    c = s.charCodeAt(ve - 1);
    if (!(c === 32 || (c >= 9 && c <= 13))) break;
  }
  if (ve === p) return false;
  const mask = prefix === 0 ? 0 : (-1 << (32 - prefix)) | 0;
  if ((addr & ~mask) !== 0) return false;
  rules.reserve();
  const r = rules.length++;
  const o = r * 4;
  rules.op[r] = OP_MATCH;
  rules.flags[r] = F_POSITIVE;
  rules.prefix[r] = prefix;
  rules.net[o] = addr;
  rules.mask[o] = mask;
  rules.net[o + 1] = rules.net[o + 2] = rules.net[o + 3] = 0;
  rules.mask[o + 1] = rules.mask[o + 2] = rules.mask[o + 3] = 0;
  rules.lineNo[r] = lineNo;
  rules.blockEnd[r] = -1;
  if (s === rules.text) {
    rules.valueStart[r] = p;
    rules.valueEnd[r] = ve;
  } else {
    rules.valueStart[r] = rules.valueEnd[r] = 0;
    rules.computed.set(r, s.slice(p, ve));
  }
  return true;
}

/** The state of dict_cidr_open's loop: rules so far and the open IFs. */
class CidrParser implements LineSink {
  readonly stack: number[] = [];
  readonly hasNul: boolean;

  constructor(
    readonly rules: CidrRules,
    readonly mapname: Bytes,
    readonly warn: (text: string) => void,
    readonly rhsIsFile: boolean,
  ) {
    this.hasNul = rules.text.indexOf('\0') >= 0;
  }

  line(s: Bytes, b: number, e: number, lineNo: number): void {
    const rules = this.rules;
    // C string semantics: a NUL ends the line.
    if (this.hasNul) {
      const nul = find(s, 0, b, e);
      if (nul >= 0) e = nul;
    }
    if (!this.rhsIsFile && addPlainIPv4(rules, s, b, e, lineNo)) return;
    const error = parseRuleAt(rules, s, b, e, lineNo, this.stack.length, this.rhsIsFile);
    if (error !== undefined) {
      this.warn(`cidr map ${this.mapname}, line ${lineNo}: ${error}: skipping this rule`);
      return;
    }
    const r = rules.length - 1;
    if (rules.op[r] === OP_IF) this.stack.push(r);
    else if (rules.op[r] === OP_ENDIF) rules.blockEnd[this.stack.pop()!] = r;
  }
}

/**
 * Parse a whole cidr source (dict_cidr_open's loop). `origin` names the
 * text in readllines warnings, `mapname` in rule warnings.
 */
export function parseCidrText(text: Bytes, mapname: Bytes, origin: string, opts: Pick<TableOpenOptions, 'warn' | 'openFlags'>): CidrRules {
  const { warn } = opts;
  // At most one rule per line.
  let lines = 1;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) lines++;
  const rules = new CidrRules(text, lines);
  const parser = new CidrParser(rules, mapname, warn, (opts.openFlags & DICT_FLAG.SRC_RHS_IS_FILE) !== 0);
  scanLogicalLines(text, origin, warn, parser);
  const stack = parser.stack;
  while (stack.length > 0) {
    warn(`cidr map ${mapname}, line ${rules.lineNo[stack.pop()!]}: IF has no matching ENDIF`);
  }
  return rules;
}

