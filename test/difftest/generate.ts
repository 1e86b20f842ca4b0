/**
 * Seeded, reproducible random pattern tables and keys for differential tests:
 * regexp (POSIX ERE/BRE), pcre (PCRE2) and cidr (IPv4/IPv6 prefixes of every
 * length), with flags, negation and IF/ENDIF nesting.
 */

/** mulberry32: small, fast, reproducible. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

export type PatternKind = 'regexp' | 'pcre' | 'cidr';

export interface GeneratedCase {
  kind: PatternKind;
  seed: number;
  /** table source lines (byte strings) */
  lines: string[];
  /** lookup keys (byte strings, no newline) */
  keys: string[];
}

/** Alphabet shared by patterns and keys so that matches are frequent. */
const CHARS = ['a', 'b', 'c', 'A', 'B', 'x', '.', '-', '@', '1', '2', ' ', '\xc3\xa9', '\xe9'];

function literal(r: Rng, kind: 'regexp' | 'pcre'): string {
  const c = r.pick(['a', 'b', 'c', 'A', 'B', 'x', '1', '2', '@', '-', '\\.', '\xc3\xa9']);
  return kind === 'pcre' && c === '-' ? '-' : c;
}

function bracket(r: Rng, kind: 'regexp' | 'pcre'): string {
  const items = ['a', 'b', 'A-C', 'x', '0-9', '.', '\\', '@', '-', ']', '^'];
  const classes = ['[:alpha:]', '[:digit:]', '[:upper:]', '[:lower:]', '[:space:]', '[:punct:]', '[:alnum:]'];
  let body = '';
  const n = r.range(1, 3);
  for (let i = 0; i < n; i++) {
    const it = r.chance(0.2) ? r.pick(classes) : r.pick(items);
    // ']' only first, '^' not first, '-' first or last, '\\' fine in POSIX (literal) but an escape in PCRE
    if (it === ']' && body !== '') continue;
    if (it === '^' && body === '') continue;
    if (it === '\\' && kind === 'pcre') body += '\\\\';
    else body += it;
  }
  if (body === '') body = 'a';
  return `[${r.chance(0.25) ? '^' : ''}${body}]`;
}

function quantifier(r: Rng, kind: 'regexp' | 'pcre'): string {
  const q = r.pick(['*', '+', '?', '{1,2}', '{2}', '{0,1}', '{1,}', '']);
  if (kind === 'pcre' && r.chance(0.15) && q && q !== '') return q + r.pick(['?', '+']);
  if (kind === 'regexp' && r.chance(0.05) && q) return q + '?'; // stacked quantifier (greedy optional in glibc)
  return q;
}

function regexBody(r: Rng, kind: 'regexp' | 'pcre', depth: number): string {
  const alts = r.chance(0.25) && depth < 3 ? r.range(2, 3) : 1;
  const out: string[] = [];
  for (let a = 0; a < alts; a++) {
    let seq = '';
    const n = r.range(1, 4);
    for (let i = 0; i < n; i++) {
      const choice = r.next();
      let atom: string;
      if (choice < 0.45) atom = literal(r, kind);
      else if (choice < 0.6) atom = '.';
      else if (choice < 0.75) atom = bracket(r, kind);
      else if (choice < 0.9 && depth < 3) atom = `(${regexBody(r, kind, depth + 1)})`;
      else if (kind === 'pcre') atom = r.pick(['\\d', '\\w', '\\s', '(?:ab|a)', '(?i:a)', '(?=a)', '\\b']);
      else atom = r.pick(['\\w', '\\b', '\\<', 'a']);
      seq += atom + (r.chance(0.35) ? quantifier(r, kind) : '');
    }
    out.push(seq);
  }
  let body = out.join('|');
  if (depth === 0) {
    if (r.chance(0.5)) body = '^' + body;
    if (r.chance(0.4)) body = body + '$';
  }
  return body;
}

function groupCount(body: string): number {
  let n = 0;
  for (let i = 0; i < body.length; i++) {
    if (body[i] === '\\') i++;
    else if (body[i] === '[') {
      // skip bracket expression
      let j = i + 1;
      if (body[j] === '^') j++;
      if (body[j] === ']') j++;
      while (j < body.length && body[j] !== ']') j += body[j] === '[' && body[j + 1] === ':' ? body.indexOf(':]', j) - j + 2 : 1;
      i = j;
    } else if (body[i] === '(' && body[i + 1] !== '?') n++;
  }
  return n;
}

function value(r: Rng, groups: number, negated: boolean): string {
  const parts: string[] = [r.pick(['OK', 'REJECT', 'v', 'val ue', 'x'])];
  if (!negated && groups > 0 && r.chance(0.6)) {
    const k = r.range(1, Math.min(groups, 3));
    for (let i = 0; i < k; i++) parts.push(r.pick([`$${r.range(1, groups)}`, `\${${r.range(1, groups)}}`, '-']));
  }
  if (r.chance(0.05)) parts.push(`$${groups + 1}`); // out of range: rule skipped on both sides
  return parts.join(r.pick([':', '', ' ']));
}

function flags(r: Rng, kind: 'regexp' | 'pcre'): string {
  if (!r.chance(0.3)) return '';
  return kind === 'regexp' ? r.pick(['i', 'm', 'im', 'x']) : r.pick(['i', 's', 'm', 'x', 'U', 'A', 'E', 'is']);
}

