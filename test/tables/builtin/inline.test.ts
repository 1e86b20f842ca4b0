import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { utf8ToBytes as u } from '../../../src/tables/index.js';
import { runConformance } from '../conformance.js';
import { runDifferential } from '../../support/postmap.js';

const { SRC_RHS_IS_FILE, FIXED } = DICT_FLAG;
const need = 'need "inline:{name=value...}"';

runConformance('inline', [
  {
    title: 'last duplicate wins, in first-seen order',
    name: '{a=b, B=x, A=c}',
    implFlags: FIXED,
    warnings: [],
    lookups: [
      { key: 'a', expect: { value: 'c' } },
      { key: 'A', expect: { value: 'c' } },
      { key: 'b', expect: { value: 'x' } },
      { key: 'c', expect: 'notfound' },
    ],
    sequence: [
      ['a', 'c'],
      ['b', 'x'],
    ],
  },
  {
    title: 'braced items, quoted keys, empty values',
    name: '{ {"a b" = c d}, K3=, { e = f, g } ,a\\=b=c}',
    lookups: [
      { key: '"a b"', expect: { value: 'c d' } },
      { key: 'a b', expect: 'notfound' },
      { key: 'k3', expect: { value: '' } },
      { key: 'e', expect: { value: 'f, g' } },
      { key: 'a\\=b', expect: { value: 'c' } },
    ],
    sequence: [
      ['"a b"', 'c d'],
      ['k3', ''],
      ['e', 'f, g'],
      ['a\\=b', 'c'],
    ],
  },
  {
    title: 'UTF-8 folding',
    name: u('{Ä=1, Straße=2, ς=3}'),
    lookups: [
      { key: u('ä'), expect: { value: '1' } },
      { key: u('STRASSE'), expect: { value: '2' } },
      { key: u('Σ'), expect: { value: '3' } },
    ],
    sequence: [
      [u('ä'), '1'],
      ['strasse', '2'],
      [u('σ'), '3'],
    ],
  },
  {
    title: 'ASCII folding',
    name: u('{Ä=1, AB=2}'),
    fold: 'ascii',
    lookups: [
      { key: u('Ä'), expect: { value: '1' } },
      { key: u('ä'), expect: 'notfound' },
      { key: 'ab', expect: { value: '2' } },
    ],
  },
  {
    title: 'no folding',
    name: '{AB=1}',
    fold: 'none',
    lookups: [
      { key: 'AB', expect: { value: '1' } },
      { key: 'ab', expect: 'notfound' },
    ],
  },
  { title: 'non-UTF-8 name accepted without UTF-8 checks', name: '{\xff=1}', fold: 'ascii', sequence: [['\xff', '1']] },
  {
    title: 'values from files (-F)',
    name: '{a=/dev/null, { b = /dev/null /dev/null }}',
    openFlags: SRC_RHS_IS_FILE,
    sequence: [
      ['a', ''],
      ['b', 'Cg=='],
    ],
  },
  {
    title: 'missing file with -F',
    name: '{a=/nonexistent}',
    openFlags: SRC_RHS_IS_FILE,
    openError: 'open /nonexistent: No such file or directory: "inline:{a=/nonexistent}"; need "inline:{name=filename...}"',
  },
  { title: 'spaces around =', name: '{ foo = bar }', openError: `missing '=' after attribute name: "inline:{ foo = bar }"; ${need}` },
  { title: 'empty braces', name: '{}', openError: `bad syntax: "inline:{}"; ${need}` },
  { title: 'blank inside', name: '{ , }', openError: `empty table: "inline:{ , }"; ${need}` },
  { title: 'unbalanced quote', name: '{"a b"=c}', openError: `unbalanced '"': "inline:{"a b"=c}"; ${need}` },
  { title: 'text after the braces', name: '{a=b}x', openError: `bad syntax: "inline:{a=b}x"; ${need}` },
  { title: 'no braces', name: 'a=b', openError: `bad syntax: "inline:a=b"; ${need}` },
  { title: 'unbalanced braces', name: '{{a=b}', openError: `bad syntax: "inline:{{a=b}"; ${need}` },
  {
    title: 'bad inner group',
    name: '{a=b,{c=d}x}',
    openError: `syntax error after '}' in "{c=d}x": "inline:{a=b,{c=d}x}"; ${need}`,
  },
  { title: 'empty key', name: '{=x}', lookups: [{ key: '', expect: { value: 'x' } }] },
  { title: 'no key', name: '{ {  } }', openError: `no key found; expected format: key = value: "inline:{ {  } }"; ${need}` },
  { title: 'non-UTF-8 name', name: '{\xff=1}', openError: `bad UTF-8 syntax: "inline:{\xff=1}"; ${need}` },
  { title: 'writable open', name: '{a=b}', writable: true, openError: 'inline:{a=b} map requires O_RDONLY access mode' },
]);

const KEYS = ['a', 'A', 'b', 'B', '"a b"', 'a b', 'k3', 'K3', 'e', 'a\\=b', u('ä'), u('Ä'), 'strasse', u('STRAßE'), u('σ'), ''];
const ERROR_MODES = ['utf8', 'ascii'] as const;

runDifferential('inline', [
  { title: 'duplicates', name: '{a=b, B=x, A=c}', keys: KEYS, list: true },
  { title: 'braced items', name: '{ {"a b" = c d}, K3=, { e = f, g } ,a\\=b=c}', keys: KEYS, list: true },
  { title: 'non-ASCII keys', name: u('{Ä=1, Straße=2, ς=3, ǅ=4}'), keys: [...KEYS, u('ǆ'), u('Ǆ')], list: true },
  { title: 'non-UTF-8 name', name: '{\xff=1, a=2}', keys: ['\xff', 'a'], list: true, modes: ERROR_MODES },
  { title: 'spaces around =', name: '{ foo = bar }', keys: ['foo'], modes: ERROR_MODES },
  { title: 'empty braces', name: '{}', keys: ['a'], modes: ERROR_MODES },
  { title: 'blank inside', name: '{ , }', keys: ['a'], modes: ERROR_MODES },
  { title: 'unbalanced quote', name: '{"a b"=c}', keys: ['a'], modes: ERROR_MODES },
  { title: 'bad inner group', name: '{a=b,{c=d}x}', keys: ['a'], modes: ERROR_MODES },
  { title: 'empty key', name: '{=x}', keys: ['a', ''], modes: ERROR_MODES },
  { title: 'no key', name: '{ {  } }', keys: ['a'], modes: ERROR_MODES },
  {
    title: 'values from files (-F)',
    name: '{a=/dev/null, b=/nonexistent}',
    keys: ['a'],
    postmapArgs: ['-F'],
    openFlags: SRC_RHS_IS_FILE,
    modes: ERROR_MODES,
  },
]);
