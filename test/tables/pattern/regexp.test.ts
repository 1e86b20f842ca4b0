/**
 * regexp: tables. Expectations are Postfix 3.7.11's (spec tables-files.md
 * §8, §9, §13.1); the differential part asks the real postmap the same
 * questions.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ENGINE, NATIVE_ADDON_PATH, RULE_OP, loadNative } from '../../../src/addon/index.js';
import { UNWRITTEN, compileAll, compileOne, matcher } from './engine-probe.js';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, openTable, utf8ToBytes as u, type Table, type TableOpenOptions } from '../../../src/tables/index.js';
import { openOptions, runConformance, type ConformanceCase } from '../conformance.js';
import { runDifferential, runPostmap, skipPostmap, type DiffMode, type DiffScenario } from '../../support/postmap.js';

const { UTF8_ACTIVE, NO_REGSUB, FOLD_MUL, SRC_RHS_IS_FILE, PATTERN } = DICT_FLAG;

/** Matching semantics and replacement forms observed with postmap 3.7.11 (§13.1). */
const MATCHING = [
  '/^p(foo|foobar)/ P:$1',
  '/^r(a+|a+b)/ R:$1',
  '/^s(x*)(x|xy)/ S:$1:$2',
  '/^t(.*?)u/ T:$1',
  '/^lazy(.+?)(x*)$/ L:$1:$2',
  '/^w(a|(b))+$/ E:[$1][$2]',
  '/^z(a)?(b)?$/ D:[$1][$2]',
  '/^CaSe(.*)$/ F:$1',
  '/^o(a)$/im CS:$1',
  '/^dig\\d$/ DIG1',
  '/^dig\\d$/i DIG2',
  '/^br[\\.]$/ BR',
  '/^b(a+)$/x X:$1',
  '/^c$/',
  '/^c\\(a*\\)$/x BRE2:$1',
  '/^m.x$/ MDOT',
  '/^n$/m NL',
  '/^(e)$/ ${1}${1}$$',
  '/^(f)$/ $(1)',
  '/^(h)$/ $01',
  '/^(k)(l)?$/ [$2]',
  '/^(d)(x)?$/ $2',
  '|^pi(pe)$| PIPE:$1',
  '/^(y)(z)$/ Y:$1',
  '\t$2 continued',
  '/^x(a|ab)(c|bcd)(d*)$/ X:$1:$2:$3',
  '/^(foo|foobar)(.*)$/ FB:$1:$2',
  '/^q(x+?)$/ Q:$1',
  '/^j(a{,2})(a*)$/ J:$1:$2',
  '/^g\\(a\\)/ G',
  '/^bre\\(a\\)\\1$/x BREREF',
  '/^alt(a|b)\\1$/ ALTREF:$1',
  '/^u\\w+\\>/ WORD',
  '/abc\\',
  '',
].join('\n');

const MATCHING_WARNINGS = [
  '{path}, line 13: out of range replacement index "1": skipping this rule',
  '{path}, line 14: no replacement text: using empty string',
  '{path}, line 34: no replacement text: using empty string',
];

const MATCHING_LOOKUPS: Array<[string, string | null]> = [
  ['pfoobar', 'P:foobar'],
  ['raab', 'R:aab'],
  ['sxxy', 'S:x:xy'],
  ['tabuxu', 'T:abux'],
  ['lazyabcxx', 'L:abcxx:'],
  ['wba', 'E:[a][b]'],
  ['wab', 'E:[b][b]'],
  ['zb', 'D:[][b]'],
  ['CASEAbC', 'F:AbC'],
  ['oa', 'CS:a'],
  ['oA', null],
  ['digd', 'DIG2'],
  ['dig5', null],
  ['br\\', 'BR'],
  ['br.', 'BR'],
  ['baa', null],
  ['c', ''],
  ['caaa', 'BRE2:aaa'],
  ['e', 'ee$'],
  ['f', 'f'],
  ['h', 'h'],
  ['k', '[]'],
  ['d', ''],
  ['pipe', 'PIPE:pe'],
  ['PIPE', 'PIPE:PE'],
  ['yz', 'Y:y\tz continued'],
  ['xabcd', 'X:a:bcd:'],
  ['foobarbaz', 'FB:foo:barbaz'],
  ['q', 'Q:'],
  ['qxx', 'Q:xx'],
  ['jaaaa', 'J:aa:aa'],
  ['g(a)', 'G'],
  ['ga', null],
  ['breaa', 'BREREF'],
  ['altbb', 'ALTREF:b'],
  ['altab', null],
  ['uword', 'WORD'],
  ['xxabcxx', ''],
  ['ABC', ''],
  ['nomatch', null],
  ['', null],
];

