import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, openTable, utf8ToBytes as u } from '../../../src/tables/index.js';
import { runConformance } from '../conformance.js';
import { openOptions } from '../conformance.js';
import { runDifferential } from '../../support/postmap.js';

const { DUP_WARN, DUP_IGNORE, DUP_REPLACE, UTF8_ACTIVE, SRC_RHS_IS_FILE, FIXED } = DICT_FLAG;

/** A source exercising the whole entry grammar. */
const GRAMMAR = u(
  [
    ' lead',
    'Foo\tBar Baz ',
    'foo dup',
    '"aa bb" cc',
    'gg\\ hh ii',
    'trail\\',
    'key:  v',
    'Straße x',
    'Ä y',
    'ς z',
    'noval',
    'cont first',
    '  second line',
    '#c',
    '\tthird',
    '"unb x',
    'empty ""',
    '# the end',
    '',
  ].join('\n'),
) + '\xff\xfe bad\n';

const GRAMMAR_WARNINGS_COMMON = [
  '{path}: logical line must not start with whitespace: " lead"',
  '{path}, line 3: duplicate entry: "foo"',
  '{path}, line 6: expected format: key whitespace value -- ignoring this line',
  '{path}, line 7: record is in "key: value" format; is this an alias file?',
  '{path}, line 11: expected format: key whitespace value -- ignoring this line',
  `{path}, line 16: unbalanced '"' in '"unb x' -- ignoring this line`,
];

