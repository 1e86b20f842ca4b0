/**
 * Indexed tables (cdb, lmdb, hash, btree) through proxymapd, with the real
 * postmap as client and two oracles: the direct lookup (`postmap -q - TYPE:FILE`)
 * and the real Postfix proxymap (an isolated instance, same tables, same
 * client command). Random tables with mixed case, non-ASCII keys, empty
 * values and duplicates, built by the real postmap and by `proxymapd build`;
 * missing, truncated and garbage files must get the status the real
 * proxymap gives.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI, POSTMAP, postmap, run, skipReason, startProxymapd, type Instance, type Run } from './harness.js';
import { postfixAvailable, postfixUnavailableReason, startPostfixInstance, type PostfixInstance } from './postfix-instance.js';
import { randomSource } from '../tables/indexed/cdbgen.js';
import { ProxyConnection } from '../../src/client/client.js';
import { ProxyTable } from '../../src/client/table.js';
import { utf8ToBytes } from '../../src/tables/core/table.js';
import { skipUnlessPresent } from '../support/skip.js';

/** All entries by sequence through a proxy socket (the 3.7 postmap refuses `-s proxy:...`), as postmap -s prints them. */
async function proxySequence(socket: string, spec: string): Promise<string> {
  const conn = await ProxyConnection.connect(socket);
  try {
    const table = new ProxyTable(conn, spec, { dialect: 'legacy', smtputf8: true });
    let out = '';
    for (let r = await table.sequence(0); r.status === 'found'; r = await table.sequence(1)) out += `${r.key}\t${r.value}\n`;
    return out;
  } finally {
    conn.close();
  }
}

const skip = skipReason();
const realSkip = skip || skipUnlessPresent(!postfixAvailable() && `real Postfix instance: ${postfixUnavailableReason()}`);

interface Tbl {
  spec: string;
  keys: Buffer;
  /** sequence (-s) is supported by Postfix 3.7 for this type */
  seq: boolean;
  /** a damaged or missing file */
  bad?: boolean;
  /** built by postalias */
  alias?: boolean;
}

const POSTALIAS = ['/usr/sbin/postalias', '/usr/bin/postalias'].find((p) => fs.existsSync(p)) ?? 'postalias';

const nl = (keys: string[]) => Buffer.concat(keys.map((k) => Buffer.from(k + '\n', 'latin1')));