/** Replacement-text errors, each skipping its rule; the last rule wins. */
const REPLACEMENT = [
  '/^(b)$/ $1$',
  '/^(b)$/ $',
  '/^(b)$/ $.',
  '/^(b)$/ ${ 1 }',
  '/^(b)$/ $0',
  '/^(b)$/ $10',
  '/^(b)$/ $1a',
  '/^(b)$/ ${1x}',
  '/^(b)$/ ${1',
  '/^(b)$/ $x $0 ${1} $y',
  '/^(b)$/ $2147483648',
  '/^(b)$/ $()',
  '/^(b)$/ ${}',
  '/^(b)$/ $(1',
  '/^(b)$/ a$$b $',
  '!/^(b)$/ $1',
  '/^(b)$/!/x/ $1 $4294967297 ${1}$(1)$$1',
  '',
].join('\n');

const REPLACEMENT_WARNINGS = [
  'empty macro name: "$1$"',
  '{path}, line 1: bad replacement syntax: skipping this rule',
  'empty macro name: "$"',
  '{path}, line 2: bad replacement syntax: skipping this rule',
  'empty macro name: "$."',
  '{path}, line 3: bad replacement syntax: skipping this rule',
  '{path}, line 4: non-numeric replacement index " 1 "',
  '{path}, line 4: bad replacement syntax: skipping this rule',
  '{path}, line 5: out-of-range replacement index "0"',
  '{path}, line 5: bad replacement syntax: skipping this rule',
  '{path}, line 6: out of range replacement index "10": skipping this rule',
  '{path}, line 7: non-numeric replacement index "1a"',
  '{path}, line 7: bad replacement syntax: skipping this rule',
  '{path}, line 8: non-numeric replacement index "1x"',
  '{path}, line 8: bad replacement syntax: skipping this rule',
  'truncated macro reference: "${1"',
  '{path}, line 9: bad replacement syntax: skipping this rule',
  '{path}, line 10: non-numeric replacement index "x"',
  '{path}, line 10: out-of-range replacement index "0"',
  '{path}, line 10: bad replacement syntax: skipping this rule',
  '{path}, line 11: out of range replacement index "-2147483648": skipping this rule',
  'empty macro name: "$()"',
  '{path}, line 12: bad replacement syntax: skipping this rule',
  'empty macro name: "${}"',
  '{path}, line 13: bad replacement syntax: skipping this rule',
  'truncated macro reference: "$(1"',
  '{path}, line 14: bad replacement syntax: skipping this rule',
  'empty macro name: "a$$b $"',
  '{path}, line 15: bad replacement syntax: skipping this rule',
  '{path}, line 16: $number found in negative match replacement text: skipping this rule',
];

