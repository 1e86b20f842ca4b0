import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { environOpener, openTable, utf8ToBytes as u } from '../../../src/tables/index.js';
import { openOptions, runConformance } from '../conformance.js';
import { configDirFor, runDifferential } from '../../support/postmap.js';

const SNAPSHOT = { FOO: 'bar', lower: 'v', LANG: 'C', EMPTY: '', UTF: 'wörld', straße: 'x', 'A=B': 'y' };

runConformance(
  'environ',
  [
    {
      title: 'folded keys find lower-case names only',
      name: 'ignored',
      implFlags: DICT_FLAG.FIXED,
      warnings: [],
      lookups: [
        { key: 'FOO', expect: 'notfound' },
        { key: 'lower', expect: { value: 'v' } },
        { key: 'LOWER', expect: { value: 'v' } },
        { key: 'EMPTY', expect: 'notfound' },
        { key: u('STRAßE'), expect: 'notfound' },
        { key: '', expect: 'notfound' },
      ],
      sequence: 'unsupported',
    },
    {
      title: 'no folding',
      name: 'x',
      fold: 'none',
      lookups: [
        { key: 'FOO', expect: { value: 'bar' } },
        { key: 'foo', expect: 'notfound' },
        { key: 'EMPTY', expect: { value: '' } },
        { key: 'UTF', expect: { value: u('wörld') } },
        { key: u('straße'), expect: { value: 'x' } },
        { key: 'A', expect: 'notfound' },
        { key: 'A=B', expect: 'notfound' },
        { key: '\xff', expect: 'notfound' },
      ],
    },
  ],
  { opener: environOpener(SNAPSHOT) },
);

// postmap runs with this environment; it sets LANG=C and MAIL_CONFIG itself.
const ENV = {
  PATH: '/usr/sbin:/usr/bin:/bin',
  FOO: 'bar',
  foo: 'low',
  lower: 'v',
  LANG: 'de_DE.UTF-8',
  EMPTY: '',
  UTF: 'wörld',
  straße: 'x',
};
const KEYS = ['LANG', 'lang', 'FOO', 'foo', 'Foo', 'lower', 'LOWER', 'EMPTY', 'empty', 'PATH', 'MAIL_CONFIG', 'UTF', 'utf',
  u('straße'), u('STRASSE'), 'NOPE', '', '\xff', 'A=B'];

runDifferential('environ', [{ title: 'environment lookups', name: 'x', keys: KEYS, env: ENV, list: true }], {
  opener: (_s, mode) => environOpener({ ...ENV, LANG: 'C', MAIL_CONFIG: configDirFor(mode) }),
});

test('environ: update sets the variable when writable', async () => {
  const env: Record<string, string | undefined> = {};
  const open = environOpener(env);
  assert.equal((await open(openOptions('environ', 'x'))).update, undefined);
  const table = await open(openOptions('environ', 'x', { writable: true, fold: 'none' }));
  assert.deepEqual(await table.update!(u('Käy'), u('välue'), 0), { status: 0, error: 0 });
  assert.equal(env['Käy'], 'välue');
  assert.deepEqual(await table.lookup(u('Käy'), 0), { found: true, value: u('välue') });
});

test('environ: the default opener reads process.env', async () => {
  process.env.PROXYMAPD_TEST_VAR = 'set';
  const table = await openTable(openOptions('environ', 'x'));
  assert.deepEqual(await table.lookup('PROXYMAPD_TEST_VAR', 0), { found: true, value: 'set' });
  delete process.env.PROXYMAPD_TEST_VAR;
  assert.deepEqual(await table.lookup('PROXYMAPD_TEST_VAR', 0), { found: false, error: 0 });
});
