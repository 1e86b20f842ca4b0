/**
 * Machinery shared by the regexp: and pcre: tables (Postfix 3.7
 * src/util/dict_regexp.c, dict_pcre.c, mac_parse.c): rule dispatch, the
 * delimited pattern token, the replacement value with its $n references,
 * IF/ENDIF nesting, and the table object that evaluates the rules through
 * the native engines (src/addon) in one call per lookup.
 *
 * Warnings are worded exactly as Postfix words them.
 */
import { mkdtempSync, rmSync, writeFileSync, type Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DICT_FLAG } from '../../protocol/flags.js';
import {
  ENGINE,
  PATSCAN,
  RULE_OP,
  loadNative,
  type NativeEngines,
  type CompileJobHandle,
  type PatternBatchHandle,
  type PatternScan,
  type RuleSetHandle,
} from '../../addon/index.js';
import { lowercaseAscii } from '../core/casefold.js';
import { readLogicalLines } from '../../util/lines.js';
import { filesToBase64 } from '../core/rhsfile.js';
import { readTableSource } from '../core/stream.js';
import {
  DICT_ERR,
  NOT_FOUND,
  TableOpenError,
  found,
  type Bytes,
  type LookupResult,
  type Table,
  type TableOpenOptions,
} from '../core/table.js';
import { cString, requireReadOnly } from '../core/util.js';
import { isSpaceCode } from '../../util/braces.js';
import type { TypeContext } from '../core/registry.js';
import { readIntParam } from '../core/params.js';

export type PatternKind = 'regexp' | 'pcre';

/** ISSPACE (C locale) by char code: SP HT LF VT FF CR (re-exported for the dialects). */
export { isSpaceCode };

