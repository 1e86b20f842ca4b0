/**
 * pcre: tables. Expectations are Postfix 3.7.11's with PCRE2 10.42 (spec
 * tables-files.md §8, §10, §13.2); the differential part asks the real
 * postmap the same questions.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ENGINE, RULE_OP, loadNative } from '../../../src/addon/index.js';
import { compileAll, compileOne, matcher } from './engine-probe.js';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, openTable, utf8ToBytes as u, type Table, type TableOpenOptions } from '../../../src/tables/index.js';
import { openOptions, runConformance, type ConformanceCase } from '../conformance.js';
import { runDifferential, runPostmap, skipPostmap, type DiffMode, type DiffScenario } from '../../support/postmap.js';

const { UTF8_ACTIVE, NO_REGSUB, FOLD_MUL, SRC_RHS_IS_FILE, PATTERN } = DICT_FLAG;

/** Matching semantics observed with postmap 3.7.11 / PCRE2 10.42 (§13.2). */
const MATCHING = [
  '/^p(foo|foobar)/ P:$1',
  '/^r(a+|a+b)/ R:$1',
  '/^t(.*?)u/ T:$1',
  '/^(?-i)CS$/ CS',
  '/^dig\\d$/ DIG',
  '/^(?<nm>na)me$/ N:$1',
  '/^at(?>a+)b/ ATOMIC',
  '/^pos(a++)b/ $1',
  '/^lb(?<=lb)x/ LB',
  '/^u(\\w+)(\\w*)$/U U:$1:$2',
  '/^\\Qa.b\\E$/ QUOTE',
  u('/^é$/ E-ACUTE'),
  '/^c[[:digit:]]+$/ DIGITS',
  '/^b[]a]$/ BRACKET',
  '/^n[^]a]$/ NBRACKET',
  '/^q{,2}$/ BRACES',
  '/^s\\s$/ SPACE',
  '/^cond(a)?(?(1)b|c)$/ COND:$1',
  '/^rec(\\((?:[^()]|(?1))*\\))$/ $1',
  '/^kk\\Kx$/ KEEP',
  '/^(?P<w>ww)$/ $1',
  '/^g(a)\\g{1}$/ GREF',
  '/^com(?#c)x$/ COMMENT',
  '/^pp\\p{Lu}$/ PROP',
  '/^hex\\x41$/ HEX',
  '/^oct\\101$/ OCT',
  '/^w(a|(b))+$/ E:[$1][$2]',
  '/^z(a)?(b)?$/ D:[$1][$2]',
  '/^CaSe(.*)$/ F:$1',
  '/^o(a)$/i CS2:$1',
  '/^ANCH/A ANCHORED',
  '/ x y z /x EXT',
  '/^(e)$/ ${1}${1}$$',
  '/^(f)$/ $(1)',
  '/^(h)$/ $01',
  '/^(k)(l)?$/ [$2]',
  '/^c$/',
  '/^(d)(x)?$/ $2',
  '|^pi(pe)$| PIPE:$1',
  '/^(y)(z)$/ Y:$1',
  '\t$2 continued',
  '/^vv$/X VV',
  '',
].join('\n');

const MATCHING_WARNINGS = [
  '{path}, line 37: no replacement text: using empty string',
  '{path}, line 42: ignoring obsolete regexp option "X"',
];

const MATCHING_LOOKUPS: Array<[string, string | null]> = [
  ['pfoobar', 'P:foo'],
  ['raab', 'R:aa'],
  ['tabuxu', 'T:ab'],
  ['CS', 'CS'],
  ['cs', null],
  ['dig5', 'DIG'],
  ['digd', null],
  ['name', 'N:na'],
  ['atab', 'ATOMIC'],
  ['posab', 'a'],
  ['lbx', 'LB'],
  ['uabcdef', 'U:a:bcdef'],
  ['a.b', 'QUOTE'],
  ['axb', null],
  [u('é'), 'E-ACUTE'],
  [u('É'), null],
  ['c12', 'DIGITS'],
  ['b]', 'BRACKET'],
  ['ba', 'BRACKET'],
  ['nb', 'NBRACKET'],
  ['n]', null],
  ['q{,2}', 'BRACES'],
  ['q', null],
  ['s\x0b', 'SPACE'],
  ['s\xa0', null],
  ['condab', 'COND:a'],
  ['condc', 'COND:'],
  ['rec(a(b))', '(a(b))'],
  ['kkx', 'KEEP'],
  ['ww', 'ww'],
  ['gaA', 'GREF'],
  ['comx', 'COMMENT'],
  ['ppa', null],
  ['ppA', 'PROP'],
  ['hexa', 'HEX'],
  ['octa', 'OCT'],
  ['wba', 'E:[a][b]'],
  ['wab', 'E:[b][b]'],
  ['zb', 'D:[][b]'],
  ['CASEAbC', 'F:AbC'],
  ['oa', 'CS2:a'],
  ['oA', null],
  ['anch', 'ANCHORED'],
  ['xanch', null],
  ['xyz', 'EXT'],
  ['e', 'ee$'],
  ['f', 'f'],
  ['h', 'h'],
  ['k', '[]'],
  ['c', ''],
  ['d', ''],
  ['pipe', 'PIPE:pe'],
  ['yz', 'Y:y\tz continued'],
  ['vv', 'VV'],
  ['', null],
];

