/**
 * Rule-set evaluations off the main thread (native/exec_pool.c): a small
 * pool of evaluation threads per Node environment, one FIFO queue,
 * completions delivered to the main thread.
 */
import type { RuleSetHandle } from './ruleset.js';

export interface NativeExecPool {
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
}
