/**
 * A lone lookup in a large regexp/pcre table is shared between the main
 * thread and an idle compiler thread (chunks of rules cut outside IF/ENDIF,
 * the lowest matching chunk wins). Large tables made of many generated
 * difftest cases (IF/ENDIF nesting, negation, $n, flags) must give exactly
 * the real postmap's answers, and the sharing must actually happen.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadNative } from '../../../src/addon/index.js';
import { patternThreads, setPatternThreads } from '../../../src/tables/pattern/threads.js';
import { generateCase } from '../../difftest/generate.js';
import { direct, ours } from '../../difftest/run.js';
import { configDirFor, skipPostmap } from '../../support/postmap.js';

describe('split evaluation of lone lookups in large tables', { skip: skipPostmap }, () => {
  let dir = '';
  let saved = 0;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'split-'));
    saved = patternThreads();
    setPatternThreads(0); // every lookup on the main thread, where it may be split
  });
  after(() => {
    setPatternThreads(saved);
    rmSync(dir, { recursive: true, force: true });
  });

  for (const kind of ['regexp', 'pcre'] as const) {
    test(`${kind}: IF blocks across where a chunk would end, nested, unterminated`, async () => {
      const filler = (n: number, tag: string) => Array.from({ length: n }, (_, i) => `/^filler${tag}${i}$/ F${i}`);
      const tables = [
        // an IF that fails, spanning rule 32 (a plain cut there would evaluate its inside)
        [...filler(30, 'a'), 'if /^never/', '/x/ INSIDE', '/y/ INSIDE-Y', '/z/ INSIDE-Z', '/w/ INSIDE-W', 'endif', '/x/ OUTSIDE', ...filler(150, 'b')],
        // nested IFs across several chunk sizes, the outer one passing
        [...filler(20, 'c'), 'if /x/', ...filler(25, 'd'), 'if /^never/', ...filler(20, 'e'), '/x/ NESTED', 'endif', '/x/ AFTER', 'endif', ...filler(120, 'f')],
        // an IF without ENDIF that fails: nothing after it may answer
        [...filler(100, 'g'), '/^z/ Z', 'if /^never/', ...filler(60, 'h'), '/x/ UNREACHABLE'],
        // matches in several chunks: the first one wins
        [...filler(70, 'i'), '/x/ FIRST', ...filler(70, 'j'), '/x/ SECOND', ...filler(70, 'k'), '/x/ THIRD'],
        // a negated rule and a $n late in the table
        [...filler(140, 'l'), '!/^q/ NOT-Q', '/^(q)(.*)$/ $2-$1'],
      ];
      for (const [t, lines] of tables.entries()) {
        const file = join(dir, `${kind}-if-${t}`);
        writeFileSync(file, lines.join('\n') + '\n');
        const keys = ['x', 'y', 'z', 'w', 'q1', 'zz', 'fillerb3', 'fillerk9', 'nothing'];
        assert.equal(await ours(kind, file, keys, true), await direct(configDirFor('utf8'), kind, file, keys), `${kind} table ${t}`);
      }
    });

    test(`${kind}: tables of 40 generated cases each answer as postmap does`, async () => {
      const native = loadNative();
      const [, takenBefore] = native.splitStats();
      let rules = 0;
      for (let t = 0; t < 6; t++) {
        const lines: string[] = [];
        const keys: string[] = [];
        for (let i = 0; i < 40; i++) {
          const c = generateCase(kind, 5000 + 40 * t + i);
          lines.push(...c.lines);
          keys.push(...c.keys);
        }
        rules += lines.length;
        const file = join(dir, `${kind}-${t}`);
        writeFileSync(file, Buffer.from(lines.join('\n') + '\n', 'latin1'));
        // keys looked up one at a time, each in a turn of its own: the lone-lookup case
        const got = await ours(kind, file, keys, true);
        const want = await direct(configDirFor('utf8'), kind, file, keys);
        assert.equal(got, want, `${kind} table ${t} (${lines.length} lines)`);
      }
      assert.ok(rules / 6 >= 128, `tables of ${rules / 6} lines on average`);
      const [, takenAfter] = native.splitStats();
      assert.ok(takenAfter > takenBefore, `a compiler thread took part (${takenAfter - takenBefore} lookups)`);
    });
  }
});
