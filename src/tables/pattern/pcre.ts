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
import { isSpaceCode } from '../../util/ctype.js';
import { parseReplacement, scanDelimited, skipSpace, type RuleContext } from './syntax.js';
import type { ParsedRule, PatternDialect } from './rules.js';
import { openPatternTable } from './table.js';
import type { Bytes, Table, TableOpenOptions } from '../core/table.js';
import { DICT_FLAG } from '../../protocol/flags.js';
import type { TableType } from '../core/registry.js';
import { configurePatternThreads, patternWorkPending } from './threads.js';
import { warmUpPatternTypes } from './warmup.js';

interface PcrePattern {
  pattern: Bytes;
  options: number;
  match: boolean;
}

/** The pattern with its flags at line[pos]; flags end at whitespace or the end. */
function getPattern(native: NativeEngines, ctx: RuleContext, line: Bytes, pos: number): { pat: PcrePattern; pos: number } | null {
  const d = scanDelimited(ctx, line, pos);
  if (d === null) return null;
  const { PCRE2 } = native;
  let options = PCRE2.CASELESS | PCRE2.DOTALL;
  let p = d.pos;
  for (; p < line.length && !isSpaceCode(line.charCodeAt(p)); p++) {
    switch (line[p]) {
      case 'i':
        options ^= PCRE2.CASELESS;
        break;
      case 'm':
        options ^= PCRE2.MULTILINE;
        break;
      case 's':
        options ^= PCRE2.DOTALL;
        break;
      case 'x':
        options ^= PCRE2.EXTENDED;
        break;
      case 'A':
        options ^= PCRE2.ANCHORED;
        break;
      case 'E':
        options ^= PCRE2.DOLLAR_ENDONLY;
        break;
      case 'U':
        options ^= PCRE2.UNGREEDY;
        break;
      case 'X':
        ctx.warn(`ignoring obsolete regexp option "${line[p]}"`);
        break;
      default:
        ctx.warn(`unknown regexp option "${line[p]}": skipping this rule`);
        return null;
    }
  }
  // ANCHORED is bit 31: keep the options an unsigned 32-bit number.
  return { pat: { pattern: d.pattern, options: options >>> 0, match: d.match }, pos: p };
}

export const pcreDialect: PatternDialect = {
  kind: 'pcre',
  engine: ENGINE.PCRE,

  parseMatch(native, ctx, line, patterns): ParsedRule | null {
    const got = getPattern(native, ctx, line, 0);
    if (got === null) return null;
    const value = parseReplacement(ctx, line, got.pos, got.pat.match);
    if (value === null) return null;
    // pcre2_compile happens later, for the whole table at once (parseRules)
    const first = patterns.add(got.pat.pattern, got.pat.options);
    return { op: RULE_OP.MATCH, lineNo: ctx.lineNo, first, match: got.pat.match, second: -1, secondMatch: true, value };
  },

  parseIf(native, ctx, line, pos, patterns): ParsedRule | null {
    const got = getPattern(native, ctx, line, skipSpace(line, pos));
    if (got === null) return null;
    const rest = skipSpace(line, got.pos);
    if (rest < line.length) {
      ctx.warn(`ignoring extra text after IF statement: "${line.slice(rest)}"`);
      ctx.warn('do not prepend whitespace to statements between IF and ENDIF');
    }
    return { op: RULE_OP.IF, lineNo: ctx.lineNo, first: patterns.add(got.pat.pattern, got.pat.options), match: got.pat.match };
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
