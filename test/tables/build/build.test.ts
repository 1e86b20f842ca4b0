import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { runBuild, postfixPrintable } from '../../../src/cli/build.js';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import {
  BuildError,
  buildCdb,
  buildTable,
  parsePostmapSource,
  POSTMAP_BUILD_FLAGS,
  unsupportedBuildMessage,
  type BuildEntry,
  type BuildOptions,
} from '../../../src/tables/build/build.js';
import { openCdb } from '../../../src/tables/indexed/cdb.js';
import { defaultRegistry, TableRegistry, TABLE_TYPES, utf8ToBytes as u, type Bytes } from '../../../src/tables/index.js';
import { POSTMAP, randomSource } from '../indexed/cdbgen.js';
import { openOptions } from '../conformance.js';
import { configDirFor, runPostmap, skipPostmap } from '../../support/postmap.js';

const { DUP_WARN, DUP_IGNORE, DUP_REPLACE, TRY1NULL, FOLD_FIX, UTF8_REQUEST, SRC_RHS_IS_FILE } = DICT_FLAG;

interface Run {
  status: number;
  /** stderr lines without the program name, e.g. "warning: ..." */
  lines: string[];
}

/** proxymapd build in-process, stderr captured. */
async function ours(args: string[]): Promise<Run> {
  const chunks: Buffer[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((c: string | Uint8Array) => {
    chunks.push(typeof c === 'string' ? Buffer.from(c) : Buffer.from(c));
    return true;
  }) as typeof process.stderr.write;
  let status: number;
  try {
    status = await runBuild(args);
  } finally {
    process.stderr.write = write;
  }
  const lines = Buffer.concat(chunks).toString('latin1').split('\n').filter(Boolean);
  for (const l of lines) assert.ok(l.startsWith('proxymapd: '), l);
  return { status, lines: lines.map((l) => l.slice('proxymapd: '.length)) };
}

/** postmap with the same arguments. */
async function theirs(mode: 'utf8' | 'ascii', args: string[]): Promise<Run> {
  const r = spawnSync(POSTMAP!, ['-c', configDirFor(mode), ...args], { timeout: 60_000 });
  const lines = r.stderr.toString('latin1').split('\n').filter(Boolean);
  for (const l of lines) assert.ok(l.startsWith('postmap: '), l);
  return { status: r.status ?? -1, lines: lines.map((l) => l.slice('postmap: '.length)) };
}

function cmp(a: string, b: string): boolean {
  const r = spawnSync('cmp', [a, b]);
  if (r.error) return readFileSync(a).equals(readFileSync(b));
  return r.status === 0;
}

describe('proxymapd build vs postmap: byte-identical files, same messages', { skip: skipPostmap }, () => {
  let root = '';
  let n = 0;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'build-test-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  /** Two directories with the same files; returns them. */
  const pair = (files: Record<string, Bytes>): [string, string] => {
    const dirs: [string, string] = [join(root, `${n}a`), join(root, `${n++}b`)];
    for (const d of dirs) {
      mkdirSync(d);
      for (const [f, text] of Object.entries(files)) writeFileSync(join(d, f), Buffer.from(text.replaceAll('{d}', d), 'latin1'));
    }
    return dirs;
  };

  /**
   * Build `maps` (type:relative-path, '{d}' = the directory) in both
   * directories, with postmap and with proxymapd build; compare status,
   * messages (directory names neutralized) and the output files.
   */
  async function compare(
    files: Record<string, Bytes>,
    args: string[],
    maps: string[],
    mode: 'utf8' | 'ascii' = 'utf8',
    outputs: string[] = ['src.cdb'],
  ): Promise<{ dirs: [string, string]; run: Run }> {
    const [da, db] = pair(files);
    const fix = (d: string) => maps.map((m) => m.replaceAll('{d}', d));
    const their = await theirs(mode, [...args, ...fix(da)]);
    const our = await ours(['-c', configDirFor(mode), ...args, ...fix(db)]);
    const norm = (r: Run, d: string) => r.lines.map((l) => l.replaceAll(d, '{d}'));
    assert.equal(our.status, their.status, 'exit status');
    assert.deepEqual(norm(our, db), norm(their, da), 'messages');
    for (const f of outputs) {
      const [a, b] = [join(da, f), join(db, f)];
      assert.equal(existsSync(b), existsSync(a), `${f} exists`);
      if (existsSync(a)) {
        assert.ok(cmp(a, b), `${f} differs from postmap's`);
        assert.equal(statSync(b).mode, statSync(a).mode, `${f} mode`);
      }
    }
    return { dirs: [da, db], run: our };
  }

  const VARIANTS: Array<[string[], 'utf8' | 'ascii']> = [
    [[], 'utf8'],
    [['-N'], 'utf8'],
    [['-n'], 'utf8'],
    [['-r'], 'utf8'],
    [['-w'], 'utf8'],
    [['-f'], 'utf8'],
    [['-u'], 'utf8'],
    [['-r', '-N'], 'utf8'],
    [['-wnf'], 'utf8'],
    [['-N', '-n'], 'utf8'],
    [['-n', '-N'], 'utf8'],
    [['-r', '-w'], 'utf8'],
    [['-w', '-r'], 'utf8'],
    [[], 'ascii'],
    [['-r'], 'ascii'],
    [['-w', '-N'], 'ascii'],
  ];
  VARIANTS.forEach(([args, mode], i) => {
    it(`random source, ${args.join(' ') || 'no options'} [${mode} main.cf]`, async () => {
      const src = randomSource(500 + i, 600);
      await compare({ src: src.text }, args, ['cdb:{d}/src'], mode);
    });
  });

  it('the texthash grammar source', async () => {
    const text = u(' lead\nFoo\tBar Baz \nfoo dup\n"aa bb" cc\ngg\\ hh ii\ntrail\\\nkey:  v\nStraße x\nÄ y\nς z\nnoval\ncont first\n  second line\n#c\n\tthird\n"unb x\nempty ""\n') + '\xff\xfe bad\nnul\0byte here\n';
    for (const mode of ['utf8', 'ascii'] as const) await compare({ src: text }, [], ['cdb:{d}/src'], mode);
  });

  it('-r moves records down and leaves the old tail, as tinycdb does', async () => {
    const big = (c: string, len: number) => c.repeat(len);
    const text = [
      `a ${big('x', 200_000)}`,
      `b ${big('y', 70_000)}`,
      'c 1',
      'A short',
      `d ${big('z', 1000)}`,
      'B 2',
      'C 3',
      'a again',
      ...Array.from({ length: 300 }, (_, i) => `k${i % 50} v${i}`),
    ].join('\n');
    for (const args of [['-r'], ['-w'], [], ['-r', '-N']]) await compare({ src: text + '\n' }, args, ['cdb:{d}/src']);
  });

  it('many records in few buckets (chunked record lists, probing)', async () => {
    const lines = Array.from({ length: 3000 }, (_, i) => `key${i % 1700} value${i}`);
    for (const args of [[], ['-r'], ['-w']]) await compare({ src: lines.join('\n') }, args, ['cdb:{d}/src']);
  });

  it('-F: values are base64 file contents', async () => {
    await compare(
      { src: 'k1 {d}/f1\nk2 {d}/f1, {d}/f2\nk3 {d}/missing\nk4 ,\n', f1: 'one\n', f2: u('twö') },
      ['-F'],
      ['cdb:{d}/src'],
    );
  });

  it('empty source, comments only, source is a directory', async () => {
    await compare({ src: '' }, [], ['cdb:{d}/src']);
    await compare({ src: '# just a comment\n\n' }, ['-N'], ['cdb:{d}/src']);
    const [da, db] = pair({});
    mkdirSync(join(da, 'dsrc'));
    mkdirSync(join(db, 'dsrc'));
    assert.equal((await theirs('utf8', [`cdb:${da}/dsrc`])).status, 0);
    assert.equal((await ours(['-c', configDirFor('utf8'), `cdb:${db}/dsrc`])).status, 0);
    assert.ok(cmp(join(da, 'dsrc.cdb'), join(db, 'dsrc.cdb')));
  });

  it('source permissions carry over to the output', async () => {
    const [da, db] = pair({ src: 'a b\n' });
    for (const d of [da, db]) chmodSync(join(d, 'src'), 0o640);
    await theirs('utf8', [`cdb:${da}/src`]);
    await ours(['-c', configDirFor('utf8'), `cdb:${db}/src`]);
    assert.equal(statSync(join(db, 'src.cdb')).mode, statSync(join(da, 'src.cdb')).mode);
    assert.equal(statSync(join(db, 'src.cdb')).mode & 0o777, 0o640);
  });

  it('fatal errors: missing source, unsupported types, proxy, fail', async () => {
    for (const map of ['cdb:{d}/missing', 'texthash:{d}/src', 'regexp:{d}/src', 'nosuchtype:{d}/src', 'dbm:{d}/src', 'proxy:{d}/src', 'fail:{d}/src', 'fail:{d}/empty', 'pcre:{d}/missing', ':{d}/src']) {
      const { run } = await compare({ src: 'a b\n', empty: '' }, [], [map]);
      if (!map.startsWith('fail:{d}/empty')) assert.equal(run.status, 1, map);
    }
  });

  it('the temporary file cannot be opened', async () => {
    const [da, db] = pair({ src: 'a b\n' });
    mkdirSync(join(da, 'src.cdb.tmp'));
    mkdirSync(join(db, 'src.cdb.tmp'));
    const t = await theirs('utf8', [`cdb:${da}/src`]);
    const o = await ours(['-c', configDirFor('utf8'), `cdb:${db}/src`]);
    assert.equal(o.status, t.status);
    assert.deepEqual(o.lines.map((l) => l.replaceAll(db, '{d}')), t.lines.map((l) => l.replaceAll(da, '{d}')));
  });

  it('several maps; processing stops at the first fatal error', async () => {
    await compare({ s1: 'a 1\nA 2\n', s3: 'c 3\n' }, [], ['cdb:{d}/s1', 'cdb:{d}/s2', 'cdb:{d}/s3'], 'utf8', ['s1.cdb', 's2.cdb', 's3.cdb']);
    await compare({ s1: 'a 1\nA 2\n', s3: 'c 3\n' }, ['-r'], ['cdb:{d}/s1', 'cdb:{d}/s3'], 'utf8', ['s1.cdb', 's3.cdb']);
  });

  it('usage errors exit 1', async () => {
    assert.equal((await theirs('utf8', [])).status, 1);
    const o = await ours([]);
    assert.equal(o.status, 1);
    assert.match(o.lines[0], /^fatal: usage: proxymapd build /);
    const bad = await ours(['-x', 'cdb:/tmp/x']);
    assert.equal(bad.status, 1);
    assert.equal(bad.lines[0], "invalid option -- 'x'");
    const noarg = await ours(['-c']);
    assert.equal(noarg.lines[0], "option requires an argument -- 'c'");
  });

  it('files built by proxymapd read the same through the real postmap -q', async () => {
    const src = randomSource(9090, 300);
    for (const args of [[], ['-N'], ['-w']]) {
      const { dirs } = await compare({ src: src.text }, args, ['cdb:{d}/src']);
      const input = src.keys.map((k) => k + '\n').join('');
      const [a, b] = await Promise.all(dirs.map((d) => runPostmap('utf8', ['-q', '-', `cdb:${d}/src`], input)));
      assert.equal(b.stdout, a.stdout);
      assert.ok(a.stdout.length > 0);
    }
  });

  it('no type: default_database_type', async () => {
    const [, db] = pair({ src: 'a b\n' });
    const o = await ours(['-c', configDirFor('utf8'), '-o', 'default_database_type=cdb', join(db, 'src')]);
    assert.equal(o.status, 0);
    const t = openCdb(openOptions('cdb', join(db, 'src')));
    assert.deepEqual(t.lookup('a', 0), { found: true, value: 'b' });
    t.close?.();
  });
});

// ---------------------------------------------------------------------------

describe('postmap source reader', () => {
  const collect = (text: Bytes, dictFlags: number, smtputf8: boolean) => {
    const warnings: string[] = [];
    const entries = [...parsePostmapSource(text, 'src', { dictFlags, smtputf8, warn: (w) => warnings.push(w) })];
    return { entries: entries.map((e) => [e.key, e.value, e.lineNo]), warnings };
  };
  const SOURCE = u(' lead\nFoo\tBar Baz \n"aa bb" cc\ntrail\\\nkey:  v\nStraße x\ncont first\n  second\n"unb x\n') + '\xff bad\n';

  test('UTF-8 layer: casefolding and the line check', () => {
    assert.deepEqual(collect(SOURCE, POSTMAP_BUILD_FLAGS, true), {
      entries: [
        ['foo', 'Bar Baz', 2],
        ['"aa bb"', 'cc', 3],
        ['key:', 'v', 5],
        ['strasse', 'x', 6],
        ['cont', 'first  second', 7],
      ],
      warnings: [
        'src: logical line must not start with whitespace: " lead"',
        'src, line 4: expected format: key whitespace value',
        'src, line 5: record is in "key: value" format; is this an alias file?',
        `src, line 9: unbalanced '"' in '"unb x' -- ignoring this line`,
        'src, line 10: non-UTF-8 input "\xff bad" -- ignoring this line',
      ],
    });
  });

  test('smtputf8 off, or -u: ASCII folding, no line check; -f: no folding', () => {
    const ascii = collect(SOURCE, POSTMAP_BUILD_FLAGS, false);
    assert.deepEqual(ascii.entries.slice(3), [[u('straße'), 'x', 6], ['cont', 'first  second', 7], ['\xff', 'bad', 10]]);
    assert.deepEqual(collect(SOURCE, POSTMAP_BUILD_FLAGS & ~UTF8_REQUEST, true).entries, ascii.entries);
    const none = collect(SOURCE, POSTMAP_BUILD_FLAGS & ~FOLD_FIX, true);
    assert.deepEqual(none.entries.map((e) => e[0]), ['Foo', '"aa bb"', 'key:', u('Straße'), 'cont']);
  });

  test('warnings come as records are consumed (interleaving with the builder)', () => {
    const warnings: string[] = [];
    const it = parsePostmapSource('a 1\nnoval\nb 2\n', 'src', { dictFlags: POSTMAP_BUILD_FLAGS, smtputf8: true, warn: (w) => warnings.push(w) });
    assert.equal(it.next().value?.key, 'a');
    assert.deepEqual(warnings, []);
    assert.equal(it.next().value?.key, 'b');
    assert.deepEqual(warnings, ['src, line 2: expected format: key whitespace value']);
  });

  test('-F failures skip the entry', () => {
    const r = collect('k /nonexistent/file\n', POSTMAP_BUILD_FLAGS | SRC_RHS_IS_FILE, true);
    assert.deepEqual(r.entries, []);
    assert.deepEqual(r.warnings, ['src, line 1: open /nonexistent/file: No such file or directory: skipping this entry']);
  });
});

describe('builder registry', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'build-reg-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('cdb is registered; a new type with a builder is one registry entry away', async () => {
    assert.equal(defaultRegistry.builder('cdb'), buildCdb);
    assert.deepEqual(defaultRegistry.buildable().sort(), ['btree', 'cdb', 'fail', 'hash', 'lmdb']);
    const got: Array<{ path: string; entries: BuildEntry[]; opts: BuildOptions }> = [];
    const registry = new TableRegistry([
      ...TABLE_TYPES,
      {
        name: 'testfmt',
        open: () => {
          throw new Error('not opened here');
        },
        implFlags: DICT_FLAG.FIXED,
        writable: false,
        build: (path, entries, opts) => {
          got.push({ path, entries: [...entries], opts });
        },
      },
    ]);
    const src = join(dir, 'src');
    writeFileSync(src, 'A 1\nb 2\n');
    await assert.rejects(buildTable('testfmt', src, { dictFlags: POSTMAP_BUILD_FLAGS, smtputf8: true, warn: () => undefined }), /unsupported dictionary type: testfmt/);
    await buildTable('testfmt', src, { dictFlags: POSTMAP_BUILD_FLAGS | TRY1NULL, smtputf8: true, warn: () => undefined, registry });
    assert.equal(got.length, 1);
    assert.equal(got[0].path, src);
    assert.deepEqual(got[0].entries, [
      { key: 'a', value: '1', lineNo: 1 },
      { key: 'b', value: '2', lineNo: 2 },
    ]);
    assert.equal(got[0].opts.dictFlags & (TRY1NULL | DICT_FLAG.BULK_UPDATE | DUP_WARN), TRY1NULL | DICT_FLAG.BULK_UPDATE | DUP_WARN);
  });

  test('unsupported types: Postfix 3.7 messages', () => {
    const meta = join(dir, 'meta');
    mkdirSync(meta);
    writeFileSync(join(meta, 'dynamicmaps.cf'), '# comment\nfoo2\tpostfix-foo2.so\tdict_foo2_open\tmkmap_foo2_open\n');
    assert.equal(unsupportedBuildMessage('texthash', meta), 'unsupported dictionary type: texthash does not support bulk-mode creation.');
    assert.equal(unsupportedBuildMessage('foo2', meta), 'unsupported dictionary type: foo2 does not support bulk-mode creation.');
    assert.equal(unsupportedBuildMessage('foo3', meta), 'unsupported dictionary type: foo3. Is the postfix-foo3 package installed?');
    // Types proxymapd can open (but not build) are known even without their Postfix plugin.
    assert.equal(unsupportedBuildMessage('pcre', meta), 'unsupported dictionary type: pcre does not support bulk-mode creation.');
  });

  test('buildCdb: duplicate without DUP_WARN is fatal; -w/-r do not warn', () => {
    const path = join(dir, 'dups');
    const entries = [
      { key: 'a', value: '1', lineNo: 1 },
      { key: 'a', value: '2', lineNo: 2 },
    ];
    const warnings: string[] = [];
    buildCdb(path, entries, { dictFlags: 0, warn: (w) => warnings.push(w) });
    assert.deepEqual(warnings, [`${path}: duplicate entry: "a"`]); // mkmap_open adds DUP_WARN
    for (const flags of [DUP_IGNORE, DUP_REPLACE]) {
      const w: string[] = [];
      buildCdb(path, entries, { dictFlags: flags, warn: (x) => w.push(x) });
      assert.deepEqual(w, []);
    }
    assert.throws(() => buildCdb('/nonexistent/dir/x', entries, { dictFlags: 0, warn: () => undefined }), (e: unknown) => e instanceof BuildError && e.message === 'open database /nonexistent/dir/x.cdb.tmp: No such file or directory');
  });

  test('postfixPrintable', () => {
    assert.equal(postfixPrintable('a\tb\x7f\xff', true), 'a?b??');
    assert.equal(postfixPrintable(u('é'), true), u('é'));
    assert.equal(postfixPrintable(u('é'), false), '??');
  });
});
