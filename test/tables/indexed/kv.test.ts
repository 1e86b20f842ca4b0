/**
 * lmdb:, hash: and btree: tables (native/kv.c over the system liblmdb and
 * libdb) against the real postmap: files built by postmap read the same
 * through our tables (every key, NUL modes, folding modes, -s listings);
 * files built by `proxymapd build` read the same through postmap; missing,
 * empty, truncated and corrupted files never crash and answer as postmap
 * does wherever postmap itself answers.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { runBuild } from '../../../src/cli/build.js';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, TableOpenError, openTable, tableTypeInfo, type Bytes } from '../../../src/tables/index.js';
import { POSTMAP, randomSource } from './cdbgen.js';
import { gen } from '../pattern/cidrgen.js';
import { dictLookup, openOptions, outcome, runConformance, sequenceAll, type Expect } from '../conformance.js';
import { configDirFor, runDifferential, runPostmap, skipPostmap, type DiffMode, type DiffScenario } from '../../support/postmap.js';

const { FIXED, MULTI_WRITER, TRY0NULL, TRY1NULL } = DICT_FLAG;
// Outside CI these tests skip without Postfix; in CI a missing postmap fails them.
type KvType = 'lmdb' | 'hash' | 'btree';
const TYPES: KvType[] = ['lmdb', 'hash', 'btree'];
const suffix = (t: KvType) => (t === 'lmdb' ? '.lmdb' : '.db');

/** `postmap [args] TYPE:<tmp>/src` on source text: the output file's bytes and postmap's stderr. */
function postmapBuild(type: KvType, source: Bytes, args: string[] = [], mode: DiffMode = 'utf8'): Bytes {
  assert.ok(POSTMAP, 'postmap is needed to build the files');
  const dir = mkdtempSync(join(tmpdir(), 'kvgen-'));
  try {
    const path = join(dir, 'src');
    writeFileSync(path, Buffer.from(source, 'latin1'));
    const r = spawnSync(POSTMAP, ['-c', configDirFor(mode), ...args, `${type}:${path}`], { timeout: 60_000 });
    assert.equal(r.status, 0, `postmap ${args.join(' ')} ${type}: ${r.stderr}`);
    return readFileSync(path + suffix(type)).toString('latin1');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// The shared conformance suite (files built by the real postmap when the test runs).
if (!skipPostmap) {
  const SRC = 'Alpha 1\nbeta 2\ngamma three words\n';
  for (const type of TYPES) {
    runConformance(type, [
      {
        title: 'postmap default build, read-only',
        file: () => postmapBuild(type, SRC),
        suffix: suffix(type),
        implFlags: FIXED,
        warnings: [],
        lookups: [
          { key: 'alpha', expect: { value: '1' } },
          { key: 'ALPHA', expect: { value: '1' } },
          { key: 'gamma', expect: { value: 'three words' } },
          { key: 'delta', expect: 'notfound' },
          { key: '', expect: 'notfound' },
        ],
        ...(type === 'hash' ? {} : { sequence: [['alpha', '1'], ['beta', '2'], ['gamma', 'three words']] as Array<[Bytes, Bytes]> }),
      },
      {
        title: 'writable open, DUP_REPLACE updates: updates and deletes, each seen by the next lookup',
        file: () => postmapBuild(type, SRC),
        suffix: suffix(type),
        writable: true,
        lookups: [{ key: 'beta', expect: { value: '2' } }],
        writes: [
          // (the duplicate policy is the request's, as proxywrite passes each request's flags)
          { op: 'update', key: 'delta', value: '4', flags: DICT_FLAG.DUP_REPLACE, expect: 0 },
          { op: 'update', key: 'beta', value: 'two', flags: DICT_FLAG.DUP_REPLACE, expect: 0 },
          { op: 'delete', key: 'alpha', expect: 0 },
          { op: 'delete', key: 'alpha', expect: 1 },
          { op: 'delete', key: 'nosuch', expect: 1 },
        ],
        afterWrites: [
          { key: 'delta', expect: { value: '4' } },
          { key: 'beta', expect: { value: 'two' } },
          { key: 'alpha', expect: 'notfound' },
          { key: 'gamma', expect: { value: 'three words' } },
        ],
      },
      {
        title: 'writable open without a duplicate policy: an existing key is not replaced',
        file: () => postmapBuild(type, SRC),
        suffix: suffix(type),
        writable: true,
        writes: [{ op: 'update', key: 'beta', value: 'other', expect: 1 }],
        afterWrites: [{ key: 'beta', expect: { value: '2' } }],
      },
      {
        title: 'missing file, read-only: open fails as postmap says',
        name: '/nonexistent/dir/table',
        openError: `open database /nonexistent/dir/table${suffix(type)}: No such file or directory`,
      },
    ]);
  }
}

test('lmdb, hash and btree are registered as FIXED read-write types', () => {
  assert.deepEqual(tableTypeInfo('lmdb'), { implFlags: FIXED | MULTI_WRITER, writable: true });
  assert.deepEqual(tableTypeInfo('hash'), { implFlags: FIXED, writable: true });
  assert.deepEqual(tableTypeInfo('btree'), { implFlags: FIXED, writable: true });
});

// ---------------------------------------------------------------------------
// Files built by the real postmap, every key looked up by postmap -q and by us.

const BUILD_VARIANTS: Array<{ args: string[]; mode: 'utf8' | 'ascii' }> = [
  { args: [], mode: 'utf8' },
  { args: ['-N'], mode: 'utf8' },
  { args: ['-n'], mode: 'utf8' },
  { args: ['-f'], mode: 'utf8' },
  { args: ['-r'], mode: 'utf8' },
  { args: ['-w', '-n'], mode: 'utf8' },
  { args: ['-u'], mode: 'utf8' },
  { args: [], mode: 'ascii' },
];

for (const type of skipPostmap ? [] : TYPES) {
  const file = 'src' + suffix(type);
  const scenarios: DiffScenario[] = BUILD_VARIANTS.map(({ args, mode }, i) => {
    const src = randomSource(2000 + i * 7 + type.length, 150);
    return {
      title: `random table built with postmap ${args.join(' ') || '(defaults)'} [${mode} main.cf]`,
      file: src.text,
      files: { [file]: postmapBuild(type, src.text, args, mode) },
      // An empty key in a table without NUL terminators is an LMDB error that kills postmap (tested below).
      keys: type === 'lmdb' && args.includes('-n') ? src.keys.filter((k) => k !== '') : src.keys,
      list: i < 3,
      modes: i === 0 ? undefined : ['utf8', 'ascii'],
    };
  });
  const src = randomSource(88, 100);
  if (type === 'lmdb') src.keys = src.keys.filter((k) => k !== '');
  const plain = postmapBuild(type, src.text, ['-n']);
  const nul = postmapBuild(type, src.text);
  scenarios.push(
    { title: 'query -N on a table without NUL', file: src.text, files: { [file]: plain }, keys: src.keys, postmapArgs: ['-N'], openFlags: TRY1NULL, modes: ['utf8'] },
    { title: 'query -n on a table with NUL', file: src.text, files: { [file]: nul }, keys: src.keys, postmapArgs: ['-n'], openFlags: TRY0NULL, modes: ['utf8'] },
    { title: 'query -n on a -n table', file: src.text, files: { [file]: plain }, keys: src.keys, postmapArgs: ['-n'], openFlags: TRY0NULL, modes: ['utf8'], list: true },
  );
  const bad = 'k1 \xff\xfe\nk2 ok\nK3 caf\xc3\xa9\n';
  scenarios.push({ title: 'non-UTF-8 values', file: bad, files: { [file]: postmapBuild(type, bad, [], 'ascii') }, keys: ['k1', 'k2', 'k3', 'K1'] });
  const bigKey = 'K'.repeat(500);
  const big = `${bigKey} ${'v'.repeat(100_000)}\nsmall ${'w'.repeat(3000)}\nx y\n`;
  scenarios.push({ title: 'big keys and values (overflow pages)', file: big, files: { [file]: postmapBuild(type, big) }, keys: [bigKey, 'small', 'x', 'k'.repeat(500)], list: true, modes: ['utf8'] });
  scenarios.push({ title: 'missing file', name: '/nonexistent/dir/x', keys: ['a'], modes: ['utf8'] });
  runDifferential(type, scenarios);
}

test('lmdb: the empty key without NUL terminator is an LMDB error: postmap dies, we answer RETRY with its text', { skip: skipPostmap }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvempty-'));
  try {
    const path = join(dir, 'src');
    writeFileSync(path, 'a 1\n');
    assert.equal(spawnSync(POSTMAP!, ['-c', configDirFor('utf8'), '-n', `lmdb:${path}`]).status, 0);
    const theirs = await runPostmap('utf8', ['-q', '', `lmdb:${path}`]);
    assert.match(theirs.fatal ?? '', /MDB_BAD_VALSIZE/);
    const warnings: string[] = [];
    const t = await openTable(openOptions('lmdb', path, {}, warnings));
    assert.deepEqual(await t.lookup('', 0), { found: false, error: DICT_ERR.RETRY });
    assert.deepEqual(warnings, [theirs.fatal]);
    assert.deepEqual(await t.lookup('a', 0), { found: true, value: '1' }, 'the table keeps working');
    await t.close?.();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('NUL-terminator state is per handle and sticky, as in Postfix', { skip: skipPostmap }, () => {
  for (const type of TYPES) {
    it(`${type}: a -n table extended with postmap -i holds both forms; the first hit decides`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'kvnul-'));
      try {
        const path = join(dir, 'src');
        writeFileSync(path, 'a 1\nb 2\n');
        let r = spawnSync(POSTMAP!, ['-c', configDirFor('utf8'), '-n', `${type}:${path}`]);
        assert.equal(r.status, 0, r.stderr.toString());
        r = spawnSync(POSTMAP!, ['-c', configDirFor('utf8'), '-i', `${type}:${path}`], { input: 'q 3\n' });
        assert.equal(r.status, 0, r.stderr.toString());
        for (const order of [['a', 'q'], ['q', 'a']]) {
          const theirs = await runPostmap('utf8', ['-q', '-', `${type}:${path}`], order.map((k) => k + '\n').join(''));
          const opts = openOptions(type, path);
          const t = await openTable(opts);
          let ours = '';
          for (const k of order) {
            const res = await dictLookup(t, k, opts);
            if (res.found) ours += `${k}\t${res.value}\n`;
          }
          await t.close?.();
          assert.equal(ours, theirs.stdout, order.join(','));
          assert.equal(ours.split('\n').length - 1, 1, 'only one of the two forms is found');
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

// ---------------------------------------------------------------------------
// proxymapd build: what the real postmap reads back must be what it reads from its own files.

async function ourBuild(args: string[]): Promise<{ status: number; stderr: string }> {
  const chunks: Buffer[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((c: string | Uint8Array) => {
    chunks.push(Buffer.from(c as string));
    return true;
  }) as typeof process.stderr.write;
  let status: number;
  try {
    status = await runBuild(args);
  } finally {
    process.stderr.write = write;
  }
  return { status, stderr: Buffer.concat(chunks).toString('latin1') };
}

describe('proxymapd build vs postmap: the real postmap -q and -s read our files as its own', { skip: skipPostmap, concurrency: 4 }, () => {
  let root = '';
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'kvbuild-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));
  const VARIANTS: Array<[string[], 'utf8' | 'ascii']> = [
    [[], 'utf8'],
    [['-N'], 'utf8'],
    [['-n'], 'utf8'],
    [['-r'], 'utf8'],
    [['-w'], 'utf8'],
    [['-f'], 'utf8'],
    [['-u'], 'utf8'],
    [[], 'ascii'],
  ];
  for (const type of TYPES) {
    VARIANTS.forEach(([args, mode], i) => {
      it(`${type}: random source, ${args.join(' ') || 'no options'} [${mode} main.cf]`, async () => {
        const src = randomSource(700 + i, 400);
        const [da, db] = [join(root, `${type}${i}a`), join(root, `${type}${i}b`)];
        for (const d of [da, db]) {
          mkdirSync(d);
          writeFileSync(join(d, 'src'), Buffer.from(src.text, 'latin1'));
        }
        const their = spawnSync(POSTMAP!, ['-c', configDirFor(mode), ...args, `${type}:${da}/src`]);
        const our = await ourBuild(['-c', configDirFor(mode), ...args, `${type}:${db}/src`]);
        assert.equal(our.status, their.status ?? -1, 'exit status');
        const msgs = (s: string, prog: string, d: string) => s.replaceAll(d, '{d}').replaceAll(`${prog}: `, '');
        assert.equal(msgs(our.stderr, 'proxymapd', db), msgs(their.stderr.toString('latin1'), 'postmap', da), 'messages');
        const input = src.keys.map((k) => k + '\n').join('');
        for (const q of [[] as string[], ['-N'], ['-n']]) {
          const [a, b] = await Promise.all([da, db].map((d) => runPostmap(mode, [...args.filter((x) => x === '-f' || x === '-u'), ...q, '-q', '-', `${type}:${d}/src`], input)));
          assert.equal(b.stdout, a.stdout, `postmap ${q.join(' ')} -q -`);
          assert.equal(b.status, a.status);
        }
        const [la, lb] = await Promise.all([da, db].map((d) => runPostmap(mode, ['-s', `${type}:${d}/src`])));
        assert.equal(lb.stdout, la.stdout, 'postmap -s (same order)');
        assert.ok(la.stdout.length > 0);
      });
    });
  }

  it('an existing table is rebuilt (not appended to), for every type', async () => {
    for (const type of TYPES) {
      const d = join(root, `rebuild-${type}`);
      mkdirSync(d);
      writeFileSync(join(d, 'src'), 'a 1\nb 2\n');
      assert.equal((await ourBuild(['-c', configDirFor('utf8'), `${type}:${d}/src`])).status, 0);
      writeFileSync(join(d, 'src'), 'c 3\n');
      assert.equal((await ourBuild(['-c', configDirFor('utf8'), `${type}:${d}/src`])).status, 0);
      const l = await runPostmap('utf8', ['-s', `${type}:${d}/src`]);
      assert.equal(l.stdout, 'c\t3\n', type);
    }
  });
});

// ---------------------------------------------------------------------------
// Damaged files: never a crash; where postmap answers, the same answers.

interface Answers {
  /** postmap finished normally (exit 0/1 without fatal or signal) */
  clean: boolean;
  lines: string[];
}

async function theirAnswers(spec: string, keys: Bytes[]): Promise<Answers> {
  const r = await runPostmap('utf8', ['-q', '-', spec], keys.map((k) => k + '\n').join(''));
  const lines = r.stdout.split('\n').filter(Boolean);
  return { clean: (r.status === 0 || r.status === 1) && r.fatal === undefined, lines };
}

async function ourAnswers(type: KvType, name: string, keys: Bytes[]): Promise<{ openError?: string; lines: string[]; errors: number; seq?: unknown }> {
  const opts = openOptions(type, name);
  let t;
  try {
    t = await openTable(opts);
  } catch (e) {
    assert.ok(e instanceof TableOpenError, `open threw ${(e as Error).stack}`);
    return { openError: e.message, lines: [], errors: 1 };
  }
  const lines: string[] = [];
  let errors = 0;
  for (const k of keys) {
    const res = await dictLookup(t, k, opts);
    const o: Expect = outcome(res);
    if (typeof o === 'object' && 'value' in o) lines.push(`${k}\t${o.value}`);
    else if (o !== 'notfound') errors++;
  }
  const seq = await sequenceAll(t);
  await t.close?.();
  return { lines, errors, seq };
}

describe('missing, empty, truncated and corrupted files vs postmap', { skip: skipPostmap, concurrency: 4 }, () => {
  let root = '';
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'kvbad-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  for (const type of TYPES) {
    it(`${type}: open errors name the file as Postfix does`, async () => {
      const d = join(root, `open-${type}`);
      mkdirSync(d);
      const missing = await ourAnswers(type, join(d, 'none'), ['a']);
      const their = await runPostmap('utf8', ['-q', 'a', `${type}:${d}/none`]);
      assert.equal(missing.openError, their.fatal);
      writeFileSync(join(d, 'empty' + suffix(type)), '');
      const empty = await ourAnswers(type, join(d, 'empty'), ['a']);
      const theirEmpty = await runPostmap('utf8', ['-q', 'a', `${type}:${d}/empty`]);
      assert.ok(theirEmpty.fatal !== undefined || theirEmpty.status === 1, 'postmap answers an empty file');
      if (theirEmpty.fatal !== undefined) assert.ok(missing.openError !== undefined && empty.openError !== undefined, `empty: ${JSON.stringify(empty)} vs ${theirEmpty.fatal}`);
    });

    it(`${type}: truncations and random corruption`, async () => {
      const src = randomSource(4242, 400);
      const good = postmapBuild(type, src.text);
      const g = gen(type.length * 1000 + 17);
      const variants: Array<[string, Bytes]> = [];
      for (const cut of [1, 100, 512, 4096, 4097, good.length >> 1, good.length - 4096, good.length - 1]) {
        if (cut > 0 && cut < good.length) variants.push([`truncated to ${cut}`, good.slice(0, cut)]);
      }
      variants.push(['garbage', Array.from({ length: 16384 }, () => String.fromCharCode(g.int(256))).join('')]);
      for (let i = 0; i < 24; i++) {
        const b = Buffer.from(good, 'latin1');
        const n = 1 + g.int(8);
        for (let j = 0; j < n; j++) b[g.int(b.length)] = g.int(256);
        variants.push([`random corruption ${i}`, b.toString('latin1')]);
      }
      const keys = src.keys.slice(0, 120);
      let agreed = 0;
      for (const [title, bytes] of variants) {
        const d = join(root, `${type}-${title.replace(/ /g, '_')}`);
        mkdirSync(d);
        writeFileSync(join(d, 'src' + suffix(type)), Buffer.from(bytes, 'latin1'));
        const their = await theirAnswers(`${type}:${d}/src`, keys);
        const ours = await ourAnswers(type, join(d, 'src'), keys); // must not throw or crash the process
        if (title.startsWith('random') && type !== 'lmdb') {
          // A flipped byte inside a Berkeley DB page can send the library reading beyond the page (what it finds
          // there differs between processes): only count agreements; not crashing is the point.
          if (their.clean && ours.openError === undefined && ours.errors === 0 && JSON.stringify(ours.lines) === JSON.stringify(their.lines)) agreed++;
          continue;
        }
        if (their.clean && ours.openError === undefined && ours.errors === 0) {
          assert.deepEqual(ours.lines, their.lines, `${title}: same answers`);
          agreed++;
        } else if (their.clean) {
          // postmap answered without noticing; we noticed damage: only where we report errors may we differ.
          for (const l of ours.lines) assert.ok(their.lines.includes(l), `${title}: ${l} is not postmap's`);
        } else {
          // postmap died (fatal or signal): the lines it printed before are ours too, unless we refused the file.
          if (ours.openError === undefined) {
            for (const l of their.lines) assert.ok(ours.lines.includes(l) || ours.errors > 0, `${title}: ${l}`);
          }
        }
      }
      assert.ok(agreed > 0, 'some corruptions are harmless to both');
    });
  }
});

test('a file that is not the type it is opened as', { skip: skipPostmap }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvwrong-'));
  try {
    const path = join(dir, 'src');
    writeFileSync(path, 'a 1\n');
    spawnSync(POSTMAP!, ['-c', configDirFor('utf8'), `btree:${path}`]);
    // hash: on a btree file, lmdb: on a Berkeley DB file renamed
    const theirs = await runPostmap('utf8', ['-q', 'a', `hash:${path}`]);
    const ours = await ourAnswers('hash', path, ['a']);
    assert.ok(theirs.fatal, 'postmap refuses a btree file as hash');
    assert.equal(ours.openError, theirs.fatal);
    writeFileSync(path + '.lmdb', readFileSync(path + '.db'));
    const theirsL = await runPostmap('utf8', ['-q', 'a', `lmdb:${path}`]);
    const oursL = await ourAnswers('lmdb', path, ['a']);
    assert.ok(theirsL.fatal, 'postmap refuses a Berkeley DB file as lmdb');
    assert.equal(oursL.openError, theirsL.fatal);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writable open creates a missing file; updates and deletes are seen by postmap', { skip: skipPostmap }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvw-'));
  try {
    for (const type of TYPES) {
      const path = join(dir, `t-${type}`);
      const t = await openTable(openOptions(type, path, { writable: true }));
      const U = DICT_FLAG.SYNC_UPDATE | DICT_FLAG.DUP_REPLACE | DICT_FLAG.LOCK;
      assert.deepEqual(await t.update!('k1', 'v1', U), { status: 0, error: 0 });
      assert.deepEqual(await t.update!('k2', 'v2', U), { status: 0, error: 0 });
      assert.deepEqual(await t.update!('k1', 'v1b', U), { status: 0, error: 0 });
      assert.deepEqual(await t.update!('k1', 'no', DICT_FLAG.LOCK | DICT_FLAG.DUP_IGNORE), { status: 1, error: 0 });
      assert.deepEqual(await t.delete!('k2', DICT_FLAG.SYNC_UPDATE), { status: 0, error: 0 });
      assert.deepEqual(await t.delete!('k2', DICT_FLAG.SYNC_UPDATE), { status: 1, error: 0 });
      assert.ok(existsSync(path + suffix(type)));
      const l = await runPostmap('utf8', ['-s', `${type}:${path}`]);
      assert.equal(l.stdout, 'k1\tv1b\n', type);
      // postmap -i and -d on the file we hold open; we see their changes.
      let r = spawnSync(POSTMAP!, ['-c', configDirFor('utf8'), '-i', `${type}:${path}`], { input: 'k3 v3\n' });
      assert.equal(r.status, 0, r.stderr.toString());
      r = spawnSync(POSTMAP!, ['-c', configDirFor('utf8'), '-d', 'k1', `${type}:${path}`]);
      assert.equal(r.status, 0, r.stderr.toString());
      assert.deepEqual(await t.lookup('k3', 0), { found: true, value: 'v3' });
      assert.deepEqual(await t.lookup('k1', 0), { found: false, error: DICT_ERR.NONE });
      assert.deepEqual(await t.update!('k4', 'v4', U), { status: 0, error: 0 });
      const l2 = await runPostmap('utf8', ['-s', `${type}:${path}`]);
      assert.deepEqual(l2.stdout.split('\n').filter(Boolean).sort(), ['k3\tv3', 'k4\tv4'], type);
      await t.close?.();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lmdb: updates past lmdb_map_size grow the map; none is acknowledged and lost', { skip: skipPostmap }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvgrow-'));
  try {
    const path = join(dir, 'grow');
    const warnings: string[] = [];
    const t = await openTable({ ...openOptions('lmdb', path, { writable: true }, warnings), param: (n) => (n === 'lmdb_map_size' ? '32768' : undefined) });
    const U = DICT_FLAG.SYNC_UPDATE | DICT_FLAG.DUP_REPLACE | DICT_FLAG.LOCK;
    const want: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const r = await t.update!(`key${i}`, `value ${i} ${'x'.repeat(i % 50)}`, U);
      assert.deepEqual(r, { status: 0, error: 0 }, `update ${i}: ${warnings.join('; ')}`);
      want.push(`key${i}\tvalue ${i} ${'x'.repeat(i % 50)}`);
    }
    await t.close?.();
    const l = await runPostmap('utf8', ['-s', `lmdb:${path}`]);
    assert.deepEqual(l.stdout.split('\n').filter(Boolean).sort(), want.sort());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