/** Rule syntax: delimiters, flags, two-pattern form, compile errors. */
const SYNTAX = [
  ' lead',
  '/^a/!/b/ X',
  '/^c/ !/d/ X',
  '/^[/]br$/ Y',
  '/abc',
  '!',
  '! \t',
  '!  !/^nn/ NN',
  '/e/q x',
  '/^f/i!/g/m!x y',
  'foo bar',
  '/(/ paren',
  '/a{1/ x',
  '/*x/ star',
  '/x/ $1',
  '/[[.hyphen.]]/ coll',
  '/a\\{1/x bre',
  '/[b-a]/ range',
  '/a{2,1}/ rng2',
  '/\\1/ backref',
  '/[[:foo:]]/ cls',
  '/a{99999}/ big',
  '/^h/!/(/ second',
  '/^tt$/\tTAB  value  with   spaces \t ',
  '/^x/ X\0after nul',
  '#/^comment/ C',
  '  # indented comment',
  '/^long/ one',
  '  two',
  '',
  '\tthree',
  '/^ONE/ Upper',
  '/^z/',
  '!/^neg/ NEG $$',
  '',
].join('\n');

const SYNTAX_WARNINGS = [
  '{raw}: logical line must not start with whitespace: " lead"',
  '{path}, line 4: unknown regexp option "]": skipping this rule',
  '{path}, line 5: no closing regexp delimiter "/": skipping this rule',
  '{path}, line 6: no regexp: skipping this rule',
  '{path}, line 7: no regexp: skipping this rule',
  '{path}, line 9: unknown regexp option "q": skipping this rule',
  '{path}, line 11: ignoring unrecognized request',
  '{path}, line 12: Unmatched ( or \\(',
  '{path}, line 13: Unmatched \\{',
  '{path}, line 14: Invalid preceding regular expression',
  '{path}, line 15: out of range replacement index "1": skipping this rule',
  '{path}, line 16: Invalid collation character',
  '{path}, line 17: Unmatched \\{',
  '{path}, line 18: Invalid range end',
  '{path}, line 19: Invalid content of \\{\\}',
  '{path}, line 20: Invalid back reference',
  '{path}, line 21: Invalid character class name',
  '{path}, line 22: Regular expression too big',
  '{path}, line 23: Unmatched ( or \\(',
  '{path}, line 33: no replacement text: using empty string',
];

const SYNTAX_LOOKUPS: Array<[string, string | null]> = [
  ['aa', 'X'],
  ['ab', 'NEG $'],
  ['c', '!/d/ X'],
  ['nn', 'NN'],
  ['f', '!x y'],
  ['fg', 'NEG $'],
  ['fG', 'NEG $'],
  ['F', 'NEG $'],
  ['h', 'NEG $'],
  ['e', 'NEG $'],
  ['neg', null],
  ['tt', 'TAB  value  with   spaces'],
  ['x', 'X'],
  ['long', 'one  two\tthree'],
  ['one', 'Upper'],
  ['z', ''],
  ['comment', '!/d/ X'],
];

/** IF/ENDIF nesting and its warnings. */
const IFS = [
  'if /^a/',
  'if !/b/',
  '/c/ A-C-NO-B',
  'endif',
  '/x/ A-X',
  'endif junk',
  'endif',
  'IF/^z/ extra',
  '/zz/ ZZ',
  'ENDIF',
  'iffy',
  'endiffy',
  'if',
  'if /(/',
  'endif',
  '/^m/ M',
  'If !/^y/',
  'if /^y/',
  '/^yy/ YY',
  '',
].join('\n');

const IFS_WARNINGS = [
  '{path}, line 6: ignoring extra text after ENDIF',
  '{path}, line 7: ignoring ENDIF without matching IF',
  '{path}, line 8: ignoring extra text after IF statement: "extra"',
  '{path}, line 8: do not prepend whitespace to statements between IF and ENDIF',
  '{path}, line 11: ignoring unrecognized request',
  '{path}, line 12: ignoring unrecognized request',
  '{path}, line 13: no regexp: skipping this rule',
  '{path}, line 14: Unmatched ( or \\(',
  '{path}, line 15: ignoring ENDIF without matching IF',
  '{path}, line 18: IF has no matching ENDIF',
  '{path}, line 17: IF has no matching ENDIF',
];

