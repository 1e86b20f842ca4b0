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
import { isSpaceCode } from '../../util/ctype.js';
import { parseReplacement, scanDelimited, skipSpace, type RuleContext } from './syntax.js';
import type { ParsedRule, PatternDialect } from './rules.js';
import { openPatternTable } from './table.js';
import type { Bytes, Table, TableOpenOptions } from '../core/table.js';
import { DICT_FLAG } from '../../protocol/flags.js';
import type { TableType } from '../core/registry.js';
import { configurePatternThreads, patternWorkPending } from './threads.js';
import { warmUpPatternTypes } from './warmup.js';

interface RegexpPattern {
  pattern: Bytes;
  cflags: number;
  match: boolean;
}

/** One pattern with its flags at line[pos]; flags end at whitespace, '!' or the end. */
function getPattern(native: NativeEngines, ctx: RuleContext, line: Bytes, pos: number): { pat: RegexpPattern; pos: number } | null {
  const d = scanDelimited(ctx, line, pos);
  if (d === null) return null;
  const { REG } = native;
  let cflags = REG.EXTENDED | REG.ICASE;
  let p = d.pos;
  for (; p < line.length; p++) {
    const c = line.charCodeAt(p);
    if (isSpaceCode(c) || c === 0x21) break;
    switch (line[p]) {
      case 'i':
        cflags ^= REG.ICASE;
        break;
      case 'm':
        cflags ^= REG.NEWLINE;
        break;
      case 'x':
        cflags ^= REG.EXTENDED;
        break;
      default:
        ctx.warn(`unknown regexp option "${line[p]}": skipping this rule`);
        return null;
    }
  }
  return { pat: { pattern: d.pattern, cflags, match: d.match }, pos: p };
}

export const regexpDialect: PatternDialect = {
  kind: 'regexp',
  engine: ENGINE.REGEX,

  parseMatch(native, ctx, line, patterns): ParsedRule | null {
    const first = getPattern(native, ctx, line, 0);
    if (first === null) return null;
    let pos = first.pos;
    let second: RegexpPattern | null = null;
    if (line[pos] === '!') {
      const s = getPattern(native, ctx, line, pos);
      if (s === null) return null;
      second = s.pat;
      pos = s.pos;
    }
    const value = parseReplacement(ctx, line, pos, first.pat.match);
    if (value === null) return null;
    const { REG } = native;
    // regcomp happens later, for the whole table at once (parseRules)
    const cflags = value.maxSub === 0n ? first.pat.cflags | REG.NOSUB : first.pat.cflags;
    return {
      op: RULE_OP.MATCH,
      lineNo: ctx.lineNo,
      first: patterns.add(first.pat.pattern, cflags),
      match: first.pat.match,
      second: second === null ? -1 : patterns.add(second.pattern, second.cflags | REG.NOSUB),
      secondMatch: second?.match ?? true,
      value,
    };
  },

  parseIf(native, ctx, line, pos, patterns): ParsedRule | null {
    const got = getPattern(native, ctx, line, skipSpace(line, pos));
    if (got === null) return null;
    const rest = skipSpace(line, got.pos);
    if (rest < line.length) {
      ctx.warn(`ignoring extra text after IF statement: "${line.slice(rest)}"`);
      ctx.warn('do not prepend whitespace to statements between IF and ENDIF');
    }
    return { op: RULE_OP.IF, lineNo: ctx.lineNo, first: patterns.add(got.pat.pattern, got.pat.cflags), match: got.pat.match };
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