describe('indexed tables through proxymapd vs direct lookups and the real proxymap', { skip }, () => {
  let dir: string;
  let ours: Instance;
  let real: PostfixInstance | undefined;
  const tables: Tbl[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-indexed-'));
    fs.chmodSync(dir, 0o755); // the real proxymap runs as postfix
    const conf = path.join(dir, 'buildconf');
    fs.mkdirSync(conf);
    fs.writeFileSync(path.join(conf, 'main.cf'), 'compatibility_level = 3.6\n');
    fs.utimesSync(path.join(conf, 'main.cf'), 1_000_000_000, 1_000_000_000);
    let seed = 31;
    for (const type of ['cdb', 'lmdb', 'hash', 'btree']) {
      for (const builder of ['postmap', 'proxymapd']) {
        const src = randomSource(seed++, 300);
        const file = path.join(dir, `${builder}-${type}`);
        fs.writeFileSync(file, Buffer.from(src.text, 'latin1'));
        fs.utimesSync(file, 1_000_000_000, 1_000_000_000);
        const r =
          builder === 'postmap'
            ? spawnSync(POSTMAP!, ['-c', conf, `${type}:${file}`])
            : spawnSync(process.execPath, [CLI, 'build', '-c', conf, `${type}:${file}`]);
        assert.equal(r.status, 0, `${builder} ${type}: ${r.stderr}`);
        tables.push({ spec: `${type}:${file}`, keys: nl(src.keys), seq: type !== 'cdb' });
      }
    }
    // Alias databases built by postalias (keys without the colon, the "@" sentinel record, continuation lines).
    const aliases = [
      '# aliases', 'postmaster: root', 'Root: admin@example.com, "|/usr/bin/cmd arg"', 'MiXeD:   a,', '  b, c',
      'straße: x', 'list: :include:/etc/mail/list', 'empty-ok: /dev/null', 'dup: one', 'DUP: two',
    ].join('\n') + '\n';
    const aliasKeys = nl(['postmaster', 'root', 'ROOT', 'mixed', 'MiXeD', 'strasse', 'STRASSE', 'list', 'empty-ok', 'dup', '@', 'nobody', 'root:']);
    for (const type of ['cdb', 'lmdb', 'hash']) {
      const file = path.join(dir, `aliases-${type}`);
      fs.writeFileSync(file, aliases);
      const r = spawnSync(POSTALIAS, ['-c', conf, `${type}:${file}`]);
      assert.equal(r.status, 0, `postalias ${type}: ${r.stderr}`);
      tables.push({ spec: `${type}:${file}`, keys: aliasKeys, seq: type !== 'cdb', alias: true });
    }
    // Damaged and missing files.
    const src = randomSource(99, 300);
    const keys = nl(src.keys.slice(0, 40));
    for (const type of ['cdb', 'lmdb', 'hash']) {
      const file = path.join(dir, `good-${type}`);
      fs.writeFileSync(file, Buffer.from(src.text, 'latin1'));
      assert.equal(spawnSync(POSTMAP!, ['-c', conf, `${type}:${file}`]).status, 0);
      const suffix = type === 'hash' ? '.db' : `.${type}`;
      const bytes = fs.readFileSync(file + suffix);
      fs.writeFileSync(path.join(dir, `truncated-${type}${suffix}`), bytes.subarray(0, 1000));
      fs.writeFileSync(path.join(dir, `garbage-${type}${suffix}`), Buffer.alloc(8192, 0x5a));
      fs.writeFileSync(path.join(dir, `empty-${type}${suffix}`), '');
      for (const kind of ['truncated', 'garbage', 'empty', 'missing']) {
        tables.push({ spec: `${type}:${path.join(dir, `${kind}-${type}`)}`, keys, seq: false, bad: true });
      }
    }
    const list = tables.map((t) => `proxy:${t.spec}`).join(' ');
    ours = await startProxymapd({ compatibility_level: '3.6', proxy_read_maps: list }, path.join(dir, 'ours'));
    if (!realSkip) real = await startPostfixInstance({ mainCf: { proxy_read_maps: list, service_throttle_time: '1s' } });
  });
  after(async () => {
    await ours?.stop();
    await real?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const fatal = (r: Run) => /fatal: (.*)/.exec(r.stderr)?.[1];

  it('every key (and absent keys, case variants): through proxymapd = direct', async () => {
    for (const t of tables.filter((x) => !x.bad)) {
      const [viaProxy, direct] = await Promise.all([
        postmap(['-c', ours.conf, '-q', '-', `proxy:${t.spec}`], t.keys),
        postmap(['-c', ours.conf, '-q', '-', t.spec], t.keys),
      ]);
      assert.equal(viaProxy.stdout.toString('latin1'), direct.stdout.toString('latin1'), `${t.spec}: output`);
      assert.equal(viaProxy.status, direct.status, `${t.spec}: status\n${viaProxy.stderr}`);
      assert.ok(direct.stdout.length > (t.alias ? 20 : 100), `${t.spec} answers`);
    }
  });

  it('alias databases built by postalias: postalias -q through proxymapd = direct', async () => {
    const aliasTables = tables.filter((x) => x.alias);
    assert.equal(aliasTables.length, 3);
    for (const t of aliasTables) {
      const [viaProxy, direct] = await Promise.all([
        run(POSTALIAS, ['-c', ours.conf, '-q', '-', `proxy:${t.spec}`], t.keys),
        run(POSTALIAS, ['-c', ours.conf, '-q', '-', t.spec], t.keys),
      ]);
      assert.equal(viaProxy.stdout.toString('latin1'), direct.stdout.toString('latin1'), `${t.spec}: output`);
      assert.equal(viaProxy.status, direct.status, `${t.spec}: status\n${viaProxy.stderr}`);
      assert.match(direct.stdout.toString('latin1'), /^@:?\t@$/m, `${t.spec}: the "@" record`);
    }
  });

  it('-N / -n queries: through proxymapd = direct', async () => {
    for (const t of tables.filter((x) => !x.bad)) {
      for (const opt of ['-N', '-n']) {
        const [viaProxy, direct] = await Promise.all([
          postmap(['-c', ours.conf, opt, '-q', '-', `proxy:${t.spec}`], t.keys),
          postmap(['-c', ours.conf, opt, '-q', '-', t.spec], t.keys),
        ]);
        assert.equal(viaProxy.stdout.toString('latin1'), direct.stdout.toString('latin1'), `${opt} ${t.spec}: output`);
      }
    }
  });

  it('sequence through proxymapd = postmap -s, same order (lmdb, hash, btree)', async () => {
    for (const t of tables.filter((x) => x.seq)) {
      const direct = await postmap(['-c', ours.conf, '-s', t.spec]);
      const viaProxy = await proxySequence(ours.proxymap, t.spec);
      assert.equal(viaProxy, direct.stdout.toString('latin1'), `${t.spec}: sequence`);
      assert.ok(viaProxy.length > 20);
    }
  });

  it('the same answers as the real proxymap, damaged and missing files included', { skip: realSkip }, async () => {
    const crashed: string[] = [];
    // The good tables in parallel; the damaged ones one at a time, because a proxymap process that dies
    // on one takes its other clients' connections with it (and its own client hangs until the timeout).
    const ask = (t: Tbl) =>
      Promise.all([
        run(POSTMAP!, ['-c', ours.conf, '-q', '-', `proxy:${t.spec}`], t.keys, 4_000),
        run(POSTMAP!, ['-c', real!.confDir, '-q', '-', `proxy:${t.spec}`], t.keys, 4_000),
      ]);
    const results = new Map<Tbl, [Run, Run]>();
    await Promise.all(tables.filter((t) => !t.bad).map(async (t) => results.set(t, await ask(t))));
    for (const t of tables.filter((x) => x.bad)) results.set(t, await ask(t));
    for (const t of tables) {
      const [o, r] = results.get(t)!;
      assert.equal(o.stdout.toString('latin1'), r.stdout.toString('latin1'), `${t.spec}: output`);
      if (r.status === -1) {
        // The real proxymap dies on this file (msg_fatal) and its client retries until killed: we answer with an error instead.
        assert.equal(o.status, 1, `${t.spec}: ours`);
        assert.match(fatal(o) ?? '', /^table proxy:\S+: query error/, `${t.spec}: ours: ${o.stderr}`);
        crashed.push(t.spec);
        continue;
      }
      assert.equal(o.status, r.status, `${t.spec}: status\nours: ${o.stderr}\nreal: ${r.stderr}`);
      assert.equal(fatal(o), fatal(r), `${t.spec}: client's fatal error`);
      if (t.bad) assert.notEqual(o.status, 0, `${t.spec} answers with an error`);
    }
    console.log(`files the real proxymap crashed on: ${crashed.join(' ') || 'none'}`);
    for (const t of tables.filter((x) => x.seq && !x.bad)) {
      const [o, r] = await Promise.all([proxySequence(ours.proxymap, t.spec), proxySequence(real!.proxymapSocket, t.spec)]);
      assert.equal(o, r, `${t.spec}: sequence`);
    }
  });

  it('proxymapd is still serving after all that', async () => {
    const t = tables.find((x) => x.spec.startsWith('lmdb:'))!;
    const r = await postmap(['-c', ours.conf, '-q', '-', `proxy:${t.spec}`], t.keys);
    assert.equal(r.status, 0, r.stderr);
  });
});
