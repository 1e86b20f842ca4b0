import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { ProxyConnection } from '../../src/client/client.js';
import { encodeRecord } from '../../src/protocol/codec.js';
import { startTestServer } from './helpers.js';
import { DICT_FLAG } from '../../src/protocol/flags.js';
import { b } from '../support/bytes.js';

const rec = (s: string) => s.split('|').reduce<Array<[string, string]>>((acc, _x, i, a) => {
  if (i % 2 === 0 && a[i] !== '') acc.push([a[i], a[i + 1]]);
  return acc;
}, []);
/** Records as 'a|b|c|d' strings for readable assertions. */
const show = (r: ReadonlyArray<readonly [string, string]>) => r.map(([n, v]) => `${n}|${v}`).join('|');

test('announcement, legacy open/lookup, socket permissions', async () => {
  const ts = await startTestServer(['mem:a=1,b=2']);
  try {
    assert.equal(fs.statSync(ts.proxymap).mode & 0o777, 0o666);
    assert.equal(fs.statSync(`${ts.dir}/private`).mode & 0o777, 0o700);
    const c = await ProxyConnection.connect(ts.proxymap);
    assert.equal(show(await c.exchangeRaw(b('request|open|table|mem:a=1,b=2|flags|0||'))), 'status|0|flags|16');
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|mem:a=1,b=2|flags|524353|key|a||'))), 'status|0|value|1');
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|mem:a=1,b=2|flags|524353|key|zz||'))), 'status|1|value|');
    // lookup without open first, on a new connection (clients reconnect without re-opening)
    const c2 = await ProxyConnection.connect(ts.proxymap);
    assert.equal(show(await c2.exchangeRaw(b('request|lookup|table|proxy:proxy:mem:a=1,b=2|flags|524353|key|b||'))), 'status|0|value|2');
    c.close();
    c2.close();
  } finally {
    await ts.close();
  }
});

test('new dialect: flags in every reply, server folds when it reports UTF8_ACTIVE', async () => {
  const ts = await startTestServer(['mem:upper=casevalue']);
  try {
    const c = await ProxyConnection.connect(ts.proxymap);
    assert.equal(show(await c.exchangeRaw(b('request|open|table|mem:upper=casevalue|instance_flags|540737||'))), 'status|0|flags|1589329');
    assert.equal(
      show(await c.exchangeRaw(b('request|lookup|table|mem:upper=casevalue|instance_flags|540737|flags|1589329|key|UPPER||'))),
      'status|0|flags|1589329|value|casevalue',
    );
    // flags 0: no folding requested
    assert.equal(
      show(await c.exchangeRaw(b('request|lookup|table|mem:upper=casevalue|instance_flags|540737|flags|0|key|UPPER||'))),
      'status|1|flags|0|value|',
    );
    assert.equal(
      show(await c.exchangeRaw(b('request|lookup|table|mem:upper=casevalue|instance_flags|540737|flags|16400|key|UPPER||'))),
      'status|0|flags|16400|value|casevalue',
    );
    c.close();
  } finally {
    await ts.close();
  }
});

test('DENY with the two warnings; update on proxymap denied; BAD cases; unknown request', async () => {
  const ts = await startTestServer(['mem:a=1'], ['mem:w=1']);
  try {
    const c = await ProxyConnection.connect(ts.proxymap);
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|mem:other|flags|0|key|a||'))), 'status|4|value|');
    assert.ok(ts.logs.some((l) => l.endsWith('warning: request for unapproved table: "mem:other"')));
    assert.ok(ts.logs.some((l) => l.endsWith('warning: to approve this table for read-only access, list proxy:mem:other in main.cf:proxy_read_maps')));
    assert.equal(show(await c.exchangeRaw(b('request|update|table|mem:a=1|flags|448|key|k|value|v||'))), 'status|4');
    assert.ok(ts.logs.some((l) => l.endsWith('refusing mem:a=1 update request on non-proxywrite service')));
    assert.equal(show(await c.exchangeRaw(b('request|frobnicate||'))), 'status|3');
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|mem:a=1|key|k||'))), 'status|3|value|');
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|mem:a=1|flags|abc|key|k||'))), 'status|3|value|');
    assert.equal(show(await c.exchangeRaw(b('request|open|table|nocolon|flags|0||'))), 'status|3|flags|0');
    assert.equal(show(await c.exchangeRaw(b('request|sequence|table|mem:a=1|flags|0|function|7||'))), 'status|3|key||value|');
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|mem:other|instance_flags|0|flags|0|key|a||'))), 'status|4|flags|0|value|');
    // still serving after all that
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|mem:a=1|flags|0|key|a||'))), 'status|0|value|1');
    // proxywrite: update, sequence, delete
    const w = await ProxyConnection.connect(ts.proxywrite);
    assert.equal(show(await w.exchangeRaw(b('request|open|table|mem:w=1|flags|0||'))), 'status|0|flags|16');
    assert.equal(show(await w.exchangeRaw(b('request|update|table|mem:w=1|flags|448|key|k9|value|v9||'))), 'status|0');
    assert.equal(show(await w.exchangeRaw(b('request|sequence|table|mem:w=1|flags|448|function|0||'))), 'status|0|key|w|value|1');
    assert.equal(show(await w.exchangeRaw(b('request|sequence|table|mem:w=1|flags|448|function|1||'))), 'status|0|key|k9|value|v9');
    assert.equal(show(await w.exchangeRaw(b('request|sequence|table|mem:w=1|flags|448|function|1||'))), 'status|1|key||value|');
    assert.equal(show(await w.exchangeRaw(b('request|delete|table|mem:w=1|flags|524353|key|k9||'))), 'status|0');
    assert.equal(show(await w.exchangeRaw(b('request|delete|table|mem:w=1|flags|524353|key|k9||'))), 'status|1');
    assert.equal(show(await w.exchangeRaw(b('request|update|table|mem:w=1|instance_flags|0|flags|0|key|a|value|b||'))), 'status|0|flags|384');
    // the read list does not authorize writes
    assert.equal(show(await w.exchangeRaw(b('request|lookup|table|mem:a=1|flags|0|key|a||'))), 'status|4|value|');
    c.close();
    w.close();
  } finally {
    await ts.close();
  }
});

