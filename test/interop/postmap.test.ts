/**
 * Differential interop: the real postmap through proxymapd
 * (`postmap -q KEY proxy:TYPE:NAME`) must print exactly what the direct
 * lookup (`postmap -q KEY TYPE:NAME`) prints, with the same exit status.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { postmap, skipReason, startProxymapd, writeTable, type Instance } from './harness.js';

const skip = skipReason();

const TEXTHASH = [
  'Alice\tone',
  'bob\ttwo',
  'MiXeD\tthree',
  'Straße\tstreet',
  'ÄBC\tumlaut',
  'ς\tsigma',
  'Ärger\tvalue with  spaces ',
  '"quoted key"\tqv',
  'esc\\ aped\tv3',
  'cont\tfirst',
  '  second line',
  '# a comment',
  'dup\tfirst',
  'DUP\tsecond',
  'dup\tthird',
  'nokeyvalue',
  'emptyval\t',
  'colon:\tcv',
  'unbal"anced x',
  'ключ\tзначение',
  'UPPER\tcasevalue',
].join('\n') + '\n';

const KEYS = [
  'Alice', 'alice', 'ALICE', 'aLiCe', 'bob', 'BOB', 'mixed', 'MIXED', 'MiXeD', 'Straße', 'STRASSE', 'strasse', 'straße',
  'ÄBC', 'äbc', 'ÄbC', 'ς', 'σ', 'Σ', 'ärger', 'ÄRGER', '"quoted key"', 'quoted key', 'esc\\ aped', 'cont', 'dup', 'DUP',
  'nokeyvalue', 'emptyval', 'colon:', 'unbal"anced', 'КЛЮЧ', 'ключ', 'upper', 'UPPER', 'missing', 'MISSING', 'ü', '',
];

const INLINE = 'inline:{ {Key One=v1}, k2=v2, K3=, {"a b" = c d}, Ä=umlaut, k2=last }';
const INLINE_KEYS = ['key one', 'Key One', 'KEY ONE', 'k2', 'K2', 'k3', 'K3', '"a b"', 'a b', 'ä', 'Ä', 'nope'];
const STATIC = 'static:{ hello world }';
const UNIX_KEYS = ['root', 'ROOT', 'nobody', 'daemon', 'no-such-user-xyz', 'adm', 'mail', 'Root'];

interface Mode {
  name: string;
  /** extra main.cf parameters (compatibility_level drives smtputf8 and UTF-8 folding) */
  params: Record<string, string>;
}
const MODES: Mode[] = [
  { name: 'compatibility_level 3.6 (smtputf8, UTF-8 folding)', params: { compatibility_level: '3.6' } },
  { name: 'compatibility_level 0 (ASCII folding)', params: {} },
];

