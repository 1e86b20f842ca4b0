/**
 * Rule sets (native/ruleset.c): the whole ordered rule list of one regexp:
 * or pcre: table, built from a pattern batch (compile-pool.ts) and
 * evaluated natively for one key, so that a lookup costs one call however
 * many rules the table has. A lone lookup in a large set is shared with an
 * idle compiler thread (split evaluation); exec-pool.ts evaluates on the
 * addon's evaluation threads.
 */
import type { PatternBatchHandle } from './compile-pool.js';

declare const brand: unique symbol;

/** A compiled rule list (freed by the garbage collector). */
export type RuleSetHandle = { readonly [brand]: 'ruleset' };

export const RULE_OP = { MATCH: 1, IF: 2, ENDIF: 3 } as const;

export interface NativeRuleSet {
  /**
   * A rule set from a batch: program holds 7 numbers per rule, [op, first,
   * firstMatch, second, secondMatch, maxSub, endif], first/second being
   * pattern indexes in the batch (-1: none). firstMatch/secondMatch: 1 =
   * positive test, 0 = negated. maxSub: largest $n in the value (MATCH; 0 =
   * none). endif: for IF the index of its ENDIF, -1 when it has none (the
   * lookup then ends "not found" when the test fails).
   */
  ruleSetFromBatch(batch: PatternBatchHandle, program: Int32Array): RuleSetHandle;
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
  /** Lookups that ruleSetExec() offered to an idle compiler thread, and those one took (tests). */
  splitStats(): [offered: number, taken: number];
}