test('a table that fails to open is a surrogate: open OK, lookups RETRY', async () => {
  const ts = await startTestServer(['broken:x']);
  try {
    const c = await ProxyConnection.connect(ts.proxymap);
    assert.equal(show(await c.exchangeRaw(b('request|open|table|broken:x|flags|0||'))), 'status|0|flags|32');
    assert.equal(show(await c.exchangeRaw(b('request|open|table|broken:x|instance_flags|0||'))), 'status|0|flags|4194336');
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|broken:x|flags|0|key|a||'))), 'status|2|value|');
    assert.ok(ts.logs.some((l) => l.includes('broken:x is unavailable. broken:x: cannot open')));
    c.close();
  } finally {
    await ts.close();
  }
});

test('a throwing or rejecting table answers RETRY with a warning, and the server stays up', async () => {
  const ts = await startTestServer(['throws:x', 'rejects:y']);
  try {
    const c = await ProxyConnection.connect(ts.proxymap);
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|throws:x|flags|0|key|a||'))), 'status|2|value|');
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|rejects:y|flags|0|key|a||'))), 'status|2|value|');
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|rejects:y|flags|0|key|b||'))), 'status|2|value|');
    assert.ok(ts.logs.some((l) => l.includes('table throws:x: lookup failed: boom')));
    assert.ok(ts.logs.some((l) => l.includes('table rejects:y: lookup failed: async boom')));
    c.close();
  } finally {
    await ts.close();
  }
});

test('a slow table does not stall other clients; pipelined replies stay in order', async () => {
  const ts = await startTestServer(['slow:300', 'mem:a=1']);
  try {
    const slow = await ProxyConnection.connect(ts.proxymap);
    const fast = await ProxyConnection.connect(ts.proxymap);
    const t0 = Date.now();
    const pSlow = slow.exchangeRaw(b('request|lookup|table|slow:300|flags|0|key|x||'));
    const r = await fast.exchangeRaw(b('request|lookup|table|mem:a=1|flags|0|key|a||'));
    assert.equal(show(r), 'status|0|value|1');
    assert.ok(Date.now() - t0 < 250, 'fast client answered while the slow lookup ran');
    assert.equal(show(await pSlow), 'status|0|value|slow:x');
    // pipelining: both requests in one write; replies in request order
    slow.writeRaw(Buffer.concat([b('request|lookup|table|slow:300|flags|0|key|1||'), b('request|lookup|table|mem:a=1|flags|0|key|a||')]));
    assert.equal(show(await slow.read()), 'status|0|value|slow:1');
    assert.equal(show(await slow.read()), 'status|0|value|1');
    slow.close();
    fast.close();
  } finally {
    await ts.close();
  }
});

test('a partial request past the deadline closes that connection only', async () => {
  const ts = await startTestServer(['mem:a=1'], [], { ioDeadlineMs: 200 });
  try {
    const stall = await ProxyConnection.connect(ts.proxymap);
    stall.writeRaw(b('request|lookup|table|mem:a'));
    await assert.rejects(stall.read(), /closed/);
    assert.ok(ts.logs.some((l) => l.includes('timeout receiving request')));
    const c = await ProxyConnection.connect(ts.proxymap);
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|mem:a=1|flags|0|key|a||'))), 'status|0|value|1');
    c.close();
  } finally {
    await ts.close();
  }
});

