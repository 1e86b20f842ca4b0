/**
 * Parsing a regexp:/pcre: table into rules (IF/ENDIF nesting, the native
 * scanner's fast path, compile failures) and assembling the native rule
 * program. Warnings are worded exactly as Postfix words them.
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { ENGINE, PATSCAN, RULE_OP, type NativeEngines, type CompileJobHandle, type PatternBatchHandle, type PatternScan } from '../../addon/index.js';
import { readLogicalLines } from '../../util/lines.js';
import { type Bytes, type TableOpenOptions } from '../core/table.js';
import { cString } from '../core/util.js';
import { isAlnumCode, isSpaceCode } from '../../util/ctype.js';
import { RuleContext, parseReplacement, scanFlaggedPattern, sizeTAsInt, skipSpace, type FlagSyntax, type PatternKind, type Replacement } from './syntax.js';

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

/**
 * An IF statement's test, `pos` just after "if": one pattern (flags per
 * `syntax`), with Postfix's warnings for text after it. The same for both
 * dialects.
 */
export function parseIfStatement(ctx: RuleContext, line: Bytes, pos: number, syntax: FlagSyntax, patterns: PatternList): ParsedRule | null {
  const got = scanFlaggedPattern(ctx, line, skipSpace(line, pos), syntax);
  if (got === null) return null;
  const rest = skipSpace(line, got.pos);
  if (rest < line.length) {
    ctx.warn(`ignoring extra text after IF statement: "${line.slice(rest)}"`);
    ctx.warn('do not prepend whitespace to statements between IF and ENDIF');
  }
  return { op: RULE_OP.IF, lineNo: ctx.lineNo, first: patterns.add(got.pat.pattern, got.pat.options), match: got.pat.match };
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
export function scanFast(opts: TableOpenOptions, how: ParseRulesOptions = {}): boolean {
  return (how.fast ?? true) && (opts.openFlags & DICT_FLAG.SRC_RHS_IS_FILE) === 0;
}

export function noRegsub(opts: TableOpenOptions): boolean {
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
export interface RuleInfos {
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
