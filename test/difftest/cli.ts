/**
 * npm run difftest -- [--cases N] [--seed S] [--kinds regexp,pcre,cidr] [--level 3.6|0]
 * Runs N generated cases per kind and prints every difference with a minimal case.
 */
import { parseArgs } from 'node:util';
import { runDifftest } from './run.js';
import type { PatternKind } from './generate.js';

const { values } = parseArgs({
  options: {
    cases: { type: 'string', default: '500' },
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    kinds: { type: 'string', default: 'regexp,pcre,cidr' },
    level: { type: 'string', default: '3.6' },
  },
});
const kinds = values.kinds!.split(',') as PatternKind[];
const seed = Number(values.seed);
console.log(`difftest: ${values.cases} cases per kind (${kinds.join(', ')}), seed ${seed}, compatibility_level ${values.level}`);
const r = await runDifftest({ kinds, cases: Number(values.cases), seed, compatibilityLevel: values.level!, log: (s) => console.log(s) });
console.log(`difftest: ${r.cases} cases run, ${r.differences.length} differences`);
process.exitCode = r.differences.length === 0 ? 0 : 1;
