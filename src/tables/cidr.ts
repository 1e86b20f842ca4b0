/**
 * cidr: network address patterns (src/util/dict_cidr.c, cidr_match.c,
 * Postfix 3.7 semantics).
 *
 * Rules are `[!...]PATTERN VALUE`, `IF [!...]PATTERN` and `ENDIF`, one per
 * logical line. A key must be a bare address (IPv6 iff it has a ':'); the
 * first rule of the key's family that matches wins, IF blocks are skipped
 * when their test fails (or is of the other family).
 *
 * Postfix scans the rule list linearly. We keep its order exactly but index
 * each run of consecutive positive match rules by prefix length: the first
 * matching rule of a run is the matching rule with the smallest index.
 */
import { stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { DICT_FLAG } from '../protocol/flags.js';
import { inetNtop, parseIPv4At, parseIPv6Into } from './inet.js';
import { readLogicalLines } from './lines.js';
import { filesToBase64 } from './rhsfile.js';
import { readTableSource } from './stream.js';
import { NOT_FOUND, found, type Bytes, type LookupResult, type Table, type TableOpenOptions } from './table.js';
import { cString, requireReadOnly } from './util.js';

const OP_MATCH = 1;
const OP_IF = 2;
const OP_ENDIF = 3;

/** One parsed rule. Address words are big-endian 32-bit groups (1 for IPv4, 4 for IPv6), stored as int32. */
export interface CidrRule {
  op: typeof OP_MATCH | typeof OP_IF | typeof OP_ENDIF;
  v6: boolean;
  /** false for a negated pattern (`!1.2.3.0/24`) */
  positive: boolean;
  /** prefix length (after Postfix's unsigned-byte wrap) */
  prefix: number;
  /** network words, host bits zero */
  net: Int32Array;
  /** mask words */
  mask: Int32Array;
  value: Bytes;
  lineNo: number;
}

export interface CidrPattern {
  v6: boolean;
  prefix: number;
  net: Int32Array;
  mask: Int32Array;
}
export type PatternResult = CidrPattern | { error: string };

/** ISSPACE by char code: SP HT LF VT FF CR. */
function isSpaceCode(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

/** ISALNUM in the C locale; NaN (end of string) is not. */
function isAlnumCode(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

function trimTrailing(s: Bytes): Bytes {
  let e = s.length;
  while (e > 0 && isSpaceCode(s.charCodeAt(e - 1))) e--;
  return e === s.length ? s : s.slice(0, e);
}

const scratch16 = new Uint8Array(16);

/** Parse an address of the given family into words; null when inet_pton rejects it. */
function addressWords(text: Bytes, v6: boolean): Int32Array | null {
  if (!v6) {
    const a = parseIPv4At(text, 0, text.length);
    return a < 0 ? null : Int32Array.of(a | 0);
  }
  if (!parseIPv6Into(text, scratch16)) return null;
  const w = new Int32Array(4);
  for (let i = 0; i < 4; i++) {
    const o = i * 4;
    w[i] = (scratch16[o] << 24) | (scratch16[o + 1] << 16) | (scratch16[o + 2] << 8) | scratch16[o + 3];
  }
  return w;
}

function wordsToBytes(w: Int32Array): Uint8Array {
  const b = new Uint8Array(w.length * 4);
  w.forEach((x, i) => {
    b[i * 4] = x >>> 24;
    b[i * 4 + 1] = (x >>> 16) & 0xff;
    b[i * 4 + 2] = (x >>> 8) & 0xff;
    b[i * 4 + 3] = x & 0xff;
  });
  return b;
}

/** The mask word for bits [32*i, 32*i+32) of a prefix. */
function maskWord(prefix: number, i: number): number {
  const bits = prefix - 32 * i;
  if (bits >= 32) return -1;
  if (bits <= 0) return 0;
  return (-1 << (32 - bits)) | 0;
}

const LONG_MAX = '9223372036854775807';

/**
 * What Postfix stores for a /len of digits: atoi() (strtol saturating at
 * LONG_MAX, truncated to int) assigned to an unsigned char.
 */
function maskShiftOf(digits: string): number {
  const trimmed = digits.replace(/^0+/, '');
  if (trimmed.length > LONG_MAX.length || (trimmed.length === LONG_MAX.length && trimmed > LONG_MAX)) return 255;
  let v = 0;
  for (let i = 0; i < trimmed.length; i++) v = (v * 10 + trimmed.charCodeAt(i) - 0x30) % 256;
  return v;
}

/**
 * Parse an address pattern (`addr`, `addr/len`, `[addr]`, `[addr/len]`,
 * `[addr]/len`) the way cidr_match_parse() does; errors are Postfix's texts.
 */
export function parseCidrPattern(pattern: Bytes): PatternResult {
  let addr = pattern;
  let mask: string | undefined;
  let searchInAddr = true;
  if (addr.charCodeAt(0) === 0x5b /* [ */) {
    addr = addr.slice(1);
    const close = addr.indexOf(']');
    if (close < 0) return { error: `missing ']' character after "[${addr}"` };
    const after = addr.slice(close + 1);
    addr = addr.slice(0, close);
    if (after.charCodeAt(0) === 0x2f /* / */) {
      mask = after.slice(1);
      searchInAddr = false;
    } else if (after !== '') {
      return { error: `garbage after "[${addr}]"` };
    }
  }
  if (searchInAddr) {
    const slash = addr.indexOf('/');
    if (slash >= 0) {
      mask = addr.slice(slash + 1);
      addr = addr.slice(0, slash);
    }
  }
  const v6 = addr.includes(':');
  const bits = v6 ? 128 : 32;
  if (mask === undefined) {
    const net = addressWords(addr, v6);
    if (!net) return { error: `bad address pattern: "${addr}"` };
    return { v6, prefix: bits, net, mask: new Int32Array(net.length).fill(-1) };
  }
  let why: string | undefined;
  let prefix = 0;
  let net: Int32Array | null = null;
  if (!/^[0-9]+$/.test(mask)) why = 'bad mask value';
  else if ((prefix = maskShiftOf(mask)) > bits) why = 'bad mask length';
  else if (!(net = addressWords(addr, v6))) why = 'bad network value';
  if (why !== undefined || !net) return { error: `${why} in "${addr}/${mask}"` };
  const maskWords = new Int32Array(net.length);
  for (let i = 0; i < net.length; i++) maskWords[i] = maskWord(prefix, i);
  if (net.some((w, i) => (w & ~maskWords[i]) !== 0)) {
    const masked = net.map((w, i) => w & maskWords[i]);
    return {
      error: `non-null host address bits in "${addr}/${mask}", perhaps you should use "${inetNtop(wordsToBytes(masked))}/${prefix}" instead`,
    };
  }
  return { v6, prefix, net, mask: maskWords };
}

type RuleParse = { rule: CidrRule } | { error: string };

/** Parse one logical line (dict_cidr_parse_rule); `nesting` is the number of open IFs. */
export function parseCidrRule(line: Bytes, lineNo: number, nesting: number, rhsIsFile: boolean): RuleParse {
  let op: CidrRule['op'];
  let positive = true;
  let value: Bytes;
  let pat: CidrPattern | undefined;
  const skipNegation = (p: number): number => {
    for (;; p++) {
      const c = line.charCodeAt(p);
      if (c === 0x21 /* ! */) positive = !positive;
      else if (!isSpaceCode(c)) return p;
    }
  };
  const lc = (i: number) => line.charCodeAt(i) | 0x20;
  if (lc(0) === 0x69 && lc(1) === 0x66 && !isAlnumCode(line.charCodeAt(2))) {
    // IF [!...]pattern: the rest of the line, right-trimmed, is the pattern.
    const p = skipNegation(2);
    if (p >= line.length) return { error: 'no address pattern' };
    const res = parseCidrPattern(trimTrailing(line.slice(p)));
    if ('error' in res) return res;
    pat = res;
    op = OP_IF;
    value = '';
  } else if (
    lc(0) === 0x65 && lc(1) === 0x6e && lc(2) === 0x64 && lc(3) === 0x69 && lc(4) === 0x66 &&
    !isAlnumCode(line.charCodeAt(5))
  ) {
    let p = 5;
    while (p < line.length && isSpaceCode(line.charCodeAt(p))) p++;
    if (p < line.length) return { error: 'garbage after ENDIF' };
    if (nesting === 0) return { error: 'ENDIF without IF' };
    op = OP_ENDIF;
    value = '';
  } else {
    let p = skipNegation(0);
    const start = p;
    while (p < line.length && !isSpaceCode(line.charCodeAt(p))) p++;
    const pattern = line.slice(start, p);
    while (p < line.length && isSpaceCode(line.charCodeAt(p))) p++;
    value = trimTrailing(line.slice(p));
    if (pattern === '') return { error: 'no address pattern' };
    const res = parseCidrPattern(pattern);
    if ('error' in res) return res;
    pat = res;
    if (value === '') return { error: 'no lookup result' };
    op = OP_MATCH;
  }
  if (rhsIsFile) {
    // Postfix does this for IF and ENDIF too: their empty value is an empty file list.
    const res = filesToBase64(value);
    if ('error' in res) return res;
    value = res.value;
  }
  const none = new Int32Array(0);
  return {
    rule: {
      op,
      v6: pat?.v6 ?? false,
      positive,
      prefix: pat?.prefix ?? 0,
      net: pat?.net ?? none,
      mask: pat?.mask ?? none,
      value,
      lineNo,
    },
  };
}

export interface CidrParse {
  rules: CidrRule[];
  /** for each IF rule, the index of its ENDIF rule, or -1 */
  blockEnd: Int32Array;
}

/**
 * Parse a whole cidr source (dict_cidr_open's loop). `origin` names the
 * text in readllines warnings, `mapname` in rule warnings.
 */
export function parseCidrText(text: Bytes, mapname: Bytes, origin: string, opts: Pick<TableOpenOptions, 'warn' | 'openFlags'>): CidrParse {
  const { warn } = opts;
  const rhsIsFile = (opts.openFlags & DICT_FLAG.SRC_RHS_IS_FILE) !== 0;
  const rules: CidrRule[] = [];
  const ends: number[] = [];
  const stack: number[] = [];
  for (const { text: raw, lineNo } of readLogicalLines(text, origin, warn)) {
    const r = parseCidrRule(cString(raw), lineNo, stack.length, rhsIsFile);
    if ('error' in r) {
      warn(`cidr map ${mapname}, line ${lineNo}: ${r.error}: skipping this rule`);
      continue;
    }
    const index = rules.length;
    rules.push(r.rule);
    ends.push(-1);
    if (r.rule.op === OP_IF) stack.push(index);
    else if (r.rule.op === OP_ENDIF) ends[stack.pop()!] = index;
  }
  while (stack.length > 0) {
    warn(`cidr map ${mapname}, line ${rules[stack.pop()!].lineNo}: IF has no matching ENDIF`);
  }
  return { rules, blockEnd: Int32Array.from(ends) };
}

/** Runs shorter than this are scanned rule by rule. */
const MIN_INDEXED_RUN = 8;

/** Index of a run of positive match rules: per prefix length, network -> first rule. */
class RunIndex {
  readonly v4Masks: number[] = [];
  readonly v4Maps: Map<number, number>[] = [];
  readonly v6Prefixes: number[] = [];
  readonly v6Maps: Map<string, number>[] = [];

  constructor(rules: readonly CidrRule[], from: number, to: number) {
    const v4 = new Map<number, Map<number, number>>();
    const v6 = new Map<number, Map<string, number>>();
    for (let r = from; r < to; r++) {
      const rule = rules[r];
      if (rule.v6) {
        let m = v6.get(rule.prefix);
        if (!m) v6.set(rule.prefix, (m = new Map()));
        const k = v6Key(rule.net[0], rule.net[1], rule.net[2], rule.net[3]);
        if (!m.has(k)) m.set(k, r);
      } else {
        let m = v4.get(rule.prefix);
        if (!m) v4.set(rule.prefix, (m = new Map()));
        if (!m.has(rule.net[0])) m.set(rule.net[0], r);
      }
    }
    for (const [prefix, m] of v4) {
      this.v4Masks.push(maskWord(prefix, 0));
      this.v4Maps.push(m);
    }
    for (const [prefix, m] of v6) {
      this.v6Prefixes.push(prefix);
      this.v6Maps.push(m);
    }
  }

  /** The first rule of the run matching an IPv4 address, or -1. */
  find4(a: number): number {
    let best = -1;
    const masks = this.v4Masks;
    for (let i = 0; i < masks.length; i++) {
      const r = this.v4Maps[i].get(a & masks[i]);
      if (r !== undefined && (best < 0 || r < best)) best = r;
    }
    return best;
  }

  /** The first rule of the run matching an IPv6 address, or -1. */
  find6(w: Int32Array): number {
    let best = -1;
    for (let i = 0; i < this.v6Prefixes.length; i++) {
      const p = this.v6Prefixes[i];
      const k = v6Key(w[0] & maskWord(p, 0), w[1] & maskWord(p, 1), w[2] & maskWord(p, 2), w[3] & maskWord(p, 3));
      const r = this.v6Maps[i].get(k);
      if (r !== undefined && (best < 0 || r < best)) best = r;
    }
    return best;
  }
}

function v6Key(a: number, b: number, c: number, d: number): string {
  return String.fromCharCode(a >>> 16, a & 0xffff, b >>> 16, b & 0xffff, c >>> 16, c & 0xffff, d >>> 16, d & 0xffff);
}

const N_RULE = 0;
const N_RUN = 1;
const N_IF = 2;
const N_ENDIF = 3;

/** A step of the compiled rule list. */
type Node =
  | { kind: typeof N_RULE; rule: number }
  | { kind: typeof N_RUN; index: RunIndex }
  | { kind: typeof N_IF; rule: number; jump: number }
  | { kind: typeof N_ENDIF };

/** Rules plus the compiled program that evaluates them in Postfix's order. */
export class CidrMatcher {
  private readonly nodes: Node[] = [];

  constructor(
    readonly rules: readonly CidrRule[],
    blockEnd: Int32Array,
  ) {
    const nodeOfRule = new Int32Array(rules.length).fill(-1);
    const ifs: number[] = [];
    let r = 0;
    while (r < rules.length) {
      const rule = rules[r];
      if (rule.op === OP_MATCH && rule.positive) {
        let e = r + 1;
        while (e < rules.length && rules[e].op === OP_MATCH && rules[e].positive) e++;
        if (e - r >= MIN_INDEXED_RUN) this.nodes.push({ kind: N_RUN, index: new RunIndex(rules, r, e) });
        else for (let k = r; k < e; k++) this.nodes.push({ kind: N_RULE, rule: k });
        r = e;
        continue;
      }
      nodeOfRule[r] = this.nodes.length;
      if (rule.op === OP_MATCH) this.nodes.push({ kind: N_RULE, rule: r });
      else if (rule.op === OP_IF) {
        ifs.push(this.nodes.length);
        this.nodes.push({ kind: N_IF, rule: r, jump: -1 });
      } else this.nodes.push({ kind: N_ENDIF });
      r++;
    }
    for (const n of ifs) {
      const node = this.nodes[n] as { kind: typeof N_IF; rule: number; jump: number };
      const end = blockEnd[node.rule];
      node.jump = end < 0 ? -1 : nodeOfRule[end];
    }
  }

  /** Whether one rule's pattern (with its negation) matches an address of its family. */
  private test(rule: CidrRule, v6: boolean, a: number, w: Int32Array): boolean {
    if (rule.v6 !== v6) return false;
    let hit: boolean;
    if (!v6) hit = (a & rule.mask[0]) === rule.net[0];
    else {
      const m = rule.mask;
      const n = rule.net;
      hit = (w[0] & m[0]) === n[0] && (w[1] & m[1]) === n[1] && (w[2] & m[2]) === n[2] && (w[3] & m[3]) === n[3];
    }
    return hit === rule.positive;
  }

  /** The index of the rule matching a key (cidr_match_execute), or -1. */
  match(key: Bytes): number {
    const v6 = key.includes(':');
    let a = 0;
    let w: Int32Array = EMPTY;
    if (v6) {
      const words = addressWords(key, true);
      if (!words) return -1;
      w = words;
    } else {
      const n = parseIPv4At(key, 0, key.length);
      if (n < 0) return -1;
      a = n | 0;
    }
    const { nodes, rules } = this;
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i];
      switch (node.kind) {
        case N_RUN: {
          const r = v6 ? node.index.find6(w) : node.index.find4(a);
          if (r >= 0) return r;
          break;
        }
        case N_RULE: {
          const rule = rules[node.rule];
          if (this.test(rule, v6, a, w)) return node.rule;
          break;
        }
        case N_IF:
          // A failed test, or one of the other family, skips the block; with no ENDIF, the rest.
          if (!this.test(rules[node.rule], v6, a, w)) {
            if (node.jump < 0) return -1;
            i = node.jump;
          }
          break;
        case N_ENDIF:
          break;
      }
    }
    return -1;
  }
}

const EMPTY = new Int32Array(4);

type FileId = Pick<Stats, 'ino' | 'dev' | 'size' | 'mtimeMs' | 'ctimeMs'>;

class CidrTable implements Table {
  readonly type = 'cidr';
  readonly implFlags = DICT_FLAG.PATTERN;
  /** shared result objects, made on first use */
  private readonly results: LookupResult[] = [];

  constructor(
    readonly name: Bytes,
    private readonly matcher: CidrMatcher,
    private readonly id: FileId | undefined,
  ) {}

  lookup(key: Bytes): LookupResult {
    const r = this.matcher.match(cString(key));
    if (r < 0) return NOT_FOUND;
    return (this.results[r] ??= Object.freeze(found(this.matcher.rules[r].value)));
  }

  /** True when the source file was replaced, modified or removed since it was read (never for inline text). */
  async changed(): Promise<boolean> {
    if (!this.id) return false;
    try {
      const st = await stat(Buffer.from(this.name, 'latin1'));
      const id = this.id;
      return !(st.ino === id.ino && st.dev === id.dev && st.size === id.size && st.mtimeMs === id.mtimeMs && st.ctimeMs === id.ctimeMs);
    } catch {
      return true;
    }
  }
}

/** Opener for cidr:/file and cidr:{ {rule}, ... }. */
export async function openCidr(opts: TableOpenOptions): Promise<Table> {
  requireReadOnly(opts);
  const src = await readTableSource('cidr', opts.name);
  // Postfix's line reader names an in-memory stream "unknown_stream".
  const origin = src.stat ? opts.name : 'unknown_stream';
  const { rules, blockEnd } = parseCidrText(src.text, opts.name, origin, opts);
  return new CidrTable(opts.name, new CidrMatcher(rules, blockEnd), src.stat);
}
