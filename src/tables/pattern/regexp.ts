/**
 * regexp: tables (Postfix 3.7 src/util/dict_regexp.c): POSIX regular
 * expressions, matched by the C library's regcomp/regexec in the C locale
 * through the native addon, so matching, submatch assignment and error
 * texts are glibc's own.
 *
 *   [!...]/pattern/flags[!/pattern2/flags2] value
 *   if [!]/pattern/flags
 *   endif
 *
 * Flags toggle: i = REG_ICASE (on by default), x = REG_EXTENDED (on by
 * default; toggling gives basic REs), m = REG_NEWLINE (off by default).
 */
import { RULE_OP, ENGINE, type NativeEngines } from '../../addon/index.js';
import { parseReplacement, scanFlaggedPattern, type FlaggedPattern, type FlagSyntax } from './syntax.js';
import { parseIfStatement, type ParsedRule, type PatternDialect } from './rules.js';
import { openPatternTable } from './table.js';
import type { Table, TableOpenOptions } from '../core/table.js';
import { DICT_FLAG } from '../../protocol/flags.js';
import type { TableType } from '../core/registry.js';
import { configurePatternThreads, patternWorkPending } from './threads.js';
import { warmUpPatternTypes } from './warmup.js';

let flags: FlagSyntax | undefined;

/** regexp flags: i m x toggle REG_ICASE, REG_NEWLINE, REG_EXTENDED (ICASE and EXTENDED on by default); '!' ends them. */
function flagSyntax(native: NativeEngines): FlagSyntax {
  if (flags) return flags;
  const { REG } = native;
  return (flags = { initial: REG.EXTENDED | REG.ICASE, bits: { i: REG.ICASE, m: REG.NEWLINE, x: REG.EXTENDED }, stop: 0x21 });
}

export const regexpDialect: PatternDialect = {
  kind: 'regexp',
  engine: ENGINE.REGEX,

  parseMatch(native, ctx, line, patterns): ParsedRule | null {
    const syntax = flagSyntax(native);
    const first = scanFlaggedPattern(ctx, line, 0, syntax);
    if (first === null) return null;
    let pos = first.pos;
    let second: FlaggedPattern | null = null;
    if (line[pos] === '!') {
      const s = scanFlaggedPattern(ctx, line, pos, syntax);
      if (s === null) return null;
      second = s.pat;
      pos = s.pos;
    }
    const value = parseReplacement(ctx, line, pos, first.pat.match);
    if (value === null) return null;
    const { REG } = native;
    // regcomp happens later, for the whole table at once (parseRules)
    const cflags = value.maxSub === 0n ? first.pat.options | REG.NOSUB : first.pat.options;
    return {
      op: RULE_OP.MATCH,
      lineNo: ctx.lineNo,
      first: patterns.add(first.pat.pattern, cflags),
      match: first.pat.match,
      second: second === null ? -1 : patterns.add(second.pattern, second.options | REG.NOSUB),
      secondMatch: second?.match ?? true,
      value,
    };
  },

  parseIf(native, ctx, line, pos, patterns): ParsedRule | null {
    return parseIfStatement(ctx, line, pos, flagSyntax(native), patterns);
  },

  // regcomp failed: the regerror() text
  compileError: (e) => e.text,
};

/** Opener for regexp:/file and regexp:{ {rule}, ... }. */
export function openRegexp(opts: TableOpenOptions): Promise<Table> {
  return openPatternTable(opts, regexpDialect);
}

export const regexpType: TableType = {
  name: 'regexp',
  open: openRegexp,
  implFlags: DICT_FLAG.PATTERN,
  writable: false,
  configure: configurePatternThreads,
  warmUp: warmUpPatternTypes,
  offThreadWork: patternWorkPending,
};
