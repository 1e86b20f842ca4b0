import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { expandValue, MacroError, parseCompatLevel } from '../../src/config/expand.js';
import { Config } from '../../src/config/params.js';
import { parseMainCf } from '../../src/config/maincf.js';
import {
  cleanupConfDirs,
  makeConfDir,
  normalizeWs,
  postconfAsync,
  postconfExpanded,
  skipNoPostconf,
  type PostconfResult,
} from './postconf.js';

after(cleanupConfDirs);

const VARS: Record<string, string> = {
  a: 'x',
  e: '',
  five: '5',
  ten: '10',
  lvl: '3.6',
  nested: '$a$a',
  dollar: '$$',
  deep: '${a?{$nested}}',
  list: 'hash:/etc/a, proxy:hash:/etc/b',
};

function exp(text: string, vars: Record<string, string> = VARS): string {
  return expandValue(text, (n) => (Object.hasOwn(vars, n) ? vars[n] : undefined));
}

function expErr(text: string, vars: Record<string, string> = VARS): string {
  try {
    exp(text, vars);
  } catch (e) {
    assert.ok(e instanceof MacroError, `not a MacroError: ${e}`);
    return e.message;
  }
  assert.fail(`no error for ${JSON.stringify(text)}`);
}

describe('expandValue: references', () => {
  it('expands $name, ${name} and $(name)', () => {
    assert.equal(exp('$a ${a} $(a)'), 'x x x');
  });

  it('ends $name at the first non-name character', () => {
    assert.equal(exp('$a.$a-$a_b/$a'), 'x.x-/x');
  });

  it('turns $$ into $', () => {
    assert.equal(exp('$$a $$$a $$'), '$a $x $');
  });

  it('expands undefined names to the empty string', () => {
    assert.equal(exp('[$nope][${nope}]'), '[][]');
  });

  it('expands values recursively, but $$ only once per level', () => {
    assert.equal(exp('$nested'), 'xx');
    assert.equal(exp('$deep'), 'xx');
    // The value "$$" of dollar becomes literal text "$", which is not parsed again.
    assert.equal(exp('$dollar'), '$');
  });

  it('can expand only one level (recurse: false)', () => {
    const r = expandValue('$nested', (n) => VARS[n], { recurse: false });
    assert.equal(r, '$a$a');
  });

  it('allows blanks around a name inside ${...}', () => {
    assert.equal(exp('${ a }'), 'x');
  });
});

describe('expandValue: conditionals', () => {
  it('${name?text} and ${name:text}', () => {
    assert.equal(exp('${a?yes}|${e?yes}|${nope?yes}'), 'yes||');
    assert.equal(exp('${a:no}|${e:no}|${nope:no}'), '|no|no');
  });

  it('braced operands ignore blanks around the braces', () => {
    assert.equal(exp('${a? {yes} }|${e : {no}}'), 'yes|no');
  });

  it('unbraced operands are taken verbatim to the closing brace', () => {
    assert.equal(exp('${ a ? yes }'), ' yes ');
    assert.equal(exp('${e: no way }'), ' no way ');
  });

  it('ternary forms select one branch', () => {
    assert.equal(exp('${a?{t1}:{t2}}|${e?{t1}:{t2}}'), 't1|t2');
    assert.equal(exp('${a?{t1}:t2 x}|${e?{t1}:t2 x}'), 't1|t2 x');
  });

  it('expands only the selected branch', () => {
    // The other branch holds an error that would throw if expanded.
    assert.equal(exp('${a?{ok}:{$}}'), 'ok');
    assert.equal(exp('${e?{$}:{ok}}'), 'ok');
  });

  it('expands references inside branches, nested braces kept', () => {
    assert.equal(exp('${a?{<$a>}}'), '<x>');
    assert.equal(exp('${a?{ {inner} }}'), ' {inner} ');
    assert.equal(exp('${a?${e:inner}}'), 'inner');
    assert.equal(exp('${a?x{y}z}'), 'x{y}z');
  });

  it('keeps text after ? verbatim when it has ?, : and braces (2.x compatibility)', () => {
    assert.equal(exp('${a??foo:{b}ar}'), '?foo:{b}ar');
  });
});

