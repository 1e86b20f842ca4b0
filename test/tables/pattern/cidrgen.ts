/**
 * Seeded generators of random cidr tables and lookup keys, plus a plain
 * linear evaluator written straight from cidr_match_execute(), for checking
 * the indexed matcher and for differential runs against postmap.
 */
import { inetNtop, inetPton } from '../../../src/tables/pattern/inet.js';
import type { CidrRules } from '../../../src/tables/pattern/cidr-parse.js';
import type { Bytes } from '../../../src/tables/core/table.js';

/** mulberry32: a small deterministic PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Gen {
  int(n: number): number;
  pick<T>(a: readonly T[]): T;
  chance(p: number): boolean;
}

export function gen(seed: number): Gen {
  const r = prng(seed);
  return {
    int: (n) => Math.floor(r() * n),
    pick: (a) => a[Math.floor(r() * a.length)],
    chance: (p) => r() < p,
  };
}

/** A few base addresses so that rules overlap and keys hit them. */
const V4_POOL = ['10.0.0.0', '10.1.0.0', '10.1.2.0', '192.168.1.0', '172.16.0.0', '1.2.3.0', '0.0.0.0', '255.255.255.0'];
const V6_POOL = ['2001:db8::', '2001:db8:1::', 'fe80::', '::ffff:10.1.2.0', '::', 'ff02::', '2001:db8:1:2::'];

function bytesOf(text: string): Uint8Array {
  if (!text.includes(':')) return Uint8Array.from(text.split('.').map(Number));
  // Expand a simple "::" form (pool addresses only).
  const [head, tail] = text.split('::');
  const words = (s: string) => (s === '' ? [] : s.split(':'));
  const out = new Uint8Array(16);
  const h = words(head);
  let t = tail === undefined ? [] : words(tail);
  let v4: number[] = [];
  if (t.length && t[t.length - 1].includes('.')) {
    v4 = t[t.length - 1].split('.').map(Number);
    t = t.slice(0, -1);
  }
  h.forEach((w, i) => {
    const n = parseInt(w, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 0xff;
  });
  const end = v4.length ? 12 : 16;
  t.forEach((w, i) => {
    const n = parseInt(w, 16);
    const o = end - 2 * (t.length - i);
    out[o] = n >> 8;
    out[o + 1] = n & 0xff;
  });
  v4.forEach((b, i) => (out[12 + i] = b));
  return out;
}

/** A random address near the pool (random bits below a random depth). */
export function randomAddress(g: Gen, v6: boolean): Uint8Array {
  const b = bytesOf(g.pick(v6 ? V6_POOL : V4_POOL));
  const from = g.int(b.length + 1);
  for (let i = from; i < b.length; i++) b[i] = g.chance(0.5) ? g.int(256) : g.pick([0, 1, 255]);
  return b;
}

function masked(b: Uint8Array, prefix: number): Uint8Array {
  const out = Uint8Array.from(b);
  for (let i = 0; i < out.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - 8 * i));
    out[i] &= (0xff << (8 - bits)) & 0xff;
  }
  return out;
}

/** Text for an address: canonical, or (IPv6) expanded, upper case or with leading zeros. */
export function addressText(g: Gen, b: Uint8Array): string {
  if (b.length === 4 || g.chance(0.6)) {
    const t = inetNtop(b);
    return g.chance(0.2) ? t.toUpperCase() : t;
  }
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i] << 8) | b[i + 1]).toString(16).padStart(g.chance(0.5) ? 4 : 1, '0'));
  return g.chance(0.5) ? words.join(':').toUpperCase() : words.join(':');
}

/** A random address pattern: a network (sometimes with host bits), with or without /len and brackets. */
function randomPattern(g: Gen, v6: boolean, prefix: number): string {
  const bits = v6 ? 128 : 32;
  const addr = randomAddress(g, v6);
  const net = g.chance(0.03) ? addr : masked(addr, prefix); // sometimes host bits: a warning
  let pattern = addressText(g, net);
  if (prefix !== bits || g.chance(0.3)) pattern += `/${g.chance(0.05) ? prefix + 256 : prefix}`;
  return g.chance(0.1) ? `[${pattern}]` : pattern;
}

