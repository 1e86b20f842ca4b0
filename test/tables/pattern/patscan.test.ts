/**
 * The native scanner (native/patscan.c) takes the regexp/pcre rules that
 * parse without a warning; everything else goes to the full parser in
 * src/tables/pattern/rules.ts. Both must give the same table: for curated odd
 * lines and for seeded random tables (the difftest generator's rules, mutated
 * line by line), parseRules() with the scanner and without it must give the
 * same rules (pattern texts, compile options, values, line numbers, IF/ENDIF
 * pairs) and the same warnings in the same order.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ENGINE, PATSCAN, loadNative } from '../../../src/addon/index.js';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { parseRules, type PatternDialect } from '../../../src/tables/pattern/rules.js';
import { pcreDialect } from '../../../src/tables/pattern/pcre.js';
import { regexpDialect } from '../../../src/tables/pattern/regexp.js';
import type { TableOpenOptions } from '../../../src/tables/core/table.js';
import { Rng, generateCase } from '../../difftest/generate.js';

const native = loadNative();

/** The table parseRules() gives, with pattern indexes replaced by what they are; and the warnings. */
function parse(dialect: PatternDialect, text: string, openFlags: number, fast: boolean) {
  const warnings: string[] = [];
  const opts: TableOpenOptions = { type: dialect.kind, name: '/t', openFlags, fold: 'none', writable: false, param: () => undefined, warn: (w) => warnings.push(w) };
  const sources: Array<[string, number]> = [];
  const { rules, endifOf, groups } = parseRules(native, dialect, text, opts, { fast, sources });
  const pat = (i: number) => (i < 0 ? null : { text: sources[i]![0], options: sources[i]![1], groups: groups[i] });
  const shown = rules.map((r) => {
    if (r.op === 3) return { op: r.op, lineNo: r.lineNo };
    if (r.op === 2) return { op: r.op, lineNo: r.lineNo, first: pat(r.first), match: r.match };
    return { op: r.op, lineNo: r.lineNo, first: pat(r.first), match: r.match, second: pat(r.second), secondMatch: r.secondMatch, value: r.value };
  });
  return { rules: shown, endifOf: [...endifOf.entries()], warnings };
}

/** How many logical lines of `text` the scanner takes itself. */
function scannerTakes(dialect: PatternDialect, text: string): number {
  const scan = native.patternsScan(dialect.engine, text, true, false);
  native.patternsCompileFinish(scan.job);
  let n = 0;
  for (let o = 0; o < scan.records.length; o += PATSCAN.FIELDS) if (scan.records[o]! <= PATSCAN.ENDIF) n++;
  return n;
}

function same(dialect: PatternDialect, text: string, openFlags = 0): void {
  const fast = parse(dialect, text, openFlags, true);
  const full = parse(dialect, text, openFlags, false);
  assert.deepEqual(fast, full, `${dialect.kind} table ${JSON.stringify(text)} (open flags ${openFlags})`);
}

/** Lines at the edges of what the scanner takes (each is also tried with every other). */
const ODD_LINES = [
  '/a/ b',
  '/a/ b $1',
  '/(a)/ b $1',
  '/(a)/ b ${1}',
  '/(a)/ b $(1)',
  '/(a)/ $1$1$$',
  '/(a)/ $$1',
  '/(a)/ $',
  '/(a)/ x$',
  '/(a)/ $0',
  '/(a)/ $01',
  '/(a)/ $1a',
  '/(a)/ $1.x',
  '/(a)/ ${1',
  '/(a)/ ${}',
  '/(a)/ ${a}',
  '/(a)/ ${1}}',
  '/(a)/ $(1',
  '/(a)/ $1234567890',
  '/(a)/ $999999999',
  '/(a)/ $_',
  '/(a)(b)/ $2 $1',
  '!/(a)/ $1',
  '!/a/ neg',
  '!!/a/ double',
  '! /a/ spaced',
  '!\t!/a/ tabs',
  '/a/',
  '/a/   ',
  '/a/i',
  '/a/imsxAEU v',
  '/a/X v',
  '/a/q v',
  '/a/ix!/b/ two',
  '/a/!/b/ two',
  '/a/! /b/ two',
  '/a/!/b/',
  '/a/!/b',
  '/a',
  '/a\\/b/ esc',
  '/a\\',
  '/a\\/ v',
  '\\a\\ backslash',
  '#a# hash delim',
  '|a|b| pipe',
  'xa/ v',
  '/[/ bad',
  '/(/ bad',
  '/(a/ bad $1',
  '/a(?<n>b)/ named $1',
  '/\\Qx\\E/ quote',
  'if /a/',
  'if/a/',
  'IF /a/i',
  'iF !/a/',
  'if /a/ extra',
  'if /a/!/b/',
  'if',
  'ifx /a/',
  'if /(/',
  'endif',
  'ENDIF',
  'endif extra',
  'endifx',
  'endif\t',
  'unknown request',
  '1/a/ v',
  '/a/ tab\tseparated\tvalue',
  '/a/\tvalue',
  '/a/ value\r',
  '/a/ v\x00hidden',
  '/a\x00b/ nul in pattern',
  '\x00',
  '/\xe9/ \xe9',
  '/a/ trailing   ',
  '//  empty pattern',
];

