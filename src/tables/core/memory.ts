/** An in-memory FIXED table over a Map (Postfix's dict_ht behind texthash and inline). */
import { DICT_FLAG } from '../../protocol/flags.js';
import { DICT_ERR, NOT_FOUND, found, type Bytes, type LookupResult, type SequenceResult, type Table } from './table.js';

const END: SequenceResult = Object.freeze({ found: false, error: DICT_ERR.NONE }) as SequenceResult;

export class MemoryTable implements Table {
  readonly implFlags: number = DICT_FLAG.FIXED;
  private cursor: Iterator<[Bytes, Bytes]> | undefined;

  /** entries: stored (already folded) key -> value, in sequence order. */
  constructor(
    readonly type: string,
    readonly name: string,
    protected readonly entries: ReadonlyMap<Bytes, Bytes>,
  ) {}

  /** Number of entries. */
  get size(): number {
    return this.entries.size;
  }

  lookup(key: Bytes): LookupResult {
    const value = this.entries.get(key);
    return value === undefined ? NOT_FOUND : found(value);
  }

  /** Entries in insertion order; "next" without "first" finds nothing. */
  sequence(fn: 0 | 1): SequenceResult {
    if (fn === 0) this.cursor = this.entries.entries();
    const step = this.cursor?.next();
    if (!step || step.done) {
      this.cursor = undefined;
      return END;
    }
    const [key, value] = step.value;
    return { found: true, key, value };
  }
}