/** Rule syntax and compile errors. */
const SYNTAX = [
  '/^e\\i$/ x',
  '/^dd\\8$/ y',
  '/(/ z',
  '/^(j)$/ $0',
  '/a/!/b/ x',
  '/abc\\',
  '/x/ $1',
  '/^(?<nm>na)me$/ N:$2',
  '/[[:foo:]]/ x',
  '/(?<=a+)b/ lb',
  '/\\p{Foo}/ p',
  '/a{3,2}/ q',
  '/(?P<n>a)(?P<n>b)/ dup',
  '/^(b)$/ $x $0 ${1} $y',
  '/^(b)$/ ${ 1 }',
  '!/^(b)$/ $1',
  '/^b/ $2147483648',
  '/e/q x',
  '!',
  'junk',
  '/^(b)$/ $4294967297:${1}$$',
  '!/^neg/ NEG',
  '',
].join('\n');

const SYNTAX_WARNINGS = [
  '{path}, line 1: error in regex at offset 3: unrecognized character follows \\',
  '{path}, line 2: error in regex at offset 4: reference to non-existent subpattern',
  '{path}, line 3: error in regex at offset 1: missing closing parenthesis',
  '{path}, line 4: out of range replacement index "0"',
  '{path}, line 4: bad replacement syntax: skipping this rule',
  '{path}, line 5: unknown regexp option "!": skipping this rule',
  '{path}, line 6: no closing regexp delimiter "/": ignoring this rule',
  '{path}, line 7: out of range replacement index "1": skipping this rule',
  '{path}, line 8: out of range replacement index "2": skipping this rule',
  '{path}, line 9: error in regex at offset 3: unknown POSIX class name',
  '{path}, line 10: error in regex at offset 0: lookbehind assertion is not fixed length',
  '{path}, line 11: error in regex at offset 7: unknown property after \\P or \\p',
  '{path}, line 12: error in regex at offset 5: numbers out of order in {} quantifier',
  '{path}, line 13: error in regex at offset 14: two named subpatterns have the same name (PCRE2_DUPNAMES not set)',
  '{path}, line 14: non-numeric replacement index "x"',
  '{path}, line 14: out of range replacement index "0"',
  '{path}, line 14: bad replacement syntax: skipping this rule',
  '{path}, line 15: non-numeric replacement index " 1 "',
  '{path}, line 15: bad replacement syntax: skipping this rule',
  '{path}, line 16: $number found in negative match replacement text: skipping this rule',
  '{path}, line 17: out of range replacement index "-2147483648": skipping this rule',
  '{path}, line 18: unknown regexp option "q": skipping this rule',
  '{path}, line 19: no regexp: skipping this rule',
  '{path}, line 20: ignoring unrecognized request',
];

/** IF/ENDIF. */
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
  'if /(/',
  'endif',
  'if /^m/!',
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
  '{path}, line 11: error in regex at offset 1: missing closing parenthesis',
  '{path}, line 12: ignoring ENDIF without matching IF',
  '{path}, line 13: unknown regexp option "!": skipping this rule',
  '{path}, line 14: ignoring ENDIF without matching IF',
  '{path}, line 17: IF has no matching ENDIF',
  '{path}, line 16: IF has no matching ENDIF',
];

const IFS_LOOKUPS: Array<[string, string | null]> = [
  ['ac', 'A-C-NO-B'],
  ['abc', null],
  ['abcx', 'A-X'],
  ['ax', 'A-X'],
  ['cx', null],
  ['zz', 'ZZ'],
  ['m', 'M'],
  ['y', null],
  ['yy', null],
];

