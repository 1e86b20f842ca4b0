/**
 * The socketmap and tcp_table front-ends of a running `proxymapd serve`,
 * with the real Postfix postmap as client and as oracle: `postmap -q KEY
 * socketmap:inet:127.0.0.1:PORT:NAME`, `socketmap:unix:PATH:NAME` and
 * `tcp:127.0.0.1:PORT` print
 * what the direct `postmap -q KEY TYPE:TABLE` prints, with the same exit
 * status, for texthash (mixed-case keys in the file and in the queries),
 * cidr, pcre and pgsql tables: found keys, missing keys, keys with spaces,
 * `%`, UTF-8 and invalid UTF-8 (in the file too: a line postmap skips).
 * A client outside the allow-list gets no answer (postmap: a fatal error).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runPostmap } from '../support/postmap.js';
import { skipReason, startProxymapd, writeTable, type Instance } from './harness.js';
import { KEYS, credentials, loadData, writeCf } from '../sql/fixtures.js';
import { freePort, pgSkipReason, startPostgres, type DbServer } from '../sql/servers.js';

const skip = skipReason() || pgSkipReason();

const TEXTHASH = [
  'Alice@Example.COM alice-value',
  'bob bob value, with spaces',
  'caf\xc3\xa9@example.com cafe-utf8',
  '\xc3\x89LAN upper-utf8',
  'key%x pct',
  'latin \xe9t\xe9',
  'MiXeD MiXeD-Value',
].join('\n') + '\n';
const TEXTHASH_KEYS = [
  'alice@example.com', 'ALICE@EXAMPLE.COM', 'Alice@Example.COM', 'bob', 'BOB', 'caf\xc3\xa9@example.com', 'CAF\xc3\x89@EXAMPLE.COM',
  '\xc3\xa9lan', '\xc3\x89LAN', 'key%x', 'mixed', 'MIXED', 'nobody', 'a b', 'caf\xe9', 'latin', '',
];
const CIDR = '192.168.0.0/16 private\n10.0.0.1 one\n[2001:db8::]/32 doc6\n0.0.0.0/0 any4\n';
const CIDR_KEYS = ['192.168.1.2', '10.0.0.1', '10.0.0.2', '2001:db8::1', '2001:db9::1', 'not-an-address', '::ffff:10.0.0.1'];
const PCRE = '/^(.+)@Example\\.com$/ user=$1\n/^ABC$/ exact\n/a b/ has-space\n/^x%y/ pct\n';
const PCRE_KEYS = ['joe@example.com', 'Joe@EXAMPLE.COM', 'abc', 'ABC', 'xa by', 'x%yz', 'nothing', 'caf\xc3\xa9@example.com'];

describe('socketmap front-end with postmap as client', { skip }, () => {
  let dir: string;
  let inst: Instance;
  let db: DbServer;
  let port: number;
  let unixPath: string;
  /** tcp_table listeners by table name */
  const tcpPorts: Record<string, number> = {};
  const tables: Record<string, string> = {};

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-sockmap-'));
    db = await startPostgres();
    await loadData(db);
    writeTable(path.join(dir, 'virtual'), Buffer.from(TEXTHASH, 'latin1'));
    writeTable(path.join(dir, 'clients.cidr'), CIDR);
    writeTable(path.join(dir, 'rules.pcre'), PCRE);
    const cf = writeCf(path.join(dir, 'aliases.cf'), `${credentials(db, `inet:127.0.0.1:${db.port}`)}query = SELECT dest FROM aliases WHERE mailbox='%s'\n`);
    Object.assign(tables, {
      virtual: `texthash:${dir}/virtual`,
      cidr: `cidr:${dir}/clients.cidr`,
      pcre: `pcre:${dir}/rules.pcre`,
      pg: `pgsql:${cf}`,
      unapproved: `texthash:${dir}/virtual.copy`,
    });
    fs.copyFileSync(path.join(dir, 'virtual'), path.join(dir, 'virtual.copy'));
    port = await freePort();
    for (const name of ['virtual', 'cidr', 'pcre', 'pg']) tcpPorts[name] = await freePort();
    unixPath = path.join(dir, 'sm', 'socketmap');
    inst = await startProxymapd(
      {
        compatibility_level: '3.6',
        proxy_read_maps: Object.entries(tables).filter(([n]) => n !== 'unapproved').map(([, t]) => `proxy:${t}`).join(' '),
        proxymapd_socketmap_listen: `inet:127.0.0.1:${port} unix:${unixPath}`,
        proxymapd_socketmap_maps: Object.entries(tables).map(([n, t]) => `${n}=proxy:${t}`).join(' '),
        proxymapd_tcp_maps: Object.entries(tcpPorts).map(([n, p]) => `inet:127.0.0.1:${p}=${tables[n]}`).join(' '),
      },
      path.join(dir, 'pmd'),
    );
    await waitConnectable({ path: unixPath });
    for (const p of Object.values(tcpPorts)) await waitConnectable({ host: '127.0.0.1', port: p });
  });
  after(async () => {
    await inst?.stop();
    await db?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** postmap -q KEY for the direct table, both socketmap endpoints and the tcp_table listener: same stdout and exit status. */
  async function compare(name: string, keys: string[]): Promise<void> {
    let found = 0;
    for (const key of keys) {
      const direct = await runPostmap('utf8', ['-q', key, tables[name]!]);
      if (direct.status === 0) found++;
      assert.ok(direct.status === 0 || direct.status === 1, `direct ${name} ${JSON.stringify(key)}: ${direct.fatal}`);
      for (const table of [`socketmap:inet:127.0.0.1:${port}:${name}`, `socketmap:unix:${unixPath}:${name}`, `tcp:127.0.0.1:${tcpPorts[name]}`]) {
        const viaSocketmap = await runPostmap('utf8', ['-q', key, table]);
        const what = `${name} ${JSON.stringify(key)} via ${table}`;
        assert.equal(viaSocketmap.stdout, direct.stdout, what);
        assert.equal(viaSocketmap.status, direct.status, `${what}: ${viaSocketmap.fatal ?? ''}`);
      }
    }
    assert.ok(found > 0 && found < keys.length, `${name}: found and missing keys both asked (${found} of ${keys.length} found)`);
  }

  it('texthash: mixed-case keys in the file and in the queries, spaces, %, UTF-8, invalid UTF-8', async () => {
    await compare('virtual', TEXTHASH_KEYS);
    // and the answers are the ones expected (the comparison is not between two failures)
    assert.equal((await runPostmap('utf8', ['-q', 'ALICE@example.com', `socketmap:inet:127.0.0.1:${port}:virtual`])).stdout, 'alice-value\n');
    assert.equal((await runPostmap('utf8', ['-q', 'caf\xc3\x89@Example.com', `socketmap:unix:${unixPath}:virtual`])).stdout, 'cafe-utf8\n');
  });

  it('cidr', async () => {
    await compare('cidr', CIDR_KEYS);
  });

  it('pcre', async () => {
    await compare('pcre', PCRE_KEYS);
  });

  it('pgsql', async () => {
    await compare('pg', KEYS.filter((k) => !k.includes('\n')));
  });

  it('a name whose table is not in proxy_read_maps answers PERM; the log says why', async () => {
    const r = await runPostmap('utf8', ['-q', 'bob', `socketmap:inet:127.0.0.1:${port}:unapproved`]);
    assert.equal(r.stdout, '');
    assert.notEqual(r.status, 0);
    assert.ok(r.warnings.some((w) => /socketmap server permanent error: unapproved: table not approved/.test(w)), r.warnings.join('\n'));
    assert.match(inst.log(), /of name "unapproved" is not listed in proxy_read_maps/);
  });
});

