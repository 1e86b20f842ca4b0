import test from 'node:test';
import assert from 'node:assert/strict';
import { RecordDecoder } from '../../src/protocol/codec.js';
import { encodeReply, encodeRequest, parseReply, parseRequest, ANNOUNCEMENT } from '../../src/protocol/messages.js';
import { b } from '../support/bytes.js';

function rec(s: string) {
  const d = new RecordDecoder();
  d.push(b(s));
  const r = d.next();
  assert.ok(r);
  return r;
}

test('announcement is the captured 28 bytes', () => {
  assert.deepEqual(ANNOUNCEMENT, b('protocol|proxymap_protocol||'));
  assert.equal(ANNOUNCEMENT.length, 28);
});

test('3.7 capture (protocol.md 7.1): open and lookup parse as legacy', () => {
  const open = parseRequest(rec('request|open|table|texthash:/srv/pfspec/x|flags|0||')).request;
  assert.deepEqual(open, { kind: 'open', dialect: 'legacy', table: 'texthash:/srv/pfspec/x', instanceFlags: 0, flags: 0 });
  const lk = parseRequest(rec('request|lookup|table|texthash:/srv/pfspec/x|flags|524353|key|somekey||')).request;
  assert.deepEqual(lk, {
    kind: 'lookup', dialect: 'legacy', table: 'texthash:/srv/pfspec/x', instanceFlags: 524353, flags: 524353, key: 'somekey',
  });
  assert.deepEqual(encodeReply('open', 'legacy', { status: 0, flags: 16 }), b('status|0|flags|16||'));
  assert.deepEqual(encodeReply('lookup', 'legacy', { status: 0, value: 'somevalue' }), b('status|0|value|somevalue||'));
  assert.equal(encodeReply('lookup', 'legacy', { status: 0, value: 'somevalue' }).length, 26);
  assert.deepEqual(encodeReply('lookup', 'legacy', { status: 1 }), b('status|1|value|||'));
});

test('3.12 capture (protocol.md 7.3): byte-exact requests and replies', () => {
  const openBytes = b('request|open|table|texthash:/srv/pfspec/x|instance_flags|540737||');
  assert.equal(openBytes.length, 65);
  const open = parseRequest(rec('request|open|table|texthash:/srv/pfspec/x|instance_flags|540737||')).request;
  assert.deepEqual(open, { kind: 'open', dialect: 'new', table: 'texthash:/srv/pfspec/x', instanceFlags: 540737, flags: 540737 });
  assert.deepEqual(encodeRequest(open as never), openBytes);
  const openReply = encodeReply('open', 'new', { status: 0, flags: 1589329 });
  assert.deepEqual(openReply, b('status|0|flags|1589329||'));
  assert.equal(openReply.length, 24);
  const lkStr = 'request|lookup|table|texthash:/srv/pfspec/x|instance_flags|540737|flags|1589329|key|UPPER||';
  const lk = parseRequest(rec(lkStr)).request;
  assert.deepEqual(lk, {
    kind: 'lookup', dialect: 'new', table: 'texthash:/srv/pfspec/x', instanceFlags: 540737, flags: 1589329, key: 'UPPER',
  });
  assert.deepEqual(encodeRequest(lk as never), b(lkStr));
  const lkReply = encodeReply('lookup', 'new', { status: 0, flags: 1589329, value: 'casevalue' });
  assert.deepEqual(lkReply, b('status|0|flags|1589329|value|casevalue||'));
  assert.equal(lkReply.length, 40);
  assert.deepEqual(parseReply('lookup', 'new', rec('status|0|flags|1589329|value|casevalue||')), {
    status: 0, flags: 1589329, value: 'casevalue',
  });
});

test('3.7 update / delete / sequence captures (protocol.md 7.2)', () => {
  const up = parseRequest(rec('request|update|table|btree:/srv/pfspec/data/w|flags|448|key|newkey|value|newval||')).request;
  assert.equal(up.kind, 'update');
  assert.deepEqual(encodeReply('update', 'legacy', { status: 0 }), b('status|0||'));
  const seq = parseRequest(rec('request|sequence|table|texthash:/srv/pfspec/x|flags|448|function|0||')).request;
  assert.deepEqual(seq, { kind: 'sequence', dialect: 'legacy', table: 'texthash:/srv/pfspec/x', instanceFlags: 448, flags: 448, fn: 0 });
  assert.deepEqual(encodeReply('sequence', 'legacy', { status: 0, key: 'foo', value: 'bar' }), b('status|0|key|foo|value|bar||'));
  assert.deepEqual(encodeReply('sequence', 'legacy', { status: 1 }), b('status|1|key||value|||'));
  assert.deepEqual(encodeReply('update', 'new', { status: 0, flags: 448 }), b('status|0|flags|448||'));
});

test('malformed requests are BAD with the right reply shape', () => {
  const unknown = parseRequest(rec('request|frobnicate||')).request;
  assert.equal(unknown.kind, 'bad');
  assert.deepEqual(encodeReply(null, 'legacy', { status: 3 }), b('status|3||'));
  for (const s of [
    'request|lookup|table|x:y|key|k||', // missing flags
    'request|lookup|table|x:y|flags|abc|key|k||', // non-numeric
    'request|lookup|flags|0|table|x:y|key|k||', // wrong order
    'request|lookup|table|x:y|flags|0||', // missing key
    'table|x:y||', // no request
    '|', // empty record
  ]) {
    const r = parseRequest(rec(s)).request;
    assert.equal(r.kind, 'bad', s);
  }
  // trailing extra attribute: warning only
  const extra = parseRequest(rec('request|lookup|table|x:y|flags|0|key|k|extra|1||'));
  assert.equal(extra.request.kind, 'lookup');
  assert.equal(extra.warnings.length, 1);
});