/** Bytes >= 0x80: C-locale matching, and the UTF-8 layer on keys and values. */
const BYTES = [
  '/^x.y$/ ONE',
  '/^x..y$/ TWO',
  u('/^é$/ E-ACUTE'),
  '/^[[:alpha:]]+$/ ALPHA',
  '/^[^a]$/ NOT-A',
  '/^(.)/ $1',
  '',
].join('\n');

const BYTES_KEYS = [u('xéy'), u('é'), u('É'), 'a', 'abc', u('ab\xe9'), '\xff', '\xe9', u('ä'), 'zz'];

/** Newlines in keys (postmap -q - cannot send them: the differential test asks key by key). */
const NEWLINES = [
  '/^m.x$/ MDOT',
  '/^n$/m NL',
  '/^(o)[^a](p)$/m NEG:$1$2',
  '/^(q)$/ Q',
  '/^(r).(s)$/m RS',
  '/^t$/ T',
  '',
].join('\n');

const NEWLINE_LOOKUPS: Array<[string, string | null]> = [
  ['m\nx', 'MDOT'],
  ['n\nq', 'NL'],
  ['q\nn', 'NL'],
  ['o\np', null],
  ['oxp', 'NEG:op'],
  ['q\n', null],
  ['r\ns', null],
  ['t\n', null],
];

function lookups(list: Array<[string, string | null]>) {
  return list.map(([key, v]) => ({ key, expect: v === null ? ('notfound' as const) : { value: v } }));
}

