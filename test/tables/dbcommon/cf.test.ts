/**
 * The shared configuration layer of the database client tables
 * (src/tables/dbcommon/): parameter files and the main.cf form, typed getters,
 * the query/result template language, the domain filter, result joining.
 * Expectations: spec tables-network.md §1 (checked against Postfix 3.7.11;
 * the SQLite differential tests ask the real postmap the same questions).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { DICT_ERR, TableOpenError, type Bytes } from '../../../src/tables/index.js';
import {
  CfParser,
  DomainList,
  ResultCollector,
  TemplateContext,
  buildLegacyQuery,
  domainLabels,
  loadSqlSettings,
  parseCInt,
  parseParameterText,
  planQuery,
  type SqlSettings,
} from '../../../src/tables/dbcommon/index.js';
import { sqliteQuote } from '../../../src/tables/sql/sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'sql-cf-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function throwsOpen(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => err instanceof TableOpenError && err.message === message);
}

async function rejectsOpen(p: Promise<unknown>, message: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof TableOpenError && err.message === message);
}

describe('parameter file syntax', () => {
  test('name = value, trimmed; value keeps "=" and a later "#"', () => {
    const m = parseParameterText('a=1\nb   =  x = y  \nc = /x # c\nd =\n', '/f.cf', () => assert.fail());
    assert.deepEqual([...m], [
      ['a', '1'],
      ['b', 'x = y'],
      ['c', '/x # c'],
      ['d', ''],
    ]);
  });

  test('continuation lines are joined without a separator; comments and blank lines inside are skipped', () => {
    const m = parseParameterText("query = SELECT 'second'\n   , 'contd'\n# comment\n\n  # indented comment\n\tmore\nnext = 1\n", '/f.cf', () =>
      assert.fail(),
    );
    assert.equal(m.get('query'), "SELECT 'second'   , 'contd'\tmore");
    assert.equal(m.get('next'), '1');
  });

  test('duplicates: the last wins, with a warning when the value differs', () => {
    const warnings: string[] = [];
    const m = parseParameterText('query = first\nquery = first\nx = 1\nquery = second\n', '/f.cf', (w) => warnings.push(w));
    assert.equal(m.get('query'), 'second');
    assert.deepEqual(warnings, ['/f.cf, line 4: overriding earlier entry: query=first']);
  });

  test('a continuation line at the start is ignored with a warning', () => {
    const warnings: string[] = [];
    const m = parseParameterText('  leading = x\na = 1\n', '/f.cf', (w) => warnings.push(w));
    assert.deepEqual([...m], [['a', '1']]);
    assert.deepEqual(warnings, ['/f.cf: logical line must not start with whitespace: "  leading = x"']);
  });

  test('malformed lines are fatal, with the line number of the logical line', () => {
    throwsOpen(() => parseParameterText('a = 1\n\nfoo\n', '/f.cf', () => {}), '/f.cf, line 3: missing \'=\' after attribute name: "foo"');
    throwsOpen(() => parseParameterText('= x\n', '/f.cf', () => {}), '/f.cf, line 1: missing attribute name: "= x"');
    throwsOpen(() => parseParameterText('a b = c\n', '/f.cf', () => {}), '/f.cf, line 1: missing \'=\' after attribute name: "a b = c"');
  });

  test('a NUL ends the line', () => {
    assert.equal(parseParameterText('a = x\0y\n', '/f.cf', () => {}).get('a'), 'x');
  });

});

describe('CfParser', () => {
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    utimesSync(path, 1_000_000_000, 1_000_000_000);
    return path;
  };
  const opts = (params: Record<string, string> = {}, warnings: string[] = []) => ({
    param: (n: string) => params[n],
    warn: (w: string) => warnings.push(w),
  });

  test('parameter file form: getters with defaults, no $ expansion', async () => {
    const path = file('a.cf', 'dbpath = $dir/t.db\nlimit = 12\nneg = -3\nflag = YES\noff = no\nempty =\n');
    const cf = await CfParser.open(path, opts());
    assert.ok(cf.fromFile);
    assert.equal(cf.getStr('dbpath', '', 1, 0), '$dir/t.db');
    assert.equal(cf.getStr('missing', 'dflt'), 'dflt');
    assert.equal(cf.getStr('missing', null), null);
    assert.equal(cf.getStr('empty', null), null);
    assert.equal(cf.getStr('empty', 'x'), '');
    assert.equal(cf.getInt('limit', 0), 12);
    assert.equal(cf.getInt('neg', 0), -3);
    assert.equal(cf.getInt('missing', 7), 7);
    assert.equal(cf.getBool('flag', false), true);
    assert.equal(cf.getBool('off', true), false);
    assert.equal(cf.getBool('missing', undefined), undefined);
    assert.equal(cf.owner?.uid, process.getuid?.());
    assert.equal(await cf.changed(), false);
  });

  test('parameter file errors have Postfix texts', async () => {
    const path = file('b.cf', 'n = abc\nb = maybe\ns = toolong\nbig = 2147483648\nhex = 0x10\nsp = 5 \n');
    const cf = await CfParser.open(path, opts());
    throwsOpen(() => cf.getStr('dbpath', '', 1, 0), `${path}: bad string length 0 < 1: dbpath = `);
    throwsOpen(() => cf.getStr('s', '', 0, 3), `${path}: bad string length 7 > 3: s = toolong`);
    throwsOpen(() => cf.getInt('n', 0), `${path}: bad numerical configuration: n = abc`);
    throwsOpen(() => cf.getInt('big', 0), `${path}: bad numerical configuration: big = 2147483648`);
    throwsOpen(() => cf.getInt('hex', 0), `${path}: bad numerical configuration: hex = 0x10`);
    throwsOpen(() => cf.getInt('missing', 0, 1, 0), `${path}: invalid missing parameter value 0 < 1`);
    throwsOpen(() => cf.getInt('missing', 9, 0, 5), `${path}: invalid missing parameter value 9 > 5`);
    throwsOpen(() => cf.getBool('b', true), `${path}: bad boolean configuration: b = maybe`);
    assert.equal(cf.getInt('sp', 0), 5);
  });

  test('a missing parameter file is an open error with the errno text', async () => {
    await rejectsOpen(CfParser.open(join(dir, 'nope.cf'), opts()), `open ${join(dir, 'nope.cf')}: No such file or directory`);
    await rejectsOpen(CfParser.open(dir, opts()), `read ${dir}: Is a directory`);
  });

  test('main.cf form: NAME_P through param (expanded by the caller), messages name NAME_P', () => {
    const cf = CfParser.fromMainCf('sq', (n) => ({ sq_dbpath: '/x/t.db', sq_limit: 'z', sq_b: 'on' })[n]);
    assert.ok(!cf.fromFile);
    assert.equal(cf.getStr('dbpath', '', 1, 0), '/x/t.db');
    throwsOpen(() => cf.getStr('table', null, 1, 0), 'bad string length 0 < 1: sq_table = ');
    throwsOpen(() => cf.getInt('limit', 0), 'bad numerical configuration: sq_limit = z');
    throwsOpen(() => cf.getInt('x', 0, 1), 'invalid sq_x parameter value 0 < 1');
    throwsOpen(() => cf.getBool('b', true), 'bad boolean configuration: sq_b = on');
  });

  test('names not starting with / or . are main.cf prefixes, even with a slash', async () => {
    const cf = await CfParser.open('etc/x.cf', opts({ 'etc/x.cf_dbpath': 'p' }));
    assert.equal(cf.getStr('dbpath', ''), 'p');
  });

  test('a file written within the last second is read again until it is stable', async () => {
    const path = join(dir, 'hot.cf');
    writeFileSync(path, 'a = 1\n');
    const t0 = Date.now();
    const cf = await CfParser.open(path, opts());
    assert.equal(cf.getStr('a', ''), '1');
    assert.ok(Date.now() - t0 >= 300);
  });

  test('changed() notices a rewritten file', async () => {
    const path = file('c.cf', 'a = 1\n');
    const cf = await CfParser.open(path, opts());
    assert.equal(await cf.changed(), false);
    writeFileSync(path, 'a = 22\n');
    assert.equal(await cf.changed(), true);
  });

  test('parseCInt is strtol over the whole string', () => {
    assert.equal(parseCInt('0'), 0);
    assert.equal(parseCInt('+7'), 7);
    assert.equal(parseCInt(' -2147483648'), -2147483648);
    assert.equal(parseCInt('2147483647'), 2147483647);
    for (const bad of ['', '-', '1 ', '1.5', 'x', '99999999999999999999']) assert.equal(parseCInt(bad), undefined, bad);
  });
});

describe('template language', () => {
  const owner = { type: 'sqlite', name: '/t.cf' };
  const make = (query: string, result = '%s', warnings: string[] = []) => {
    const ctx = new TemplateContext(owner, (w) => warnings.push(w));
    ctx.parse(query, 'query');
    ctx.parse(result, 'result');
    return ctx;
  };

  test('every specifier of a query template (Q4)', () => {
    const q = "SELECT '%s|%u|%d|%1|%2|%S|%U|%D|%%'";
    const ctx = make(q);
    assert.equal(
      ctx.expandQuery(q, 'someone@mail.example.com'),
      "SELECT 'someone@mail.example.com|someone|mail.example.com|com|example|someone@mail.example.com|someone|mail.example.com|%'",
    );
  });

  test('keys lacking what the templates need are skipped (Q5, Q6)', () => {
    const q = "'%s|%u|%d|%1|%2'";
    const ctx = make(q);
    for (const k of ['plainkey', '@example.com', 'user@', 'a@b']) assert.equal(ctx.expandQuery(q, k), null, k);
    assert.equal(ctx.expandQuery(q, 'x@a..b'), "'x@a..b|x|a..b|b|a'");
    assert.equal(ctx.expandQuery(q, 'u@v@a.b'), "'u@v@a.b|u@v|a.b|b|a'");
    assert.deepEqual(domainLabels('.a..b.'), ['a', 'b']);
  });

  test('%u alone: keys without @ are used whole, keys starting with @ are skipped', () => {
    const ctx = make('%u');
    assert.equal(ctx.expandQuery('%u', 'plain'), 'plain');
    assert.equal(ctx.expandQuery('%u', 'a@b'), 'a');
    assert.equal(ctx.expandQuery('%u', '@b'), null);
    assert.equal(ctx.expandQuery('%u', 'a@'), 'a');
  });

  test('requirements of the result template apply to the query (shared context)', () => {
    const ctx = make('%s', '%D');
    assert.equal(ctx.expandQuery('%s', 'nodomain'), null);
    assert.equal(ctx.expandQuery('%s', 'a@b'), 'a@b');
    const ctx2 = make('%s', '%3');
    assert.equal(ctx2.expandQuery('%s', 'a@b.c'), null);
    assert.equal(ctx2.expandQuery('%s', 'a@x.b.c'), 'a@x.b.c');
  });

  test('the quote function applies to substituted pieces only', () => {
    const q = "WHERE a='%s' AND b='%u' AND c='%d' AND d='%1' AND e='%%'";
    const ctx = make(q);
    assert.equal(ctx.expandQuery(q, "o'n@ex'a.c'm", sqliteQuote), "WHERE a='o''n@ex''a.c''m' AND b='o''n' AND c='ex''a.c''m' AND d='c''m' AND e='%'");
  });

  test('result template: %s %u %d of the value, upper case of the key (Q7)', () => {
    const values = ['plain', '@dom.org', 'user@dom.org', 'u2@'];
    const join = (fmt: string) => {
      const ctx = make('%s', fmt);
      let buf = '';
      for (const v of values) buf = ctx.expand(fmt, v, 'k@x.example.com', buf) ?? buf;
      return buf;
    };
    assert.equal(join('<%u>'), '<plain>,<user>,<u2>');
    assert.equal(join('<%d>'), '<dom.org>,<dom.org>');
    assert.equal(join('%S:%U:%D:%1:%2:%%'), Array(4).fill('k@x.example.com:k:x.example.com:com:example:%').join(','));
  });

  test('empty and null values, empty keys', () => {
    const warnings: string[] = [];
    const ctx = make('%s', '%s', warnings);
    assert.equal(ctx.expand('%s', null, 'k', ''), null);
    assert.equal(ctx.expand('%s', '', 'k', 'x'), null);
    assert.equal(ctx.expandQuery('%s', ''), null);
    assert.deepEqual(warnings, [
      'table "sqlite:/t.cf": empty lookup result for: "k" -- ignored',
      'table "sqlite:/t.cf": empty query string -- ignored',
    ]);
  });

  test('invalid specifiers are fatal at parse time', () => {
    const ctx = new TemplateContext(owner, () => {});
    throwsOpen(() => ctx.parse("SELECT '%x'", 'query'), "db_common_parse: /t.cf: Invalid query template: SELECT '%x'");
    throwsOpen(() => ctx.parse('abc%', 'result'), 'db_common_parse: /t.cf: Invalid result template: abc%');
    assert.equal(ctx.parse('%%', 'query'), false);
    assert.equal(ctx.parse('%S', 'query'), true);
  });
});

describe('legacy query form', () => {
  test('built from the four parameters; a trailing space when there are no conditions', () => {
    const cf = CfParser.fromText('/l.cf', 'table = t\nselect_field = v\nwhere_field = k\n');
    assert.equal(buildLegacyQuery(cf), "SELECT v FROM t WHERE k='%s' ");
    const cf2 = CfParser.fromText('/l.cf', "table = t\nselect_field = v\nwhere_field = k\nadditional_conditions = AND v LIKE 'u%%'\n");
    assert.equal(buildLegacyQuery(cf2), "SELECT v FROM t WHERE k='%s' AND v LIKE 'u%%'");
  });

  test('each of table, select_field, where_field is required (in that order)', () => {
    throwsOpen(() => buildLegacyQuery(CfParser.fromText('/l.cf', 'select_field = v\n')), '/l.cf: bad string length 0 < 1: table = ');
    throwsOpen(() => buildLegacyQuery(CfParser.fromText('/l.cf', 'table = t\n')), '/l.cf: bad string length 0 < 1: select_field = ');
    throwsOpen(() => buildLegacyQuery(CfParser.fromText('/l.cf', 'table = t\nselect_field = v\n')), '/l.cf: bad string length 0 < 1: where_field = ');
  });

  test('an empty query falls back to the legacy form; a bare % in the conditions is an invalid template', async () => {
    const base = { type: 'sqlite', name: '/l.cf', fold: 'none' as const, openFlags: 0, param: () => undefined, warn: () => {} };
    const s = await loadSqlSettings(CfParser.fromText('/l.cf', 'query =\ntable = t\nselect_field = v\nwhere_field = k\n'), base);
    assert.equal(s.query, "SELECT v FROM t WHERE k='%s' ");
    await rejectsOpen(
      loadSqlSettings(CfParser.fromText('/l.cf', "table = t\nselect_field = v\nwhere_field = k\nadditional_conditions = AND v LIKE 'u%'\n"), base),
      "db_common_parse: /l.cf: Invalid query template: SELECT v FROM t WHERE k='%s' AND v LIKE 'u%'",
    );
  });
});

describe('domain filter', () => {
  const list = (spec: string, warnings: string[] = [], utf8 = false) =>
    DomainList.create(spec, { pname: '/d.cf', utf8, warn: (w) => warnings.push(w) });

  test('exact, case-insensitive, first hit decides, negation', async () => {
    const d = await list('Example.COM, !bad.example.com  ok.example.com !!twice.org');
    assert.equal(d.size, 4);
    for (const [domain, want] of [
      ['example.com', true],
      ['EXAMPLE.com', true],
      ['sub.example.com', false],
      ['bad.example.com', false],
      ['ok.example.com', true],
      ['twice.org', true],
      ['other', false],
    ] as const) {
      assert.deepEqual(await d.match(domain), { matched: want, error: DICT_ERR.NONE }, domain);
    }
    // Negation comes first: the negated item hits before the plain one.
    const n = await list('!bad.example.com, bad.example.com');
    assert.equal((await n.match('bad.example.com')).matched, false);
  });

  test('check(): keys without @ or with an empty local part are skipped', async () => {
    const d = await list('example.com');
    assert.equal(await d.check('k@example.com'), 1);
    assert.equal(await d.check('k@other.com'), 0);
    assert.equal(await d.check('example.com'), 0);
    assert.equal(await d.check('@example.com'), 0);
    assert.equal(await d.check('a@b@example.com'), 1);
  });

  test('UTF-8 folding of patterns and domains when smtputf8 is on', async () => {
    const d = await list('\xc3\x89XAMPLE.com', [], true);
    assert.equal((await d.match('\xc3\xa9xample.com')).matched, true);
    const a = await list('\xc3\x89XAMPLE.com', [], false);
    assert.equal((await a.match('\xc3\xa9xample.com')).matched, false);
    assert.equal((await a.match('\xc3\x89xample.com')).matched, true);
  });

  test('/file items are read in line by line; comments end a line with a warning', async () => {
    const path = join(dir, 'domains');
    writeFileSync(path, '# comment line\nfile.org other.org\n!neg.org # trailing\nafter.org\n');
    const warnings: string[] = [];
    const d = await list(`${path}, last.org`, warnings);
    assert.deepEqual(warnings, ['/d.cf: comment at end of line is not supported: # trailing\n']);
    for (const [domain, want] of [
      ['file.org', true],
      ['other.org', true],
      ['neg.org', false],
      ['after.org', true],
      ['last.org', true],
    ] as const) {
      assert.equal((await d.match(domain)).matched, want, domain);
    }
  });

  test('an unreadable /file makes matching fail with RETRY', async () => {
    const warnings: string[] = [];
    const d = await list(`${dir}/none, x.org`, warnings);
    assert.deepEqual(await d.match('x.org'), { matched: false, error: DICT_ERR.RETRY });
    assert.deepEqual(warnings, [
      `nofile:${dir}/none is unavailable. open file ${dir}/none: No such file or directory`,
      `/d.cf: nofile:${dir}/none: table lookup problem`,
    ]);
    assert.equal(await d.check('k@x.org'), DICT_ERR.RETRY);
  });

  test('type:table items match when the domain is found there', async () => {
    await import('../../../src/tables/index.js');
    const d = await list('inline:{ tbl.org=yes }, !static:x');
    assert.equal((await d.match('tbl.org')).matched, true);
    assert.equal((await d.match('anything')).matched, false);
    const f = await list('fail:x, ok.org');
    assert.equal((await f.match('ok.org')).error, DICT_ERR.RETRY);
  });

  test("'!' without a pattern is fatal", async () => {
    await rejectsOpen(list('a.org, !'), "/d.cf: no pattern after '!'");
  });
});

describe('lookup pipeline', () => {
  async function settings(text: string): Promise<SqlSettings> {
    const warnings: string[] = [];
    const s = await loadSqlSettings(CfParser.fromText('/p.cf', text), {
      type: 'sqlite',
      name: '/p.cf',
      fold: 'none',
      openFlags: 0,
      param: () => undefined,
      warn: (w) => warnings.push(w),
    });
    return s;
  }

  test('planQuery: UTF-8 check, domain filter, expansion with quoting', async () => {
    const s = await settings("query = SELECT v FROM t WHERE k='%s'\ndomain = example.com\n");
    assert.deepEqual(await planQuery(s, "o'n@example.com", { utf8Check: true, quote: sqliteQuote }), {
      kind: 'query',
      query: "SELECT v FROM t WHERE k='o''n@example.com'",
    });
    assert.deepEqual(await planQuery(s, 'x@other.com', { utf8Check: true }), { kind: 'skip', result: { found: false, error: 0 } });
    assert.deepEqual(await planQuery(s, '\xff@example.com', { utf8Check: true }), { kind: 'skip', result: { found: false, error: 0 } });
    assert.equal((await planQuery(s, '\xff@example.com', { utf8Check: false })).kind, 'query');
  });

  test('ResultCollector: NULLs and empties skipped, comma join, NOT_FOUND when nothing is left', async () => {
    const s = await settings('query = %s\nresult_format = [%s]\n');
    const c = new ResultCollector(s, 'k');
    for (const v of [null, 'a', '', 'b\0c', null]) assert.equal(c.add(v), true);
    assert.deepEqual(c.result(), { found: true, value: '[a],[b]' });
    const e = new ResultCollector(s, 'k');
    e.add(null);
    e.add('');
    assert.deepEqual(e.result(), { found: false, error: DICT_ERR.NONE });
  });

  test('ResultCollector: expansion_limit counts appended values and fails with RETRY', async () => {
    const s = await settings('query = %s\nresult_format = %d\nexpansion_limit = 2\n');
    const c = new ResultCollector(s, 'k');
    // values without a domain are skipped and do not count
    for (const v of ['a@x', 'nodomain', 'b@y']) assert.equal(c.add(v), true);
    assert.equal(c.add('c@z'), false);
    assert.equal(c.exceeded, true);
    assert.deepEqual(c.result(), { found: false, error: DICT_ERR.RETRY });
    const unlimited = await settings('query = %s\nexpansion_limit = -1\n');
    const u = new ResultCollector(unlimited, 'k');
    for (const v of ['a', 'b', 'c']) assert.equal(u.add(v), true);
    assert.deepEqual(u.result(), { found: true, value: 'a,b,c' });
  });

  test('bad settings are fatal at load', async () => {
    await rejectsOpen(settings('query = %s\nexpansion_limit = abc\n'), '/p.cf: bad numerical configuration: expansion_limit = abc');
    await rejectsOpen(settings('query = %s\nresult_format =\n'), '/p.cf: bad string length 0 < 1: result_format = ');
  });
});

/** Byte strings round-trip through every step (no text decoding anywhere). */
test('byte strings pass through unchanged', async () => {
  const ctx = new TemplateContext({ type: 'sqlite', name: 'n' }, () => {});
  const q: Bytes = "'%s'";
  ctx.parse(q, 'query');
  assert.equal(ctx.expandQuery(q, '\xe9\xff@\x80'), "'\xe9\xff@\x80'");
});
