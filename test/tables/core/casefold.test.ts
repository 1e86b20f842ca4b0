import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { foldKey, foldUtf8, isValidUtf8, lowercaseAscii, passesUtf8Check } from '../../../src/tables/core/casefold.js';
import { UNICODE_VERSION } from '../../../src/tables/core/casefold-data.js';
import { utf8ToBytes as u } from '../../../src/tables/index.js';
import { runPostmap, skipPostmap } from '../../support/postmap.js';

test('casefold data is Unicode 15.0 (ICU 72)', () => {
  assert.equal(UNICODE_VERSION, '15.0.0');
});

test('lowercaseAscii changes A-Z only', () => {
  assert.equal(lowercaseAscii('AbC-xyZ@\xc4\xd6'), 'abc-xyz@\xc4\xd6');
  assert.equal(lowercaseAscii(''), '');
});

test('foldUtf8: full case folding, no Turkic rules', () => {
  const cases: Array<[string, string]> = [
    ['Straße', 'strasse'],
    ['STRAẞE', 'strasse'],
    ['ς', 'σ'],
    ['ΣΑΣ', 'σασ'],
    ['İ', 'i̇'],
    ['ı', 'ı'],
    ['I', 'i'],
    ['ÄBC', 'äbc'],
    ['ǅ', 'ǆ'],
    ['ﬃ', 'ffi'],
    ['\u212a', 'k'], // KELVIN SIGN
    ['\uab70', '\u13a0'], // Cherokee small letter folds to the capital
    ['\u13f8', '\u13f0'],
    ['\u{10400}', '\u{10428}'], // Deseret
    ['\u{1e900}', '\u{1e922}'], // Adlam
    ['ŉ', 'ʼn'],
    ['\u0390', '\u03b9\u0308\u0301'],
    ['\u0345', 'ι'],
    ['abc', 'abc'],
    ['', ''],
  ];
  for (const [input, want] of cases) assert.equal(foldUtf8(u(input)), u(want), input);
});

test('foldUtf8 copies malformed bytes and still folds around them', () => {
  assert.equal(foldUtf8('\xffA'), '\xffa');
  assert.equal(foldUtf8('\xc3' + u('Ä')), '\xc3' + u('ä'));
  assert.equal(foldUtf8('\xed\xa0\x80Z'), '\xed\xa0\x80z'); // surrogate encoding
  assert.equal(foldUtf8('\xe2\x82A'), '\xe2\x82a'); // truncated sequence
  assert.equal(foldUtf8('\xc0\x81'), '\xc0\x81'); // overlong
});

test('foldKey by mode', () => {
  assert.equal(foldKey(u('StraßE'), 'none'), u('StraßE'));
  assert.equal(foldKey(u('StraßE'), 'ascii'), u('straße'));
  assert.equal(foldKey(u('StraßE'), 'utf8'), u('strasse'));
});

test('isValidUtf8 follows RFC 3629', () => {
  const valid = ['', 'abc', '\0', u('é'), u('€'), u('\u{10ffff}'), u('\u{10000}'), u('\ud7ff'), u('\ue000'), u('\ufffe')];
  const invalid = [
    '\x80', '\xc0\x80', '\xc1\xbf', '\xc2', '\xe0\x80\x80', '\xe0\x9f\xbf', '\xed\xa0\x80', '\xed\xbf\xbf',
    '\xf0\x80\x80\x80', '\xf0\x8f\xbf\xbf', '\xf4\x90\x80\x80', '\xf5\x80\x80\x80', '\xff', '\xe2\x82', 'a\xc3',
  ];
  for (const s of valid) assert.equal(isValidUtf8(s), true, JSON.stringify(s));
  for (const s of invalid) assert.equal(isValidUtf8(s), false, JSON.stringify(s));
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme' }), (s) => isValidUtf8(Buffer.from(s, 'utf8').toString('latin1'))),
  );
});

test('passesUtf8Check: allascii() or valid UTF-8', () => {
  assert.equal(passesUtf8Check('a\0\xff'), true); // allascii() stops at the NUL
  assert.equal(passesUtf8Check('\xff'), false);
  assert.equal(passesUtf8Check(''), true);
});

describe('casefold vs postmap (ICU)', { skip: skipPostmap }, () => {
  test('every code point of the planes with case mappings, plus samples', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fold-'));
    try {
      const cps: number[] = [];
      for (let cp = 0x80; cp < 0x20000; cp++) if (cp < 0xd800 || cp > 0xdfff) cps.push(cp);
      for (let cp = 0x20000; cp <= 0x10ffff; cp += 0x101) cps.push(cp);
      // Folding is per code point: give each its own key, prefixed to keep keys distinct.
      const keys = cps.map((cp) => u(`${cp.toString(16)}_${String.fromCodePoint(cp)}`));
      const path = join(dir, 'src');
      writeFileSync(path, Buffer.from(keys.map((k) => k + ' v\n').join(''), 'latin1'));
      utimesSync(path, 1_000_000_000, 1_000_000_000);
      const r = await runPostmap('utf8', ['-s', `texthash:${path}`]);
      assert.equal(r.fatal, undefined);
      const stored = new Set(r.stdout.split('\n').map((l) => l.slice(0, l.indexOf('\t'))));
      const wrong = keys.filter((k) => !stored.has(foldUtf8(k)));
      assert.deepEqual(wrong.slice(0, 10), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('UTF-8 validity of random byte lines', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'utf8-'));
    try {
      const bytes = fc.sample(
        fc.uint8Array({ minLength: 1, maxLength: 6 }).map((a) =>
          Buffer.from(a.map((b) => (b < 0x80 ? 0x61 + (b % 26) : b))).toString('latin1'),
        ),
        { numRuns: 3000, seed: 42 },
      );
      const edge = ['\xed\x9f\xbf', '\xed\xa0\x80', '\xf4\x8f\xbf\xbf', '\xf4\x90\x80\x80', '\xe0\xa0\x80', '\xe0\x9f\xbf'];
      const values = [...edge, ...bytes];
      const path = join(dir, 'src');
      writeFileSync(path, Buffer.from(values.map((v, i) => `k${i} ${v}\n`).join(''), 'latin1'));
      utimesSync(path, 1_000_000_000, 1_000_000_000);
      const r = await runPostmap('none', ['-s', `texthash:${path}`]);
      const kept = new Set(r.stdout.split('\n').map((l) => l.slice(0, l.indexOf('\t'))));
      values.forEach((v, i) => assert.equal(isValidUtf8(v), kept.has(`k${i}`), JSON.stringify(v)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