for (const mode of MODES) {
  describe(`real postmap through proxymapd: ${mode.name}`, { skip }, () => {
    let inst: Instance;
    let dir: string;
    let thash: string;
    const tables = () => [`texthash:${thash}`, INLINE, STATIC, 'unix:passwd.byname', 'unix:group.byname', 'environ:x', 'fail:x'];

    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-diff-'));
      thash = path.join(dir, 'table');
      writeTable(thash, TEXTHASH);
      const list = [`texthash:${thash}`, INLINE, STATIC, 'unix:passwd.byname', 'unix:group.byname', 'environ:x', 'fail:x']
        .map((t) => (t.includes(' ') ? `{proxy:${t}}` : `proxy:${t}`))
        .join(' ');
      inst = await startProxymapd({ ...mode.params, proxy_read_maps: list }, dir);
    });
    after(async () => {
      await inst?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    /** Compare one key on one table, through the proxy and directly. */
    async function same(table: string, key: string, extra: string[] = []) {
      const viaProxy = await postmap(['-c', inst.conf, ...extra, '-q', key, `proxy:${table}`]);
      const direct = await postmap(['-c', inst.conf, ...extra, '-q', key, table]);
      assert.equal(viaProxy.stdout.toString('latin1'), direct.stdout.toString('latin1'), `${table} ${extra.join(' ')} key ${JSON.stringify(key)}: output`);
      assert.equal(viaProxy.status, direct.status, `${table} key ${JSON.stringify(key)}: exit status\n${viaProxy.stderr}\n${direct.stderr}`);
      return { viaProxy, direct };
    }
    /** Same in batch mode (postmap -q -). */
    async function sameBatch(table: string, keys: Array<string | Buffer>, extra: string[] = []) {
      const input = Buffer.concat(keys.map((k) => Buffer.concat([Buffer.from(k as string), Buffer.from('\n')])));
      const viaProxy = await postmap(['-c', inst.conf, ...extra, '-q', '-', `proxy:${table}`], input);
      const direct = await postmap(['-c', inst.conf, ...extra, '-q', '-', table], input);
      assert.equal(viaProxy.stdout.toString('latin1'), direct.stdout.toString('latin1'), `${table} batch output`);
      assert.equal(viaProxy.status, direct.status, `${table} batch status\n${viaProxy.stderr}`);
      return { viaProxy, direct };
    }

    it('texthash: every key, one postmap per key', async () => {
      let found = 0;
      for (const k of KEYS) if ((await same(`texthash:${thash}`, k)).direct.status === 0) found++;
      assert.ok(found >= 15, `the table answers (found ${found})`);
    });

    it('texthash: batch mode, including keys that are not valid UTF-8', async () => {
      const { direct } = await sameBatch(`texthash:${thash}`, [...KEYS, Buffer.from([0xff, 0x41]), Buffer.from('St\xe4'.replace('\xe4', '\u00e4'))]);
      assert.equal(direct.status, 0);
    });

    it('inline: keys with spaces, empty values, duplicates (last wins), non-ASCII', async () => {
      for (const k of INLINE_KEYS) await same(INLINE, k);
      await sameBatch(INLINE, INLINE_KEYS);
    });

    it('static: any key, any case', async () => {
      for (const k of ['x', 'X', 'Ä', '']) await same(STATIC, k);
    });

    it('unix: passwd.byname and group.byname', async () => {
      for (const k of UNIX_KEYS) {
        await same('unix:passwd.byname', k);
        await same('unix:group.byname', k);
      }
      await sameBatch('unix:passwd.byname', UNIX_KEYS);
    });

    it('environ: folded keys miss, -f finds the imported environment', async () => {
      for (const k of ['LANG', 'lang', 'HOME', 'NO_SUCH_VAR']) await same('environ:x', k);
      await same('environ:x', 'LANG', ['-f']);
      await same('environ:x', 'MAIL_CONFIG', ['-f']);
    });

    it('fail: a query error on both paths', async () => {
      const { viaProxy } = await same('fail:x', 'anything');
      assert.equal(viaProxy.status, 1);
      assert.match(viaProxy.stderr, /fatal: table proxy:fail:x: query error/);
    });

    it('-f (no folding): mixed-case keys', async () => {
      for (const k of ['Alice', 'MiXeD', 'ALICE', 'UPPER', 'Straße', 'DUP']) await same(`texthash:${thash}`, k, ['-f']);
    });

    it('an unlisted table is denied with the real client\'s "not configured" error', async () => {
      const r = await postmap(['-c', inst.conf, '-q', 'x', `proxy:texthash:${thash}.other`]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /fatal: proxymap service is not configured for table "texthash:[^"]+\.other"/);
      assert.match(inst.log(), /warning: request for unapproved table: "texthash:[^"]+\.other"/);
      assert.match(inst.log(), /to approve this table for read-only access, list proxy:texthash:\S+\.other in main\.cf:proxy_read_maps/);
    });

    it('proxymapd list prints the approved tables', async () => {
      const { run, CLI } = await import('./harness.js');
      const r = await run(process.execPath, [CLI, 'list', '-c', inst.conf]);
      assert.equal(r.status, 0);
      const lines = r.stdout.toString('utf8').trim().split('\n');
      assert.deepEqual(lines, [...tables()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    });
  });
}
