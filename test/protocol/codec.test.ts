import test from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RecordDecoder, ProtocolError, encodeRecord, parseUnsigned } from '../../src/protocol/codec.js';
import { b } from '../support/bytes.js';

/** '|' stands for NUL, as in the captures of protocol.md. */

function decodeAll(chunks: Buffer[]): Array<Array<[string, string]>> {
  const d = new RecordDecoder();
  const out: Array<Array<[string, string]>> = [];
  for (const c of chunks) {
    d.push(c);
    let r;
    while ((r = d.next()) !== null) out.push(r.map(([n, v]) => [n, v]));
  }
  return out;
}

const samples = [
  'protocol|proxymap_protocol||',
  'request|open|table|texthash:/srv/pfspec/x|flags|0||',
  'status|0|flags|16||',
  'request|lookup|table|texthash:/srv/pfspec/x|flags|524353|key|somekey||',
  'status|1|value|||',
  'request|lookup|table|texthash:/srv/pfspec/x|instance_flags|540737|flags|1589329|key|UPPER||',
  'status|0|key|foo|value|bar||status|1|key||value|||',
  '||',
];

test('encodeRecord writes the captured bytes', () => {
  assert.deepEqual(encodeRecord([['protocol', 'proxymap_protocol']]), b('protocol|proxymap_protocol||'));
  assert.deepEqual(encodeRecord([['status', 0], ['flags', 16]]), b('status|0|flags|16||'));
  assert.equal(encodeRecord([['status', 0], ['flags', 16]]).length, 19);
  assert.deepEqual(encodeRecord([['flags', -1]]), b('flags|4294967295||'));
  assert.deepEqual(encodeRecord([]), b('|'));
});

test('decoder: every sample split at every byte boundary gives the same records', () => {
  for (const s of samples) {
    const whole = b(s);
    const expect = decodeAll([whole]);
    assert.ok(expect.length >= 1, s);
    for (let i = 0; i <= whole.length; i++) {
      assert.deepEqual(decodeAll([whole.subarray(0, i), whole.subarray(i)]), expect, `${s} split at ${i}`);
    }
    for (let i = 0; i <= whole.length; i++) {
      for (let j = i; j <= whole.length; j++) {
        assert.deepEqual(decodeAll([whole.subarray(0, i), whole.subarray(i, j), whole.subarray(j)]), expect);
      }
    }
    // byte by byte
    assert.deepEqual(decodeAll([...whole].map((x) => Buffer.from([x]))), expect);
  }
});

test('decoder: empty value, empty record and high bytes', () => {
  assert.deepEqual(decodeAll([b('status|1|value|||')]), [[['status', '1'], ['value', '']]]);
  assert.deepEqual(decodeAll([b('|')]), [[]]);
  const hi = Buffer.concat([b('key|'), Buffer.from([0xc3, 0xa4, 0xff]), b('||')]);
  const r = decodeAll([hi]);
  assert.equal(r[0][0][1], '\xc3\xa4\xff');
});

test('decoder: need-more is distinct from malformed (size cap)', () => {
  const d = new RecordDecoder(16);
  d.push(b('request|look'));
  assert.equal(d.next(), null);
  assert.ok(d.pendingBytes > 0);
  d.push(Buffer.alloc(20, 0x41));
  assert.throws(() => d.next(), ProtocolError);
});

test('property: any sequence of records round-trips under any chunking', () => {
  const byteStr = fc.uint8Array({ maxLength: 12 }).map((a) => Buffer.from(a.filter((x) => x !== 0)).toString('latin1'));
  const name = byteStr.filter((s) => s.length > 0);
  const record = fc.array(fc.tuple(name, byteStr), { maxLength: 5 });
  fc.assert(
    fc.property(fc.array(record, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 6 }), (recs, cuts) => {
      const whole = Buffer.concat(recs.map((r) => encodeRecord(r)));
      const points = [...new Set(cuts.map((c) => c % (whole.length + 1)))].sort((x, y) => x - y);
      const chunks: Buffer[] = [];
      let prev = 0;
      for (const p of points) {
        chunks.push(whole.subarray(prev, p));
        prev = p;
      }
      chunks.push(whole.subarray(prev));
      assert.deepEqual(decodeAll(chunks), recs);
    }),
    { numRuns: 300 },
  );
});

test('parseUnsigned follows sscanf("%u%c")', () => {
  assert.equal(parseUnsigned('16'), 16);
  assert.equal(parseUnsigned('0'), 0);
  assert.equal(parseUnsigned(' 7'), 7);
  assert.equal(parseUnsigned('4294967295'), 4294967295);
  assert.equal(parseUnsigned('4294967296'), 0);
  assert.equal(parseUnsigned('-1'), 4294967295);
  assert.equal(parseUnsigned(''), null);
  assert.equal(parseUnsigned('abc'), null);
  assert.equal(parseUnsigned('12x'), null);
  assert.equal(parseUnsigned('1 '), null);
});
