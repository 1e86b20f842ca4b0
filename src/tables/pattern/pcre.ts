/**
 * pcre: tables (Postfix 3.7 src/util/dict_pcre.c built with PCRE2): Perl
 * compatible regular expressions, compiled and matched by libpcre2-8 (no
 * UTF mode, no JIT, default contexts) through the native addon, so
 * semantics, limits and error texts are PCRE2's own.
 *
 *   [!...]/pattern/flags value
 *   if [!]/pattern/flags
 *   endif
 *
 * Flags toggle: i CASELESS (on), s DOTALL (on), m MULTILINE, x EXTENDED,
 * A ANCHORED, E DOLLAR_ENDONLY, U UNGREEDY; X (PCRE1's EXTRA) is ignored
 * with a warning.
 */
import { RULE_OP, ENGINE, type NativeEngines } from '../../addon/index.js';
import { parseReplacement, scanFlaggedPattern, type FlagSyntax } from './syntax.js';
import { parseIfStatement, type ParsedRule, type PatternDialect } from './rules.js';
import { openPatternTable } from './table.js';
import type { Table, TableOpenOptions } from '../core/table.js';
import { DICT_FLAG } from '../../protocol/flags.js';
import type { TableType } from '../core/registry.js';
import { configurePatternThreads, patternWorkPending } from './threads.js';
import { warmUpPatternTypes } from './warmup.js';

let flags: FlagSyntax | undefined;

/** pcre flags: i m s x A E U toggle PCRE2 options (CASELESS and DOTALL on by default); X is obsolete. */
function flagSyntax(native: NativeEngines): FlagSyntax {
  if (flags) return flags;
  const { PCRE2 } = native;
  return (flags = {
    initial: PCRE2.CASELESS | PCRE2.DOTALL,
    bits: { i: PCRE2.CASELESS, m: PCRE2.MULTILINE, s: PCRE2.DOTALL, x: PCRE2.EXTENDED, A: PCRE2.ANCHORED, E: PCRE2.DOLLAR_ENDONLY, U: PCRE2.UNGREEDY },
    obsolete: 'X',
  });
}

export const pcreDialect: PatternDialect = {
  kind: 'pcre',
  engine: ENGINE.PCRE,

  parseMatch(native, ctx, line, patterns): ParsedRule | null {
    const got = scanFlaggedPattern(ctx, line, 0, flagSyntax(native));
    if (got === null) return null;
    const value = parseReplacement(ctx, line, got.pos, got.pat.match);
    if (value === null) return null;
    // pcre2_compile happens later, for the whole table at once (parseRules)
    const first = patterns.add(got.pat.pattern, got.pat.options);
    return { op: RULE_OP.MATCH, lineNo: ctx.lineNo, first, match: got.pat.match, second: -1, secondMatch: true, value };
  },

  parseIf(native, ctx, line, pos, patterns): ParsedRule | null {
    return parseIfStatement(ctx, line, pos, flagSyntax(native), patterns);
  },

  // pcre2_compile failed: the offset and PCRE2's message
  compileError: (e) => `error in regex at offset ${e.offset}: ${e.text}`,
};

/** Opener for pcre:/file and pcre:{ {rule}, ... }. */
export function openPcre(opts: TableOpenOptions): Promise<Table> {
  return openPatternTable(opts, pcreDialect);
}

export const pcreType: TableType = {
  name: 'pcre',
  open: openPcre,
  implFlags: DICT_FLAG.PATTERN,
  writable: false,
  configure: configurePatternThreads,
  warmUp: warmUpPatternTypes,
  offThreadWork: patternWorkPending,
};
