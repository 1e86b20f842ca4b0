/**
 * The project's native addon (native/proxymapd_native.c, built by node-gyp
 * into build/Release/proxymapd_native.node on `npm install`/`npm ci`): the
 * same regular-expression engines Postfix uses, glibc POSIX regex (C
 * locale) for regexp: tables and PCRE2 8-bit for pcre: tables.
 *
 * Loaded lazily, on the first regexp/pcre open: a missing or broken build
 * makes those opens fail (the table becomes a surrogate) without taking the
 * rest of the server down.
 *
 * All strings are byte strings (char codes 0..255); the engines see them as
 * NUL-terminated C strings.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

declare const brand: unique symbol;
/** A compiled POSIX regex (freed by the garbage collector). */
export type RegexHandle = { readonly [brand]: 'regex' };
/** A compiled PCRE2 pattern with its match data (freed by the garbage collector). */
export type PcreHandle = { readonly [brand]: 'pcre' };
/** A compilation in progress (patternsCompileStart). */
export type CompileJobHandle = { readonly [brand]: 'compile' };
/** The compiled patterns of one table (freed by the garbage collector). */
export type PatternBatchHandle = { readonly [brand]: 'batch' };
/** A compiled rule list (freed by the garbage collector). */
export type RuleSetHandle = { readonly [brand]: 'ruleset' };

export const RULE_OP = { MATCH: 1, IF: 2, ENDIF: 3 } as const;
export const ENGINE = { REGEX: 1, PCRE: 2 } as const;

/**
 * patternsScan() records: FIELDS numbers each, [type, lineNo, a, b, c, d,
 * e, f, g, h, i] (offsets into the text):
 *  MATCH  a pattern index, b match (0/1), c-d the value, e value has '$',
 *         f largest $n, g-h the pattern, i its compile options
 *  IF     a pattern index, b match (0/1), g-h the pattern, i its options
 *  ENDIF  a bare ENDIF
 *  LINE   a-b a logical line of one physical line, for the full parser
 *  JOINED a-b the physical lines of a continued logical line (or one that
 *         starts with whitespace), for the full parser
 */
export const PATSCAN = { FIELDS: 11, MATCH: 1, IF: 2, ENDIF: 3, LINE: 4, JOINED: 5 } as const;

/**
 * One rule of a rule set: [op, first, firstMatch, second, secondMatch, maxSub, endif].
 * firstMatch/secondMatch: 1 = positive test, 0 = negated. maxSub: largest $n
 * in the value (MATCH; 0 = none). endif: for IF the index of its ENDIF, -1
 * when it has none (the lookup then ends "not found" when the test fails).
 */
export type RuleSpec<H> = [op: number, first: H | null, firstMatch: 0 | 1, second: H | null, secondMatch: 0 | 1, maxSub: number, endif: number];

export type EngineError = { error: string; code: number };

/** patternsScan(): the compile job, the records (PATSCAN), and how many patterns the job holds. */
export interface PatternScan {
  job: CompileJobHandle;
  records: Int32Array;
  patterns: number;
}