describe('expandValue: relational operators', () => {
  it('yields "true" or the empty string', () => {
    assert.equal(exp('[${{1} == {1}}][${{1} == {2}}]'), '[true][]');
  });

  it('compares numerically when both sides are all digits', () => {
    assert.equal(exp('${{5} < {10}}'), 'true');
    assert.equal(exp('${{$five} < {$ten}}'), 'true');
    assert.equal(exp('${{09} == {9}}'), 'true');
    assert.equal(exp('${{9223372036854775807} > {1}}'), 'true');
  });

  it('compares bytes otherwise', () => {
    assert.equal(exp('${{5a} < {10}}'), '');
    assert.equal(exp('${{ab} < {b}}'), 'true');
    assert.equal(exp('${{b} >= {a}}'), 'true');
    assert.equal(exp('${{abc} != {abd}}'), 'true');
    assert.equal(exp('${{} == {}}'), 'true');
    assert.equal(exp('${{ 1} == {1}}'), '', 'operand blanks are significant');
    assert.equal(exp('${{\xe9} > {z}}'), 'true', 'unsigned byte order');
  });

  it('supports every operator', () => {
    const ops: [string, boolean, boolean, boolean][] = [
      // op, 1 OP 2, 2 OP 2, 3 OP 2
      ['==', false, true, false],
      ['!=', true, false, true],
      ['<', true, false, false],
      ['<=', true, true, false],
      ['>=', false, true, true],
      ['>', false, false, true],
    ];
    for (const [op, lt, eq, gt] of ops) {
      assert.equal(exp(`\${{1} ${op} {2}}`), lt ? 'true' : '', `1 ${op} 2`);
      assert.equal(exp(`\${{2} ${op} {2}}`), eq ? 'true' : '', `2 ${op} 2`);
      assert.equal(exp(`\${{3}${op}{2}}`), gt ? 'true' : '', `3 ${op} 2`);
    }
  });

  it('combines with ? and :', () => {
    assert.equal(exp('${{abc} == {abc}?{eq}:{ne}}'), 'eq');
    assert.equal(exp('${{abc} == {abd} ? {eq} : {ne}}'), 'ne');
    assert.equal(exp('${{1}<{2}:{was false}}|${{2}<{1}:{was false}}'), '|was false');
    assert.equal(exp('${ {1}  ==  {1}  ?  {y}  :  {n} }'), 'y');
  });

  it('compares compatibility levels with the "level" suffix', () => {
    assert.equal(exp('${{3.6} <level {3.10}}'), 'true');
    assert.equal(exp('${{3.6} < {3.10}}'), '', 'plain < compares bytes');
    assert.equal(exp('${{3.6} ==level {3.6.0}}'), 'true');
    assert.equal(exp('${{2} <=level {2.0}}'), 'true');
    assert.equal(exp('${{3} >level {2.99}}'), 'true');
    assert.equal(exp('${{3.6.1} >level {3.6}}'), 'true');
    assert.equal(exp('${{1} !=level {01}}'), '');
    assert.equal(exp('${{$lvl} >=level {3.6}?{new}:{old}}'), 'new');
    assert.equal(exp('${{0} <level {1} ? {no} : {yes}}'), 'no');
  });
});

describe('parseCompatLevel', () => {
  it('encodes major.minor.patch so that fields compare separately', () => {
    const v = (s: string) => parseCompatLevel(s);
    assert.ok(v('3.10')! > v('3.9')!);
    assert.equal(v('2'), v('2.0.0'));
    assert.ok(v('3.6.1')! > v('3.6')!);
    assert.ok(v('4')! > v('3.1023.1023')!);
  });

  it('accepts what strtol accepts, rejects the rest', () => {
    assert.notEqual(parseCompatLevel(' 3'), undefined);
    assert.notEqual(parseCompatLevel('+3.1'), undefined);
    for (const bad of ['', 'x', '3.', '3.x', '3.6.', '3.6.1.1', '-1', '3.1024', '3.0.1024', '3 ', '1e3']) {
      assert.equal(parseCompatLevel(bad), undefined, JSON.stringify(bad));
    }
  });
});