/** A random cidr table source: mostly match rules, some (mostly balanced) IF blocks, negations, invalid rules. */
export function randomTable(g: Gen, lines: number, o: { ifs?: boolean } = {}): string {
  const out: string[] = [];
  let depth = 0;
  const neg = (p: number) => (g.chance(p) ? (g.chance(0.6) ? '!' : '! !') : '');
  for (let i = 0; i < lines; i++) {
    const v6 = g.chance(0.3);
    const bits = v6 ? 128 : 32;
    const roll = o.ifs === false ? 99 : g.int(100);
    if (roll < 6) {
      // IF tests are broad, so that blocks are entered often.
      const prefix = g.pick(v6 ? [0, 0, 16, 32] : [0, 0, 8, 16]);
      out.push(`${g.pick(['if', 'IF', 'If'])} ${neg(0.5)}${randomPattern(g, v6, prefix)}`);
      depth++;
    } else if (roll < 16) {
      if (depth > 0 || g.chance(0.05)) {
        out.push(g.pick(['endif', 'ENDIF']));
        if (depth > 0) depth--;
      }
    } else if (roll < 18) {
      out.push(g.pick(['010.1.1.1 bad', '1.2.3.4/33 bad', 'endif x', '[1.2.3.4 bad', '1.2.3.4']));
    } else {
      // Mostly long prefixes, so that early rules do not swallow every key;
      // a negated match rule catches nearly every key of its family: keep them rare.
      const r = g.int(100);
      const prefix =
        r < 20 ? bits
        : r < 21 ? 0
        : r < 30 ? g.pick(v6 ? [16, 32, 48] : [8, 12, 16])
        : g.pick(v6 ? [64, 96, 104, 112, 120, 124, 127, 128] : [20, 23, 24, 26, 28, 30, 31, 32]);
      out.push(`${neg(0.01)}${randomPattern(g, v6, prefix)} r${i}`);
    }
  }
  while (depth-- > 0) if (g.chance(0.7)) out.push('endif');
  return out.join('\n') + '\n';
}

/** Networks named in a table's text (addresses and prefix lengths), for keys that hit its rules. */
function tableNets(table: string): Array<[Uint8Array, number]> {
  const out: Array<[Uint8Array, number]> = [];
  for (const line of table.split('\n')) {
    const m = /^(?:if)?[\s!]*\[?([0-9a-fA-F:.]+)\]?(?:\/(\d+))?\]?/i.exec(line);
    const bytes = m ? inetPton(m[1]) : null;
    if (bytes) out.push([bytes, m![2] === undefined ? bytes.length * 8 : Number(m![2]) % 256]);
  }
  return out;
}

/**
 * Random keys: addresses near the pool in assorted spellings, some
 * non-addresses, and (given the table text) addresses inside or just
 * outside its networks.
 */
export function randomKeys(g: Gen, n: number, table?: string): Bytes[] {
  const nets = table ? tableNets(table) : [];
  const keys = new Set<Bytes>();
  while (keys.size < n) {
    if (g.chance(0.03)) {
      keys.add(g.pick(['1.2.3', '010.1.2.3', '[10.1.2.3]', 'fe80::1%eth0', '10.1.2.3/32', 'x', '1.2.3.4.5']));
    } else if (nets.length > 0 && g.chance(0.8)) {
      const [net, prefix] = g.pick(nets);
      const b = Uint8Array.from(net);
      for (let bit = prefix; bit < b.length * 8; bit++) if (g.chance(0.5)) b[bit >> 3] ^= 0x80 >> (bit & 7);
      if (prefix > 0 && g.chance(0.2)) {
        const bit = g.int(prefix);
        b[bit >> 3] ^= 0x80 >> (bit & 7); // a near miss
      }
      keys.add(addressText(g, b));
    } else {
      keys.add(addressText(g, randomAddress(g, g.chance(0.35))));
    }
  }
  return [...keys];
}

/** cidr_match_execute() as written in Postfix: a linear walk. The matching rule's index, or -1. */
export function linearMatch(table: CidrRules, key: Bytes, parse: (k: Bytes) => Uint8Array | null): number {
  const bytes = parse(key);
  if (!bytes) return -1;
  const v6 = key.includes(':');
  const words: number[] = [];
  for (let i = 0; i < bytes.length; i += 4) words.push(((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) | 0);
  const rules = Array.from({ length: table.length }, (_, i) => table.rule(i));
  const test = (i: number) => {
    const r = rules[i];
    if (r.v6 !== v6) return false;
    const hit = words.every((w, k) => (w & r.mask[k]) === r.net[k]);
    return hit === r.positive;
  };
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    if (r.op === 1 && test(i)) return i;
    if (r.op === 2 && !test(i)) {
      if (table.blockEnd[i] < 0) return -1;
      i = table.blockEnd[i];
    }
  }
  return -1;
}
