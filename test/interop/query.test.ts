/**
 * `proxymapd query` (our client, both protocol dialects) against proxymapd,
 * compared with the real postmap's direct lookup: same output, same status.
 * The 3.11+ dialect has no real client on this machine; this is how its
 * folding rules (server-side folding after UTF8_ACTIVE) meet the oracle.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI, postmap, run, skipReason, startProxymapd, writeTable, type Instance } from './harness.js';

const skip = skipReason();

const SOURCE = ['Alice\tone', 'MiXeD\tthree', 'Straße\tstreet', 'ÄBC\tumlaut', 'ς\tsigma', 'dup x', 'DUP y', 'e\t', 'UPPER casevalue'].join('\n') + '\n';
const KEYS = ['Alice', 'alice', 'ALICE', 'mixed', 'MIXED', 'STRASSE', 'straße', 'äbc', 'ÄBC', 'Σ', 'ς', 'dup', 'DUP', 'e', 'UPPER', 'upper', 'none', ''];
const INLINE = 'inline:{Key=v,Ä=ä,x=}';

for (const level of ['3.6', '0']) {
  describe(`proxymapd query vs direct postmap (compatibility_level ${level})`, { skip }, () => {
    let inst: Instance;
    let dir: string;
    let file: string;
    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-query-'));
      file = path.join(dir, 'src');
      writeTable(file, SOURCE);
      inst = await startProxymapd({ compatibility_level: level, proxy_read_maps: `proxy:texthash:${file} proxy:${INLINE}` }, dir);
    });
    after(async () => {
      await inst?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    for (const dialect of ['legacy', 'new']) {
      it(`${dialect} dialect, batch mode`, async () => {
        for (const table of [`texthash:${file}`, INLINE]) {
          const input = KEYS.join('\n') + '\n';
          const ours = await run(process.execPath, [CLI, 'query', '--dialect', dialect, '-c', inst.conf, '-', `proxy:${table}`], input);
          const direct = await postmap(['-c', inst.conf, '-q', '-', table], input);
          assert.equal(ours.stdout.toString('latin1'), direct.stdout.toString('latin1'), `${table}\n${ours.stderr}`);
          assert.equal(ours.status, direct.status);
        }
      });
      it(`${dialect} dialect, single keys and exit status`, async () => {
        for (const key of ['ALICE', 'none', 'e']) {
          const ours = await run(process.execPath, [CLI, 'query', '--dialect', dialect, '-c', inst.conf, key, `proxy:texthash:${file}`]);
          const direct = await postmap(['-c', inst.conf, '-q', key, `texthash:${file}`]);
          assert.equal(ours.stdout.toString('latin1'), direct.stdout.toString('latin1'));
          assert.equal(ours.status, direct.status, key);
        }
      });
    }

    it('an unlisted table: fatal "not configured", exit 1', async () => {
      const r = await run(process.execPath, [CLI, 'query', '-c', inst.conf, 'x', 'proxy:texthash:/etc/nope']);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /fatal: proxymap service is not configured for table "texthash:\/etc\/nope"/);
    });
  });
}
