import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import {
  NOT_FOUND,
  TableOpenError,
  openTable,
  registerTableType,
  splitTableSpec,
  tableTypeInfo,
  tableTypes,
} from '../../../src/tables/index.js';
import { openOptions } from '../conformance.js';
import { runPostmap, skipPostmap } from '../../support/postmap.js';

const typeName = (spec: string) => `open dictionary: expecting "type:name" form instead of "${spec}"`;

test('splitTableSpec splits at the first colon', () => {
  assert.deepEqual(splitTableSpec('hash:/etc/aliases'), { type: 'hash', name: '/etc/aliases' });
  assert.deepEqual(splitTableSpec('pipemap:{inline:{a=b},cidr:/x}'), { type: 'pipemap', name: '{inline:{a=b},cidr:/x}' });
  assert.deepEqual(splitTableSpec('a::'), { type: 'a', name: ':' });
  for (const bad of ['', 'nocolon', ':name', 'type:', ':']) {
    assert.throws(() => splitTableSpec(bad), (e: unknown) => e instanceof TableOpenError && e.message === typeName(bad));
  }
});

test('openTable: unknown types and empty parts', async () => {
  await assert.rejects(openTable(openOptions('nosuch', 'x')), new TableOpenError('unsupported dictionary type: nosuch'));
  await assert.rejects(openTable(openOptions('static', '')), new TableOpenError(typeName('static:')));
});

test('built-in types are registered with their flags', () => {
  for (const t of ['texthash', 'inline', 'static', 'fail', 'environ', 'unix']) assert.ok(tableTypes().includes(t), t);
  assert.equal(tableTypeInfo('fail')?.implFlags, DICT_FLAG.PATTERN);
  assert.equal(tableTypeInfo('texthash')?.implFlags, DICT_FLAG.FIXED);
  assert.equal(tableTypeInfo('nosuch'), undefined);
});

test('registerTableType adds a type', async () => {
  registerTableType('testonly', (opts) => ({ type: 'testonly', name: opts.name, implFlags: 0, lookup: () => NOT_FOUND }));
  const t = await openTable(openOptions('testonly', 'n'));
  assert.equal(t.name, 'n');
});

test('messages match postmap', { skip: skipPostmap }, async () => {
  const unknown = await openTable(openOptions('nosuch', 'x')).catch((e: Error) => e.message);
  assert.equal((await runPostmap('utf8', ['-q', 'k', 'nosuch:x'])).fatal, unknown);
  const malformed = (() => {
    try {
      return splitTableSpec('static:').type;
    } catch (e) {
      return (e as Error).message;
    }
  })();
  assert.equal((await runPostmap('utf8', ['-q', 'k', 'static:'])).fatal, malformed);
});