describe('socketmap front-end: allow-list with postmap as client', { skip: skipReason() }, () => {
  it('a client outside proxymapd_socketmap_clients gets no answer', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-sockmap-'));
    writeTable(path.join(dir, 'virtual'), 'bob b\n');
    const port = await freePort();
    const inst = await startProxymapd(
      {
        proxy_read_maps: `proxy:texthash:${dir}/virtual`,
        proxymapd_socketmap_listen: `inet:127.0.0.1:${port}`,
        proxymapd_socketmap_maps: `virtual=texthash:${dir}/virtual`,
        proxymapd_socketmap_clients: '192.0.2.0/24',
      },
      path.join(dir, 'pmd'),
    );
    try {
      await waitConnectable({ host: '127.0.0.1', port });
      const r = await runPostmap('utf8', ['-q', 'bob', `socketmap:inet:127.0.0.1:${port}:virtual`]);
      assert.equal(r.stdout, '');
      assert.notEqual(r.status, 0);
      assert.match(r.fatal ?? '', /query error/);
      assert.match(inst.log(), /refusing connection from 127\.0\.0\.1: not in proxymapd_socketmap_clients/);
    } finally {
      await inst.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

async function waitConnectable(where: net.NetConnectOpts, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createConnection(where);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on ${JSON.stringify(where)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
