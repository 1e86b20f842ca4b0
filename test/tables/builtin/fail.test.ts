import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, openTable } from '../../../src/tables/index.js';
import { openOptions, runConformance } from '../conformance.js';
import { runDifferential } from '../../support/postmap.js';

const RETRY = { error: DICT_ERR.RETRY };

runConformance('fail', [
  {
    title: 'every lookup and the sequence fail with RETRY',
    name: 'anything:at{all}',
    implFlags: DICT_FLAG.PATTERN,
    warnings: [],
    lookups: ['a', 'A', ''].map((key) => ({ key, expect: RETRY })),
    sequence: RETRY,
  },
  {
    title: 'a non-UTF-8 key never reaches the table under the UTF-8 layer',
    name: 'x',
    lookups: [{ key: '\xff', expect: 'notfound' }],
  },
  { title: 'non-UTF-8 key without UTF-8 layer', name: 'x', fold: 'ascii', lookups: [{ key: '\xff', expect: RETRY }] },
  {
    title: 'writable open: updates and deletes fail with RETRY',
    name: 'x',
    writable: true,
    lookups: [{ key: 'a', expect: RETRY }],
    sequence: RETRY,
    writes: [
      { op: 'update', key: 'k', value: 'v', expect: -1 },
      { op: 'delete', key: 'k', expect: -1 },
    ],
    afterWrites: [{ key: 'k', expect: RETRY }],
  },
]);

runDifferential('fail', [{ title: 'lookups and listing', name: 'x', keys: ['a', 'B', '', '\xff'], list: true }]);

test('fail: update and delete only when writable, and they fail with RETRY', async () => {
  const ro = await openTable(openOptions('fail', 'x'));
  assert.equal(ro.update, undefined);
  assert.equal(ro.delete, undefined);
  const rw = await openTable(openOptions('fail', 'x', { writable: true }));
  assert.deepEqual(await rw.update!('k', 'v', 0), { status: -1, error: DICT_ERR.RETRY });
  assert.deepEqual(await rw.delete!('k', 0), { status: -1, error: DICT_ERR.RETRY });
});
