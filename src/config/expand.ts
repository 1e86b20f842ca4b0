/**
 * $name expansion with the semantics of Postfix's mac_parse(3) and
 * mac_expand(3) (src/util/mac_parse.c, src/util/mac_expand.c), including the
 * relational operators and the compatibility-level operators `<level` etc.
 * from src/global/compat_level.c.
 *
 * Supported forms: $name, ${name}, $(name), $$, ${name?text}, ${name?{text}},
 * ${name:text}, ${name:{text}}, ${name?{t1}:{t2}}, ${name?{t1}:t2},
 * ${{a} OP {b}} with OP one of == != < <= >= > (optionally with the "level"
 * suffix), combined with ?/: like a parameter name. Only the selected branch
 * is expanded. Named functions (${name{text}}, Postfix 3.11+) are not
 * supported; like Postfix 3.7 they are a name syntax error.
 *
 * Errors throw MacroError with the text Postfix logs as a warning before it
 * gives up with "macro processing error".
 */
import { isSpace } from '../util/braces.js';
import { allDigits } from '../util/ctype.js';
import { MacroError } from './errors.js';

export { MacroError } from './errors.js';

/** Parameter lookup: the raw (unexpanded) value, or undefined when not defined. */
export type MacroLookup = (name: string) => string | undefined;

export interface ExpandOptions {
  /**
   * Expand $name in looked-up values as well (MAC_EXP_FLAG_RECURSE, what
   * main.cf evaluation uses). Default true.
   */
  recurse?: boolean;
}

/** Nesting limit per expansion context (mac_expand_callback). */
const MAX_NESTING = 100;

/**
 * Limit on nesting across all contexts of one expandValue() call. Postfix
 * starts a fresh context for the operands of a relational expression, so
 * `a = ${{$a} == {x}}` recurses until the C stack overflows; we stop here.
 */
const MAX_TOTAL_NESTING = 1000;

const OPERATOR_CHARS = '<>!=?+-*/~&|%';
const OPERATORS = ['==', '!=', '<', '<=', '>=', '>'] as const;
type Operator = (typeof OPERATORS)[number];
/** Postfix's operator list in the "expected" message, quirks included. */
const OPERATORS_TEXT = '"==" or "!="" or "<"" or "<="" or ">="" or ">"';
/** Operator suffixes with their own comparison (mac_expand_add_relop). */
const OPERATOR_SUFFIXES = new Set(['level']);

function isAlnum(c: string | undefined): boolean {
  return c !== undefined && /^[A-Za-z0-9]$/.test(c);
}

function isNameChar(c: string | undefined): boolean {
  return c === '_' || isAlnum(c);
}

/** Index of the first non-blank character at or after i. */
function skipSpace(s: string, i: number): number {
  while (i < s.length && isSpace(s[i])) i++;
  return i;
}

/** printf "%.20s". */
function first20(s: string): string {
  return s.slice(0, 20);
}

/** Shared state of one expandValue() call. */
interface Shared {
  lookup: MacroLookup;
  recurse: boolean;
  /** active callbacks over all contexts */
  total: number;
}

/** One mac_expand context (a top-level call or a relational operand). */
interface Context {
  shared: Shared;
  out: string[];
  level: number;
}

/**
 * Expand `text`. Undefined names expand to the empty string.
 * Throws MacroError on syntax errors and on unreasonable nesting.
 */
export function expandValue(text: string, lookup: MacroLookup, opts: ExpandOptions = {}): string {
  const shared: Shared = { lookup, recurse: opts.recurse ?? true, total: 0 };
  return expandIn(shared, text);
}

/** Start a new context (mac_expand) and return its result. */
function expandIn(shared: Shared, text: string): string {
  const ctx: Context = { shared, out: [], level: 0 };
  parse(ctx, text);
  return ctx.out.join('');
}

/**
 * Split text into literal text and $ references (mac_parse), handing each
 * piece to the callback as soon as it is complete.
 */
function parse(ctx: Context, value: string): void {
  let lit = '';
  let vp = 0;
  const n = value.length;
  while (vp < n) {
    const c = value[vp];
    if (c !== '$') {
      lit += c;
      vp++;
      continue;
    }
    if (value[vp + 1] === '$') {
      lit += '$';
      vp += 2;
      continue;
    }
    if (lit.length > 0) {
      callback(ctx, false, lit);
      lit = '';
    }
    vp++;
    let name: string;
    const open = value[vp];
    if (open === '{' || open === '(') {
      // ${...} or $(...): balance only this kind of bracket.
      const close = open === '{' ? '}' : ')';
      let level = 1;
      let ep = vp + 1;
      for (; level > 0; ep++) {
        if (ep >= n) throw new MacroError(`truncated macro reference: "${value}"`);
        if (value[ep] === open) level++;
        if (value[ep] === close) level--;
      }
      name = value.slice(vp + 1, ep - 1);
      vp = ep;
    } else {
      let ep = vp;
      while (ep < n && isNameChar(value[ep])) ep++;
      name = value.slice(vp, ep);
      vp = ep;
    }
    if (name.length === 0) throw new MacroError(`empty macro name: "${value}"`);
    callback(ctx, true, name);
  }
  if (lit.length > 0) callback(ctx, false, lit);
}

