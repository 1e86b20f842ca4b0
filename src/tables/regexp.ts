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
import { RULE_OP, ENGINE, type NativeEngines, type RegexHandle } from '../native/index.js';
import {
  checkGroupCount,
  isSpaceCode,
  openPatternTable,
  parseReplacement,
  scanDelimited,
  skipSpace,
  type ParsedRule,
  type PatternDialect,
  type RuleContext,
} from './pattern.js';
import type { Bytes, Table, TableOpenOptions } from './table.js';

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

/** regcomp, or null after Postfix's warning with the regerror text. */
function compile(native: NativeEngines, ctx: RuleContext, pattern: Bytes, cflags: number): { handle: RegexHandle; nsub: number } | null {
  const r = native.regexCompile(pattern, cflags);
  if ('error' in r) {
    ctx.warn(r.error);
    return null;
  }
  return r;
}

export const regexpDialect: PatternDialect<RegexHandle> = {
  kind: 'regexp',
  engine: ENGINE.REGEX,

  parseMatch(native, ctx, line): ParsedRule<RegexHandle> | null {
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
    const cflags = value.maxSub === 0n ? first.pat.cflags | REG.NOSUB : first.pat.cflags;
    const firstExp = compile(native, ctx, first.pat.pattern, cflags);
    if (firstExp === null) return null;
    if (!checkGroupCount(ctx, value, firstExp.nsub)) return null;
    let secondExp: RegexHandle | null = null;
    if (second !== null) {
      const s = compile(native, ctx, second.pattern, second.cflags | REG.NOSUB);
      if (s === null) return null;
      secondExp = s.handle;
    }
    return {
      op: RULE_OP.MATCH,
      lineNo: ctx.lineNo,
      first: firstExp.handle,
      match: first.pat.match,
      second: secondExp,
      secondMatch: second?.match ?? true,
      value,
    };
  },

  parseIf(native, ctx, line, pos): ParsedRule<RegexHandle> | null {
    const got = getPattern(native, ctx, line, skipSpace(line, pos));
    if (got === null) return null;
    const rest = skipSpace(line, got.pos);
    if (rest < line.length) {
      ctx.warn(`ignoring extra text after IF statement: "${line.slice(rest)}"`);
      ctx.warn('do not prepend whitespace to statements between IF and ENDIF');
    }
    const exp = compile(native, ctx, got.pat.pattern, got.pat.cflags);
    if (exp === null) return null;
    return { op: RULE_OP.IF, lineNo: ctx.lineNo, first: exp.handle, match: got.pat.match };
  },
};

/** Opener for regexp:/file and regexp:{ {rule}, ... }. */
export function openRegexp(opts: TableOpenOptions): Promise<Table> {
  return openPatternTable(opts, regexpDialect);
}
