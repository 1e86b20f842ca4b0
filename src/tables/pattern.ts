/**
 * Machinery shared by the regexp: and pcre: tables (Postfix 3.7
 * src/util/dict_regexp.c, dict_pcre.c, mac_parse.c): rule dispatch, the
 * delimited pattern token, the replacement value with its $n references,
 * IF/ENDIF nesting, and the table object that evaluates the rules through
 * the native engines (src/native) in one call per lookup.
 *
 * Warnings are worded exactly as Postfix words them.
 */
import { stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { DICT_FLAG } from '../protocol/flags.js';
import { ENGINE, RULE_OP, loadNative, type NativeEngines, type RuleSetHandle, type RuleSpec } from '../native/index.js';
import { lowercaseAscii } from './casefold.js';
import { readLogicalLines } from './lines.js';
import { filesToBase64 } from './rhsfile.js';
import { readTableSource } from './stream.js';
import {
  DICT_ERR,
  NOT_FOUND,
  TableOpenError,
  found,
  type Bytes,
  type LookupResult,
  type Table,
  type TableOpenOptions,
} from './table.js';
import { cString, requireReadOnly } from './util.js';

export type PatternKind = 'regexp' | 'pcre';

/** ISSPACE (C locale) by char code: SP HT LF VT FF CR. */
export function isSpaceCode(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

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
      buf += value[vp];
      vp += 1;
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
  constructor(
    readonly kind: PatternKind,
    readonly mapname: Bytes,
    readonly lineNo: number,
    /** the table's open options (flags, warning sink) */
    readonly opts: TableOpenOptions,
  ) {}

  warn(text: string): void {
    this.opts.warn(`${this.kind} map ${this.mapname}, line ${this.lineNo}: ${text}`);
  }

  /** A warning without the map/line prefix (mac_parse's own). */
  rawWarn = (text: string): void => {
    this.opts.warn(text);
  };
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
  let maxSub = 0n;
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
        const n = atoiC(buf);
        if (sizeT(n) < 1n) {
          ctx.warn(`${ctx.kind === 'regexp' ? 'out-of-range' : 'out of range'} replacement index "${buf}"`);
          return MAC_PARSE.ERROR;
        }
        if (sizeT(n) > maxSub) maxSub = sizeT(n);
        parts.push(n);
      } else {
        if (maxSub === 0n) literal = buf;
        parts.push(buf);
      }
      return MAC_PARSE.OK;
    },
    ctx.rawWarn,
  );
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

