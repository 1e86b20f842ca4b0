import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { openTable } from '../../../src/tables/index.js';
import { openOptions, runConformance } from '../conformance.js';
import { runDifferential } from '../../support/postmap.js';

const { PATTERN, SRC_RHS_IS_FILE } = DICT_FLAG;
const syntax = (name: string) => `bad syntax: "randmap:${name}"; need "randmap:{value...}"`;

const dir = mkdtempSync(join(tmpdir(), 'randmap-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const F1 = join(dir, 'f1');
writeFileSync(F1, 'hello');

runConformance('randmap', [
  {
    title: 'one item in braces keeps its braces',
    name: '{ {a b} }',
    implFlags: PATTERN,
    warnings: [],
    lookups: [
      { key: 'x', expect: { value: '{a b}' } },
      { key: '', expect: { value: '{a b}' } },
    ],
    sequence: 'unsupported',
  },
  { title: 'single item', name: '{smtp:[relay]:25}', lookups: [{ key: 'k', expect: { value: 'smtp:[relay]:25' } }] },
  { title: 'values from files (-F)', name: `{${F1}}`, openFlags: SRC_RHS_IS_FILE, lookups: [{ key: 'k', expect: { value: 'aGVsbG8=' } }] },
  { title: 'missing file (-F)', name: '{/nonexistent/f}', openFlags: SRC_RHS_IS_FILE, openError: 'open /nonexistent/f: No such file or directory' },
  { title: 'empty braces', name: '{}', openError: syntax('{}') },
  { title: 'only separators', name: '{ , }', openError: syntax('{ , }') },
  { title: 'no braces', name: 'a', openError: syntax('a') },
  { title: 'text after the braces', name: '{a}b', openError: syntax('{a}b') },
  { title: 'unbalanced', name: '{a', openError: syntax('{a') },
  { title: 'write access refused', name: '{a}', writable: true, openError: 'randmap:{a} map requires O_RDONLY access mode' },
]);

// Only single-item tables are deterministic.
runDifferential('randmap', [
  { title: 'one braced item', name: '{ {a b} }', keys: ['x', 'y'] },
  { title: 'single item', name: '{smtp:[relay]:25}', keys: ['k'], modes: ['utf8'] },
  { title: 'values from files (-F)', name: `{${F1}}`, keys: ['k'], postmapArgs: ['-F'], openFlags: SRC_RHS_IS_FILE, modes: ['utf8'] },
  { title: 'missing file (-F)', name: '{/nonexistent/f}', keys: ['k'], postmapArgs: ['-F'], openFlags: SRC_RHS_IS_FILE, modes: ['utf8'] },
  { title: 'only separators', name: '{ , }', keys: ['k'], modes: ['ascii'] },
]);

test('randmap: every item comes up, roughly uniformly', async () => {
  const items = ['a', 'b', '{c d}', 'e'];
  const table = await openTable(openOptions('randmap', '{a, b {c d},e}'));
  const counts = new Map<string, number>();
  const n = 8000;
  for (let i = 0; i < n; i++) {
    const r = await table.lookup('k', 0);
    assert.ok(r.found);
    counts.set(r.value, (counts.get(r.value) ?? 0) + 1);
  }
  assert.deepEqual([...counts.keys()].sort(), items.sort());
  for (const [item, c] of counts) assert.ok(Math.abs(c - n / 4) < n / 10, `${item}: ${c} of ${n}`);
});
