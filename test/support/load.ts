/** Helpers for the tests that put many clients on a table while counting what the server side sees. */
import type { ClientResult } from '../../src/client/table.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Run `body` while `count()` is sampled every `everyMs` ms (e.g. the
 * connections a database server sees): the body's result, the highest count
 * and the number of samples taken.
 */
export async function sampleWhile<T>(count: () => Promise<number>, body: () => Promise<T>, everyMs = 20): Promise<{ result: T; peak: number; samples: number }> {
  let peak = 0;
  let samples = 0;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      peak = Math.max(peak, await count());
      samples++;
      await sleep(everyMs);
    }
  })();
  try {
    return { result: await body(), peak, samples };
  } finally {
    polling = false;
    await poller;
  }
}

/** A client's answer in comparable form: the value, null for "not found", `error N` for any other status. */
export function answerOf(r: ClientResult): string | null {
  return r.status === 'found' ? r.value : r.status === 'notfound' ? null : `error ${r.code}`;
}