/** Bytes >= 0x80: no UTF mode, ASCII-only classes and case folding. */
const BYTES = ['/^x.y$/ ONE', '/^x..y$/ TWO', '/^w\\w$/ WORD', '/^i\\xe9$/ IE9', '/^(.)/ $1', ''].join('\n');
const BYTES_KEYS = [u('xéy'), 'w\xe9', 'i\xc9', 'i\xe9', u('é'), 'a', '\xff'];

/** Newlines in keys (postmap -q - cannot send them: the differential test asks key by key). */
const NEWLINES = [
  '/\\Aanc\\Z/ ANC',
  '/^e$/E E',
  '/^d$/ D',
  '/m.x/s MX',
  '/^v\\v$/ V',
  '/^zed\\z/ ZED',
  '/^nl\\R$/ NL',
  '/^(mu)$/m MULTI:$1',
  '/^(dot).$/ DOT:$1',
  '',
].join('\n');

const NEWLINE_LOOKUPS: Array<[string, string | null]> = [
  ['anc', 'ANC'],
  ['anc\n', 'ANC'],
  ['e\n', null],
  ['e', 'E'],
  ['d\n', 'D'],
  ['m\nx', null],
  ['v\n', 'V'],
  ['zed\n', null],
  ['zed', 'ZED'],
  ['nl\r\n', 'NL'],
  ['x\nmu\ny', 'MULTI:mu'],
  ['dot\n', 'DOT:dot'],
];

function lookups(list: Array<[string, string | null]>) {
  return list.map(([key, v]) => ({ key, expect: v === null ? ('notfound' as const) : { value: v } }));
}
const prefixed = (list: string[]) => list.map((w) => (w.startsWith('{path}') ? `pcre map ${w}` : w));

const SYNTAX_LOOKUPS: Array<[string, string | null]> = [
  ['b', 'b:b$'],
  ['vv', 'NEG'],
  ['neg', null],
];

const cases: ConformanceCase[] = [
  {
    title: 'matching semantics (PCRE2, no UTF)',
    file: MATCHING,
    implFlags: PATTERN,
    warnings: prefixed(MATCHING_WARNINGS),
    lookups: lookups(MATCHING_LOOKUPS),
    sequence: 'unsupported',
  },
  { title: 'rule syntax and compile errors', file: SYNTAX, warnings: prefixed(SYNTAX_WARNINGS), lookups: lookups(SYNTAX_LOOKUPS) },
  { title: 'IF/ENDIF', file: IFS, warnings: prefixed(IFS_WARNINGS), lookups: lookups(IFS_LOOKUPS) },
  {
    title: 'bytes >= 0x80 without the UTF-8 layer (postmap -u, or a bare main.cf)',
    file: BYTES,
    fold: 'ascii',
    warnings: [],
    lookups: lookups([
      [u('xéy'), 'TWO'],
      ['w\xe9', 'w'],
      ['i\xc9', 'i'],
      ['i\xe9', 'IE9'],
      ['\xff', '\xff'],
    ]),
  },
  {
    title: 'bytes >= 0x80 with the UTF-8 layer',
    file: BYTES,
    fold: 'utf8',
    openFlags: UTF8_ACTIVE,
    warnings: [],
    lookups: [
      { key: u('xéy'), expect: { value: 'TWO' } },
      { key: u('é'), expect: { error: DICT_ERR.CONFIG } },
      { key: 'i\xe9', expect: 'notfound' },
    ],
  },
  { title: 'newlines in keys', file: NEWLINES, warnings: [], lookups: lookups(NEWLINE_LOOKUPS) },
  {
    title: 'inline rules',
    name: '{{/^(f)oo$/ got $1}, {/bar/ B}}',
    warnings: [],
    lookups: lookups([
      ['FOO', 'got F'],
      ['xbarx', 'B'],
      ['x', null],
    ]),
  },
  { title: 'inline: no brace', name: '{ /a/ }', openError: `pcre map: no '{' at start of text in "/a/"` },
  { title: 'missing file', name: '/nonexistent/pcre', openError: 'open /nonexistent/pcre: No such file or directory' },
  { title: 'writable open', file: '/a/ b\n', writable: true, openError: 'pcre:{path} map requires O_RDONLY access mode' },
  {
    title: 'NO_REGSUB at open skips rules that use $n',
    file: '/^(a)/ A:$1\n/^a/ PLAIN\n',
    openFlags: NO_REGSUB,
    warnings: ['pcre map {path}, line 1: regular expression substitution is not allowed: skipping this rule'],
    lookups: lookups([['ab', 'PLAIN']]),
  },
  {
    title: 'values from files (SRC_RHS_IS_FILE)',
    file: '/^one$/ /dev/null\n/^(two)$/ $1\n/^five$/ /dev/null, /dev/null\n',
    openFlags: SRC_RHS_IS_FILE,
    warnings: ['pcre map {path}, line 2: open $1: No such file or directory: skipping this rule'],
    lookups: lookups([
      ['one', ''],
      ['two', null],
      ['five', 'Cg=='],
    ]),
  },
];

