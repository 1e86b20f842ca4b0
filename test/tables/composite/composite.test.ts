/** pipemap and unionmap: conformance cases and differential runs against postmap. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, TableOpenError, openTable, utf8ToBytes as u, type Bytes, type Table } from '../../../src/tables/index.js';
import { splitCompositeName } from '../../../src/tables/composite/composite.js';
import { dictLookup, openOptions, outcome, runConformance } from '../conformance.js';
import { runDifferential } from '../../support/postmap.js';

const { FIXED, PATTERN } = DICT_FLAG;
const v = (value: Bytes) => ({ value });
const NF = 'notfound' as const;
const RETRY = { error: DICT_ERR.RETRY };
const CONFIG = { error: DICT_ERR.CONFIG };

/** A texthash file shared by the cases (components name files by path). */
const dir = mkdtempSync(join(tmpdir(), 'composite-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const HOSTS = join(dir, 'hosts');
writeFileSync(HOSTS, 'host-a relay:[a.example]\nrelay:[a.example] final-a\nStraße street\n');
utimesSync(HOSTS, 1_000_000_000, 1_000_000_000);

const syntax = (type: string, name: string) => `bad syntax: "${type}:${name}"; need "${type}:{type:name...}"`;

runConformance('pipemap', [
  {
    title: 'spec 13.4: each value is the next key',
    name: '{inline:{a=b}, inline:{b=c}}',
    implFlags: FIXED,
    warnings: [],
    lookups: [
      { key: 'A', expect: v('c') },
      { key: 'a', expect: v('c') },
      { key: 'b', expect: NF },
    ],
    sequence: 'unsupported',
  },
  {
    title: 'FIXED components fold the intermediate value again',
    name: '{inline:{a=B}, inline:{b=c}}',
    lookups: [{ key: 'a', expect: v('c') }],
  },
  {
    title: 'without folding the intermediate value keeps its case',
    name: '{inline:{a=B}, inline:{b=c}}',
    fold: 'none',
    lookups: [
      { key: 'a', expect: NF },
      { key: 'A', expect: NF },
    ],
  },
  {
    title: 'cidr then texthash: PATTERN from the first component',
    name: `{cidr:{{1.2.3.0/24 Host-A}, {5.0.0.0/8 nohost}}, texthash:${HOSTS}}`,
    implFlags: PATTERN,
    lookups: [
      { key: '1.2.3.4', expect: v('relay:[a.example]') },
      { key: '5.1.1.1', expect: NF },
      { key: '9.9.9.9', expect: NF },
    ],
  },
  {
    title: 'three stages',
    name: `{texthash:${HOSTS}, texthash:${HOSTS}, static:{done it}}`,
    lookups: [
      { key: 'HOST-A', expect: v('done it') },
      { key: 'relay:[a.example]', expect: NF },
    ],
  },
  {
    title: 'an empty intermediate value is looked up; an empty last value is found',
    name: '{inline:{a=, b=x}, static:{}}',
    lookups: [
      { key: 'a', expect: v('') },
      { key: 'b', expect: v('') },
      { key: 'c', expect: NF },
    ],
  },
  {
    title: 'a component error aborts; a miss before it does not reach it',
    name: '{inline:{a=b}, fail:x}',
    lookups: [
      { key: 'a', expect: RETRY },
      { key: 'z', expect: NF },
    ],
  },
  {
    title: "a component's non-UTF-8 value is a configuration error",
    name: '{regexp:{{/^(.)/ $1}}, static:ok}',
    implFlags: PATTERN,
    lookups: [
      { key: u('é'), expect: CONFIG },
      { key: 'x', expect: v('ok') },
    ],
  },
  {
    title: 'without the UTF-8 layer the byte passes',
    name: '{regexp:{{/^(.)/ $1}}, static:ok}',
    fold: 'ascii',
    lookups: [{ key: u('é'), expect: v('ok') }],
  },
  { title: 'empty braces', name: '{}', openError: syntax('pipemap', '{}') },
  { title: 'only separators', name: '{ , }', openError: syntax('pipemap', '{ , }') },
  { title: 'no braces', name: 'inline:{a=b}', openError: syntax('pipemap', 'inline:{a=b}') },
  { title: 'text after the braces', name: '{static:x}y', openError: syntax('pipemap', '{static:x}y') },
  { title: 'a component without a colon', name: '{static:x, nocolon}', openError: syntax('pipemap', '{static:x, nocolon}') },
  { title: "a component's open error comes first", name: '{cidr:/nonexistent/x, nocolon}', openError: 'open /nonexistent/x: No such file or directory' },
  { title: 'unknown component type', name: '{static:x, nosuch:y}', openError: 'unsupported dictionary type: nosuch' },
  { title: 'empty component type', name: '{:x}', openError: 'open dictionary: expecting "type:name" form instead of ":x"' },
  { title: 'write access refused', name: '{static:x}', writable: true, openError: 'pipemap:{static:x} map requires O_RDONLY access mode' },
]);

runConformance('unionmap', [
  {
    title: 'spec 13.4: values joined in component order',
    name: '{regexp:{{/(.)/ $1}}, inline:{a=b}}',
    implFlags: PATTERN,
    warnings: [],
    lookups: [
      { key: 'A', expect: v('A,b') },
      { key: 'x', expect: v('x') },
    ],
    sequence: 'unsupported',
  },
  {
    title: 'found values only',
    name: '{inline:{a=1}, static:2, inline:{a=3}}',
    implFlags: FIXED,
    lookups: [
      { key: 'a', expect: v('1,2,3') },
      { key: 'b', expect: v('2') },
    ],
  },
  {
    title: 'Postfix source test: two regexps',
    name: '{regexp:{{/a|c/ 1}},regexp:{{/b|c/ 2}}}',
    lookups: [
      { key: 'a', expect: v('1') },
      { key: 'b', expect: v('2') },
      { key: 'c', expect: v('1,2') },
      { key: 'd', expect: NF },
    ],
  },
  {
    title: 'empty values: no comma before the first non-empty one; all empty is not found',
    name: '{static:{}, static:x, static:{}}',
    lookups: [{ key: 'k', expect: v('x,') }],
  },
  { title: 'only empty values', name: '{static:{}, inline:{k=}}', lookups: [{ key: 'k', expect: NF }] },
  {
    title: 'cidr and texthash',
    name: `{cidr:{{1.2.3.0/24 net}}, texthash:${HOSTS}, inline:{1.2.3.4=four}}`,
    lookups: [
      { key: '1.2.3.4', expect: v('net,four') },
      { key: 'Host-A', expect: v('relay:[a.example]') },
      { key: u('STRASSE'), expect: v('street') },
    ],
  },
  {
    title: 'a FIXED first component makes the key folded for all',
    name: '{inline:{abc=b}, regexp:{{/(.*)/ $1}}}',
    implFlags: FIXED,
    lookups: [{ key: 'AbC', expect: v('b,abc') }],
  },
  {
    title: 'any error aborts',
    name: '{inline:{a=1}, fail:x, static:y}',
    lookups: [
      { key: 'a', expect: RETRY },
      { key: 'b', expect: RETRY },
    ],
  },
  { title: 'bad syntax', name: '{}', openError: syntax('unionmap', '{}') },
  { title: 'component open error', name: '{static:x, texthash:/nonexistent/y}', openError: 'open database /nonexistent/y: No such file or directory' },
  { title: 'write access refused', name: '{static:x}', writable: true, openError: 'unionmap:{static:x} map requires O_RDONLY access mode' },
]);

const ALL_KEYS = ['a', 'A', 'b', 'x', '1.2.3.4', '5.1.1.1', 'host-a', 'HOST-A', u('é'), u('Straße'), u('STRASSE')];

runDifferential('pipemap', [
  { title: 'spec 13.4', name: '{inline:{a=b}, inline:{b=c}}', keys: ['A', 'a', 'b'] },
  { title: 'refolding', name: '{inline:{a=B}, inline:{b=c}}', keys: ['a', 'A'] },
  {
    title: 'cidr then texthash',
    name: `{cidr:{{1.2.3.0/24 Host-A}, {5.0.0.0/8 nohost}}, texthash:${HOSTS}}`,
    keys: ['1.2.3.4', '5.1.1.1', '9.9.9.9', 'x'],
  },
  { title: 'three stages', name: `{texthash:${HOSTS}, texthash:${HOSTS}, static:{done it}}`, keys: ALL_KEYS },
  { title: 'empty values', name: '{inline:{a=, b=x}, static:{}}', keys: ['a', 'b', 'c'], modes: ['utf8'] },
  // (no blanks in names whose lookups fail: the harness reads "table NAME: query error" up to a blank)
  { title: 'regexp then static', name: '{regexp:{{/^(.)/\t$1}},static:ok}', keys: [u('é'), 'x'], modes: ['utf8', 'ascii'] },
  { title: 'regexp then inline', name: '{regexp:{{/^(.*)$/ $1}}, inline:{abc=found}}', keys: ['AbC', 'abc'] },
  { title: 'component error', name: '{inline:{a=b},fail:x}', keys: ['a', 'z'], modes: ['utf8'] },
  { title: 'bad syntax', name: '{static:x, nocolon}', keys: ['a'], modes: ['utf8'] },
  { title: 'component open error', name: '{cidr:/nonexistent/x, nocolon}', keys: ['a'], modes: ['ascii'] },
]);

runDifferential('unionmap', [
  { title: 'spec 13.4', name: '{regexp:{{/(.)/ $1}}, inline:{a=b}}', keys: ['A', 'a', 'x'] },
  { title: 'joined values', name: '{inline:{a=1}, static:2, inline:{a=3}}', keys: ['a', 'A', 'b'] },
  { title: 'two regexps', name: '{regexp:{{/a|c/ 1}},regexp:{{/b|c/ 2}}}', keys: ['a', 'b', 'c', 'd'], modes: ['utf8'] },
  { title: 'empty values', name: '{static:{}, static:x, static:{}}', keys: ['k'], modes: ['utf8'] },
  { title: 'only empty values', name: '{static:{}, inline:{k=}}', keys: ['k', 'j'], modes: ['utf8'] },
  { title: 'cidr and texthash', name: `{cidr:{{1.2.3.0/24 net}}, texthash:${HOSTS}, inline:{1.2.3.4=four}}`, keys: ALL_KEYS },
  // Postfix without the UTF-8 layer hands later components the unfolded key; the server folds keys of FIXED tables first.
  { title: 'FIXED first component', name: '{inline:{abc=b}, regexp:{{/(.*)/ $1}}}', keys: ['AbC', 'x'], modes: ['utf8', 'none', 'none-ascii'] },
  { title: 'component error', name: '{inline:{a=1},fail:x,static:y}', keys: ['a'], modes: ['utf8'] },
  { title: 'component open error', name: '{static:x, texthash:/nonexistent/y}', keys: ['a'], modes: ['utf8'] },
]);

test('splitCompositeName', () => {
  assert.deepEqual(splitCompositeName('{a:b, c:{d, e} f:g}'), ['a:b', 'c:{d, e}', 'f:g']);
  assert.deepEqual(splitCompositeName('{ {x:y} }'), ['{x:y}']);
  for (const bad of ['', 'x', '{}', '{ ,\t}', '{a:b', '{a:b}}', '{a:b}c']) assert.equal(splitCompositeName(bad), null, bad);
});

test('composites close their components and report their changes', async () => {
  const local = mkdtempSync(join(tmpdir(), 'composite-ch-'));
  try {
    const path = join(local, 'c');
    writeFileSync(path, '1.2.3.4 x\n');
    utimesSync(path, 1000, 1000);
    const t = await openTable(openOptions('unionmap', `{static:y, cidr:${path}}`));
    assert.equal(await t.changed?.(), false);
    writeFileSync(path, '1.2.3.4 z\n');
    assert.equal(await t.changed?.(), true);
    await t.close?.();
  } finally {
    rmSync(local, { recursive: true, force: true });
  }
});

test('asynchronous components are awaited in order', async () => {
  const { registerTableType, NOT_FOUND, found } = await import('../../../src/tables/index.js');
  const seen: string[] = [];
  registerTableType('slowtest', (o) => ({
    type: 'slowtest',
    name: o.name,
    implFlags: PATTERN,
    lookup: async (key: Bytes) => {
      await new Promise((r) => setTimeout(r, 1));
      seen.push(`${o.name}:${key}`);
      return key === 'miss' ? NOT_FOUND : found(`${o.name}(${key})`);
    },
  }));
  const opts = openOptions('pipemap', '{slowtest:f, slowtest:g}');
  const pipe: Table = await openTable(opts);
  assert.deepEqual(outcome(await dictLookup(pipe, 'k', opts)), v('g(f(k))'));
  const uopts = openOptions('unionmap', '{slowtest:f, static:s, slowtest:g}');
  const union: Table = await openTable(uopts);
  assert.deepEqual(outcome(await dictLookup(union, 'k', uopts)), v('f(k),s,g(k)'));
  assert.deepEqual(outcome(await dictLookup(union, 'miss', uopts)), v('s'));
  assert.deepEqual(seen, ['f:k', 'g:f(k)', 'f:k', 'g:k', 'f:miss', 'g:miss']);
  await assert.rejects(openTable(openOptions('pipemap', '{slowtest:f, nocolon}')), TableOpenError);
});
