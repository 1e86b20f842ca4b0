import test from 'node:test';
import assert from 'node:assert/strict';
import { inlineToMultiline, readTableSource } from '../../../src/tables/core/stream.js';
import { TableOpenError } from '../../../src/tables/core/table.js';

test('inline rules become lines', () => {
  assert.deepEqual(inlineToMultiline('{ {/a/ b}, { /c/ d e } }'), { text: '/a/ b\n/c/ d e\n' });
  assert.deepEqual(inlineToMultiline('{}'), { text: '' });
  assert.deepEqual(inlineToMultiline('{ , }'), { text: '' });
  assert.deepEqual(inlineToMultiline('{ {1.2.3.0/24 {nested} x} }'), { text: '1.2.3.0/24 {nested} x\n' });
  assert.deepEqual(inlineToMultiline('{ /a/ }'), { error: `no '{' at start of text in "/a/"` });
  assert.deepEqual(inlineToMultiline('{ {/a/ x}x }'), { error: `syntax error after '}' in "{/a/ x}x"` });
});

test('readTableSource: inline errors and missing files', async () => {
  await assert.rejects(readTableSource('regexp', '{ /a/ }'), (e: unknown) =>
    e instanceof TableOpenError && e.message === `regexp map: no '{' at start of text in "/a/"`);
  await assert.rejects(readTableSource('cidr', '/nonexistent/x'), (e: unknown) =>
    e instanceof TableOpenError && e.message === 'open /nonexistent/x: No such file or directory');
  const r = await readTableSource('regexp', '{{/x/ y}}');
  assert.equal(r.text, '/x/ y\n');
  assert.equal(r.stat, undefined);
});
