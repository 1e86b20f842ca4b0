/**
 * Matching keys against parsed cidr: rules in Postfix's order (first rule of
 * the key's family that matches; IF blocks skipped when their test fails),
 * with each run of consecutive positive match rules indexed by (prefix
 * length, network) so that a lookup does not scan the run.
 */
import { type Bytes } from '../core/table.js';
import { CidrRules, F_POSITIVE, F_V6, OP_IF, OP_MATCH, W, maskWord, parseWords } from './cidr-parse.js';

/** Runs shorter than this are scanned rule by rule. */
const MIN_INDEXED_RUN = 8;

function hash4(p: number, a: number): number {
  let h = Math.imul(a ^ Math.imul(p, 0x2c1b3c6d), 0x9e3779b1);
  h ^= h >>> 16;
  return h;
}

function hash6(p: number, a: number, b: number, c: number, d: number): number {
  let h = Math.imul(a ^ Math.imul(p, 0x2c1b3c6d), 0x9e3779b1);
  h = Math.imul(h ^ b, 0x85ebca6b);
  h = Math.imul(h ^ c, 0xc2b2ae35);
  h = Math.imul(h ^ d, 0x27d4eb2f);
  h ^= h >>> 16;
  return h;
}

/**
 * Index of a run of positive match rules: an open-addressing hash table of
 * rule numbers keyed by (prefix, network) of the rule, first rule kept.
 */
class RunIndex {
  private readonly slots4: Int32Array;
  private readonly slots6: Int32Array;
  /** distinct prefix lengths per family, and the IPv4 masks */
  private readonly prefixes4: number[] = [];
  private readonly masks4: number[] = [];
  private readonly prefixes6: number[] = [];
  private readonly seen4 = new Uint8Array(33);
  private readonly seen6 = new Uint8Array(129);

  constructor(
    private readonly rules: CidrRules,
    from: number,
    to: number,
  ) {
    let n4 = 0;
    for (let r = from; r < to; r++) if (!(rules.flags[r] & F_V6)) n4++;
    this.slots4 = new Int32Array(RunIndex.size(n4)).fill(-1);
    this.slots6 = new Int32Array(RunIndex.size(to - from - n4)).fill(-1);
    // Per-rule work in small methods: they get optimized early (and by the warm-up), the loop stays trivial.
    for (let r = from; r < to; r++) {
      if (rules.flags[r] & F_V6) this.insert6(r);
      else this.insert4(r);
    }
  }

  private insert4(r: number): void {
    const { net, prefix } = this.rules;
    const p = prefix[r];
    const a = net[r * 4];
    if (!this.seen4[p]) {
      this.seen4[p] = 1;
      this.prefixes4.push(p);
      this.masks4.push(maskWord(p, 0));
    }
    const slots = this.slots4;
    const mask = slots.length - 1;
    for (let i = hash4(p, a) & mask; ; i = (i + 1) & mask) {
      const s = slots[i];
      if (s < 0) {
        slots[i] = r;
        return;
      }
      if (prefix[s] === p && net[s * 4] === a) return; // an earlier rule has this network
    }
  }

  private insert6(r: number): void {
    const { net, prefix } = this.rules;
    const p = prefix[r];
    const o = r * 4;
    if (!this.seen6[p]) {
      this.seen6[p] = 1;
      this.prefixes6.push(p);
    }
    const slots = this.slots6;
    const mask = slots.length - 1;
    for (let i = hash6(p, net[o], net[o + 1], net[o + 2], net[o + 3]) & mask; ; i = (i + 1) & mask) {
      const s = slots[i];
      if (s < 0) {
        slots[i] = r;
        return;
      }
      const so = s * 4;
      if (prefix[s] === p && net[so] === net[o] && net[so + 1] === net[o + 1] && net[so + 2] === net[o + 2] && net[so + 3] === net[o + 3]) return;
    }
  }

  /** A power of two at least twice n. */
  private static size(n: number): number {
    let size = 4;
    while (size < n * 2) size *= 2;
    return size;
  }

  /** The first rule of the run matching an IPv4 address, or -1. */
  find4(a: number): number {
    const { slots4: slots, prefixes4, masks4 } = this;
    const { net, prefix } = this.rules;
    const mask = slots.length - 1;
    let best = -1;
    for (let k = 0; k < prefixes4.length; k++) {
      const p = prefixes4[k];
      const m = a & masks4[k];
      for (let i = hash4(p, m) & mask; ; i = (i + 1) & mask) {
        const s = slots[i];
        if (s < 0) break;
        if (prefix[s] === p && net[s * 4] === m) {
          if (best < 0 || s < best) best = s;
          break;
        }
      }
    }
    return best;
  }