runConformance('pcre', cases);

const MODES: readonly DiffMode[] = ['utf8', 'ascii'];
const keysOf = (list: Array<[string, string | null]>) => list.map(([k]) => k);

const scenarios: DiffScenario[] = ([
  { title: 'matching semantics', file: MATCHING, keys: keysOf(MATCHING_LOOKUPS), list: true },
  { title: 'rule syntax', file: SYNTAX, keys: keysOf(SYNTAX_LOOKUPS), list: true },
  { title: 'IF/ENDIF', file: IFS, keys: [...keysOf(IFS_LOOKUPS), 'x'], list: true },
  { title: 'bytes >= 0x80', file: BYTES, keys: BYTES_KEYS, list: true },
  { title: 'inline rules', name: '{{/^(f)oo$/ got $1}, {/bar/ B}}', keys: ['FOO', 'xbarx', 'x'] },
  { title: 'inline: no brace', name: '{ /a/ }', keys: ['a'], modes: ['utf8'] },
  {
    title: 'values from files (-F)',
    file: '/^one$/ /dev/null\n/^(two)$/ $1\n/^five$/ {dir}/f1\n/^six$/ {dir}/f2\n',
    files: { f1: 'hello', f2: u('wörld') },
    keys: ['one', 'two', 'five', 'six'],
    postmapArgs: ['-F'],
    openFlags: SRC_RHS_IS_FILE,
    list: true,
  },
] as DiffScenario[]).map((s) => ({ modes: MODES, ...s }));

runDifferential('pcre', scenarios);

/** A scratch directory with files, removed after the suite. */
function scratch(files: Record<string, string>): { dir: () => string } {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'pcre-'));
    for (const [name, text] of Object.entries(files)) {
      writeFileSync(join(dir, name), Buffer.from(text, 'latin1'));
      utimesSync(join(dir, name), 1_000_000_000, 1_000_000_000);
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  return { dir: () => dir };
}

describe('pcre vs postmap: keys postmap -q - cannot send', { skip: skipPostmap, concurrency: 4 }, () => {
  const s = scratch({ nl: NEWLINES });
  for (const [key] of NEWLINE_LOOKUPS) {
    test(`key ${JSON.stringify(key)}`, async () => {
      const path = join(s.dir(), 'nl');
      const r = await runPostmap('ascii', ['-q', key, `pcre:${path}`]);
      const table = await openTable(openOptions('pcre', path, { fold: 'ascii' }));
      const ours = await table.lookup(key, 0);
      assert.equal(r.stdout, ours.found ? ours.value + '\n' : '');
      assert.equal(r.status, ours.found ? 0 : 1);
    });
  }
});

/** The backtracking limit: the rule counts as "no match" and logs PCRE2's message. */
const LIMIT = '/^(a|aa)+$/ LIMIT\n!/^(a|aa)+$/ NEGATED\nif /^(a|aa)+$/\n/./ INSIDE\nendif\n/./ ANY\n';
const LIMIT_KEY = 'a'.repeat(40) + 'b';

describe('pcre vs postmap: runtime match errors', { skip: skipPostmap }, () => {
  const s = scratch({ limit: LIMIT });
  test('match limit exceeded: warnings and result', async () => {
    const path = join(s.dir(), 'limit');
    const r = await runPostmap('ascii', ['-q', LIMIT_KEY, `pcre:${path}`]);
    const warnings: string[] = [];
    const table = await openTable(openOptions('pcre', path, { fold: 'ascii' }, warnings));
    const ours = await table.lookup(LIMIT_KEY, 0);
    assert.equal(r.stdout, ours.found ? ours.value + '\n' : '');
    assert.deepEqual(warnings, r.warnings);
    assert.deepEqual(warnings, [1, 2, 3].map((n) => `pcre map ${path}, line ${n}: match limit exceeded`));
    assert.deepEqual(ours, { found: true, value: 'ANY' });
  });
});

