/**
 * The regular-expression engines of regexp: and pcre: tables
 * (native/pattern_engines.c): the same ones Postfix uses, glibc POSIX regex
 * (always under the C locale: one byte = one character, ASCII-only case
 * folding) and PCRE2 8-bit (no UTF mode, no JIT). Patterns reach them
 * through compile jobs (compile-pool.ts) and are run by rule sets
 * (ruleset.ts); this file has the engine numbers and the engines' constants.
 *
 * All strings are byte strings (char codes 0..255); the engines see them as
 * NUL-terminated C strings.
 */

/** The engine of a compile job, a pattern batch and a rule set. */
export const ENGINE = { REGEX: 1, PCRE: 2 } as const;

export interface NativePatternEngines {
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
}