  /** The first rule of the run matching an IPv6 address, or -1. */
  find6(w: Int32Array): number {
    const { slots6: slots, prefixes6 } = this;
    const { net, prefix } = this.rules;
    const mask = slots.length - 1;
    let best = -1;
    for (let k = 0; k < prefixes6.length; k++) {
      const p = prefixes6[k];
      const a = w[0] & maskWord(p, 0);
      const b = w[1] & maskWord(p, 1);
      const c = w[2] & maskWord(p, 2);
      const d = w[3] & maskWord(p, 3);
      for (let i = hash6(p, a, b, c, d) & mask; ; i = (i + 1) & mask) {
        const s = slots[i];
        if (s < 0) break;
        const so = s * 4;
        if (prefix[s] === p && net[so] === a && net[so + 1] === b && net[so + 2] === c && net[so + 3] === d) {
          if (best < 0 || s < best) best = s;
          break;
        }
      }
    }
    return best;
  }
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

/** A positive match rule: can be part of an indexed run. */
function isPlain(op: Uint8Array, flags: Uint8Array, r: number): boolean {
  return op[r] === OP_MATCH && (flags[r] & F_POSITIVE) !== 0;
}

/** Rules plus the compiled program that evaluates them in Postfix's order. */
export class CidrMatcher {
  private readonly nodes: Node[] = [];

  constructor(readonly rules: CidrRules) {
    const { op, flags, blockEnd } = rules;
    const n = rules.length;
    const nodeOfRule = new Int32Array(n).fill(-1);
    const ifs: number[] = [];
    let r = 0;
    while (r < n) {
      if (isPlain(op, flags, r)) {
        let e = r + 1;
        while (e < n && isPlain(op, flags, e)) e++;
        if (e - r >= MIN_INDEXED_RUN) this.nodes.push({ kind: N_RUN, index: new RunIndex(rules, r, e) });
        else for (let k = r; k < e; k++) this.nodes.push({ kind: N_RULE, rule: k });
        r = e;
        continue;
      }
      nodeOfRule[r] = this.nodes.length;
      if (op[r] === OP_MATCH) this.nodes.push({ kind: N_RULE, rule: r });
      else if (op[r] === OP_IF) {
        ifs.push(this.nodes.length);
        this.nodes.push({ kind: N_IF, rule: r, jump: -1 });
      } else this.nodes.push({ kind: N_ENDIF });
      r++;
    }
    for (const i of ifs) {
      const node = this.nodes[i] as { kind: typeof N_IF; rule: number; jump: number };
      const end = blockEnd[node.rule];
      node.jump = end < 0 ? -1 : nodeOfRule[end];
    }
  }

  /** Whether rule r's pattern (with its negation) matches an address of its family (cidr_match_entry). */
  private test(r: number, v6: boolean, w: Int32Array): boolean {
    const { flags, net, mask } = this.rules;
    const f = flags[r];
    if (((f & F_V6) !== 0) !== v6) return false;
    const o = r * 4;
    const hit = v6
      ? (w[0] & mask[o]) === net[o] && (w[1] & mask[o + 1]) === net[o + 1] && (w[2] & mask[o + 2]) === net[o + 2] && (w[3] & mask[o + 3]) === net[o + 3]
      : (w[0] & mask[o]) === net[o];
    return hit === ((f & F_POSITIVE) !== 0);
  }

  /** The index of the rule matching a key (cidr_match_execute), or -1. */
  match(key: Bytes): number {
    const v6 = key.indexOf(':') >= 0;
    if (!parseWords(key, 0, key.length, v6)) return -1;
    const w = W;
    const nodes = this.nodes;
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i];
      switch (node.kind) {
        case N_RUN: {
          const r = v6 ? node.index.find6(w) : node.index.find4(w[0]);
          if (r >= 0) return r;
          break;
        }
        case N_RULE:
          if (this.test(node.rule, v6, w)) return node.rule;
          break;
        case N_IF:
          // A failed test, or one of the other family, skips the block; with no ENDIF, the rest.
          if (!this.test(node.rule, v6, w)) {
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

