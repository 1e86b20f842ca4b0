/**
 * A latency histogram kept as plain numbers: one count per bucket (not
 * cumulative), a sum and a total, updated with a few additions per
 * observation and turned into Prometheus' cumulative `le` buckets only when
 * metrics are read. Postfix keeps no such figures.
 */

/** Upper bounds in seconds, 10 µs .. 10 s (the Prometheus `le` values; +Inf is implied). */
export const LATENCY_BOUNDS: readonly number[] = [
  0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export class Buckets {
  /** observations per bucket; the last one is +Inf */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[] = LATENCY_BOUNDS) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  /** Record one observation in seconds. */
  observe(seconds: number): void {
    const b = this.bounds;
    let i = 0;
    // fast requests are the common case: a scan from the small end stops early
    while (i < b.length && seconds > b[i]!) i++;
    this.counts[i]!++;
    this.sum += seconds;
    this.count++;
  }

  /** Cumulative counts per bound, then +Inf (Prometheus' `_bucket` series). */
  cumulative(): number[] {
    const out: number[] = [];
    let acc = 0;
    for (const c of this.counts) out.push((acc += c));
    return out;
  }
}
