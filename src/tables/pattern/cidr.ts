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
 * each run of consecutive positive match rules: per (prefix length, network)
 * the run's first rule, so the first matching rule of a run is the one with
 * the smallest index among the hits of the prefix lengths the run uses.
 *
 * Large tables (100,000 rules) must open about as fast as Postfix parses
 * them, so rules live in typed arrays (no object per rule), patterns are
 * parsed in place, and values stay ranges of the source text until used.
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { readTableSource } from '../core/stream.js';
import { NOT_FOUND, found, type Bytes, type LookupResult, type Table, type TableOpenOptions } from '../core/table.js';
import { cString, requireReadOnly } from '../core/util.js';
import type { TableType } from '../core/registry.js';
import { parseCidrText } from './cidr-parse.js';
import { CidrMatcher } from './cidr-match.js';
import { FileStamp } from '../core/filestamp.js';

/**
 * JIT warm-up for long-running processes (the daemon may call this once,
 * when idle after startup). The first large table a process opens is parsed
 * largely by unoptimized code, noticeably slower than Postfix; optimized
 * code is faster than Postfix. This parses, indexes and queries a synthetic
 * table big enough for V8 to optimize the parser and the index code (about
 * 100 ms of CPU, once). Pure computation on private data.
 */
export function warmUpCidr(): void {
  const lines: string[] = ['# warm-up'];
  const v4 = (i: number) => `${(i >> 8) & 255}.${i & 255}.${(i * 7) & 255}`;
  // A long run of plain IPv4 rules (the fast path), one of IPv6 rules, then the other rule kinds.
  for (let i = 0; i < 15000; i++) lines.push(i % 3 === 0 ? `${v4(i)}.0/24 v${i}` : `${v4(i)}.${i % 251}\tr ${i}`);
  for (let i = 0; i < 2000; i++) lines.push(i % 2 ? `2001:db8:${i.toString(16)}::/48 six` : `2001:db8::${i.toString(16)} host`);
  for (let i = 0; i < 1000; i++) {
    lines.push(`[${v4(i)}.0]/24 b`, `!${v4(i)}.0/24 not`, `if ${v4(i)}.0/24`, `${v4(i)}.1 in`, '  continued', 'endif');
  }
  const rules = parseCidrText(lines.join('\n') + '\n', 'warm-up', 'warm-up', { warn: () => {}, openFlags: 0 });
  // Several matchers, so that the index code is optimized as a whole, not only by on-stack replacement.
  for (let k = 0; k < 3; k++) new CidrMatcher(rules);
  const m = new CidrMatcher(rules);
  // Queries that the indexed runs answer (the rule list after them is linear).
  for (let i = 0; i < 10000; i++) {
    m.match(`${v4(i)}.${i % 251}`);
    if (i % 4 === 1) m.match(`2001:db8:${(i % 2000).toString(16)}::1`);
  }
}

class CidrTable implements Table {
  readonly type = 'cidr';
  readonly implFlags = DICT_FLAG.PATTERN;
  /** shared result objects, made on first use */
  private readonly results: LookupResult[] = [];

  constructor(
    readonly name: Bytes,
    private readonly matcher: CidrMatcher,
    private readonly id: FileStamp | undefined,
  ) {}

  lookup(key: Bytes): LookupResult {
    const r = this.matcher.match(cString(key));
    if (r < 0) return NOT_FOUND;
    return (this.results[r] ??= Object.freeze(found(this.matcher.rules.value(r))));
  }

  /** True when the source file was replaced, modified or removed since it was read (never for inline text). */
  async changed(): Promise<boolean> {
    return this.id !== undefined && this.id.changedAt(this.name);
  }
}

/** Opener for cidr:/file and cidr:{ {rule}, ... }. */
export async function openCidr(opts: TableOpenOptions): Promise<Table> {
  requireReadOnly(opts);
  const src = await readTableSource('cidr', opts.name);
  // Postfix's line reader names an in-memory stream "unknown_stream".
  const origin = src.stat ? opts.name : 'unknown_stream';
  const rules = parseCidrText(src.text, opts.name, origin, opts);
  return new CidrTable(opts.name, new CidrMatcher(rules), src.stat && FileStamp.of(src.stat));
}

/** cidr's warm-up runs after the regexp/pcre one (registry order): that one throws away some of the code this optimizes; twice, with a pause for V8's background compiler. */
async function warmUpCidrType(): Promise<void> {
  for (let round = 0; round < 2; round++) {
    warmUpCidr();
    await new Promise<void>((resolve) => setTimeout(resolve, 100).unref());
  }
}

export const cidrType: TableType = { name: 'cidr', open: openCidr, implFlags: DICT_FLAG.PATTERN, writable: false, warmUp: warmUpCidrType };