/**
 * Extract a {payload} whose '{' is at s[i], balancing braces
 * (mac_exp_extract_curly_payload). Returns the payload and the index after
 * the '}' and any following blanks.
 */
function curlyPayload(s: string, i: number): { payload: string; next: number } {
  let level = 1;
  let cp = i + 1;
  for (;; cp++) {
    if (cp >= s.length) {
      throw new MacroError(`unbalanced {} in attribute expression: "${s.slice(i)}"`);
    }
    const ch = s[cp];
    if (ch === '{') level++;
    else if (ch === '}' && --level <= 0) break;
  }
  return { payload: s.slice(i + 1, cp), next: skipSpace(s, cp + 1) };
}

/** If s has '{' after optional blanks at i, the index of that '{'; else -1. */
function findLeftCurly(s: string, i: number): number {
  const j = skipSpace(s, i);
  return s[j] === '{' ? j : -1;
}

/** Expand the callback for one literal piece or one $ reference (mac_expand_callback). */
function callback(ctx: Context, isExpr: boolean, buf: string): void {
  const shared = ctx.shared;
  if (ctx.level++ > MAX_NESTING || ++shared.total > MAX_TOTAL_NESTING) {
    throw new MacroError(`unreasonable macro call nesting: "${buf}"`);
  }
  if (!isExpr) {
    ctx.out.push(buf);
  } else {
    expression(ctx, buf);
  }
  ctx.level--;
  shared.total--;
}

/** Evaluate the inside of a $ reference. */
function expression(ctx: Context, buf: string): void {
  let value: string | undefined;
  let op: string | undefined; // '?', ':' or undefined
  let cp: number;

  const lc = findLeftCurly(buf, 0);
  if (lc >= 0) {
    // Relational expression: {left} OP {right} [?|: ...]
    const rel = relational(ctx, buf, lc);
    value = rel.value;
    cp = rel.next;
    if (cp < buf.length) {
      const ch = buf[cp];
      if (ch !== '?' && ch !== ':') {
        throw new MacroError(`"?" or ":" expected at: "...}>>>${first20(buf.slice(cp))}"`);
      }
      op = ch;
      cp++;
    }
  } else {
    // Parameter name, optionally followed by ? or :
    const start = skipSpace(buf, 0);
    let nameEnd: number;
    for (cp = start; ; cp++) {
      const ws = skipSpace(buf, cp);
      if (ws >= buf.length) {
        nameEnd = cp;
        cp = buf.length;
        break;
      }
      const ch = buf[ws];
      if (ch === '?' || ch === ':') {
        nameEnd = cp;
        op = ch;
        cp = ws + 1;
        break;
      }
      if (!isNameChar(buf[cp])) {
        throw new MacroError(
          `attribute name syntax error at: "...${buf.slice(0, cp)}>>>${first20(buf.slice(cp))}"`,
        );
      }
    }
    value = ctx.shared.lookup(buf.slice(start, nameEnd));
  }

  const nonEmpty = value !== undefined && value.length > 0;
  if (op === undefined) {
    // Plain reference.
    if (nonEmpty) {
      if (ctx.shared.recurse) parse(ctx, value as string);
      else ctx.out.push(value as string);
    }
    return;
  }
  if (op === '?') {
    const t = branch(buf, cp);
    if (nonEmpty) parse(ctx, t.text);
    cp = t.next;
    if (cp >= buf.length) return;
    if (buf[cp] !== ':') {
      throw new MacroError(`":" expected at: "...${t.text}}>>>${first20(buf.slice(cp))}"`);
    }
    cp++;
  }
  // ':' branch, alone or after a '?' branch.
  const f = branch(buf, cp);
  if (!nonEmpty) parse(ctx, f.text);
  if (f.next < buf.length) {
    throw new MacroError(`unexpected input at: "...${f.text}}>>>${first20(buf.slice(f.next))}"`);
  }
}

/**
 * A result operand after ? or :. With braces (blanks around them ignored)
 * it is the brace payload; without, it is the rest of the text, verbatim.
 */
function branch(buf: string, cp: number): { text: string; next: number } {
  const lc = findLeftCurly(buf, cp);
  if (lc >= 0) {
    const p = curlyPayload(buf, lc);
    return { text: p.payload, next: p.next };
  }
  return { text: buf.slice(cp), next: buf.length };
}

/**
 * Parse and evaluate `{left} OP {right}` starting at the '{' at buf[i]
 * (mac_exp_parse_relational). The result is "true" or "" (as a parameter
 * value would be), plus the index after the right operand and its blanks.
 */
