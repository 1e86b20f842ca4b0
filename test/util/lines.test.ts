import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { DICT_FLAG } from '../../src/protocol/flags.js';
import { readLogicalLines } from '../../src/util/lines.js';
import { parseTextHash } from '../../src/tables/file/texthash.js';
import { openOptions } from '../tables/conformance.js';
import { runPostmap, skipPostmap } from '../support/postmap.js';

function read(text: string) {
  const warnings: string[] = [];
  const lines = readLogicalLines(text, 'f', (w) => warnings.push(w));
  return { lines: lines.map((l) => [l.lineNo, l.text]), warnings };
}

test('continuation lines keep their leading whitespace', () => {
  assert.deepEqual(read('abc\n def\n').lines, [[1, 'abc def']]);
  assert.deepEqual(read('k v\n\tw').lines, [[1, 'k v\tw']]);
});

test('comments and blank lines are dropped and do not end a logical line', () => {
  assert.deepEqual(read('abc\n#x\n ghi\n').lines, [[1, 'abc ghi']]);
  assert.deepEqual(read('#c\n\n  \n a # b\nx#y\n   # c\n\n z').lines, [[5, 'x#y z']]);
  assert.deepEqual(read('').lines, []);
  assert.deepEqual(read('\n\n').lines, []);
});

test('line numbers are those of the first contributing line', () => {
  assert.deepEqual(read('# c\n\na\n b\nc\n\n\nd').lines, [
    [3, 'a b'],
    [5, 'c'],
    [8, 'd'],
  ]);
});

test('a logical line starting with whitespace is dropped with a warning', () => {
  assert.deepEqual(read(' lead\n more\nok 1\n'), {
    lines: [[3, 'ok 1']],
    warnings: ['f: logical line must not start with whitespace: " lead more"'],
  });
  const long = ' ' + 'x'.repeat(40);
  assert.deepEqual(read(long).warnings, [`f: logical line must not start with whitespace: "${long.slice(0, 30)}..."`]);
  assert.deepEqual(read(' ab\0cd').warnings, ['f: logical line must not start with whitespace: " ab"']);
});

test('CR stays in the text (callers trim it)', () => {
  assert.deepEqual(read('a b\r\n c\r\n\r\n').lines, [[1, 'a b\r c\r']]);
});

describe('logical lines and entry grammar vs postmap', { skip: skipPostmap }, () => {
  test('random sources give the same entries and warnings', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lines-'));
    try {
      const piece = fc.constantFrom('a', 'b', 'K', ' ', '\t', '\n', '\n', '#', '"', '\\', ':', '\r', 'x y', '\0', '\v');
      const sources = fc.sample(fc.array(piece, { maxLength: 40 }).map((a) => a.join('')), { numRuns: 400, seed: 7 });
      await Promise.all(
        sources.map(async (text, i) => {
          const sub = join(dir, String(i));
          mkdirSync(sub);
          const path = join(sub, 'src');
          writeFileSync(path, Buffer.from(text, 'latin1'));
          utimesSync(path, 1_000_000_000, 1_000_000_000);
          const r = await runPostmap('ascii', ['-s', `texthash:${path}`]);
          const theirs = r.stdout
            .split('\n')
            .filter(Boolean)
            .map((l) => [l.slice(0, l.indexOf('\t')), l.slice(l.indexOf('\t') + 1)])
            .sort();
          const warnings: string[] = [];
          const ours = [...parseTextHash(text, path, openOptions('texthash', path, { fold: 'ascii', openFlags: DICT_FLAG.DUP_WARN }, warnings))].sort();
          const show = (w: string) => w.replace(/[\x00-\x1f\x7f-\xff]/g, '?');
          assert.deepEqual(ours, theirs, JSON.stringify(text));
          assert.deepEqual(warnings.map(show), r.warnings, JSON.stringify(text));
        }),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