/** Warn and refuse a rule whose largest $n exceeds the pattern's groups. */
export function checkGroupCount(ctx: RuleContext, value: Replacement, groups: number): boolean {
  if (value.maxSub > BigInt(groups)) {
    ctx.warn(`out of range replacement index "${sizeTAsInt(value.maxSub)}": skipping this rule`);
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Rule list

export type ParsedRule<H> =
  | { op: typeof RULE_OP.MATCH; lineNo: number; first: H; match: boolean; second: H | null; secondMatch: boolean; value: Replacement }
  | { op: typeof RULE_OP.IF; lineNo: number; first: H; match: boolean }
  | { op: typeof RULE_OP.ENDIF; lineNo: number };

/** The parts that differ between regexp and pcre. */
export interface PatternDialect<H> {
  kind: PatternKind;
  engine: typeof ENGINE.REGEX | typeof ENGINE.PCRE;
  /** A match rule (the line starts with a non-alphanumeric byte); null after a warning. */
  parseMatch(native: NativeEngines, ctx: RuleContext, line: Bytes): ParsedRule<H> | null;
  /** An IF rule; `pos` is just after "if"; null after a warning. */
  parseIf(native: NativeEngines, ctx: RuleContext, line: Bytes, pos: number): ParsedRule<H> | null;
}

/** True when line starts with `word` (ASCII case-insensitive) followed by a non-alphanumeric byte. */
function startsWithWord(line: Bytes, word: string): boolean {
  if (line.length < word.length) return false;
  for (let i = 0; i < word.length; i++) if ((line.charCodeAt(i) | 0x20) !== word.charCodeAt(i)) return false;
  return !isAlnumCode(line.charCodeAt(word.length));
}

export interface LoadedRules<H> {
  rules: Array<ParsedRule<H>>;
  /** IF index -> index of its ENDIF (-1: none) */
  endifOf: Map<number, number>;
}

/** Parse the whole source into rules, with IF/ENDIF pairing and the warnings for unbalanced ones. */
export function parseRules<H>(native: NativeEngines, dialect: PatternDialect<H>, text: Bytes, opts: TableOpenOptions): LoadedRules<H> {
  const mapname = opts.name;
  const rules: Array<ParsedRule<H>> = [];
  const endifOf = new Map<number, number>();
  const stack: number[] = [];
  for (const { text: raw, lineNo } of readLogicalLines(text, mapname, opts.warn)) {
    let line = cString(raw);
    let end = line.length;
    while (end > 0 && isSpaceCode(line.charCodeAt(end - 1))) end--;
    line = line.slice(0, end);
    if (line.length === 0) continue;
    const ctx = new RuleContext(dialect.kind, mapname, lineNo, opts);
    let rule: ParsedRule<H> | null;
    if (!isAlnumCode(line.charCodeAt(0))) {
      rule = dialect.parseMatch(native, ctx, line);
    } else if (startsWithWord(line, 'if')) {
      rule = dialect.parseIf(native, ctx, line, 2);
    } else if (startsWithWord(line, 'endif')) {
      if (stack.length === 0) {
        ctx.warn('ignoring ENDIF without matching IF');
        rule = null;
      } else {
        if (skipSpace(line, 5) < line.length) ctx.warn('ignoring extra text after ENDIF');
        rule = { op: RULE_OP.ENDIF, lineNo };
      }
    } else {
      ctx.warn('ignoring unrecognized request');
      rule = null;
    }
    if (rule === null) continue;
    const index = rules.length;
    rules.push(rule);
    if (rule.op === RULE_OP.IF) {
      stack.push(index);
      endifOf.set(index, -1);
    } else if (rule.op === RULE_OP.ENDIF) {
      endifOf.set(stack.pop()!, index);
    }
  }
  for (let i = stack.length - 1; i >= 0; i--) {
    opts.warn(`${dialect.kind} map ${mapname}, line ${rules[stack[i]].lineNo}: IF has no matching ENDIF`);
  }
  return { rules, endifOf };
}

// ---------------------------------------------------------------------------
// The table

type FileId = Pick<Stats, 'ino' | 'dev' | 'size' | 'mtimeMs' | 'ctimeMs'>;

interface RuleInfo {
  lineNo: number;
  /** MATCH rules: largest $n (0: the constant `result`) */
  maxSub: number;
  result?: LookupResult;
  parts?: Array<Bytes | number>;
}

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
    private readonly infos: RuleInfo[],
    maxSub: number,
    private readonly warn: (text: string) => void,
    private readonly fileId: FileId | undefined,
  ) {
    this.set = set;
    this.offsets = new Int32Array(2 * (maxSub + 1));
  }

  /** Number of rules kept (match, IF and ENDIF). */
  get ruleCount(): number {
    return this.infos.length;
  }

  lookup(key: Bytes, flags: number): LookupResult {
    if (this.set === null) return { found: false, error: DICT_ERR.RETRY };
    let subject = cString(key);
    if (flags & DICT_FLAG.FOLD_MUL) subject = lowercaseAscii(subject);
    const r = this.native.ruleSetExec(this.set, subject, (flags & DICT_FLAG.NO_REGSUB) !== 0, this.offsets);
    let index: number;
    if (typeof r === 'number') {
      index = r;
    } else {
      for (const [at, text] of r.errors) this.warn(`${this.type} map ${this.name}, line ${this.infos[at].lineNo}: ${text}`);
      index = r.index;
    }
    if (index < 0) return NOT_FOUND;
    const info = this.infos[index];
    if (info.result) return info.result;
    let out = '';
    for (const part of info.parts!) out += typeof part === 'number' ? groupText(this.type, subject, this.offsets, part) : part;
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

/** Open a regexp/pcre table: read the source, parse and compile every rule, build the native rule set. */
export async function openPatternTable<H>(opts: TableOpenOptions, dialect: PatternDialect<H>): Promise<Table> {
  requireReadOnly(opts);
  let native: NativeEngines;
  try {
    native = loadNative();
  } catch (err) {
    throw new TableOpenError(`${dialect.kind}:${opts.name}: ${(err as Error).message}`);
  }
  const source = await readTableSource(dialect.kind, opts.name);
  const { rules, endifOf } = parseRules(native, dialect, source.text, opts);
  const specs: Array<RuleSpec<H>> = [];
  const infos: RuleInfo[] = [];
  let maxSub = 0;
  rules.forEach((rule, index) => {
    switch (rule.op) {
      case RULE_OP.MATCH: {
        const n = Number(rule.value.maxSub); // <= the pattern's group count
        maxSub = Math.max(maxSub, n);
        specs.push([rule.op, rule.first, rule.match ? 1 : 0, rule.second, rule.secondMatch ? 1 : 0, n, -1]);
        infos.push(n === 0 ? { lineNo: rule.lineNo, maxSub: 0, result: found(rule.value.literal) } : { lineNo: rule.lineNo, maxSub: n, parts: rule.value.parts });
        break;
      }
      case RULE_OP.IF:
        specs.push([rule.op, rule.first, rule.match ? 1 : 0, null, 1, 0, endifOf.get(index) ?? -1]);
        infos.push({ lineNo: rule.lineNo, maxSub: 0 });
        break;
      case RULE_OP.ENDIF:
        specs.push([rule.op, null, 1, null, 1, 0, -1]);
        infos.push({ lineNo: rule.lineNo, maxSub: 0 });
        break;
    }
  });
  const set = (native.ruleSetCreate as (engine: number, rules: Array<RuleSpec<H>>) => RuleSetHandle)(dialect.engine, specs);
  return new PatternTable(dialect.kind, opts.name, native, set, infos, maxSub, opts.warn, source.stat);
}
