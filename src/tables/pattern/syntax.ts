/**
 * The rule syntax shared by the regexp: and pcre: tables (Postfix 3.7
 * src/util/dict_regexp.c, dict_pcre.c, mac_parse.c): the warning context,
 * the delimited pattern token, and the replacement value with its $n
 * references. Warnings are worded exactly as Postfix words them.
 */
import { DICT_FLAG } from '../../protocol/flags.js';
import { filesToBase64 } from '../core/rhsfile.js';
import { type Bytes, type TableOpenOptions } from '../core/table.js';
import { allDigits, isAlnumCode, isSpaceCode } from '../../util/ctype.js';
import type { ParsedRule } from './rules.js';

export type PatternKind = 'regexp' | 'pcre';

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


/** A delimited pattern with the compile options its flag letters gave it. */
export interface FlaggedPattern {
  pattern: Bytes;
  /** regcomp cflags / pcre2_compile options, as an unsigned 32-bit number */
  options: number;
  /** false for a negated (!) pattern */
  match: boolean;
}

/** How a dialect reads the flag letters after a pattern's closing delimiter. */
export interface FlagSyntax {
  /** the options before any letter */
  initial: number;
  /** letter -> the option bits it toggles */
  bits: Readonly<Record<string, number>>;
  /** letters accepted with Postfix's "ignoring obsolete" warning and no effect */
  obsolete?: string;
  /** a byte that ends the flags besides whitespace ('!' before regexp's second pattern) */
  stop?: number;
}

/**
 * The pattern and its flags at line[pos]: null after Postfix's warning for
 * a bad delimiter or an unknown flag letter. pos in the result is just past
 * the flags.
 */
export function scanFlaggedPattern(ctx: RuleContext, line: Bytes, pos: number, syntax: FlagSyntax): { pat: FlaggedPattern; pos: number } | null {
  const d = scanDelimited(ctx, line, pos);
  if (d === null) return null;
  let options = syntax.initial;
  let p = d.pos;
  for (; p < line.length; p++) {
    const c = line.charCodeAt(p);
    if (isSpaceCode(c) || c === syntax.stop) break;
    const letter = line[p];
    const bits = Object.hasOwn(syntax.bits, letter) ? syntax.bits[letter] : undefined;
    if (bits !== undefined) options ^= bits;
    else if (syntax.obsolete?.includes(letter)) ctx.warn(`ignoring obsolete regexp option "${letter}"`);
    else {
      ctx.warn(`unknown regexp option "${letter}": skipping this rule`);
      return null;
    }
  }
  // pcre's ANCHORED is bit 31: keep the options an unsigned 32-bit number.
  return { pat: { pattern: d.pattern, options: options >>> 0, match: d.match }, pos: p };
}