const cases: ConformanceCase[] = [
  {
    title: 'matching semantics (glibc leftmost-longest, POSIX submatches)',
    file: MATCHING,
    implFlags: PATTERN,
    warnings: MATCHING_WARNINGS.map((w) => `regexp map ${w}`),
    lookups: lookups(MATCHING_LOOKUPS),
    sequence: 'unsupported',
  },
  {
    title: 'replacement syntax errors',
    file: REPLACEMENT,
    warnings: REPLACEMENT_WARNINGS.map((w) => (w.startsWith('{path}') ? `regexp map ${w}` : w)),
    lookups: [
      { key: 'b', expect: { value: 'b b bb$1' } },
      { key: 'bx', expect: 'notfound' },
      { key: 'x', expect: 'notfound' },
    ],
  },
  {
    title: 'rule syntax',
    file: SYNTAX,
    warnings: SYNTAX_WARNINGS.map((w) => (w.startsWith('{path}') ? `regexp map ${w}` : w)),
    lookups: lookups(SYNTAX_LOOKUPS),
  },
  {
    title: 'IF/ENDIF',
    file: IFS,
    warnings: IFS_WARNINGS.map((w) => `regexp map ${w}`),
    lookups: lookups([
      ['ac', 'A-C-NO-B'],
      ['abc', null],
      ['abcx', 'A-X'],
      ['ax', 'A-X'],
      ['cx', null],
      ['zz', 'ZZ'],
      ['m', 'M'],
      ['y', null],
      ['yy', null],
    ]),
  },
  {
    title: 'an IF without ENDIF ends the lookup when its test fails',
    file: 'if /^a/\n/x/ AX\n/./ ANY\n',
    warnings: ['regexp map {path}, line 1: IF has no matching ENDIF'],
    lookups: lookups([
      ['ax', 'AX'],
      ['ab', 'ANY'],
      ['bx', null],
    ]),
  },
  {
    title: 'bytes >= 0x80 without the UTF-8 layer',
    file: BYTES,
    fold: 'ascii',
    warnings: [],
    lookups: lookups([
      [u('xéy'), 'TWO'],
      [u('é'), 'E-ACUTE'],
      [u('É'), '\xc3'],
      ['abc', 'ALPHA'],
      [u('ab\xe9'), 'a'],
      ['\xff', 'NOT-A'],
      ['a', 'ALPHA'],
    ]),
  },
  {
    title: 'bytes >= 0x80 with the UTF-8 layer (compatibility_level 3.6)',
    file: BYTES,
    fold: 'utf8',
    openFlags: UTF8_ACTIVE,
    warnings: [],
    lookups: [
      { key: u('xéy'), expect: { value: 'TWO' } },
      { key: u('É'), expect: { error: DICT_ERR.CONFIG } },
      { key: '\xff', expect: 'notfound' },
    ],
  },
  {
    title: 'newlines in keys',
    file: NEWLINES,
    warnings: [],
    lookups: lookups(NEWLINE_LOOKUPS),
  },
  {
    title: 'empty pattern matches everything',
    file: '//\n',
    warnings: ['regexp map {path}, line 1: no replacement text: using empty string'],
    lookups: lookups([
      ['', ''],
      ['x', ''],
    ]),
  },
  {
    title: 'inline rules',
    name: '{{/^(f)oo$/ got $1}, {/bar/ B}}',
    warnings: [],
    lookups: lookups([
      ['FOO', 'got F'],
      ['foo', 'got f'],
      ['xbarx', 'B'],
      ['x', null],
    ]),
  },
  {
    title: 'inline rules with IF and warnings',
    name: '{ {if !/^a/}, {/./ NOT-A}, {endif}, { /^(a)(b)?/ A[$2] }, {/x/ $1} }',
    warnings: [
      'regexp map { {if !/^a/}, {/./ NOT-A}, {endif}, { /^(a)(b)?/ A[$2] }, {/x/ $1} }, line 5: out of range replacement index "1": skipping this rule',
    ],
    lookups: lookups([
      ['b', 'NOT-A'],
      ['a', 'A[]'],
      ['abc', 'A[b]'],
    ]),
  },
  { title: 'empty inline table', name: '{ , }', warnings: [], lookups: lookups([['a', null]]) },
  { title: 'inline: no brace', name: '{ /a/ }', openError: `regexp map: no '{' at start of text in "/a/"` },
  { title: 'inline: text after brace', name: '{{/a/ x}x}', openError: `regexp map: syntax error after '}' in "{/a/ x}x"` },
  { title: 'missing file', name: '/nonexistent/regexp', openError: 'open /nonexistent/regexp: No such file or directory' },
  { title: 'writable open', file: '/a/ b\n', writable: true, openError: 'regexp:{path} map requires O_RDONLY access mode' },
  {
    title: 'NO_REGSUB at open skips rules that use $n',
    file: '/^(a)/ A:$1\n/^a/ PLAIN\n!/^(b)/ $$1\n',
    openFlags: NO_REGSUB,
    warnings: ['regexp map {path}, line 1: regular expression substitution is not allowed: skipping this rule'],
    lookups: lookups([
      ['ab', 'PLAIN'],
      ['c', '$1'],
    ]),
  },
  {
    title: 'values from files (SRC_RHS_IS_FILE)',
    file: '/^one$/ /dev/null\n/^(two)$/ $1\n/^three$/ /nonexistent/x\n/^four$/\n/^five$/ /dev/null, /dev/null\n',
    openFlags: SRC_RHS_IS_FILE,
    warnings: [
      'regexp map {path}, line 2: open $1: No such file or directory: skipping this rule',
      'regexp map {path}, line 3: open /nonexistent/x: No such file or directory: skipping this rule',
      'regexp map {path}, line 4: no replacement text: using empty string',
      "regexp map {path}, line 4: empty pathname list: >><<': skipping this rule",
    ],
    lookups: lookups([
      ['one', ''],
      ['two', null],
      ['five', 'Cg=='],
    ]),
  },
];

// "{raw}" = the file path without the "regexp map" prefix (readllines' own warning).
for (const c of cases) if (c.warnings) c.warnings = c.warnings.map((w) => w.replace('{raw}', '{path}'));

runConformance('regexp', cases);

