import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, utf8ToBytes as u } from '../../../src/tables/index.js';
import { runConformance } from '../conformance.js';
import { runDifferential } from '../../support/postmap.js';

const { SRC_RHS_IS_FILE, FIXED } = DICT_FLAG;
const ANY = ['a', 'A', '', u('Straße'), '\xff'];

runConformance('static', [
  {
    title: 'plain value',
    name: 'Some Value',
    implFlags: FIXED,
    warnings: [],
    // The UTF-8 layer answers "not found" for a non-UTF-8 key before the table sees it.
    lookups: ANY.map((key) => ({ key, expect: key === '\xff' ? ('notfound' as const) : { value: 'Some Value' } })),
    sequence: 'unsupported',
  },
  { title: 'any key without UTF-8 layer', name: 'v', fold: 'ascii', lookups: ANY.map((key) => ({ key, expect: { value: 'v' } })) },
  { title: 'braced value is trimmed', name: '{ hello world }', lookups: [{ key: 'x', expect: { value: 'hello world' } }] },
  { title: 'empty braces give an empty value', name: '{}', lookups: [{ key: 'x', expect: { value: '' } }] },
  { title: 'nested braces stay', name: '{ a {b} c }', lookups: [{ key: 'x', expect: { value: 'a {b} c' } }] },
  { title: 'unbraced text stays as is', name: 'a} {b', lookups: [{ key: 'x', expect: { value: 'a} {b' } }] },
  {
    title: 'non-UTF-8 value is a config error under the UTF-8 layer',
    name: '\xff',
    lookups: [{ key: 'x', expect: { error: DICT_ERR.CONFIG } }],
  },
  { title: 'non-UTF-8 value without UTF-8 layer', name: '\xff', fold: 'ascii', lookups: [{ key: 'x', expect: { value: '\xff' } }] },
  { title: 'text after the braces', name: '{a}{b}', openError: `bad static:name syntax: syntax error after '}' in "{a}{b}"` },
  { title: 'unbalanced braces', name: '{a', openError: `bad static:name syntax: missing '}' in "{a"` },
  { title: 'value from files (-F)', name: '/dev/null,/dev/null', openFlags: SRC_RHS_IS_FILE, lookups: [{ key: 'x', expect: { value: 'Cg==' } }] },
  { title: 'missing file (-F)', name: '/nonexistent', openFlags: SRC_RHS_IS_FILE, openError: 'open /nonexistent: No such file or directory' },
  { title: 'empty file list (-F)', name: '{ }', openFlags: SRC_RHS_IS_FILE, openError: "empty pathname list: >><<'" },
]);

const KEYS = ['a', 'A', '', u('Straße'), '\xff', 'x y'];
const TWO = ['utf8', 'ascii'] as const;

runDifferential('static', [
  { title: 'plain value', name: 'Some Value', keys: KEYS, list: true },
  { title: 'braced value', name: '{ hello world }', keys: KEYS },
  { title: 'empty braces', name: '{}', keys: KEYS },
  { title: 'nested braces', name: '{ a {b} c }', keys: KEYS },
  { title: 'unbraced', name: 'a} {b', keys: KEYS },
  { title: 'UTF-8 value', name: u('wörld'), keys: KEYS },
  { title: 'non-UTF-8 value', name: '\xff', keys: ['x'], modes: TWO },
  { title: 'text after braces', name: '{a}{b}', keys: ['x'], modes: TWO },
  { title: 'unbalanced braces', name: '{a', keys: ['x'], modes: TWO },
  { title: 'missing file (-F)', name: '/nonexistent', keys: ['x'], modes: TWO, postmapArgs: ['-F'], openFlags: SRC_RHS_IS_FILE },
  { title: 'empty file list (-F)', name: '{ }', keys: ['x'], modes: TWO, postmapArgs: ['-F'], openFlags: SRC_RHS_IS_FILE },
  { title: 'value from file (-F)', name: '/dev/null', keys: ['x'], modes: TWO, postmapArgs: ['-F'], openFlags: SRC_RHS_IS_FILE },
]);
