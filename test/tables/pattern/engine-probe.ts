/**
 * Single patterns put through the addon's engines the way a regexp:/pcre:
 * table open does: a compile job (patternsCompileStart/Add/Finish), a rule
 * set from its batch (ruleSetFromBatch), evaluated with ruleSetExec.
 */
import assert from 'node:assert/strict';
import { RULE_OP, type ENGINE, type NativeEngines, type PatternBatchHandle } from '../../../src/addon/index.js';

export type Engine = (typeof ENGINE)[keyof typeof ENGINE];

/** Patterns compiled by one compile job: the batch, groups per pattern (-1: error), errors [index, text, code, offset]. */
export function compileAll(
  n: NativeEngines,
  engine: Engine,
  patterns: string[],
  options: number,
): { batch: PatternBatchHandle; groups: Int32Array; errors: Array<[number, string, number, number]> } {
  const job = n.patternsCompileStart(engine, patterns.length);
  assert.equal(n.patternsCompileAdd(job, patterns.join('\0'), new Uint32Array(patterns.length).fill(options)), 0);
  return n.patternsCompileFinish(job);
}

/** One pattern: its group count (re_nsub / capture count), or its compile error. */
export function compileOne(
  n: NativeEngines,
  engine: Engine,
  pattern: string,
  options: number,
): { groups: number } | { error: string; code: number; offset: number } {
  const { groups, errors } = compileAll(n, engine, [pattern], options);
  if (errors.length === 0) return { groups: groups[0] };
  assert.equal(groups[0], -1);
  const [index, error, code, offset] = errors[0];
  assert.equal(index, 0);
  return { error, code, offset };
}

/** Filler of the offsets array: what a rule that writes no offsets leaves. */
export const UNWRITTEN = -9;

/**
 * A matcher for one pattern: a one-rule set (MATCH, the value using
 * $1..$maxSub) evaluated with ruleSetExec. Per subject: null when it does
 * not match, else the offsets array (groups 0..maxSub, -1 = unset;
 * UNWRITTEN everywhere when maxSub is 0), or the runtime match errors.
 */
export function matcher(
  n: NativeEngines,
  engine: Engine,
  pattern: string,
  options: number,
  maxSub: number,
): (subject: string) => number[] | null | { errors: Array<[number, string]> } {
  const { batch, errors } = compileAll(n, engine, [pattern], options);
  assert.deepEqual(errors, []);
  const set = n.ruleSetFromBatch(batch, new Int32Array([RULE_OP.MATCH, 0, 1, -1, 1, maxSub, -1]));
  return (subject) => {
    const off = new Int32Array(2 * (maxSub + 1)).fill(UNWRITTEN);
    const r = n.ruleSetExec(set, subject, false, off);
    if (typeof r !== 'number') {
      assert.equal(r.index, -1);
      return { errors: r.errors };
    }
    return r === 0 ? [...off] : null;
  };
}