const MODES: readonly DiffMode[] = ['utf8', 'ascii'];
const keysOf = (list: Array<[string, string | null]>) => list.map(([k]) => k);

const scenarios: DiffScenario[] = ([
  { title: 'matching semantics', file: MATCHING, keys: keysOf(MATCHING_LOOKUPS), list: true },
  { title: 'replacement syntax', file: REPLACEMENT, keys: ['b', 'bx', 'x'], list: true },
  {
    title: 'rule syntax',
    file: SYNTAX,
    keys: keysOf(SYNTAX_LOOKUPS),
    list: true,
  },
  { title: 'IF/ENDIF', file: IFS, keys: ['ac', 'abc', 'abcx', 'ax', 'cx', 'zz', 'm', 'y', 'yy', 'x'], list: true },
  { title: 'IF without ENDIF', file: 'if /^a/\n/x/ AX\n/./ ANY\n', keys: ['ax', 'ab', 'bx'], list: true },
  { title: 'bytes >= 0x80', file: BYTES, keys: BYTES_KEYS, list: true },
  { title: 'empty pattern', file: '//\n', keys: ['', 'x'] },
  { title: 'inline rules', name: '{{/^(f)oo$/ got $1}, {/bar/ B}}', keys: ['FOO', 'foo', 'xbarx', 'x'] },
  {
    title: 'inline rules with IF',
    name: '{ {if !/^a/}, {/./ NOT-A}, {endif}, { /^(a)(b)?/ A[$2] }, {/x/ $1} }',
    keys: ['b', 'a', 'abc'],
    list: true,
  },
  { title: 'empty inline table', name: '{ , }', keys: ['a'] },
  { title: 'inline: text after brace', name: '{{/a/ x}x}', keys: ['a'], modes: ['utf8'] },
  { title: 'missing file', name: '/nonexistent/regexp', keys: ['a'], modes: ['utf8'] },
  {
    title: 'values from files (-F)',
    file: '/^one$/ /dev/null\n/^(two)$/ $1\n/^three$/ /nonexistent/x\n/^four$/\n/^five$/ {dir}/f1\n/^six$/ {dir}/f2 ,\n',
    files: { f1: 'hello', f2: u('wörld') },
    keys: ['one', 'two', 'four', 'five', 'six'],
    postmapArgs: ['-F'],
    openFlags: SRC_RHS_IS_FILE,
    list: true,
  },
] as DiffScenario[]).map((s) => ({ modes: MODES, ...s }));

runDifferential('regexp', scenarios);

describe('regexp vs postmap: keys postmap -q - cannot send', { skip: skipPostmap, concurrency: 4 }, () => {
  let dir = '';
  let path = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'regexp-nl-'));
    path = join(dir, 'nl');
    writeFileSync(path, NEWLINES);
    utimesSync(path, 1_000_000_000, 1_000_000_000);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  for (const [key] of NEWLINE_LOOKUPS) {
    test(`key ${JSON.stringify(key)}`, async () => {
      const r = await runPostmap('ascii', ['-q', key, `regexp:${path}`]);
      const table = await openTable(openOptions('regexp', path, { fold: 'ascii' }));
      const ours = await table.lookup(key, 0);
      assert.equal(r.stdout, ours.found ? ours.value + '\n' : '');
      assert.equal(r.status, ours.found ? 0 : 1);
    });
  }
});