/** ISALNUM (C locale, ASCII only) by char code; NaN (end of string) is not. */
export function isAlnumCode(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

function isDigitCode(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** Postfix's alldig(): non-empty and all ASCII digits. */
export function allDigits(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (!isDigitCode(s.charCodeAt(i))) return false;
  return true;
}

const LONG_MAX = (1n << 63n) - 1n;

/** atoi() of a digit string as glibc computes it: strtol (clamped to LONG_MAX) truncated to int. */
export function atoiC(digits: string): number {
  let v = BigInt(digits);
  if (v > LONG_MAX) v = LONG_MAX;
  return Number(BigInt.asIntN(32, v));
}

/** An int converted to size_t (negative values wrap around). */
function sizeT(n: number): bigint {
  return BigInt.asUintN(64, BigInt(n));
}

/** A size_t printed with "%d" after an (int) cast. */
export function sizeTAsInt(n: bigint): number {
  return Number(BigInt.asIntN(32, n));
}

// ---------------------------------------------------------------------------
// mac_parse()

export const MAC_PARSE = { LITERAL: 1, EXPR: 2, OK: 0, ERROR: 1, UNDEF: 2 } as const;

/**
 * Split a value into literal text and $name / ${name} / $(name) references,
 * as src/util/mac_parse.c does ($$ is a literal $). `action` is called for
 * each piece and returns status bits; the result is the OR of all of them.
 * mac_parse's own warnings (empty or truncated reference) go to `warn`.
 */
export function macParse(value: Bytes, action: (type: 1 | 2, text: Bytes) => number, warn: (text: string) => void): number {
  let status = 0;
  let buf = '';
  const n = value.length;
  let vp = 0;
  while (vp < n) {
    const c = value.charCodeAt(vp);
    if (c !== 0x24) {
      // a literal run up to the next '$' (or the end)
      let ep = value.indexOf('$', vp);
      if (ep < 0) ep = n;
      buf += value.slice(vp, ep);
      vp = ep;
    } else if (value.charCodeAt(vp + 1) === 0x24) {
      buf += '$';
      vp += 2;
    } else {
      if (buf.length > 0) {
        status |= action(MAC_PARSE.LITERAL, buf);
        buf = '';
      }
      vp += 1;
      const open = value[vp];
      if (open === '(' || open === '{') {
        const close = open === '(' ? ')' : '}';
        let level = 1;
        vp += 1;
        let ep = vp;
        for (; level > 0; ep++) {
          if (ep >= n) {
            warn(`truncated macro reference: "${value}"`);
            status |= MAC_PARSE.ERROR;
            break;
          }
          if (value[ep] === open) level++;
          if (value[ep] === close) level--;
        }
        // Also stops here after an earlier action reported an error.
        if (status & MAC_PARSE.ERROR) break;
        buf += value.slice(vp, ep - 1);
        vp = ep;
      } else {
        let ep = vp;
        while (ep < n && (isAlnumCode(value.charCodeAt(ep)) || value[ep] === '_')) ep++;
        buf += value.slice(vp, ep);
        vp = ep;
      }
      if (buf.length === 0) {
        status |= MAC_PARSE.ERROR;
        warn(`empty macro name: "${value}"`);
        break;
      }
      status |= action(MAC_PARSE.EXPR, buf);
      buf = '';
    }
  }
  if (buf.length > 0 && (status & MAC_PARSE.ERROR) === 0) status |= action(MAC_PARSE.LITERAL, buf);
  return status;
}

// ---------------------------------------------------------------------------
// Rule parsing helpers

/** Where a rule came from, for warnings: "<kind> map <name>, line <n>: ...". */
export class RuleContext {
  /** warnings held back (deferred contexts), in order */
  held: string[] | null = null;
  /** what the line turned out to be (parseRules' bookkeeping) */
  rule: ParsedRule | 'endif' | null = null;
  /** an ENDIF with text after it */
  endifExtra = false;

  constructor(
    readonly kind: PatternKind,
    readonly mapname: Bytes,
    readonly lineNo: number,
    /** the table's open options (flags, warning sink) */
    readonly opts: TableOpenOptions,
    /** hold warnings back in `held` instead of reporting them */
    private readonly deferred = false,
  ) {}

  warn(text: string): void {
    this.rawWarn(`${this.kind} map ${this.mapname}, line ${this.lineNo}: ${text}`);
  }

  /** A warning without the map/line prefix (mac_parse's own). */
  rawWarn(text: string): void {
    if (this.deferred) (this.held ??= []).push(text);
    else this.opts.warn(text);
  }
}

export interface DelimitedPattern {
  /** pattern text between the delimiters (escapes kept verbatim) */
  pattern: Bytes;
  /** false when an odd number of '!' preceded it */
  match: boolean;
  /** index just after the closing delimiter (where the flags start) */
  pos: number;
}

/**
 * Scan "[!...]<d>pattern<d>" at line[pos]: any run of '!' and whitespace
 * (each '!' flips the sense), a delimiter byte, the pattern up to the next
 * unescaped delimiter. regexp treats a backslash at the very end as the
 * closing delimiter; pcre does not. Null (after a warning) when there is no
 * pattern or no closing delimiter.
 */
export function scanDelimited(ctx: RuleContext, line: Bytes, pos: number): DelimitedPattern | null {
  const len = line.length;
  let match = true;
  for (; pos < len; pos++) {
    const c = line.charCodeAt(pos);
    if (c === 0x21) match = !match;
    else if (!isSpaceCode(c)) break;
  }
  if (pos >= len) {
    ctx.warn('no regexp: skipping this rule');
    return null;
  }
  const delim = line.charCodeAt(pos++);
  const start = pos;
  const regexpQuirk = ctx.kind === 'regexp';
  if (delim !== 0x5c) {
    // The next delimiter not escaped by a backslash, with native searches.
    const dch = line[start - 1];
    for (;;) {
      const d = line.indexOf(dch, pos);
      const b = line.indexOf('\\', pos);
      if (b < 0 || (d >= 0 && d < b)) {
        pos = d < 0 ? len : d;
        break;
      }
      if (b + 1 < len) {
        pos = b + 2;
        continue;
      }
      // a backslash as the last byte: regexp takes it for the closing delimiter
      pos = regexpQuirk ? b : len;
      break;
    }
    if (pos >= len) {
      const what = regexpQuirk ? 'skipping' : 'ignoring';
      ctx.warn(`no closing regexp delimiter "${String.fromCharCode(delim)}": ${what} this rule`);
      return null;
    }
    return { pattern: line.slice(start, pos), match, pos: pos + 1 };
  }
  while (pos < len) {
    const c = line.charCodeAt(pos);
    if (c === 0x5c) {
      if (pos + 1 < len) pos++;
      else if (regexpQuirk) break;
      else {
        pos = len;
        break;
      }
    } else if (c === delim) {
      break;
    }
    pos++;
  }
  if (pos >= len) {
    const what = regexpQuirk ? 'skipping' : 'ignoring';
    ctx.warn(`no closing regexp delimiter "${String.fromCharCode(delim)}": ${what} this rule`);
    return null;
  }
  return { pattern: line.slice(start, pos), match, pos: pos + 1 };
}

/** Index of the first non-ISSPACE byte at or after pos. */
export function skipSpace(line: Bytes, pos: number): number {
  while (pos < line.length && isSpaceCode(line.charCodeAt(pos))) pos++;
  return pos;
}

/** A parsed replacement value. */
export interface Replacement {
  /** largest $n (size_t semantics, as Postfix compares it) */
  maxSub: bigint;
  /** the result when maxSub is 0 ($$ already turned into $) */
  literal: Bytes;
  /** literal pieces and group numbers, for expansion when maxSub > 0 */
  parts: Array<Bytes | number>;
}

/**
 * The value of a match rule: text from `pos` (whitespace skipped; the line
 * is already right-trimmed), read from files with SRC_RHS_IS_FILE, scanned
 * for $n. Null (after Postfix's warnings) when the rule must be skipped:
 * bad $ syntax, $n in a negated rule, or $n with NO_REGSUB.
 */
export function parseReplacement(ctx: RuleContext, line: Bytes, pos: number, match: boolean): Replacement | null {
  let text = line.slice(skipSpace(line, pos));
  if (text.length === 0) ctx.warn('no replacement text: using empty string');
  if (ctx.opts.openFlags & DICT_FLAG.SRC_RHS_IS_FILE) {
    const res = filesToBase64(text);
    if ('error' in res) {
      ctx.warn(`${res.error}: skipping this rule`);
      return null;
    }
    text = res.value;
  }
  // Without '$' mac_parse() sees one literal: the value as it is.
  if (text.indexOf('$') < 0) return { maxSub: 0n, literal: text, parts: text.length > 0 ? [text] : [] };
  // The largest $n: small numbers as numbers, others (atoi() wrap-around, size_t) as BigInt.
  let maxSmall = 0;
  let maxBig = 0n;
  let literal: Bytes | null = null;
  const parts: Array<Bytes | number> = [];
  const status = macParse(
    text,
    (type, buf) => {
      if (type === MAC_PARSE.EXPR) {
        literal = null;
        if (!allDigits(buf)) {
          ctx.warn(`non-numeric replacement index "${buf}"`);
          return MAC_PARSE.ERROR;
        }
        const n = buf.length <= 9 ? Number(buf) : atoiC(buf);
        const small = buf.length <= 9 || (n >= 1 && n <= 999_999_999);
        if (small ? n < 1 : sizeT(n) < 1n) {
          ctx.warn(`${ctx.kind === 'regexp' ? 'out-of-range' : 'out of range'} replacement index "${buf}"`);
          return MAC_PARSE.ERROR;
        }
        if (small) maxSmall = Math.max(maxSmall, n);
        else if (sizeT(n) > maxBig) maxBig = sizeT(n);
        parts.push(n);
      } else {
        if (maxSmall === 0 && maxBig === 0n) literal = buf;
        parts.push(buf);
      }
      return MAC_PARSE.OK;
    },
    (t) => ctx.rawWarn(t),
  );
  const maxSub = maxBig > BigInt(maxSmall) ? maxBig : BigInt(maxSmall);
  if (status & MAC_PARSE.ERROR) {
    ctx.warn('bad replacement syntax: skipping this rule');
    return null;
  }
  if (maxSub > 0n && !match) {
    ctx.warn('$number found in negative match replacement text: skipping this rule');
    return null;
  }
  if (maxSub > 0n && ctx.opts.openFlags & DICT_FLAG.NO_REGSUB) {
    ctx.warn('regular expression substitution is not allowed: skipping this rule');
    return null;
  }
  return { maxSub, literal: literal ?? text, parts };
}

// ---------------------------------------------------------------------------
// Rule list
//
// A table opens in steps: (1) the native scanner (native/patscan.c) splits
// the source into logical lines and takes the rules that parse without any
// warning, handing their patterns to native compiler threads at once;
// every other line is parsed here, its patterns handed over in chunks and
// the warnings that parsing gives held back per line; (2) while the
// compiler threads work, the lines are walked in order as if every pattern
// compiled: warnings (held back), IF/ENDIF pairs, the native program; (3)
// the calling thread compiles what is left; when a pattern did not compile
// or has fewer groups than a $n asks for, step 2 is done again with the
// compile results, reporting compile errors and group-count checks where
// Postfix reports them while it reads the file line by line (an IF whose
// pattern did not compile is no IF, as in Postfix).

/** A rule as parsed, its patterns named by their index in the compile batch (-1: none). */
export type ParsedRule =
  | { op: typeof RULE_OP.MATCH; lineNo: number; first: number; match: boolean; second: number; secondMatch: boolean; value: Replacement }
  | { op: typeof RULE_OP.IF; lineNo: number; first: number; match: boolean }
  | { op: typeof RULE_OP.ENDIF; lineNo: number };

/** A compile failure as patternsCompileFinish() reports it. */
export interface CompileFailure {
  text: string;
  code: number;
  offset: number;
}

/** Patterns per hand-off to the compiler threads. */
const PATTERN_CHUNK = 32;

/** The patterns of one table, handed to the native compiler in chunks while the table is parsed. */
export class PatternList {
  private patterns: Bytes[] = [];
  private readonly options = new Uint32Array(PATTERN_CHUNK);

  constructor(
    private readonly native: NativeEngines,
    private readonly job: CompileJobHandle,
    /** patterns the job already holds (the scanner's) */
    private count = 0,
    /** when given, every pattern added here is also recorded in it by index (tests) */
    private readonly sources?: Array<[Bytes, number]>,
  ) {}

  /** Add a pattern with its compile options (regcomp cflags / pcre2 options); its index. */
  add(pattern: Bytes, options: number): number {
    this.options[this.patterns.length] = options >>> 0;
    this.patterns.push(pattern);
    if (this.sources) this.sources[this.count] = [pattern, options >>> 0];
    if (this.patterns.length === PATTERN_CHUNK) this.flush();
    return this.count++;
  }

  /** Hand the patterns added so far to the compiler threads (the addon copies them). */
  flush(): void {
    const n = this.patterns.length;
    if (n === 0) return;
    this.native.patternsCompileAdd(this.job, this.patterns.join('\0'), this.options.subarray(0, n));
    this.patterns = [];
  }
}

/** The parts that differ between regexp and pcre. */
export interface PatternDialect {
  kind: PatternKind;
  engine: typeof ENGINE.REGEX | typeof ENGINE.PCRE;
  /** A match rule (the line starts with a non-alphanumeric byte); null after a warning. */
  parseMatch(native: NativeEngines, ctx: RuleContext, line: Bytes, patterns: PatternList): ParsedRule | null;
  /** An IF rule; `pos` is just after "if"; null after a warning. */
  parseIf(native: NativeEngines, ctx: RuleContext, line: Bytes, pos: number, patterns: PatternList): ParsedRule | null;
  /** Postfix's warning text (without the map/line prefix) for a pattern that did not compile. */
  compileError(e: CompileFailure): string;
}

/** True when line starts with `word` (ASCII case-insensitive) followed by a non-alphanumeric byte. */
function startsWithWord(line: Bytes, word: string): boolean {
  if (line.length < word.length) return false;
  for (let i = 0; i < word.length; i++) if ((line.charCodeAt(i) | 0x20) !== word.charCodeAt(i)) return false;
  return !isAlnumCode(line.charCodeAt(word.length));
}

export interface LoadedRules {
  /** the native rule program (ruleSetFromBatch) and what the table keeps of each rule */
  program: Int32Array;
  infos: RuleInfos;
  /** the largest $n of any rule */
  maxSub: number;
  rules: ParsedRule[];
  /** IF index -> index of its ENDIF (-1: none) */
  endifOf: Map<number, number>;
  /** the compiled patterns the rules refer to */
  batch: PatternBatchHandle;
  /** per pattern: number of groups, -1 when it did not compile */
  groups: Int32Array;
}

/** How parseRules() goes about it (tests). */
export interface ParseRulesOptions {
  /** let the native scanner take the lines it can (default true) */
  fast?: boolean;
  /** filled with every pattern's text and compile options, by index */
  sources?: Array<[Bytes, number]>;
}

/** One logical line for the full parser: a context holding its warnings and what it turned out to be; null for a blank line. */
function parseLine(native: NativeEngines, dialect: PatternDialect, opts: TableOpenOptions, raw: Bytes, lineNo: number, patterns: PatternList): RuleContext | null {
  let line = cString(raw);
  let end = line.length;
  while (end > 0 && isSpaceCode(line.charCodeAt(end - 1))) end--;
  if (end < line.length) line = line.slice(0, end);
  if (line.length === 0) return null;
  const ctx = new RuleContext(dialect.kind, opts.name, lineNo, opts, true);
  if (!isAlnumCode(line.charCodeAt(0))) {
    ctx.rule = dialect.parseMatch(native, ctx, line, patterns);
  } else if (startsWithWord(line, 'if')) {
    ctx.rule = dialect.parseIf(native, ctx, line, 2, patterns);
  } else if (startsWithWord(line, 'endif')) {
    ctx.rule = 'endif';
    ctx.endifExtra = skipSpace(line, 5) < line.length;
  } else {
    ctx.warn('ignoring unrecognized request');
  }
  return ctx;
}

const NO_SUB = 0n;

/** May the native scanner take lines? Not when values are file names (SRC_RHS_IS_FILE), nor when a test says so. */
function scanFast(opts: TableOpenOptions, how: ParseRulesOptions = {}): boolean {
  return (how.fast ?? true) && (opts.openFlags & DICT_FLAG.SRC_RHS_IS_FILE) === 0;
}

function noRegsub(opts: TableOpenOptions): boolean {
  return (opts.openFlags & DICT_FLAG.NO_REGSUB) !== 0;
}

/** Parse the whole source into rules, with IF/ENDIF pairing and the warnings for unbalanced ones. */
export function parseRules(
  native: NativeEngines,
  dialect: PatternDialect,
  text: Bytes,
  opts: TableOpenOptions,
  how: ParseRulesOptions = {},
  scanned?: PatternScan,
): LoadedRules {
  const mapname = opts.name;
  // 1. scan natively (its patterns compile from now on; done already when the addon read the file); parse the lines it left here
  const scan = scanned ?? native.patternsScan(dialect.engine, text, scanFast(opts, how), noRegsub(opts));
  const rec = scan.records;
  const F = PATSCAN.FIELDS;
  const sources = how.sources;
  if (sources) {
    for (let o = 0; o < rec.length; o += F) {
      if (rec[o] === PATSCAN.MATCH || rec[o] === PATSCAN.IF) sources[rec[o + 2]] = [text.slice(rec[o + 8], rec[o + 9]), rec[o + 10] >>> 0];
    }
  }
  const patterns = new PatternList(native, scan.job, scan.patterns, sources);
  // the full parser's lines, by record offset
  const parsed = new Map<number, RuleContext>();
  for (let o = 0; o < rec.length; o += F) {
    const type = rec[o];
    if (type === PATSCAN.LINE) {
      const ctx = parseLine(native, dialect, opts, text.slice(rec[o + 2], rec[o + 3]), rec[o + 1], patterns);
      if (ctx) parsed.set(o, ctx);
    } else if (type === PATSCAN.JOINED) {
      // one logical line (none when it starts with whitespace: readLogicalLines warns)
      for (const l of readLogicalLines(text.slice(rec[o + 2], rec[o + 3]), mapname, opts.warn)) {
        const ctx = parseLine(native, dialect, opts, l.text, rec[o + 1] + l.lineNo - 1, patterns);
        if (ctx) parsed.set(o, ctx);
      }
    }
  }
  patterns.flush();
  // 2. while the compiler threads work: the rules as they stand if every pattern compiles, and their program
  const held: string[] = [];
  const hopeful = settle(null, null, (w) => held.push(w));
  let program = assemble(hopeful);
  // 3. compile the rest here (never waiting for a helper)
  const compiled = native.patternsCompileFinish(scan.job);
  const groups = compiled.groups;
  let result = hopeful;
  const fits = (r: ParsedRule) => r.op !== RULE_OP.MATCH || r.value.maxSub === 0n || r.value.maxSub <= BigInt(groups[r.first]);
  if (compiled.errors.length === 0 && hopeful.rules.every(fits)) {
    for (const w of held) opts.warn(w);
  } else {
    // some did not compile, or a $n is beyond its pattern's groups: again, with the compile results
    const failures = new Map<number, CompileFailure>();
    for (const [index, text, code, offset] of compiled.errors) failures.set(index, { text, code, offset });
    result = settle(groups, failures, opts.warn);
    program = assemble(result);
  }
  return { ...result, ...program, batch: compiled.batch, groups };

  /**
   * Walk the lines in order: report their held-back warnings, compile
   * errors and group-count checks as Postfix reports them while it reads
   * the file, keep the rules that stand, pair IF/ENDIF. Without compile
   * results (groups null) every pattern is taken to have compiled.
   */
  function settle(groups: Int32Array | null, failures: Map<number, CompileFailure> | null, warn: (text: string) => void) {
    const warnAt = (lineNo: number, w: string) => warn(`${dialect.kind} map ${mapname}, line ${lineNo}: ${w}`);
    const rules: ParsedRule[] = [];
    const endifOf = new Map<number, number>();
    const stack: number[] = [];
    const endif = (lineNo: number, extra: boolean) => {
      if (stack.length === 0) {
        warnAt(lineNo, 'ignoring ENDIF without matching IF');
        return;
      }
      if (extra) warnAt(lineNo, 'ignoring extra text after ENDIF');
      endifOf.set(stack.pop()!, rules.length);
      rules.push({ op: RULE_OP.ENDIF, lineNo });
    };
    for (let o = 0; o < rec.length; o += F) {
      const type = rec[o];
      const lineNo = rec[o + 1];
      let r: ParsedRule | null;
      if (type === PATSCAN.MATCH) {
        const match = rec[o + 3] !== 0;
        let value: Replacement | null;
        if (rec[o + 6] === 0) {
          const literal = text.slice(rec[o + 4], rec[o + 5]);
          value = { maxSub: NO_SUB, literal, parts: [literal] };
        } else {
          // $ references: the scanner checked them; the full reader makes the parts
          const ctx = new RuleContext(dialect.kind, mapname, lineNo, opts, true);
          value = parseReplacement(ctx, text.slice(rec[o + 4], rec[o + 5]), 0, match);
          if (ctx.held) for (const w of ctx.held) warn(w);
          if (value === null) continue;
        }
        r = { op: RULE_OP.MATCH, lineNo, first: rec[o + 2], match, second: -1, secondMatch: true, value };
      } else if (type === PATSCAN.IF) {
        r = { op: RULE_OP.IF, lineNo, first: rec[o + 2], match: rec[o + 3] !== 0 };
      } else if (type === PATSCAN.ENDIF) {
        endif(lineNo, false);
        continue;
      } else {
        const entry = parsed.get(o);
        if (entry === undefined) continue;
        if (entry.held) for (const w of entry.held) warn(w);
        if (entry.rule === null) continue;
        if (entry.rule === 'endif') {
          endif(entry.lineNo, entry.endifExtra);
          continue;
        }
        r = entry.rule;
      }
      if (r.op === RULE_OP.ENDIF) continue; // not produced by the dialects
      if (groups && failures) {
        if (groups[r.first] < 0) {
          warnAt(r.lineNo, dialect.compileError(failures.get(r.first)!));
          continue;
        }
        if (r.op === RULE_OP.MATCH) {
          if (r.value.maxSub > 0n && r.value.maxSub > BigInt(groups[r.first])) {
            warnAt(r.lineNo, `out of range replacement index "${sizeTAsInt(r.value.maxSub)}": skipping this rule`);
            continue;
          }
          if (r.second >= 0 && groups[r.second] < 0) {
            warnAt(r.lineNo, dialect.compileError(failures.get(r.second)!));
            continue;
          }
        }
      }
      if (r.op === RULE_OP.IF) {
        stack.push(rules.length);
        endifOf.set(rules.length, -1);
      }
      rules.push(r);
    }
    for (let i = stack.length - 1; i >= 0; i--) warn(`${dialect.kind} map ${mapname}, line ${rules[stack[i]].lineNo}: IF has no matching ENDIF`);
    return { rules, endifOf };
  }
}

/**
 * What a table keeps of its rules besides the native program, compactly
 * (few objects for the collector to move): line numbers, and per rule the
 * value of a MATCH rule, its text when it has no $n, else its literal
 * pieces and group numbers (null for IF and ENDIF).
 */
interface RuleInfos {
  lineNos: Int32Array;
  values: Array<Bytes | Array<Bytes | number> | null>;
}

/** The native rule program (7 numbers per rule, see ruleSetFromBatch) and what the table keeps of each rule. */
function assemble({ rules, endifOf }: { rules: ParsedRule[]; endifOf: Map<number, number> }): { program: Int32Array; infos: RuleInfos; maxSub: number } {
  const program = new Int32Array(7 * rules.length);
  const infos: RuleInfos = { lineNos: new Int32Array(rules.length), values: new Array(rules.length).fill(null) };
  let maxSub = 0;
  for (let index = 0, o = 0; index < rules.length; index++, o += 7) {
    const rule = rules[index];
    program[o] = rule.op;
    program[o + 1] = -1;
    program[o + 2] = 1;
    program[o + 3] = -1;
    program[o + 4] = 1;
    program[o + 6] = -1;
    infos.lineNos[index] = rule.lineNo;
    switch (rule.op) {
      case RULE_OP.MATCH: {
        const n = Number(rule.value.maxSub); // <= the pattern's group count
        maxSub = Math.max(maxSub, n);
        program[o + 1] = rule.first;
        program[o + 2] = rule.match ? 1 : 0;
        program[o + 3] = rule.second;
        program[o + 4] = rule.secondMatch ? 1 : 0;
        program[o + 5] = n;
        infos.values[index] = n === 0 ? rule.value.literal : rule.value.parts;
        break;
      }
      case RULE_OP.IF:
        program[o + 1] = rule.first;
        program[o + 2] = rule.match ? 1 : 0;
        program[o + 6] = endifOf.get(index) ?? -1;
        break;
    }
  }
  return { program, infos, maxSub };
}

// ---------------------------------------------------------------------------
// Where rule sets are evaluated
//
// A lookup in a large pattern table is CPU work (every rule is tried until
// one matches). A lookup that arrives while the server is otherwise idle is
// evaluated at once on the main thread: no hand-off, the lowest latency.
// When lookups from several clients compete (a second one arrives in the
// same event-loop turn, or evaluations are already running elsewhere),
// they go to the addon's evaluation threads instead (a queue in arrival
// order, proxymapd_pattern_threads threads), so that they use the other
// CPUs while the main thread keeps serving connections. Each connection
// still gets its replies in request order (a connection has one request at
// a table at a time).

type ExecResult = { index: number; offsets: Int32Array | null; errors: Array<[number, string]> | null };

interface PendingExec {
  set: RuleSetHandle;
  subject: Bytes;
  skipRegsub: boolean;
  done: (r: ExecResult) => void;
}

/** Default thread count: one per CPU, at most 8. */
export function defaultPatternThreads(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}

class ExecScheduler {
  /** evaluation threads; 0 = always on the main thread */
  threads = defaultPatternThreads();
  /** evaluations handed to the threads and not completed yet */
  private pending = 0;
  /** lookups seen in the current event-loop turn */
  private turnLookups = 0;
  private readonly endTurn = (): void => {
    this.turnLookups = 0;
  };
  private configured = 0;
  /** counters, for tests and diagnostics */
  readonly stats = { sync: 0, async: 0 };

  /** Evaluations on the threads not completed yet. */
  get inFlight(): number {
    return this.pending;
  }

  /** Evaluate now on this thread? (counts the lookup toward the current turn) */
  runHere(): boolean {
    if (this.threads <= 0) return true;
    if (this.turnLookups++ === 0) setImmediate(this.endTurn);
    return this.turnLookups === 1 && this.pending === 0;
  }

  /** Hand an evaluation to the threads (they start them in submission order). */
  submit(native: NativeEngines, job: PendingExec): void {
    if (this.configured !== this.threads) {
      native.execThreads(Math.max(1, this.threads));
      this.configured = this.threads;
    }
    this.pending++;
    this.stats.async++;
    try {
      native.ruleSetExecAsync(job.set, job.subject, job.skipRegsub, (index, offsets, errors) => {
        this.pending--;
        job.done({ index, offsets, errors });
      });
    } catch {
      this.pending--;
      job.done({ index: -2, offsets: null, errors: null });
    }
  }
}

const scheduler = new ExecScheduler();

/**
 * How many rule-set evaluations may run on the thread pool at once
 * (proxymapd_pattern_threads); 0 keeps every evaluation on the main thread.
 */
export function setPatternThreads(n: number): void {
  scheduler.threads = Math.max(0, Math.floor(n));
}

export function patternThreads(): number {
  return scheduler.threads;
}

/** True while lookups are being evaluated on the evaluation threads (their completion wakes the event loop). */
export function patternWorkPending(): boolean {
  return scheduler.inFlight > 0;
}

/** Evaluations run on the main thread and on the threads so far (tests). */
export function patternExecStats(): { sync: number; async: number } {
  return { ...scheduler.stats };
}

// ---------------------------------------------------------------------------
// The table

type FileId = Pick<Stats, 'ino' | 'dev' | 'size' | 'mtimeMs' | 'ctimeMs'>;

/** Append group n of `subject` the way the Postfix expansion callbacks do. */
function groupText(kind: PatternKind, subject: Bytes, offsets: Int32Array, n: number): Bytes {
  const so = offsets[2 * n];
  const eo = offsets[2 * n + 1];
  if (kind === 'regexp') {
    // empty or not matched: nothing
    return so < 0 || so === eo ? '' : subject.slice(so, eo);
  }
  // pcre2: PCRE2_UNSET pairs (-1, -1) have length 0.
  if (so === eo) return '';
  if (eo < so) return subject.slice(Math.max(so, 0)); // size_t wrap-around: strncat copies to the end
  return subject.slice(so, eo);
}

export class PatternTable implements Table {
  readonly implFlags = DICT_FLAG.PATTERN;
  private set: RuleSetHandle | null;
  private readonly offsets: Int32Array;

  constructor(
    readonly type: PatternKind,
    readonly name: Bytes,
    private readonly native: NativeEngines,
    set: RuleSetHandle,
    private readonly infos: RuleInfos,
    maxSub: number,
    private readonly warn: (text: string) => void,
    private readonly fileId: FileId | undefined,
  ) {
    this.set = set;
    this.offsets = new Int32Array(2 * (maxSub + 1));
  }

  /** Number of rules kept (match, IF and ENDIF). */
  get ruleCount(): number {
    return this.infos.lineNos.length;
  }

  lookup(key: Bytes, flags: number): LookupResult | Promise<LookupResult> {
    const set = this.set;
    if (set === null) return { found: false, error: DICT_ERR.RETRY };
    let subject = cString(key);
    if (flags & DICT_FLAG.FOLD_MUL) subject = lowercaseAscii(subject);
    const skipRegsub = (flags & DICT_FLAG.NO_REGSUB) !== 0;
    if (this.infos.lineNos.length < ASYNC_MIN_RULES || scheduler.runHere()) {
      const r = this.native.ruleSetExec(set, subject, skipRegsub, this.offsets);
      scheduler.stats.sync++;
      if (typeof r === 'number') return this.result(subject, r, this.offsets, null);
      return this.result(subject, r.index, this.offsets, r.errors);
    }
    return new Promise((resolve) => {
      scheduler.submit(this.native, {
        set,
        subject,
        skipRegsub,
        done: (r) => resolve(r.index === -2 ? { found: false, error: DICT_ERR.RETRY } : this.result(subject, r.index, r.offsets, r.errors)),
      });
    });
  }

  private result(subject: Bytes, index: number, offsets: Int32Array | null, errors: Array<[number, string]> | null): LookupResult {
    if (errors) for (const [at, text] of errors) this.warn(`${this.type} map ${this.name}, line ${this.infos.lineNos[at]}: ${text}`);
    if (index < 0) return NOT_FOUND;
    const value = this.infos.values[index]!;
    if (typeof value === 'string') return found(value);
    let out = '';
    for (const part of value) out += typeof part === 'number' ? groupText(this.type, subject, offsets!, part) : part;
    return found(out);
  }

  /** True when the source file was replaced, modified or removed since it was read (inline text never changes). */
  async changed(): Promise<boolean> {
    if (!this.fileId) return false;
    try {
      const st = await stat(Buffer.from(this.name, 'latin1'));
      const a = this.fileId;
      return !(a.ino === st.ino && a.dev === st.dev && a.size === st.size && a.mtimeMs === st.mtimeMs && a.ctimeMs === st.ctimeMs);
    } catch {
      return true;
    }
  }

  close(): void {
    // The native memory goes with the handles when they are collected.
    this.set = null;
  }
}

/** Tables with fewer rules are always evaluated on the main thread (a hand-off would cost more than the scan). */
const ASYNC_MIN_RULES = 32;

/** Build the table from source text. */
function buildPatternTable(
  native: NativeEngines,
  dialect: PatternDialect,
  opts: TableOpenOptions,
  text: Bytes,
  fileId: FileId | undefined,
  scanned?: PatternScan,
): PatternTable {
  const { batch, program, infos, maxSub } = parseRules(native, dialect, text, opts, {}, scanned);
  const set = native.ruleSetFromBatch(batch, program);
  return new PatternTable(dialect.kind, opts.name, native, set, infos, maxSub, opts.warn, fileId);
}

/** Open a regexp/pcre table: read the source, parse and compile every rule, build the native rule set. */
export async function openPatternTable(opts: TableOpenOptions, dialect: PatternDialect): Promise<Table> {
  requireReadOnly(opts);
  let native: NativeEngines;
  try {
    native = loadNative();
  } catch (err) {
    throw new TableOpenError(`${dialect.kind}:${opts.name}: ${(err as Error).message}`);
  }
  if (!opts.name.startsWith('{')) {
    // A regular file is read by the addon, which starts compiling as it scans (else: null, read it here).
    const got = native.patternsScanFile(dialect.engine, opts.name, scanFast(opts), noRegsub(opts));
    if (got !== null) {
      const st = got.stat;
      const fileId: FileId = { dev: st[0], ino: st[1], size: st[2], mtimeMs: msFromTimeSpec(st[3], st[4]), ctimeMs: msFromTimeSpec(st[5], st[6]) };
      return buildPatternTable(native, dialect, opts, got.text, fileId, got);
    }
  }
  const source = await readTableSource(dialect.kind, opts.name);
  const st = source.stat;
  const fileId: FileId | undefined = st && { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
  return buildPatternTable(native, dialect, opts, source.text, fileId);
}

/** A time stamp in milliseconds as Node's fs.Stats has it (seconds * 1e3 + nanoseconds / 1e6). */
function msFromTimeSpec(sec: number, nsec: number): number {
  return sec * 1e3 + nsec / 1e6;
}

/** A table that has a line of every kind the parser knows (plain, $n, IF/ENDIF, negated, continued, warned about). */
function warmUpText(kind: PatternKind): string {
  const lines: string[] = [];
  for (let i = 0; i < 300; i++) {
    lines.push(
      `/^user${i}@(sub\\.)?example${i}\\.com$/ OK ${i}`,
      `!/^x${i}/i value with $$ and text`,
      `/^([^@]+)@old${i}\\.example$/ $1@new${i}.example`,
      `/^(\\d+)\\.(\\d+)\\.${i}$/ REJECT client $1.$2.${i} blocked`,
      `/^(a)(b)${i}/ \${1}-$(2) $$`,
      `if /^[a-z]+${i}/`,
      `/b${i}/ x`,
      'endif',
      kind === 'regexp' ? `/^c${i}/!/^c${i}d/ two patterns` : `/^c${i}/X obsolete flag`,
      `/^d${i}/`,
      '  continued value',
    );
  }
  return lines.join('\n') + '\n';
}

/**
 * JIT warm-up for long-running processes (the daemon calls this once when
 * idle after startup, like the cidr warm-up): loads the native addon and
 * opens and queries synthetic tables in both dialects, written to a
 * temporary file and opened the way the server opens a table, so that the
 * first real table is opened by optimized code and nothing that code was
 * optimized for changes afterwards. Lookups run on this thread (one per
 * event-loop turn). Never rejects: resolves false when the addon cannot be
 * loaded or the temporary table cannot be written (the first open then
 * reports what fails).
 */
export async function warmUpPatterns(dialects: PatternDialect[]): Promise<boolean> {
  let dir: string | undefined;
  try {
    loadNative();
    const made = mkdtempSync(join(tmpdir(), 'proxymapd-warm-up-'));
    dir = made;
    const files = dialects.map((dialect) => {
      const file = join(made, `table.${dialect.kind}`);
      writeFileSync(file, warmUpText(dialect.kind), { mode: 0o600 });
      return file;
    });
    // Rounds over all dialects (so that the code is optimized for all of them, not first for one and then thrown
    // away for the other), several tables each (optimized as a whole, not only by on-stack replacement), and a pause
    // after each round: V8 compiles optimized code on a background thread and installs it at the next call, and that
    // must happen here, not while the first real table is being opened (the compile would take a CPU from it).
    for (let round = 0; round < 4; round++) {
      for (let d = 0; d < dialects.length; d++) {
        for (let k = 0; k < 2; k++) {
          const opts: TableOpenOptions = { type: dialects[d].kind, name: files[d], openFlags: 0, fold: 'none', writable: false, param: () => undefined, warn: () => {} };
          const t = await openPatternTable(opts, dialects[d]);
          for (let i = 0; i < 25; i++) {
            await new Promise<void>((resolve) => setImmediate(resolve));
            await t.lookup(i % 2 ? `alice@old${i}.example` : `user${i}@example${i}.com`, 0);
          }
          await t.close?.();
        }
      }
      await new Promise<void>((resolve) => setTimeout(resolve, 100));
    }
  } catch {
    // no addon, no writable temporary directory: the first real opens warm up instead (and report what fails)
    return false;
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
  return true;
}

const MAX_PATTERN_THREADS = 64;

/** proxymapd_pattern_threads: rule-set evaluations on the thread pool at once (0: main thread only). */
export function configurePatternThreads(ctx: TypeContext): void {
  const dflt = defaultPatternThreads();
  setPatternThreads(readIntParam(ctx, 'proxymapd_pattern_threads', MAX_PATTERN_THREADS, `the default (${dflt})`) ?? dflt);
}
