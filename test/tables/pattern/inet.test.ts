/**
 * Address parsing and formatting against glibc: Python's socket.inet_pton
 * and inet_ntop call the C library's, which is what Postfix uses.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { inetNtop, inetPton, inetPton4, inetPton6 } from '../../../src/tables/pattern/inet.js';

const hex = (b: Uint8Array | null) => (b ? Buffer.from(b).toString('hex') : null);

describe('inet_pton rules', () => {
  const v4: Array<[string, string | null]> = [
    ['1.2.3.4', '01020304'],
    ['0.0.0.0', '00000000'],
    ['255.255.255.255', 'ffffffff'],
    ['256.1.1.1', null],
    ['010.1.1.1', null], // leading zeros rejected
    ['1.2.3.00', null],
    ['1.2.3', null],
    ['1.2.3.4.', null],
    ['1.2.3.4.5', null],
    ['.1.2.3', null],
    ['1..2.3', null],
    [' 1.2.3.4', null],
    ['1.2.3.4 ', null],
    ['1.2.3.4/32', null],
    ['0x1.2.3.4', null],
    ['', null],
    ['[1.2.3.4]', null],
  ];
  for (const [text, want] of v4) it(`IPv4 ${JSON.stringify(text)}`, () => assert.equal(hex(inetPton4(text)), want));

  const v6: Array<[string, string | null]> = [
    ['::', '0'.repeat(32)],
    ['::1', '0'.repeat(30) + '01'],
    ['1::', '0001' + '0'.repeat(28)],
    ['2001:0DB8::1', '20010db8' + '0'.repeat(22) + '01'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
    ['1:2:3:4:5:6:7::', '00010002000300040005000600070000'],
    ['::2:3:4:5:6:7:8', '00000002000300040005000600070008'],
    ['::1:2:3:4:5:6:7:8', null], // "::" must stand for at least one group
    ['1:2:3:4:5:6:7:8:9', null],
    ['1:2:3:4:5:6:7', null],
    [':1::2', null],
    ['1::2:', null],
    ['1:::2', null],
    ['1::2::3', null],
    ['12345::', null],
    ['00001::', null],
    ['::ffff:1.2.3.4', '00000000000000000000ffff01020304'],
    ['::1.2.3.4', '00000000000000000000000001020304'],
    ['1:2:3:4:5:6:1.2.3.4', '00010002000300040005000601020304'],
    ['1:2:3:4:5:6:7:1.2.3.4', null],
    ['::01.2.3.4', null],
    ['::1.2.3.4:5', null],
    ['::1.2.3', null],
    ['::a.2.3.4', null],
    ['fe80::1%eth0', null],
    ['[::1]', null],
    ['::1/128', null],
    ['', null],
    [':', null],
  ];
  for (const [text, want] of v6) it(`IPv6 ${JSON.stringify(text)}`, () => assert.equal(hex(inetPton6(text)), want));

  it('family by the presence of a colon', () => {
    assert.equal(hex(inetPton('1.2.3.4')), '01020304');
    assert.equal(inetPton('::ffff:1.2.3.4')?.length, 16);
    assert.equal(inetPton('1.2.3.4:'), null);
  });

  it('inet_ntop formatting', () => {
    const b = (h: string) => Uint8Array.from(Buffer.from(h, 'hex'));
    assert.equal(inetNtop(b('01020304')), '1.2.3.4');
    assert.equal(inetNtop(b('0'.repeat(32))), '::');
    assert.equal(inetNtop(b('0'.repeat(30) + '01')), '::1');
    assert.equal(inetNtop(b('00000000000000000000ffff01020300')), '::ffff:1.2.3.0');
    assert.equal(inetNtop(b('00000000000000000000000001020304')), '::1.2.3.4');
    assert.equal(inetNtop(b('20010db8000000000000000000000000')), '2001:db8::');
    assert.equal(inetNtop(b('00010000000100000000000100000001')), '1:0:1::1:0:1');
    assert.equal(inetNtop(b('00010000000000010000000000000001')), '1:0:0:1::1');
    assert.equal(inetNtop(b('00010000000000010000000000010001')), '1::1:0:0:1:1'); // a tie: the first run
  });
});

const PYTHON = `
import socket, sys, json
for line in sys.stdin:
    q = json.loads(line)
    if q[0] == 'ntop':
        print(json.dumps(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(q[1]))))
        continue
    fam = socket.AF_INET if q[0] == '4' else socket.AF_INET6
    try:
        print(json.dumps(socket.inet_pton(fam, q[1]).hex()))
    except (OSError, ValueError, UnicodeError):
        print('null')
`;

const python = spawnSync('python3', ['-c', 'import socket'], { encoding: 'utf8' }).status === 0;

/** Ask glibc (through Python) about many queries at once. */
function askLibc(queries: Array<[string, string]>): unknown[] {
  const r = spawnSync('python3', ['-c', PYTHON], { input: queries.map((q) => JSON.stringify(q)).join('\n') + '\n', encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l));
}

/** Address-like text: hex groups, colons, dots, decimal octets with and without leading zeros, odd bytes. */
const fragment = fc.oneof(
  fc.constantFrom(':', '::', '.', '0', '00', '1', '01', '255', '256', 'ffff', 'FFFF', '0db8', '12345', 'g', '%', ' ', '/'),
  fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16)),
  fc.integer({ min: 0, max: 300 }).map(String),
);
const addressText = fc.array(fragment, { maxLength: 14 }).map((a) => a.join(''));
const v4Text = fc
  .array(fc.oneof(fc.integer({ min: 0, max: 300 }).map(String), fc.constantFrom('00', '01', '', 'x')), { minLength: 1, maxLength: 6 })
  .map((a) => a.join('.'));
const zeroRuns = fc
  .array(fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 })
  .map((w) => w.map((x) => x.toString(16).padStart(4, '0')).join(''));

describe('inet_pton/inet_ntop against glibc', { skip: python ? false : 'python3 is not installed' }, () => {
  it('random address-like texts parse as glibc parses them', () => {
    const texts = [...fc.sample(addressText, { numRuns: 4000, seed: 42 }), ...fc.sample(v4Text, { numRuns: 2000, seed: 7 })];
    const queries: Array<[string, string]> = texts.flatMap((t) => [['4', t], ['6', t]] as Array<[string, string]>);
    const theirs = askLibc(queries);
    queries.forEach(([fam, t], i) => {
      const ours = hex(fam === '4' ? inetPton4(t) : inetPton6(t));
      assert.equal(ours, theirs[i], `inet_pton(AF_INET${fam === '4' ? '' : '6'}, ${JSON.stringify(t)})`);
    });
  });

  it('random addresses format as glibc formats them', () => {
    const words = fc.sample(zeroRuns, { numRuns: 3000, seed: 3 });
    const theirs = askLibc(words.map((h) => ['ntop', h]));
    words.forEach((h, i) => assert.equal(inetNtop(Uint8Array.from(Buffer.from(h, 'hex'))), theirs[i], h));
  });
});