describe('expandValue: errors', () => {
  const cases: [string, string][] = [
    ['$', 'empty macro name: "$"'],
    ['x$', 'empty macro name: "x$"'],
    ['$-', 'empty macro name: "$-"'],
    ['${}', 'empty macro name: "${}"'],
    ['${a', 'truncated macro reference: "${a"'],
    ['$(a', 'truncated macro reference: "$(a"'],
    ['${a b}', 'attribute name syntax error at: "...a>>> b"'],
    ['${abc-d}', 'attribute name syntax error at: "...abc>>>-d"'],
    ['$(a{)}', 'attribute name syntax error at: "...a>>>{"'],
    ['${a{x}}', 'attribute name syntax error at: "...a>>>{x}"'],
    ['${{1} === {2}}', '"==" or "!="" or "<"" or "<="" or ">="" or ">" expected at: "...1}>>>=== {2}"'],
    ['${{1} {2}}', '"==" or "!="" or "<"" or "<="" or ">="" or ">" expected at: "...1}>>>{2}"'],
    ['${{1} < }', '"{expression}" expected at: "...{1} <>>> "'],
    ['${{1} <level x}', '"{expression}" expected at: "...{1} <>>> x"'],
    ['${{1} <x {2}}', 'bad operator suffix at: "...<>>>x"'],
    ['${{1} <levelx {2}}', 'bad operator suffix at: "...<>>>levelx"'],
    ['${{1} <level {2.x}}', 'malformed compatibility level syntax: "2.x"'],
    ['${{x} <level {2}}', 'malformed compatibility level syntax: "x"'],
    ['${{1} == {1} x}', '"?" or ":" expected at: "...}>>>x"'],
    ['${a?{x}y}', '":" expected at: "...x}>>>y"'],
    ['${a?{x}:{y}z}', 'unexpected input at: "...y}>>>z"'],
    ['${a:{y}z}', 'unexpected input at: "...y}>>>z"'],
    ['$(a?{x)', 'unbalanced {} in attribute expression: "{x"'],
    ['$({1)', 'unbalanced {} in attribute expression: "{1"'],
    ['${{99999999999999999999} == {1}}', 'mac_exp_eval: bad conversion: 99999999999999999999'],
  ];
  for (const [text, msg] of cases) {
    it(`${text} -> ${msg}`, () => {
      assert.equal(expErr(text), msg);
    });
  }

  it('stops unreasonable nesting', () => {
    assert.equal(expErr('$g', { g: '$g' }), 'unreasonable macro call nesting: "g"');
    assert.equal(expErr('$p', { p: 'a$q', q: 'b$p' }), 'unreasonable macro call nesting: "a"');
  });

  it('stops a cycle through relational operands (Postfix would crash)', () => {
    assert.match(expErr('$c', { c: '${{$c} == {x}}' }), /^unreasonable macro call nesting: /);
  });

  it('expands a chain of 100 parameters, not 101 (pattern "$c1")', () => {
    const chain = (n: number) => {
      const v: Record<string, string> = {};
      for (let i = 1; i < n; i++) v[`c${i}`] = `$c${i + 1}`;
      v[`c${n}`] = 'end';
      return v;
    };
    // Pattern "$c1": the callback for c_k runs at level k-1, the literal at level n.
    assert.equal(exp('$c1', chain(100)), 'end');
    assert.equal(expErr('$c1', chain(101)), 'unreasonable macro call nesting: "end"');
  });
});