test('half-closed client still gets its reply', async () => {
  const ts = await startTestServer(['mem:a=1']);
  try {
    const got = await new Promise<Buffer>((resolve, reject) => {
      const s = net.createConnection(ts.proxymap);
      const chunks: Buffer[] = [];
      s.on('connect', () => s.end(encodeRecord(rec('request|lookup|table|mem:a=1|flags|0|key|a'))));
      s.on('data', (d) => chunks.push(d));
      s.on('close', () => resolve(Buffer.concat(chunks)));
      s.on('error', reject);
    });
    assert.deepEqual(got, Buffer.concat([b('protocol|proxymap_protocol||'), b('status|0|value|1||')]));
  } finally {
    await ts.close();
  }
});

test('busy polling waits for a backend answer only briefly (at most 10 windows after the request)', async () => {
  const ts = await startTestServer(['mem:a=1', 'slow:300']);
  try {
    const c = await ProxyConnection.connect(ts.proxymap);
    for (let i = 0; i < 50; i++) await c.exchangeRaw(b('request|lookup|table|mem:a=1|flags|0|key|a||'));
    await c.exchangeRaw(b('request|open|table|slow:300|flags|0||'));
    for (let i = 0; i < 20; i++) await c.exchangeRaw(b('request|lookup|table|mem:a=1|flags|0|key|a||'));
    const slow = c.exchangeRaw(b('request|lookup|table|slow:300|flags|0|key|k||'));
    // the default window is 100 us: spinning for the slow answer ends after 1 ms of the 300 ms wait
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(ts.server.busyPolling, false, 'no spinning through a long backend wait');
    assert.equal(show(await slow), 'status|0|value|slow:k');
    c.close();
  } finally {
    await ts.close();
  }
});

test('busy polling follows back-to-back lookups, never an update or delete reply', async () => {
  // a wide window (10 ms), so that an in-process client always comes back within it
  const ts = await startTestServer([], ['mem:a=1'], { busyPollUsec: 10_000 });
  try {
    const c = await ProxyConnection.connect(ts.proxywrite);
    // Whether the server spins right after each reply, sampled as the reply arrives (the spin runs in the turns after it).
    const spinsAfter = async (req: Buffer, n: number): Promise<number> => {
      let spun = 0;
      for (let i = 0; i < n; i++) {
        await c.exchangeRaw(req);
        if (ts.server.busyPolling) spun++;
      }
      return spun;
    };
    const lookup = b('request|lookup|table|mem:a=1|flags|0|key|a||');
    const update = b('request|update|table|mem:a=1|flags|0|key|k|value|v||');
    const del = b('request|delete|table|mem:a=1|flags|0|key|k||');
    await spinsAfter(lookup, 50);
    assert.ok((await spinsAfter(lookup, 200)) > 0, 'spins between back-to-back lookups');
    await spinsAfter(update, 1); // (the spin the lookups started ends at its next turn)
    assert.equal(await spinsAfter(update, 200), 0, 'no spin after an update');
    assert.equal(await spinsAfter(del, 200), 0, 'no spin after a delete');
    c.close();
  } finally {
    await ts.close();
  }
});

test('busy polling runs only while clients come back quickly, and stops when idle', async () => {
  const ts = await startTestServer(['mem:a=1']);
  try {
    const c = await ProxyConnection.connect(ts.proxymap);
    for (let i = 0; i < 50; i++) await c.exchangeRaw(b('request|lookup|table|mem:a=1|flags|0|key|a||'));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(ts.server.busyPolling, false, 'no spinning once the client is idle');
    c.close();
  } finally {
    await ts.close();
  }
});

test('NO_UNAUTH is an instance flag: a table that refuses such opens is not served to such a client, though open for others', async () => {
  const ts = await startTestServer(['unauth:a=1']);
  try {
    const c = await ProxyConnection.connect(ts.proxymap);
    // legacy: the instance bits ride in every request's flags
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|unauth:a=1|flags|524353|key|a||'))), 'status|0|value|1');
    assert.equal(show(await c.exchangeRaw(b(`request|lookup|table|unauth:a=1|flags|${524353 | DICT_FLAG.NO_UNAUTH}|key|a||`))), 'status|2|value|');
    // new dialect: instance_flags
    const r = await c.exchangeRaw(b(`request|lookup|table|unauth:a=1|instance_flags|${524352 | DICT_FLAG.NO_UNAUTH}|flags|524353|key|a||`));
    assert.equal(r[0]![1], '2');
    assert.equal(show(await c.exchangeRaw(b('request|lookup|table|unauth:a=1|flags|524353|key|a||'))), 'status|0|value|1');
    assert.ok(ts.logs.some((l) => l.includes('unauth:a=1 is unavailable. unauth:a=1 map is not allowed for security-sensitive data')), ts.logs.join('\n'));
    c.close();
  } finally {
    await ts.close();
  }
});
