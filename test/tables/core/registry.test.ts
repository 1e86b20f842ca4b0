import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import {
  NOT_FOUND,
  TABLE_TYPES,
  TableOpenError,
  TableRegistry,
  defaultRegistry,
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

test('every built-in type is one TableType in TABLE_TYPES, registered under its name, with the flags its tables report', async () => {
  const names = TABLE_TYPES.map((t) => t.name);
  assert.equal(new Set(names).size, names.length, 'no type listed twice');
  for (const t of TABLE_TYPES) {
    assert.equal(defaultRegistry.get(t.name), t, t.name);
    assert.deepEqual(tableTypeInfo(t.name), { implFlags: t.implFlags, writable: t.writable, ...(t.loadsSource ? { loadsSource: true } : {}) });
  }
  // Types whose tables open without a file or a server: the opened table's flags are the type's.
  for (const [type, name] of [['static', 'x'], ['inline', '{a=b}'], ['fail', 'x'], ['environ', 'x'], ['randmap', '{a,b}']] as const) {
    const t = await openTable(openOptions(type, name));
    assert.equal(t.implFlags & (DICT_FLAG.FIXED | DICT_FLAG.PATTERN), defaultRegistry.get(type)!.implFlags, type);
  }
});

test('a registry knows the types of specs (composite components included) and FIXED-ness before opening', () => {
  const r = defaultRegistry;
  assert.deepEqual(
    [...r.typesIn(['proxy:pipemap:{texthash:/a, unionmap:{proxy:cidr:/b, inline:{x=y}}}', 'regexp:/c', 'nonsense'])].sort(),
    ['cidr', 'inline', 'pipemap', 'regexp', 'texthash', 'unionmap'],
  );
  assert.equal(r.typeFixed('texthash:/a'), true);
  assert.equal(r.typeFixed('regexp:/a'), false);
  assert.equal(r.typeFixed('pipemap:{regexp:/a, texthash:/b}'), false, 'a composite is what its first component is');
  assert.equal(r.typeFixed('unionmap:{pipemap:{lmdb:/a}, cidr:/b}'), true);
  assert.equal(r.typeFixed('nosuch:/a'), undefined);
  assert.equal(r.typeFixed('pipemap:{broken'), undefined);
});

test('configure and warm-ups: a function shared by several types runs once; warm-ups in order, for approved types only, failures reported', async () => {
  const calls: string[] = [];
  const shared = (approved: ReadonlySet<string>) => {
    calls.push(`shared ${[...approved].sort().join(',')}`);
  };
  const sharedConfigure = () => calls.push('configure shared');
  const base = { open: () => ({ type: 'x', name: 'x', implFlags: 0, lookup: () => NOT_FOUND }), implFlags: 0, writable: false };
  const r = new TableRegistry([
    { ...base, name: 'a', warmUp: shared, configure: sharedConfigure },
    { ...base, name: 'b', warmUp: shared, configure: sharedConfigure },
    { ...base, name: 'c', warmUp: () => { calls.push('c'); throw new Error('no addon'); }, configure: () => calls.push('configure c') },
    { ...base, name: 'd', warmUp: async () => { await new Promise((res) => setTimeout(res, 5)); calls.push('d'); } },
    { ...base, name: 'e', warmUp: () => { calls.push('e'); } },
  ]);
  r.configure({ param: () => undefined, env: {}, warn: () => {} });
  const warnings: string[] = [];
  await r.warmUp(new Set(['b', 'a', 'c', 'd']), (w) => warnings.push(w));
  assert.deepEqual(calls, ['configure shared', 'configure c', 'shared a,b,c,d', 'c', 'd']);
  assert.deepEqual(warnings, ['start-up warm-up of c: no addon']);
});

test('environ: configure gives its tables the daemon environment (import_environment), not the whole process environment', async () => {
  const r = new TableRegistry(TABLE_TYPES);
  process.env.PMD_REGISTRY_TEST_HIDDEN = 'hidden';
  try {
    r.configure({
      param: (n) => (n === 'import_environment' ? 'MAIL_CONFIG PMD_SET=set' : undefined),
      env: { ...process.env, MAIL_CONFIG: '/etc/x' },
      warn: () => {},
    });
    const t = await r.open(openOptions('environ', 'x'));
    assert.deepEqual(await t.lookup('MAIL_CONFIG', 0), { found: true, value: '/etc/x' });
    assert.deepEqual(await t.lookup('PMD_SET', 0), { found: true, value: 'set' });
    assert.deepEqual(await t.lookup('PMD_REGISTRY_TEST_HIDDEN', 0), NOT_FOUND);
  } finally {
    delete process.env.PMD_REGISTRY_TEST_HIDDEN;
    r.configure({ param: () => undefined, env: process.env, warn: () => {} }); // back to the process environment
  }
});