/** Open a pcre table from source text in a scratch file. */
async function withTable<T>(text: string, fn: (table: Table, warnings: string[]) => Promise<T>, over: Partial<TableOpenOptions> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'pcre-'));
  try {
    const path = join(dir, 'src');
    writeFileSync(path, Buffer.from(text, 'latin1'));
    const warnings: string[] = [];
    const table = await openTable(openOptions('pcre', path, over, warnings));
    return await fn(table, warnings);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('pcre: NO_REGSUB in the request skips rules that use $n', async () => {
  await withTable('/^(a)/ A:$1\n/^a/ PLAIN\n', async (table, warnings) => {
    assert.deepEqual(warnings, []);
    assert.deepEqual(await table.lookup('ab', 0), { found: true, value: 'A:a' });
    assert.deepEqual(await table.lookup('ab', NO_REGSUB), { found: true, value: 'PLAIN' });
    assert.deepEqual(await table.lookup('b', NO_REGSUB), { found: false, error: DICT_ERR.NONE });
  });
});

test('pcre: FOLD_MUL lowercases the key (ASCII only)', async () => {
  await withTable('/^(A)(.*)$/i CS:$1$2\n/^(.)(.*)$/ CI:$1$2\n', async (table) => {
    assert.deepEqual(await table.lookup('ABC', 0), { found: true, value: 'CS:ABC' });
    assert.deepEqual(await table.lookup('ABC', FOLD_MUL), { found: true, value: 'CI:abc' });
    assert.deepEqual(await table.lookup(u('ÄB'), FOLD_MUL), { found: true, value: u('CI:Äb') });
  });
});

describe('native PCRE2 engine, through compile jobs and rule sets', () => {
  const n = loadNative();
  const { PCRE2 } = n;

  test('compiled against PCRE2 10.42, like Debian 12 postfix-pcre', () => {
    assert.deepEqual([PCRE2.MAJOR, PCRE2.MINOR], [10, 42]);
  });

  test('compile: capture count, or message, code and offset', () => {
    assert.deepEqual(compileOne(n, ENGINE.PCRE, '^(?<nm>na)(me)?', PCRE2.CASELESS), { groups: 2 });
    assert.deepEqual(compileOne(n, ENGINE.PCRE, '^e\\i$', 0), { error: 'unrecognized character follows \\', code: 103, offset: 3 });
  });

  test('match: leftmost-first offsets, -1 for unset groups; errors with PCRE2 text', () => {
    const m = matcher(n, ENGINE.PCRE, '^p(foo|foobar)(x)?', 0, 2);
    assert.deepEqual(m('pfoobar'), [0, 4, 1, 4, -1, -1]);
    assert.equal(m('xpfoo'), null);
    // the runtime error (PCRE2_ERROR_MATCHLIMIT) makes the test fail and comes back with the rule's index
    assert.deepEqual(matcher(n, ENGINE.PCRE, '^(a|aa)+$', 0, 0)(LIMIT_KEY), { errors: [[0, 'match limit exceeded']] });
  });

  test('ANCHORED (bit 31) passes through', () => {
    const m = matcher(n, ENGINE.PCRE, 'b', PCRE2.ANCHORED, 0);
    assert.equal(m('ab'), null);
    assert.notEqual(m('ba'), null);
  });

  test('bad arguments throw TypeError', () => {
    const regex = compileAll(n, ENGINE.REGEX, ['a'], 1);
    const { batch } = compileAll(n, ENGINE.PCRE, ['a'], 0);
    const set = n.ruleSetFromBatch(batch, new Int32Array([RULE_OP.MATCH, 0, 1, -1, 1, 0, -1]));
    assert.throws(() => n.ruleSetExec(regex.batch as never, 'a', false, new Int32Array(2)), TypeError);
    assert.throws(() => n.ruleSetFromBatch(set as never, new Int32Array([RULE_OP.MATCH, 0, 1, -1, 1, 0, -1])), TypeError);
    assert.throws(() => n.ruleSetExec(set, 42 as never, false, new Int32Array(2)), TypeError);
    assert.throws(() => n.ruleSetExec(set, 'a', false, new Uint32Array(2) as never), TypeError);
  });
});

test('pcre: a 1,000-rule table with a missing key is one native call', async () => {
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
