/**
 * sequence through the proxy (the 3.7 postmap refuses `-s proxy:...`, so our
 * client drives it) lists what `postmap -s TYPE:NAME` lists; SIGTERM exits 0.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProxyConnection } from '../../src/client/client.js';
import { ProxyTable } from '../../src/client/table.js';
import { utf8ToBytes } from '../../src/tables/core/table.js';
import { postmap, skipReason, startProxymapd, writeTable } from './harness.js';

const skip = skipReason();

test('sequence over texthash and inline equals postmap -s (as sets); clean exit on SIGTERM', { skip }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-seq-'));
  const file = path.join(dir, 't');
  writeTable(file, 'Alice one\nbob two\nStraße x\ndup a\nDUP b\ne \n"q k" v\n');
  const tables = [`texthash:${file}`, 'inline:{K=v,Ä=1,k=w}'];
  const inst = await startProxymapd({ compatibility_level: '3.6', proxy_read_maps: tables.map((t) => `proxy:${t}`).join(' ') }, dir);
  try {
    for (const dialect of ['legacy', 'new'] as const) {
      const conn = await ProxyConnection.connect(inst.proxymap);
      for (const t of tables) {
        const direct = await postmap(['-c', inst.conf, '-s', t]);
        const expected = direct.stdout.toString('latin1').split('\n').filter(Boolean).sort();
        const table = new ProxyTable(conn, utf8ToBytes(t), { dialect, smtputf8: true });
        const got: string[] = [];
        for (let r = await table.sequence(0); r.status === 'found'; r = await table.sequence(1)) got.push(`${r.key}\t${r.value}`);
        assert.deepEqual(got.sort(), expected, `${dialect} ${t}`);
        assert.ok(got.length >= 2, `${t}: ${got.length} entries`);
      }
      conn.close();
    }
  } finally {
    const code = await inst.stop();
    assert.equal(code, 0, inst.log());
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