describe('native scanner and full parser agree', () => {
  for (const dialect of [pcreDialect, regexpDialect]) {
    test(`${dialect.kind}: each odd line alone, and all of them`, () => {
      for (const line of ODD_LINES) {
        same(dialect, line + '\n');
        same(dialect, line);
      }
      same(dialect, ODD_LINES.join('\n') + '\n');
      same(dialect, ODD_LINES.join('\n') + '\n', DICT_FLAG.NO_REGSUB);
      // the scanner does take most of the plain ones
      assert.ok(scannerTakes(dialect, ODD_LINES.join('\n')) >= 25);
    });

    test(`${dialect.kind}: logical lines (continuations, comments, blank lines, leading whitespace)`, () => {
      const tables = [
        ' /a/ starts with space\n/b/ c\n',
        '\t/a/ x\n  more\n/b/ c\n',
        '/a/ b\n  continued\n/c/ d\n',
        '/a/\n  value on the next line\n',
        '/a/ b\n# comment\n  continued after a comment\n\n  and a blank\n/c/ d',
        '# only a comment\n\n   \n',
        'if /a/\n/b/ c\n  cont\nendif\n  endif-cont\n',
        '/a/ b\r\n/c/ d\r\n',
        '\n\n/a/ b\n\n\n/c/ d\n\n',
        '/a/ b\n \n/c/ d\n',
        '/a/ b\n\t# indented comment\n/c/ d\n',
        'endif\n/a/ b\nif /x/\n',
        'if /a/\nif /b/\n/c/ d\nendif\n',
      ];
      for (const t of tables) same(dialect, t);
    });

    test(`${dialect.kind}: seeded random tables, mutated`, () => {
      const mutations: Array<(r: Rng, line: string) => string> = [
        (_r, l) => l,
        (_r, l) => ' ' + l,
        (_r, l) => l + ' $1',
        (_r, l) => l + ' ${2}',
        (_r, l) => l + ' $$',
        (_r, l) => l.replace(/ .*$/, ''),
        (_r, l) => '!' + l,
        (_r, l) => l.replace(/\//, '#'),
        (r, l) => l.slice(0, r.int(l.length + 1)),
        (r, l) => l.slice(0, r.int(l.length + 1)) + '\\',
        (r, l) => {
          const i = r.int(l.length + 1);
          return l.slice(0, i) + r.pick(['\x00', '\t', '\\', '/', '!', '$', '{', 'X', 'q', ' ']) + l.slice(i);
        },
        (_r, l) => l + '\n  continued',
        (_r, l) => '# ' + l,
        (_r, l) => l.toUpperCase(),
      ];
      let cases = 0;
      let taken = 0;
      for (let seed = 1; seed <= 300; seed++) {
        const c = generateCase(dialect.kind, seed);
        const r = new Rng(seed * 7919);
        const lines = c.lines.map((l) => (r.chance(0.3) ? r.pick(mutations)(r, l) : l));
        const text = lines.join('\n') + (r.chance(0.5) ? '\n' : '');
        same(dialect, text);
        if (seed % 10 === 0) same(dialect, text, DICT_FLAG.NO_REGSUB);
        taken += scannerTakes(dialect, text);
        cases++;
      }
      assert.equal(cases, 300);
      // the generator's rules are mostly plain: the scanner must be doing the work
      assert.ok(taken > 500, `scanner took ${taken} lines`);
    });
  }

  test('a table of 1,000 bench-like rules is taken whole by the scanner', () => {
    const lines: string[] = [];
    for (let i = 0; i < 250; i++) {
      lines.push(
        `/^user${i}@(?:sub\\.)?example${i}\\d*\\.com$/ OK`,
        `/^(?:postmaster|abuse)@domain${i}\\.(?:org|net)$/ REJECT role account at domain${i}`,
        `/^(.+?)@old${i}\\.example\\.net$/ $1@new${i}.example.net`,
        i % 2 ? `if /^[a-z]+${i}/` : 'endif',
      );
    }
    const text = lines.join('\n') + '\n';
    same(pcreDialect, text);
    assert.equal(scannerTakes(pcreDialect, text), 1000);
  });

  test('SRC_RHS_IS_FILE tables are parsed by the full parser only', () => {
    // values are file names then: the scanner must not take them as text
    const warnings: string[] = [];
    const opts: TableOpenOptions = {
      type: 'pcre',
      name: '/t',
      openFlags: DICT_FLAG.SRC_RHS_IS_FILE,
      fold: 'none',
      writable: false,
      param: () => undefined,
      warn: (w) => warnings.push(w),
    };
    const { rules } = parseRules(native, pcreDialect, '/a/ /nonexistent/file\n', opts);
    assert.equal(rules.length, 0);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /nonexistent\/file.*skipping this rule/);
  });

  test('records: the engine is checked and the text is copied', () => {
    assert.throws(() => native.patternsScan(99, '/a/ b', true, false));
    const text = '/a/ b\n';
    const scan = native.patternsScan(ENGINE.PCRE, text, true, false);
    const f = native.patternsCompileFinish(scan.job);
    assert.equal(text, '/a/ b\n');
    assert.deepEqual([...scan.records.subarray(0, 8)], [PATSCAN.MATCH, 1, 0, 1, 4, 5, 0, 0]);
    assert.equal(f.groups[0], 0);
  });
});

