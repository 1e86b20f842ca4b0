/**
 * A table's patterns compiled on the addon's helper threads while the
 * table is parsed (native/compile_pool.c): compile jobs, the native scan of
 * a table's text that feeds them (native/patscan.c), and the pattern batch
 * a finished job leaves, from which rule sets are built (ruleset.ts).
 */
declare const brand: unique symbol;

/** A compilation in progress (patternsCompileStart). */
export type CompileJobHandle = { readonly [brand]: 'compile' };
/** The compiled patterns of one table (freed by the garbage collector). */
export type PatternBatchHandle = { readonly [brand]: 'batch' };

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

/** patternsScan(): the compile job, the records (PATSCAN), and how many patterns the job holds. */
export interface PatternScan {
  job: CompileJobHandle;
  records: Int32Array;
  patterns: number;
}

export interface NativeCompilePool {
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
  patternsCompileAdd(job: CompileJobHandle, patterns: string, options: Uint32Array): number;
  patternsCompileFinish(job: CompileJobHandle): {
    batch: PatternBatchHandle;
    groups: Int32Array;
    errors: Array<[number, string, number, number]>;
  };
}