runConformance('texthash', [
  {
    title: 'entry grammar, UTF-8 folding',
    file: GRAMMAR,
    fold: 'utf8',
    openFlags: DUP_WARN,
    implFlags: FIXED,
    warnings: [...GRAMMAR_WARNINGS_COMMON, '{path}, line 19: non-UTF-8 input "\xff\xfe bad" -- ignoring this line'],
    lookups: [
      { key: 'FOO', expect: { value: 'Bar Baz' } },
      { key: 'foo', expect: { value: 'Bar Baz' } },
      { key: '"aa bb"', expect: { value: 'cc' } },
      { key: '"AA BB"', expect: { value: 'cc' } },
      { key: 'aa bb', expect: 'notfound' },
      { key: 'gg\\ hh', expect: { value: 'ii' } },
      { key: 'key:', expect: { value: 'v' } },
      { key: u('STRASSE'), expect: { value: 'x' } },
      { key: u('straße'), expect: { value: 'x' } },
      { key: u('ä'), expect: { value: 'y' } },
      { key: u('Σ'), expect: { value: 'z' } },
      { key: 'cont', expect: { value: 'first  second line\tthird' } },
      { key: 'empty', expect: { value: '""' } },
      { key: 'lead', expect: 'notfound' },
      { key: 'trail\\', expect: 'notfound' },
      { key: '\xff\xfe', expect: 'notfound' },
      { key: '', expect: 'notfound' },
    ],
    sequence: [
      ['foo', 'Bar Baz'],
      ['"aa bb"', 'cc'],
      ['gg\\ hh', 'ii'],
      ['key:', 'v'],
      ['strasse', 'x'],
      [u('ä'), 'y'],
      [u('σ'), 'z'],
      ['cont', 'first  second line\tthird'],
      ['empty', '""'],
    ],
  },
  {
    title: 'entry grammar, ASCII folding without UTF-8 checks',
    file: GRAMMAR,
    fold: 'ascii',
    openFlags: DUP_WARN,
    warnings: GRAMMAR_WARNINGS_COMMON,
    lookups: [
      { key: 'FOO', expect: { value: 'Bar Baz' } },
      { key: u('STRAßE'), expect: { value: 'x' } },
      { key: u('STRASSE'), expect: 'notfound' },
      { key: u('Ä'), expect: { value: 'y' } },
      { key: u('ä'), expect: 'notfound' },
      { key: '\xff\xfe', expect: { value: 'bad' } },
    ],
  },
  {
    title: 'no folding',
    file: 'Key V1\nkey v2\n',
    fold: 'none',
    openFlags: DUP_WARN,
    warnings: [],
    lookups: [
      { key: 'Key', expect: { value: 'V1' } },
      { key: 'key', expect: { value: 'v2' } },
      { key: 'KEY', expect: 'notfound' },
    ],
    sequence: [
      ['Key', 'V1'],
      ['key', 'v2'],
    ],
  },
  {
    title: 'duplicates: ignore keeps the first silently',
    file: 'a 1\nb 2\nA 3\n',
    openFlags: DUP_IGNORE | DUP_WARN,
    warnings: [],
    lookups: [{ key: 'a', expect: { value: '1' } }],
    sequence: [
      ['a', '1'],
      ['b', '2'],
    ],
  },
  {
    title: 'duplicates: replace makes the last win',
    file: 'a 1\nb 2\nA 3\n',
    openFlags: DUP_REPLACE | DUP_WARN,
    warnings: [],
    lookups: [{ key: 'a', expect: { value: '3' } }],
  },
  {
    title: 'duplicates without a policy: warn and keep the first',
    file: 'a 1\nb 2\nA 3\n',
    openFlags: 0,
    warnings: ['{path}, line 3: duplicate entry: "A"'],
    lookups: [{ key: 'a', expect: { value: '1' } }],
  },
  {
    title: 'CRLF lines, comments inside continuations, empty file tail',
    file: 'k1 v1\r\nk2\r\n #x\r\n v2\r\n\r\n',
    warnings: [],
    lookups: [
      { key: 'k1', expect: { value: 'v1' } },
      { key: 'k2', expect: { value: 'v2' } },
    ],
  },
  {
    title: 'a NUL byte ends the line for the parser',
    file: 'a b\0c\nd\0 e\n',
    warnings: ['{path}, line 2: expected format: key whitespace value -- ignoring this line'],
    sequence: [['a', 'b']],
  },
  { title: 'empty file', file: '', warnings: [], sequence: [] },
  {
    title: 'values from files (-F)',
    file: 'one /dev/null\ntwo /dev/null, /dev/null\nthree /nonexistent/x\n',
    openFlags: SRC_RHS_IS_FILE,
    warnings: ['{path}, line 3: open /nonexistent/x: No such file or directory: skipping this entry'],
    sequence: [
      ['one', ''],
      ['two', 'Cg=='],
    ],
  },
  {
    title: 'UTF-8 checks without folding (postmap -f with smtputf8)',
    file: '\xe9t\xe9 1\nÉ 2\n'.replace('É', u('É')),
    fold: 'none',
    openFlags: UTF8_ACTIVE,
    warnings: ['{path}, line 1: non-UTF-8 input "\xe9t\xe9 1" -- ignoring this line'],
    sequence: [[u('É'), '2']],
  },
  { title: 'missing file', name: '/nonexistent/table', openError: 'open database /nonexistent/table: No such file or directory' },
  { title: 'directory', name: '/', openError: 'read /: Is a directory' },
  {
    title: 'writable open',
    file: 'a b\n',
    writable: true,
    openError: 'texthash:{path} map requires O_RDONLY access mode',
  },
]);

const KEYS = [
  'foo', 'FOO', 'Foo', '"aa bb"', '"AA BB"', 'aa bb', 'gg\\ hh', 'key:', 'cont', 'lead', 'trail\\', 'noval', 'empty',
  u('Straße'), u('STRASSE'), u('strasse'), u('STRAßE'), u('Ä'), u('ä'), u('ς'), u('σ'), u('Σ'), '\xff\xfe', '\xe4', '',
];

/**
 * A seeded mix of the lines the open path takes at once (ASCII key, whitespace, value) and of every kind it must
 * hand to the general reader: quotes, backslashes, "key:" lines, NUL, non-ASCII, continuations, comments, CR, key
 * without value, duplicates in other case.
 */