describe('tables read by the addon', () => {
  test('a file read by the addon: same table, and its time stamps match fs.stat (no false "changed")', async () => {
    const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { execFileSync } = await import('node:child_process');
    const { openTable } = await import('../../../src/tables/index.js');
    const dir = mkdtempSync(join(tmpdir(), 'patscan-'));
    try {
      const file = join(dir, 't.pcre');
      writeFileSync(file, '/^(a+)b$/ A:$1\n/c/ C\n');
      // a time stamp with nanoseconds that no millisecond value holds exactly
      execFileSync('touch', ['-d', '2021-03-04 05:06:07.123456789', file]);
      const opts: TableOpenOptions = { type: 'pcre', name: file, openFlags: 0, fold: 'none', writable: false, param: () => undefined, warn: () => {} };
      const t = await openTable(opts);
      assert.deepEqual(await t.lookup('aab', 0), { found: true, value: 'A:aa' });
      assert.equal(await t.changed!(), false);
      execFileSync('touch', ['-d', '2021-03-04 05:06:07.123456790', file]);
      assert.equal(await t.changed!(), true);
      // a name the addon cannot open is read (and reported) the usual way
      await assert.rejects(openTable({ ...opts, name: join(dir, 'missing') }), /open .*missing: No such file or directory/);
      // a FIFO is not read by the addon (it would block); inline tables never are
      const fifo = join(dir, 'fifo');
      execFileSync('mkfifo', [fifo]);
      const writer = import('node:fs/promises').then((fs) => fs.writeFile(fifo, '/x/ X\n'));
      const tf = await openTable({ ...opts, name: fifo });
      await writer;
      assert.deepEqual(await tf.lookup('x', 0), { found: true, value: 'X' });
      const ti = await openTable({ ...opts, name: '{ {/y/ Y} }' });
      assert.deepEqual(await ti.lookup('y', 0), { found: true, value: 'Y' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