/** Open a regexp table from source text in a scratch file. */
async function withTable<T>(text: string, fn: (table: Table, warnings: string[], path: string) => Promise<T>, over: Partial<TableOpenOptions> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'regexp-'));
  try {
    const path = join(dir, 'src');
    writeFileSync(path, Buffer.from(text, 'latin1'));
    const warnings: string[] = [];
    const table = await openTable(openOptions('regexp', path, over, warnings));
    return await fn(table, warnings, path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('regexp: NO_REGSUB in the request skips rules that use $n', async () => {
  await withTable('/^(a)/ A:$1\n/^a/ PLAIN\nif /^i/\n/^i(.)/ I:$1\nendif\n', async (table, warnings) => {
    assert.deepEqual(warnings, []);
    assert.deepEqual(await table.lookup('ab', 0), { found: true, value: 'A:a' });
    assert.deepEqual(await table.lookup('ab', NO_REGSUB), { found: true, value: 'PLAIN' });
    assert.deepEqual(await table.lookup('ix', NO_REGSUB), { found: false, error: DICT_ERR.NONE });
    assert.deepEqual(await table.lookup('ix', 0), { found: true, value: 'I:x' });
  });
});

test('regexp: FOLD_MUL lowercases the key (ASCII only) before matching and $n', async () => {
  await withTable('/^(A)(.*)$/i CS:$1$2\n/^(.)(.*)$/ CI:$1$2\n', async (table) => {
    assert.deepEqual(await table.lookup('ABC', 0), { found: true, value: 'CS:ABC' });
    assert.deepEqual(await table.lookup('ABC', FOLD_MUL), { found: true, value: 'CI:abc' });
    assert.deepEqual(await table.lookup(u('ÄB'), FOLD_MUL), { found: true, value: u('CI:Äb') });
  });
});

test('regexp: a NUL ends the key, as in C', async () => {
  await withTable('/^ab$/ AB\n', async (table) => {
    assert.deepEqual(await table.lookup('ab\0cd', 0), { found: true, value: 'AB' });
  });
});

test('regexp: changed() follows the file; inline tables never change', async () => {
  await withTable('/a/ 1\n', async (table, _w, path) => {
    utimesSync(path, 1000, 1000);
    const again = await openTable(openOptions('regexp', path));
    assert.equal(await again.changed?.(), false);
    writeFileSync(path, '/a/ 2\n');
    assert.equal(await again.changed?.(), true);
    assert.deepEqual(await again.lookup('a', 0), { found: true, value: '1' });
    rmSync(path);
    assert.equal(await again.changed?.(), true);
    assert.equal(await table.changed?.(), true);
  });
  const inline = await openTable(openOptions('regexp', '{{/a/ b}}'));
  assert.equal(await inline.changed?.(), false);
});

describe('native POSIX regex engine, through compile jobs and rule sets', () => {
  const n = loadNative();
  const { REG } = n;

  test('compile: group count, or the regerror text and code', () => {
    assert.deepEqual(compileOne(n, ENGINE.REGEX, '^p(foo|foobar)(x)?', REG.EXTENDED | REG.ICASE), { groups: 2 });
    assert.deepEqual(compileOne(n, ENGINE.REGEX, 'a\\{1', 0), { error: 'Unmatched \\{', code: 9, offset: 0 });
    assert.deepEqual(compileOne(n, ENGINE.REGEX, '(', REG.EXTENDED), { error: 'Unmatched ( or \\(', code: 8, offset: 0 });
  });

  test('exec: leftmost-longest offsets, -1 for groups that did not take part', () => {
    const m = matcher(n, ENGINE.REGEX, '^p(foo|foobar)(x)?', REG.EXTENDED, 2);
    assert.deepEqual(m('pfoobar'), [0, 7, 1, 7, -1, -1]);
    assert.equal(m('xpfoo'), null);
    // no $n in the value: a match, and no offsets asked for or written
    assert.deepEqual(matcher(n, ENGINE.REGEX, '^p(foo|foobar)(x)?', REG.EXTENDED, 0)('pfoo'), [UNWRITTEN, UNWRITTEN]);
  });

  test('C locale whatever the environment: bytes, ASCII-only case folding', () => {
    const c = matcher(n, ENGINE.REGEX, '^x.y$', REG.EXTENDED, 0);
    const e = matcher(n, ENGINE.REGEX, '^\xe9$', REG.EXTENDED | REG.ICASE, 0);
    assert.equal(c(u('xéy')), null);
    assert.notEqual(c('x\xe9y'), null);
    assert.equal(e('\xc9'), null);
    assert.notEqual(e('\xe9'), null);
  });

  test('bad arguments throw TypeError instead of crashing', () => {
    const { batch } = compileAll(n, ENGINE.REGEX, ['a'], REG.EXTENDED);
    const pcre = compileAll(n, ENGINE.PCRE, ['a'], 0).batch;
    const set = n.ruleSetFromBatch(batch, new Int32Array([RULE_OP.MATCH, 0, 1, -1, 1, 0, -1]));
    // a handle of another kind where a rule set, a batch or a compile job belongs
    assert.throws(() => n.ruleSetExec(batch as never, 'a', false, new Int32Array(2)), TypeError);
    assert.throws(() => n.ruleSetExec({} as never, 'a', false, new Int32Array(2)), TypeError);
    assert.throws(() => n.ruleSetFromBatch(set as never, new Int32Array([RULE_OP.MATCH, 0, 1, -1, 1, 0, -1])), TypeError);
    assert.throws(() => n.patternsCompileAdd(batch as never, 'a', new Uint32Array(1)), TypeError);
    assert.throws(() => n.patternsCompileFinish(set as never), TypeError);
    // a pattern that is not a string
    assert.throws(() => n.patternsCompileAdd(n.patternsCompileStart(ENGINE.REGEX, 1), 42 as never, new Uint32Array(1)), TypeError);
    // a MATCH rule without a pattern; a second pattern in a pcre set
    assert.throws(() => n.ruleSetFromBatch(batch, new Int32Array([RULE_OP.MATCH, -1, 1, -1, 1, 0, -1])), TypeError);
    assert.throws(() => n.ruleSetFromBatch(pcre, new Int32Array([RULE_OP.MATCH, 0, 1, 0, 1, 0, -1])), TypeError);
  });

  test('rule sets keep their patterns alive after the batch and job handles are collected', () => {
    const script = `
      const n = require(${JSON.stringify(NATIVE_ADDON_PATH)});
      const compile = (pats) => {
        const job = n.patternsCompileStart(1, pats.length);
        n.patternsCompileAdd(job, pats.join('\\0'), new Uint32Array(pats.length).fill(3));
        return n.patternsCompileFinish(job).batch;
      };
      let set;
      {
        const batch = compile(['^(a+)', 'b']);
        set = n.ruleSetFromBatch(batch, new Int32Array([2, 1, 0, -1, 1, 0, 2, 1, 0, 1, -1, 1, 1, -1, 3, -1, 1, -1, 1, 0, -1]));
      }
      for (let i = 0; i < 5; i++) { compile(Array.from({ length: 10000 }, (_, j) => 'x' + j)); global.gc(); }
      const off = new Int32Array(4);
      const r = [n.ruleSetExec(set, 'aab', false, off), n.ruleSetExec(set, 'aa', false, off), [...off]];
      set = null; global.gc();
      console.log(JSON.stringify(r));`;
    const out = execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
    assert.deepEqual(JSON.parse(out), [-1, 1, [0, 2, 0, 2]]);
  });
});

test('regexp: a 1,000-rule table with a missing key is one native call', async () => {
  const rules = Array.from({ length: 1000 }, (_, i) => `/^user${i}@example\\.com$/ OK ${i}`).join('\n') + '\n';
  await withTable(rules, async (table, warnings) => {
    assert.deepEqual(warnings, []);
    assert.deepEqual(await table.lookup('user999@example.com', 0), { found: true, value: 'OK 999' });
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 100; i++) assert.equal((await table.lookup('nobody@example.org', 0)).found, false);
    const perLookupMs = Number(process.hrtime.bigint() - t0) / 1e6 / 100;
    assert.ok(perLookupMs < 20, `${perLookupMs} ms per lookup`);
  });
});
