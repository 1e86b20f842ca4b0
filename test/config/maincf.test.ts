import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { splitNameVal } from '../../src/util/nameval.js';
import {
  ConfigError,
  configDirectory,
  parseMainCf,
  readLogicalLines,
  readMainCf,
} from '../../src/config/maincf.js';
import {
  cleanupConfDirs,
  makeConfDir,
  normalizeWs,
  postconf,
  skipNoPostconf,
  warnings,
} from './postconf.js';

after(cleanupConfDirs);

function parse(text: string): { params: Map<string, string>; warns: string[] } {
  const warns: string[] = [];
  const params = parseMainCf(text, 'main.cf', (m) => warns.push(m));
  return { params, warns };
}

describe('readLogicalLines', () => {
  const lines = (text: string) => readLogicalLines(text, 'f', () => {}).map((l) => [l.text, l.lineNo]);

  it('joins continuation lines keeping their leading whitespace', () => {
    assert.deepEqual(lines('a = x\n  y\n\tz\nb = 1\n'), [
      ['a = x  y\tz', 1],
      ['b = 1', 4],
    ]);
  });

  it('drops comments and blank lines, also between continuation lines', () => {
    assert.deepEqual(lines('# c\n\na = x\n# inner\n   # indented comment\n\n  y\n#end'), [['a = x  y', 3]]);
  });

  it('handles a missing final newline and CRLF line ends', () => {
    assert.deepEqual(lines('a = 1\r\nb = 2'), [
      ['a = 1\r', 1],
      ['b = 2', 2],
    ]);
  });

  it('warns about and skips text that starts with whitespace', () => {
    const warns: string[] = [];
    const out = readLogicalLines('  orphan\n   more\na = 1\n', 'x.cf', (m) => warns.push(m));
    assert.deepEqual(out.map((l) => l.text), ['a = 1']);
    assert.deepEqual(warns, ['x.cf: logical line must not start with whitespace: "  orphan   more"']);
  });

  it('truncates long text in that warning to 30 bytes', () => {
    const warns: string[] = [];
    readLogicalLines(' ' + 'x'.repeat(40) + '\n', 'f', (m) => warns.push(m));
    assert.deepEqual(warns, [`f: logical line must not start with whitespace: " ${'x'.repeat(29)}..."`]);
  });

  it('returns nothing for empty or comment-only input', () => {
    assert.deepEqual(lines(''), []);
    assert.deepEqual(lines('\n\n# x\n   \n'), []);
  });
});

describe('splitNameVal', () => {
  it('trims around "=" and at the end, not inside', () => {
    assert.deepEqual(splitNameVal('  name   =  a  b \t'), { name: 'name', value: 'a  b' });
    assert.deepEqual(splitNameVal('n=v'), { name: 'n', value: 'v' });
    assert.deepEqual(splitNameVal('n ='), { name: 'n', value: '' });
    assert.deepEqual(splitNameVal('n = a = b'), { name: 'n', value: 'a = b' });
  });

  it('reports Postfix errors', () => {
    assert.deepEqual(splitNameVal('foo'), { error: "missing '=' after attribute name" });
    assert.deepEqual(splitNameVal('foo bar = x'), { error: "missing '=' after attribute name" });
    assert.deepEqual(splitNameVal('= x'), { error: 'missing attribute name' });
    assert.deepEqual(splitNameVal('   '), { error: 'missing attribute name' });
  });
});

describe('parseMainCf', () => {
  it('parses values raw, with # inside values kept', () => {
    const { params, warns } = parse('a = b # c\nb=$a ${x}\n');
    assert.equal(params.get('a'), 'b # c');
    assert.equal(params.get('b'), '$a ${x}');
    assert.deepEqual(warns, []);
  });

  it('keeps continuation whitespace: "x" + "  y" gives "x  y"', () => {
    assert.equal(parse('a = x\n  y\n').params.get('a'), 'x  y');
  });

  it('last duplicate wins, with a warning only when the value changes', () => {
    const { params, warns } = parse('a = 1\na = 1\na = 2\n');
    assert.equal(params.get('a'), '2');
    assert.deepEqual(warns, ['main.cf, line 3: overriding earlier entry: a=1']);
  });

  it('throws ConfigError for a line without "="', () => {
    assert.throws(
      () => parse('a = 1\n\nfoo\n'),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.message === `main.cf, line 3: missing '=' after attribute name: "foo"`,
    );
  });

  it('reports the first physical line of a multi-line entry', () => {
    assert.throws(() => parse('# x\nfoo\n  bar\n'), {
      message: `main.cf, line 2: missing '=' after attribute name: "foo  bar"`,
    });
  });
});

describe('readMainCf and configDirectory', () => {
  it('reads DIR/main.cf as bytes', () => {
    const dir = makeConfDir(Buffer.from('a = caf\xe9\n', 'latin1'));
    assert.equal(readMainCf(dir, () => {}).get('a'), 'caf\xe9');
  });

  it('throws ConfigError for a missing main.cf', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-empty-'));
    try {
      assert.throws(() => readMainCf(dir), {
        name: 'ConfigError',
        message: `open ${dir}/main.cf: No such file or directory`,
      });
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  it('prefers -c, then MAIL_CONFIG, then /etc/postfix', () => {
    assert.equal(configDirectory({ c: '/x' }, { MAIL_CONFIG: '/y' }), '/x');
    assert.equal(configDirectory({}, { MAIL_CONFIG: '/y' }), '/y');
    assert.equal(configDirectory({}, {}), '/etc/postfix');
  });
});

describe('main.cf syntax versus real postconf', { skip: skipNoPostconf }, () => {
  it('gives the same values (whitespace-normalized)', () => {
    const text =
      'smtpd_restriction_classes = t1 t2 t3 t4 t5\n' +
      '# comment\n' +
      't1 = x\n  y\n# between\n\tz\n' +
      't2 = b # not a comment\n' +
      't3=tight\n' +
      't4 =   spaced   value   \n' +
      't5 = $t1 ${t2}\n';
    const dir = makeConfDir(text);
    const ours = parse(text).params;
    const names = ['t1', 't2', 't3', 't4', 't5'];
    const r = postconf(['-c', dir, '-h', ...names]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.lines, names.map((n) => normalizeWs(ours.get(n) ?? '')));
  });

  it('gives the same duplicate and leading-whitespace warnings', () => {
    const text = '  orphan\nsmtpd_restriction_classes = a\na = 1\na = 1\na = 2\n  b = 3\n';
    const dir = makeConfDir(text);
    const warns: string[] = [];
    parseMainCf(text, `${dir}/main.cf`, (m) => warns.push(m));
    const r = postconf(['-c', dir, '-h', 'a']);
    assert.equal(r.status, 0, r.stderr);
    for (const w of warns) assert.ok(warnings(r.stderr).includes(w), `postconf lacks warning: ${w}\n${r.stderr}`);
    assert.equal(r.lines[0], normalizeWs('2  b = 3'));
  });

  it('fails the same way on a line without "="', () => {
    const text = 'a = 1\nfoo bar\n';
    const dir = makeConfDir(text);
    let ours = '';
    try {
      parseMainCf(text, `${dir}/main.cf`, () => {});
    } catch (e) {
      ours = (e as Error).message;
    }
    const r = postconf(['-c', dir, '-h', 'mail_owner']);
    assert.notEqual(r.status, 0);
    assert.ok(r.stderr.includes(`postconf: fatal: ${ours}`), r.stderr);
  });
});