function mixedTable(seed: number, lines: number): { file: string; keys: string[] } {
  let x = seed;
  const rnd = (n: number) => ((x = (x * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const pick = <T,>(a: readonly T[]) => a[rnd(a.length)]!;
  const word = () => Array.from({ length: 1 + rnd(6) }, () => pick('abcXYZ09.-_@'.split(''))).join('');
  const out: string[] = [];
  const keys: string[] = [];
  for (let i = 0; i < lines; i++) {
    const k = word();
    keys.push(k, k.toLowerCase(), k.toUpperCase());
    switch (rnd(14)) {
      case 0: out.push(`"${k} q" ${word()}`); keys.push(`"${k} q"`); break;
      case 1: out.push(`${k}\\x ${word()}`); break;
      case 2: out.push(`${k}: ${word()}`); keys.push(`${k}:`); break;
      case 3: out.push(`${k} ${word()}\0tail`.replace('\\0', '\0')); break;
      case 4: out.push(`${k} v\xe4l`); break;
      case 5: out.push(`${k} ${word()}`, `  ${word()}`); break;
      case 6: out.push('# comment', `${k}\t${word()}  `); break;
      case 7: out.push(`${k} ${word()}\r`); break;
      case 8: out.push(`${k}`); break;
      case 9: out.push(`${k.toUpperCase()} ${word()}`, `${k.toLowerCase()} ${word()}`); break;
      default: out.push(`${k}${pick([' ', '\t', '  '])}${word()}${pick(['', ' ', '\t'])}`);
    }
  }
  return { file: out.join('\n') + '\n', keys: [...new Set(keys)].slice(0, 400) };
}

runDifferential('texthash', [
  { title: 'entry grammar', file: GRAMMAR, keys: KEYS, list: true },
  { title: 'generated mix of simple and odd lines (seed 1)', ...mixedTable(1, 300), list: true },
  { title: 'generated mix of simple and odd lines (seed 2)', ...mixedTable(2, 300), list: true },
  { title: 'duplicates, warn', file: 'a 1\nb 2\nA 3\nb 4\n', keys: ['a', 'A', 'b'], list: true },
  { title: 'duplicates, -r', file: 'a 1\nb 2\nA 3\n', keys: ['a', 'A'], list: true, postmapArgs: ['-r'], openFlags: DUP_REPLACE },
  { title: 'duplicates, -w', file: 'a 1\nb 2\nA 3\n', keys: ['a', 'A'], list: true, postmapArgs: ['-w'], openFlags: DUP_IGNORE },
  {
    title: 'continuations and comments',
    file: '# head\n  \nk1 a\n#x\n  b\n\tc\nk2 \n  v2  \nk3\tv3 # not a comment\n  # comment\nk4 ',
    keys: ['k1', 'k2', 'k3', 'k4'],
    list: true,
  },
  {
    title: 'non-ASCII keys and values',
    file: u('Straße x\nÄBC äbc\nς s\nİ dotted\nꭰ cherokee\nǅ dz\n') + 'lat\xe9 1\n',
    keys: [u('STRASSE'), u('äbc'), u('ΣΣ'), u('σ'), u('i̇'), u('Ꭰ'), u('ǆ'), u('Ǆ'), 'lat\xe9', 'LAT\xe9'],
    list: true,
  },
  { title: 'CRLF', file: 'k1 v1\r\nK2\r\n v2\r\n', keys: ['k1', 'k2', 'K2'], list: true },
  { title: 'missing file', name: '/nonexistent/table', keys: ['a'] },
  { title: 'directory', name: '/', keys: ['a'] },
  { title: 'empty file', file: '', keys: ['a', ''], list: true },
  {
    title: 'values from files (-F)',
    file: 'one /dev/null\ntwo {dir}/f1\nthree /nonexistent/x\nfour ,\nfive {dir}/f2 ,\n',
    files: { f1: 'hello', f2: u('wörld') },
    keys: ['one', 'two', 'three', 'five'],
    list: true,
    postmapArgs: ['-F'],
    openFlags: SRC_RHS_IS_FILE,
  },
]);

test('texthash: changed() follows the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'thash-'));
  try {
    const path = join(dir, 'src');
    writeFileSync(path, 'a 1\n');
    utimesSync(path, 1000, 1000);
    const table = await openTable(openOptions('texthash', path));
    assert.equal(await table.changed?.(), false);
    writeFileSync(path, 'a 2\n');
    assert.equal(await table.changed?.(), true);
    assert.deepEqual(await table.lookup('a', 0), { found: true, value: '1' });
    rmSync(path);
    assert.equal(await table.changed?.(), true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('texthash: lookup results are not found for absent keys, never errors', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'thash-'));
  try {
    const path = join(dir, 'src');
    writeFileSync(path, 'a 1\n');
    const table = await openTable(openOptions('texthash', path));
    assert.deepEqual(await table.lookup('b', 0), { found: false, error: DICT_ERR.NONE });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