function regexRule(r: Rng, kind: 'regexp' | 'pcre'): string {
  const negated = r.chance(0.15);
  const body = regexBody(r, kind, 0);
  const delim = r.chance(0.9) ? '/' : '|';
  const safeBody = delim === '|' ? body.replace(/\|/g, '') || 'a' : body.replace(/\//g, '');
  let pat = `${negated ? '!' : ''}${delim}${safeBody}${delim}${flags(r, kind)}`;
  if (kind === 'regexp' && r.chance(0.1)) pat += `${r.chance(0.5) ? '!' : ''}/${regexBody(r, kind, 1)}/`;
  return `${pat} ${value(r, groupCount(safeBody), negated)}`;
}

function randomKey(r: Rng): string {
  const n = r.range(0, 7);
  let s = '';
  for (let i = 0; i < n; i++) s += r.pick(CHARS);
  return s;
}

function ipv4(r: Rng): number[] {
  const pool = [[10, 0, 0, 0], [192, 168, 1, 0], [172, 16, 5, 4], [0, 0, 0, 0], [255, 255, 255, 255]];
  const base = r.pick(pool).slice();
  for (let i = 0; i < 4; i++) if (r.chance(0.3)) base[i] = r.int(256);
  return base;
}

function ipv6(r: Rng): number[] {
  const pool = [
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x55],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
    new Array(16).fill(0),
  ];
  const base = r.pick(pool).slice();
  for (let i = 0; i < 16; i++) if (r.chance(0.1)) base[i] = r.int(256);
  return base;
}

function mask(bytes: number[], len: number): number[] {
  return bytes.map((b, i) => {
    const bits = Math.max(0, Math.min(8, len - i * 8));
    return bits === 8 ? b : bits === 0 ? 0 : b & (0xff << (8 - bits)) & 0xff;
  });
}

function fmt4(b: number[]): string {
  return b.join('.');
}

function fmt6(b: number[], r: Rng): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i] << 8) | b[i + 1]).toString(16));
  if (r.chance(0.3)) return words.join(':');
  if (r.chance(0.1) && words.slice(0, 5).every((w) => w === '0') && words[5] === 'ffff') return `::ffff:${b.slice(12).join('.')}`;
  // compress the longest zero run
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && words[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
  }
  if (best < 0) return words.join(':');
  const left = words.slice(0, best).join(':');
  const right = words.slice(best + bestLen).join(':');
  const s = `${left}::${right}`;
  return r.chance(0.2) ? s.toUpperCase() : s;
}

function cidrPattern(r: Rng): { text: string; v6: boolean } {
  const v6 = r.chance(0.35);
  const bytes = v6 ? ipv6(r) : ipv4(r);
  const max = v6 ? 128 : 32;
  const len = r.chance(0.05) ? r.pick([max + 1, 256 + r.int(40), -1]) : r.range(0, max);
  const validLen = len >= 0 ? len % 256 : 0;
  const net = r.chance(0.9) ? mask(bytes, Math.min(validLen, max)) : bytes;
  const addr = v6 ? fmt6(net, r) : fmt4(net);
  const withLen = r.chance(0.85);
  let text = withLen ? `${addr}/${len}` : addr;
  if (r.chance(0.1)) text = withLen && r.chance(0.5) ? `[${addr}]/${len}` : `[${text}]`;
  if (r.chance(0.03)) text = r.pick(['010.1.1.1', '1.2.3', '5.6.7.8/', '::/129', '1.2.3.4/x', 'garbage']);
  return { text, v6 };
}

function cidrKey(r: Rng): string {
  if (r.chance(0.05)) return r.pick(['', 'x', '1.2.3', '[10.0.0.1]', '10.0.0.1/32', '010.0.0.1', ' 10.0.0.1', 'fe80::1%eth0']);
  return r.chance(0.35) ? fmt6(ipv6(r), r) : fmt4(ipv4(r));
}

/** One rule line, or an IF/ENDIF block around more rules. */
function rules(r: Rng, kind: PatternKind, n: number, depth: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    if (depth < 2 && r.chance(0.12)) {
      const neg = r.chance(0.3) ? '!' : '';
      const test = kind === 'cidr' ? cidrPattern(r).text : `/${regexBody(r, kind, 1).replace(/\//g, '')}/${flags(r, kind)}`;
      out.push(`${r.pick(['if', 'IF', 'If'])} ${neg}${test}`);
      out.push(...rules(r, kind, r.range(1, 3), depth + 1));
      if (!r.chance(0.05)) out.push(r.pick(['endif', 'ENDIF']));
    } else if (kind === 'cidr') {
      out.push(`${r.chance(0.1) ? '!' : ''}${cidrPattern(r).text}\t${r.pick(['OK', 'REJECT', 'net one', 'x'])}`);
    } else {
      out.push(regexRule(r, kind));
    }
  }
  return out;
}

export function generateCase(kind: PatternKind, seed: number): GeneratedCase {
  const r = new Rng(seed);
  const lines = rules(r, kind, r.range(1, 8), 0);
  const keys: string[] = [];
  const nk = r.range(4, 12);
  for (let i = 0; i < nk; i++) keys.push(kind === 'cidr' ? cidrKey(r) : randomKey(r));
  return { kind, seed, lines, keys };
}