describe('expansion versus real postconf -x', { skip: skipNoPostconf }, () => {
  // Each case becomes a parameter tN, made "used" via smtpd_restriction_classes.
  const cases = [
    '$a ${a} $(a)',
    '$a.$a-$a_b/$a',
    '$$a $$$a',
    '[$zz_undef][${zz_undef}]',
    '$nested|$deep|$dollar|$$',
    '${a?{ok}:{$}}|${e?{$}:{ok}}',
    '${a?yes}|${e?yes}|${zz_undef?yes}',
    '${a:no}|${e:no}|${zz_undef:no}',
    'A${ a ? yes }B',
    'A${ e : yes }B',
    '${a? {yes} }|${e : {no}}',
    '${a?{t1}:{t2}}|${e?{t1}:{t2}}',
    '${a?{t1}:t2 x}|${e?{t1}:t2 x}',
    '${a?{<$a>}}|${a?${e:inner}}|${a?x{y}z}',
    '${a??foo:{b}ar}',
    '[${{1} == {1}}][${{1} == {2}}]',
    '${{5} < {10}}|${{$five} < {$ten}}|${{09} == {9}}|${{9223372036854775807} > {1}}',
    '${{5a} < {10}}|${{ab} < {b}}|${{b} >= {a}}|${{abc} != {abd}}|${{} == {}}',
    '${{abc} == {abc}?{eq}:{ne}}|${{abc} == {abd} ? {eq} : {ne}}',
    '${{1}<{2}:{was false}}|${{2}<{1}:{was false}}',
    '${ {1}  ==  {1}  ?  {y}  :  {n} }',
    '${{3.6} <level {3.10}}|${{3.6} < {3.10}}|${{3.6} ==level {3.6.0}}',
    '${{2} <=level {2.0}}|${{3} >level {2.99}}|${{3.6.1} >level {3.6}}|${{1} !=level {01}}',
    '${{$lvl} >=level {3.6}?{new}:{old}}',
    '${{$compatibility_level} <level {1} ? {no} : {yes}}',
    '${{$a} == {x} ? {$nested} : {$zz_undef}}',
    'pre $a mid ${a} post ${e?{x}:{y}}trail',
    '$list',
    '${list?{proxy:texthash:/x}}',
  ];
  const support =
    'a = x\ne =\nfive = 5\nten = 10\nlvl = 3.6\nnested = $a$a\ndeep = ${a?{$nested}}\n' +
    'dollar = $$\n' +
    'list = hash:/etc/a, proxy:hash:/etc/b\n';

  for (const level of [undefined, '3.6']) {
    it(`matches for ${cases.length} expressions (compatibility_level ${level ?? 'default'})`, () => {
      const names = cases.map((_, i) => `t${i}`);
      let text = `smtpd_restriction_classes = ${names.join(' ')}\n` + support;
      if (level) text += `compatibility_level = ${level}\n`;
      cases.forEach((c, i) => (text += `t${i} = ${c}\n`));
      const dir = makeConfDir(text);
      const config = new Config(parseMainCf(text, 'main.cf', () => {}), { configDir: dir });
      const theirs = postconfExpanded(dir, names);
      names.forEach((n, i) => {
        assert.equal(normalizeWs(config.get(n)), theirs[i], `case ${cases[i]}`);
      });
    });
  }

  describe('errors', () => {
    const errorCases = [
      '$',
      'x$',
      '${}',
      '${a',
      '${a b}',
      '${abc-d}',
      '$(a{)}',
      '${{1} === {2}}',
      '${{1} < }',
      '${{1} <level x}',
      '${{1} <x {2}}',
      '${{1} <levelx {2}}',
      '${{1} <level {2.x}}',
      '${{1} == {1} x}',
      '${a?{x}y}',
      '${a?{x}:{y}z}',
      '$(a?{x)',
      '$({1)',
      '${{99999999999999999999} == {1}}',
      '$loop',
    ];
    const results = new Map<string, PostconfResult>();

    before(async () => {
      await Promise.all(
        errorCases.map(async (c) => {
          const dir = makeConfDir(`smtpd_restriction_classes = t\na = x\nloop = $loop\nt = ${c}\n`);
          results.set(c, await postconfAsync(['-c', dir, '-xh', 't']));
        }),
      );
    });

    for (const c of errorCases) {
      it(`fails like postconf: ${c}`, () => {
        const msg = expErr(c, { a: 'x', loop: '$loop' });
        const r = results.get(c)!;
        assert.equal(r.status, 1, r.stderr);
        const fatalOnly = msg.startsWith('mac_exp_eval:');
        const line = fatalOnly ? `postconf: fatal: ${msg}` : `postconf: warning: ${msg}`;
        assert.ok(r.stderr.split('\n').includes(line), `expected "${line}" in:\n${r.stderr}`);
      });
    }
  });

  it('has the same nesting limit', async () => {
    const chain = (n: number) => {
      let t = `smtpd_restriction_classes = c1\n`;
      for (let i = 1; i < n; i++) t += `c${i} = $c${i + 1}\n`;
      return t + `c${n} = end\n`;
    };
    await Promise.all(
      [100, 101, 102, 103].map(async (n) => {
        const text = chain(n);
        const dir = makeConfDir(text);
        const r = await postconfAsync(['-c', dir, '-xh', 'c1']);
        const config = new Config(parseMainCf(text, 'main.cf', () => {}), { warn: () => {} });
        let ours: string;
        try {
          ours = config.get('c1');
        } catch {
          ours = 'ERROR';
        }
        assert.equal(ours, r.status === 0 ? r.lines[0] : 'ERROR', `chain of ${n}`);
      }),
    );
  });
});
