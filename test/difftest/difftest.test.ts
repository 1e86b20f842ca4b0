/**
 * The differential test generator, bounded for CI: generated regexp, pcre and
 * cidr tables answered by the real postmap directly and through proxymapd.
 * More cases: npm run difftest -- --cases N
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { skipReason } from '../interop/harness.js';
import { formatDifference, runDifftest } from './run.js';

const skip = skipReason();
const CASES = Number(process.env.DIFFTEST_CASES ?? 300);
// A fixed seed per CI run would test the same cases forever; vary it by day, and print it.
const SEED = Number(process.env.DIFFTEST_SEED ?? Math.floor(Date.now() / 86_400_000) * 1000);

for (const level of ['3.6', '0']) {
  test(`generated pattern tables: proxymapd == postmap (compatibility_level ${level}, seed ${SEED})`, { skip }, async (t) => {
    const r = await runDifftest({ kinds: ['regexp', 'pcre', 'cidr'], cases: CASES, seed: SEED, compatibilityLevel: level });
    t.diagnostic(`${r.cases} cases, ${r.differences.length} differences`);
    assert.equal(r.cases, CASES * 3);
    assert.deepEqual(r.differences.map(formatDifference), []);
  });
}