export interface NativeEngines {
  /** regcomp flag bits and the REG_NOMATCH code. */
  readonly REG: { EXTENDED: number; ICASE: number; NEWLINE: number; NOSUB: number; NOMATCH: number };
  /** PCRE2 compile option bits, PCRE2_ERROR_NOMATCH, and the compiled-against version. */
  readonly PCRE2: {
    CASELESS: number;
    MULTILINE: number;
    DOTALL: number;
    EXTENDED: number;
    ANCHORED: number;
    DOLLAR_ENDONLY: number;
    UNGREEDY: number;
    ERROR_NOMATCH: number;
    MAJOR: number;
    MINOR: number;
  };
  /** regcomp(); on failure the regerror() text. nsub = re_nsub. */
  regexCompile(pattern: string, cflags: number): { handle: RegexHandle; nsub: number } | EngineError;
  /** regexec() with nmatch slots: null = REG_NOMATCH, else 2*nmatch offsets (rm_so, rm_eo; -1 = unset). */
  regexExec(handle: RegexHandle, subject: string, nmatch: number): Int32Array | null | EngineError;
  /** pcre2_compile(); on failure pcre2_get_error_message() text and the error offset. */
  pcreCompile(pattern: string, options: number): { handle: PcreHandle; captureCount: number } | (EngineError & { offset: number });
  /** PCRE2_INFO_CAPTURECOUNT. */
  pcreCaptureCount(handle: PcreHandle): number;
  /** pcre2_match() at offset 0: null = no match, else 2*(captureCount+1) offsets (-1 = unset). */
  pcreMatch(handle: PcreHandle, subject: string): Int32Array | null | EngineError;
  /** Build a rule set (regex or pcre handles, never mixed). */
  ruleSetCreate(engine: typeof ENGINE.REGEX, rules: Array<RuleSpec<RegexHandle>>): RuleSetHandle;
  ruleSetCreate(engine: typeof ENGINE.PCRE, rules: Array<RuleSpec<PcreHandle>>): RuleSetHandle;
  /**
   * Evaluate a rule set for one subject as Postfix's lookup loop does. The
   * index of the winning MATCH rule or -1; when it uses $n its group offsets
   * 0..maxSub are written into `offsets`. With skipRegsub, MATCH rules with
   * maxSub > 0 are passed over. Runtime match errors (each one made its
   * test fail) come back as { index, errors: [ruleIndex, text][] }.
   */
  ruleSetExec(
    set: RuleSetHandle,
    subject: string,
    skipRegsub: boolean,
    offsets: Int32Array,
  ): number | { index: number; errors: Array<[number, string]> };
  /** The number of threads ruleSetExecAsync() uses (1..64; started on demand). */
  execThreads(n: number): number;
  /**
   * ruleSetExec() on one of the addon's evaluation threads (started in
   * submission order). The callback runs on the main
   * thread with the winning rule's index (-1: none; -2: the evaluation could
   * not run, out of memory), the group offsets 0..maxSub when that rule uses
   * $n (else null), and the runtime match errors (else null).
   */
  ruleSetExecAsync(
    set: RuleSetHandle,
    subject: string,
    skipRegsub: boolean,
    callback: (index: number, offsets: Int32Array | null, errors: Array<[number, string]> | null) => void,
  ): void;
  /**
   * Compile a table's patterns on helper threads while the table is parsed:
   * start a job with room for `capacity` patterns, add patterns in chunks
   * (joined by NUL bytes, with one regcomp cflags (REGEX) or pcre2_compile
   * options (PCRE) value each; returns the index of the chunk's first
   * pattern), then finish: groups per pattern (re_nsub / capture count, -1
   * when it did not compile) and errors [index, regerror / pcre2 message
   * text, error code, pcre2 error offset (else 0)].
   */
  patternsCompileStart(engine: number, capacity: number): CompileJobHandle;
  /**
   * Start a compile job for a table's source text and scan it
   * (native/patscan.c): the rules that parse without a warning have their
   * patterns compiling when this returns. records: PATSCAN.FIELDS numbers
   * per logical line (see PATSCAN); patterns: how many the job holds (more
   * may be added with patternsCompileAdd). fast = false leaves every line to
   * the caller's parser.
   */
  patternsScan(engine: number, text: string, fast: boolean, noRegsub: boolean): PatternScan;
  /**
   * patternsScan() of a regular file, read by the addon in one go: also its
   * text (a byte string) and stat [dev, ino, size, mtime s, mtime ns, ctime
   * s, ctime ns] (before reading). Null when the file cannot be opened or
   * read, or is not a regular file: the caller reads it its own way then.
   */
  patternsScanFile(engine: number, path: string, fast: boolean, noRegsub: boolean): (PatternScan & { text: string; stat: Float64Array }) | null;
  /** Lookups that ruleSetExec() offered to an idle compiler thread, and those one took (tests). */
  splitStats(): [offered: number, taken: number];
  patternsCompileAdd(job: CompileJobHandle, patterns: string, options: Uint32Array): number;
  patternsCompileFinish(job: CompileJobHandle): {
    batch: PatternBatchHandle;
    groups: Int32Array;
    errors: Array<[number, string, number, number]>;
  };
  /**
   * A rule set from a batch: program holds 7 numbers per rule, like RuleSpec
   * with pattern indexes (-1: none) in place of handles.
   */
  ruleSetFromBatch(batch: PatternBatchHandle, program: Int32Array): RuleSetHandle;
}

/** The package root: the nearest directory above this module with a package.json (src/addon or dist/addon). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return join(dirname(fileURLToPath(import.meta.url)), '..', '..');
    dir = up;
  }
}

/** Where node-gyp puts the addon. */
export const NATIVE_ADDON_PATH = join(packageRoot(), 'build', 'Release', 'proxymapd_native.node');

let cached: NativeEngines | undefined;
let failure: string | undefined;

/**
 * The addon, loaded on first use. Throws an Error naming the path and the
 * cause when it cannot be loaded (not built: run `npm install` / `npm ci`).
 */
export function loadNative(): NativeEngines {
  if (cached) return cached;
  if (failure === undefined) {
    try {
      cached = createRequire(import.meta.url)(NATIVE_ADDON_PATH) as NativeEngines;
      return cached;
    } catch (err) {
      failure = `cannot load native regex engines ${NATIVE_ADDON_PATH}: ${(err as Error).message ?? String(err)}`;
    }
  }
  throw new Error(failure);
}

/**
 * The addon as T when it loads and exports `fn`, else null: for the parts with a JavaScript fallback (socket set,
 * dup, cdb lookups), which must not fail when the addon is missing.
 */
export function nativeWith<T>(fn: string): T | null {
  try {
    const n = loadNative() as unknown as Record<string, unknown>;
    return typeof n[fn] === 'function' ? (n as unknown as T) : null;
  } catch {
    return null;
  }
}
