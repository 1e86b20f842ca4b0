/**
 * Where rule-set evaluations run: on the main thread, or on the addon's
 * evaluation threads when lookups queue up (proxymapd_pattern_threads).
 */
import { availableParallelism } from 'node:os';
import { type NativeEngines, type RuleSetHandle } from '../../addon/index.js';
import { type Bytes } from '../core/table.js';
import type { TypeContext } from '../core/registry.js';
import { intParam } from '../core/params.js';

type ExecResult = { index: number; offsets: Int32Array | null; errors: Array<[number, string]> | null };

interface PendingExec {
  set: RuleSetHandle;
  subject: Bytes;
  skipRegsub: boolean;
  done: (r: ExecResult) => void;
}

/** Default thread count: one per CPU, at most 8. */
export function defaultPatternThreads(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}

class ExecScheduler {
  /** evaluation threads; 0 = always on the main thread */
  threads = defaultPatternThreads();
  /** evaluations handed to the threads and not completed yet */
  private pending = 0;
  /** lookups seen in the current event-loop turn */
  private turnLookups = 0;
  private readonly endTurn = (): void => {
    this.turnLookups = 0;
  };
  private configured = 0;
  /** counters, for tests and diagnostics */
  readonly stats = { sync: 0, async: 0 };

  /** Evaluations on the threads not completed yet. */
  get inFlight(): number {
    return this.pending;
  }

  /** Evaluate now on this thread? (counts the lookup toward the current turn) */
  runHere(): boolean {
    if (this.threads <= 0) return true;
    if (this.turnLookups++ === 0) setImmediate(this.endTurn);
    return this.turnLookups === 1 && this.pending === 0;
  }

  /** Hand an evaluation to the threads (they start them in submission order). */
  submit(native: NativeEngines, job: PendingExec): void {
    if (this.configured !== this.threads) {
      native.execThreads(Math.max(1, this.threads));
      this.configured = this.threads;
    }
    this.pending++;
    this.stats.async++;
    try {
      native.ruleSetExecAsync(job.set, job.subject, job.skipRegsub, (index, offsets, errors) => {
        this.pending--;
        job.done({ index, offsets, errors });
      });
    } catch {
      this.pending--;
      job.done({ index: -2, offsets: null, errors: null });
    }
  }
}

export const scheduler = new ExecScheduler();

/**
 * How many rule-set evaluations may run on the thread pool at once
 * (proxymapd_pattern_threads); 0 keeps every evaluation on the main thread.
 */
export function setPatternThreads(n: number): void {
  scheduler.threads = Math.max(0, Math.floor(n));
}

export function patternThreads(): number {
  return scheduler.threads;
}

/** True while lookups are being evaluated on the evaluation threads (their completion wakes the event loop). */
export function patternWorkPending(): boolean {
  return scheduler.inFlight > 0;
}

/** Evaluations run on the main thread and on the threads so far (tests). */
export function patternExecStats(): { sync: number; async: number } {
  return { ...scheduler.stats };
}

// ---------------------------------------------------------------------------
// The table
const MAX_PATTERN_THREADS = 64;

/** proxymapd_pattern_threads: rule-set evaluations on the thread pool at once (0: main thread only). */
export function configurePatternThreads(ctx: TypeContext): void {
  const dflt = defaultPatternThreads();
  setPatternThreads(intParam(ctx, 'proxymapd_pattern_threads', dflt, { max: MAX_PATTERN_THREADS, fallback: `the default (${dflt})` }));
}