function relational(ctx: Context, buf: string, i: number): { value: string; next: number } {
  const left = curlyPayload(buf, i);
  let cp = left.next;

  // Operator: the longest run of operator characters must be a known one.
  const opStart = cp;
  while (cp < buf.length && OPERATOR_CHARS.includes(buf[cp])) cp++;
  const opText = buf.slice(opStart, cp);
  if (!(OPERATORS as readonly string[]).includes(opText)) {
    throw new MacroError(
      `${OPERATORS_TEXT} expected at: "...${left.payload}}>>>${first20(buf.slice(opStart))}"`,
    );
  }
  const op = opText as Operator;

  // Optional operator suffix such as "level".
  let suffix: string | undefined;
  if (isAlnum(buf[cp])) {
    const sufStart = cp;
    while (isAlnum(buf[cp])) cp++;
    suffix = buf.slice(sufStart, cp);
    if (!OPERATOR_SUFFIXES.has(suffix)) {
      throw new MacroError(`bad operator suffix at: "...${opText}>>>${suffix}"`);
    }
  }

  const rc = findLeftCurly(buf, cp);
  if (rc < 0) {
    throw new MacroError(
      `"{expression}" expected at: "...{${left.payload}} ${opText}>>>${first20(buf.slice(cp))}"`,
    );
  }
  const right = curlyPayload(buf, rc);

  // Operands are expanded in contexts of their own.
  const lval = expandIn(ctx.shared, left.payload);
  const rval = expandIn(ctx.shared, right.payload);
  const result = suffix === 'level' ? compareLevels(lval, op, rval) : compareValues(lval, op, rval);
  return { value: result ? 'true' : '', next: right.next };
}

function applyOperator(op: Operator, delta: number): boolean {
  switch (op) {
    case '==':
      return delta === 0;
    case '!=':
      return delta !== 0;
    case '<':
      return delta < 0;
    case '<=':
      return delta <= 0;
    case '>=':
      return delta >= 0;
    case '>':
      return delta > 0;
  }
}

const LONG_MAX = (1n << 63n) - 1n;

/** Built-in comparison: numeric when both sides are all digits, else byte order. */
function compareValues(left: string, op: Operator, right: string): boolean {
  let delta: number;
  if (allDigits(left) && allDigits(right)) {
    const l = BigInt(left);
    const r = BigInt(right);
    for (const [s, v] of [[left, l], [right, r]] as const) {
      if (v > LONG_MAX) throw new MacroError(`mac_exp_eval: bad conversion: ${s}`);
    }
    delta = l === r ? 0 : l < r ? -1 : 1;
  } else {
    // Byte strings: UTF-16 code unit order equals unsigned byte order.
    delta = left === right ? 0 : left < right ? -1 : 1;
  }
  return applyOperator(op, delta);
}

/** Compatibility-level comparison (`<level` etc.). */
function compareLevels(left: string, op: Operator, right: string): boolean {
  const l = parseCompatLevel(left);
  if (l === undefined) throw new MacroError(`malformed compatibility level syntax: "${left}"`);
  const r = parseCompatLevel(right);
  if (r === undefined) throw new MacroError(`malformed compatibility level syntax: "${right}"`);
  return applyOperator(op, l === r ? 0 : l < r ? -1 : 1);
}

/** Widths of the minor and patch fields of an encoded compatibility level. */
const MINOR_BITS = 10n;
const PATCH_BITS = 10n;
const MINOR_MAX = (1n << MINOR_BITS) - 1n;
const PATCH_MAX = (1n << PATCH_BITS) - 1n;
const MAJOR_MAX = LONG_MAX >> (MINOR_BITS + PATCH_BITS);

/**
 * strtol(3) in base 10 on s from index i: optional blanks, optional sign,
 * digits. Returns the value and the end index (i itself when no digits).
 */
function strtol(s: string, i: number): { value: bigint; end: number; range: boolean } {
  let p = skipSpace(s, i);
  let neg = false;
  if (s[p] === '+' || s[p] === '-') {
    neg = s[p] === '-';
    p++;
  }
  const d = p;
  while (p < s.length && s[p] >= '0' && s[p] <= '9') p++;
  if (p === d) return { value: 0n, end: i, range: false };
  let value = BigInt(s.slice(d, p));
  if (neg) value = -value;
  const range = value > LONG_MAX || value < -LONG_MAX - 1n;
  return { value, end: p, range };
}

/**
 * Convert "major[.minor[.patch]]" to one comparable number
 * (compat_level_from_string): major, minor and patch occupy separate bit
 * fields, so 3.10 > 3.9 and 2 == 2.0 == 2.0.0. Undefined when malformed.
 */
export function parseCompatLevel(str: string): bigint | undefined {
  const fields: bigint[] = [];
  const max = [MAJOR_MAX, MINOR_MAX, PATCH_MAX];
  let start = 0;
  for (let k = 0; k < 3; k++) {
    const r = strtol(str, start);
    if (r.end === start || r.range || r.value < 0n || r.value > max[k]) return undefined;
    const last = r.end >= str.length;
    // The patch field must end the string; the others may be followed by '.'.
    if (!last && (k === 2 || str[r.end] !== '.')) return undefined;
    fields.push(r.value);
    if (last) break;
    start = r.end + 1;
  }
  const [major, minor = 0n, patch = 0n] = fields;
  return (major << (MINOR_BITS + PATCH_BITS)) | (minor << PATCH_BITS) | patch;
}
