/**
 * ldap: tables over TLS through a running proxymapd, with the real Postfix
 * postmap (postfix-ldap, libldap with GnuTLS on Debian) as client and
 * oracle, against a throwaway slapd with a throwaway CA (slapd.ts, `tls`):
 * `postmap -q - proxy:ldap:CF` prints what `postmap -q - ldap:CF` prints and
 * exits the same for ldaps:// and StartTLS, with a CA file, a hashed CA
 * directory, the wrong CA (verified: both fail; not verified: both work),
 * a host name the certificate does not match (libldap checks "localhost"
 * as this machine's own name), and start_tls with version = 2.
 *
 * The slapd lets anyone on a TLS connection read the secret branch, so a
 * case that finds spy@example.com did run over TLS.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { postmap, skipReason, startProxymapd, writeTable, type Instance } from '../../interop/harness.js';
import { READER_DN, READER_PW, SUFFIX, slapdSkipReason, startSlapd, type Slapd, type SlapdTls } from './slapd.js';

const skip = skipReason() || slapdSkipReason({ tls: true });

const KEYS = ['alice@example.com', 'spy@example.com', 'nobody@example.com', 'juergen@example.com', 'bob@example.com'];

const base = (host: string, extra = '') =>
  `server_host = ${host}\nsearch_base = ${SUFFIX}\nversion = 3\nquery_filter = (mail=%s)\nresult_attribute = mailRoutingAddress, cn\n${extra}`;

interface Case {
  name: string;
  body: (s: Slapd, t: SlapdTls) => string;
  /** what Postfix is expected to do (checks that the case tests what it says) */
  expect: 'tls' | 'plain' | 'fail';
  /** a warning Postfix prints (and proxymapd logs) */
  warning?: RegExp;
}

const port = (u: string) => u.replace(/^.*:/, '');

const CASES: Case[] = [
  { name: 'plain-control', expect: 'plain', body: (s) => base(s.url) },
  { name: 'ldaps-ca-file', expect: 'tls', body: (_s, t) => base(t.url, `tls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\n`) },
  { name: 'ldaps-ca-dir', expect: 'tls', body: (_s, t) => base(t.url, `tls_ca_cert_dir = ${t.caDir}\ntls_require_cert = yes\n`) },
  { name: 'ldaps-bind-dn', expect: 'tls', body: (_s, t) => base(t.url, `tls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\nbind = yes\nbind_dn = ${READER_DN}\nbind_pw = ${READER_PW}\n`) },
  { name: 'starttls-ca-file', expect: 'tls', body: (s, t) => base(s.url, `start_tls = yes\ntls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\n`) },
  { name: 'starttls-ca-dir', expect: 'tls', body: (s, t) => base(s.url, `start_tls = yes\ntls_ca_cert_dir = ${t.caDir}\ntls_require_cert = yes\n`) },
  { name: 'starttls-bind-none', expect: 'tls', body: (s, t) => base(s.url, `start_tls = yes\ntls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\nbind = no\n`) },
  { name: 'starttls-host-port', expect: 'tls', body: (s, t) => `server_host = 127.0.0.1\nserver_port = ${s.port}\n${base('127.0.0.1', '').replace(/^server_host.*\n/, '')}start_tls = yes\ntls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\n` },
  {
    name: 'starttls-version-2', expect: 'tls', warning: /start_tls requires protocol version 3/,
    body: (s, t) => base(s.url, `start_tls = yes\ntls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\n`).replace('version = 3', 'version = 2'),
  },
  { name: 'ldaps-wrong-ca', expect: 'fail', warning: /Unable to bind to server .* -1 \(Can't contact LDAP server\)/, body: (_s, t) => base(t.url, `tls_ca_cert_file = ${t.otherCaFile}\ntls_require_cert = yes\n`) },
  { name: 'ldaps-wrong-ca-bind-none', expect: 'fail', warning: /Search error -1: Can't contact LDAP server/, body: (_s, t) => base(t.url, `tls_ca_cert_file = ${t.otherCaFile}\ntls_require_cert = yes\nbind = no\n`) },
  { name: 'ldaps-system-ca', expect: 'fail', warning: /-1 \(Can't contact LDAP server\)/, body: (_s, t) => base(t.url, 'tls_require_cert = yes\n') },
  { name: 'starttls-wrong-ca', expect: 'fail', warning: /Unable to set STARTTLS: -11: Connect error/, body: (s, t) => base(s.url, `start_tls = yes\ntls_ca_cert_file = ${t.otherCaFile}\ntls_require_cert = yes\n`) },
  { name: 'ldaps-wrong-ca-unverified', expect: 'tls', body: (_s, t) => base(t.url, `tls_ca_cert_file = ${t.otherCaFile}\ntls_require_cert = no\n`) },
  { name: 'starttls-wrong-ca-unverified', expect: 'tls', body: (s, t) => base(s.url, `start_tls = yes\ntls_ca_cert_file = ${t.otherCaFile}\ntls_require_cert = no\n`) },
  { name: 'ldaps-default-unverified', expect: 'tls', body: (_s, t) => base(t.url) },
  { name: 'ldaps-missing-ca-file', expect: 'fail', warning: /Unable to allocate new TLS context -1: Can't contact LDAP server/, body: (s, t) => base(t.url, `tls_ca_cert_file = ${s.dir}/no-such-ca.pem\ntls_require_cert = yes\n`) },
  { name: 'starttls-missing-ca-file', expect: 'fail', warning: /Unable to allocate new TLS context -1: Can't contact LDAP server/, body: (s) => base(s.url, `start_tls = yes\ntls_ca_cert_file = ${s.dir}/no-such-ca.pem\ntls_require_cert = yes\n`) },
  { name: 'ldaps-missing-ca-dir', expect: 'fail', warning: /Unable to bind to server .* -1 \(Can't contact LDAP server\)/, body: (s, t) => base(t.url, `tls_ca_cert_dir = ${s.dir}/no-such-dir\ntls_require_cert = yes\n`) },
  { name: 'ldaps-key-mismatch', expect: 'fail', warning: /Unable to allocate new TLS context -1: Can't contact LDAP server/, body: (_s, t) => base(t.url, `tls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\ntls_cert = ${t.caFile}\ntls_key = ${t.keyFile}\n`) },
  // a client certificate the server does not ask for
  { name: 'starttls-client-cert', expect: 'tls', body: (s, t) => base(s.url, `start_tls = yes\ntls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\ntls_cert = ${t.certFile}\ntls_key = ${t.keyFile}\n`) },
  { name: 'ldaps-missing-client-cert', expect: 'fail', warning: /Unable to allocate new TLS context -1: Can't contact LDAP server/, body: (s, t) => base(t.url, `tls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\ntls_cert = ${s.dir}/no-such.pem\ntls_key = ${t.keyFile}\n`) },
  // libldap checks a certificate for "localhost" against this machine's own name
  { name: 'ldaps-localhost-verified', expect: 'fail', warning: /-1 \(Can't contact LDAP server\)/, body: (_s, t) => base(`ldaps://localhost:${port(t.url)}`, `tls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\n`) },
  { name: 'starttls-localhost-verified', expect: 'fail', warning: /Unable to set STARTTLS: -11: Connect error/, body: (s, t) => base(`ldap://localhost:${s.port}`, `start_tls = yes\ntls_ca_cert_file = ${t.caFile}\ntls_require_cert = yes\n`) },
  { name: 'ldaps-localhost-unverified', expect: 'tls', body: (_s, t) => base(`ldaps://localhost:${port(t.url)}`, `tls_ca_cert_file = ${t.caFile}\ntls_require_cert = no\n`) },
];

describe('ldap: tables over TLS through proxymapd, against the real postmap and a real slapd', { skip, timeout: 600_000 }, () => {
  let dir = '';
  let slapd: Slapd;
  let inst: Instance;
  const tables: { c: Case; table: string }[] = [];
  before(async () => {
    dir = fs.mkdtempSync('/tmp/pmd-ldaptls-');
    fs.chmodSync(dir, 0o755);
    slapd = await startSlapd(0, { tls: true });
    for (const c of CASES) {
      const f = path.join(dir, `${c.name}.cf`);
      writeTable(f, c.body(slapd, slapd.tls!));
      tables.push({ c, table: `ldap:${f}` });
    }
    inst = await startProxymapd({
      compatibility_level: '3.6',
      proxy_read_maps: tables.map((t) => `proxy:${t.table}`).join(' '),
      proxymapd_sql_timeout: '20s',
    }, dir);
  });
  after(async () => {
    await inst?.stop();
    await slapd?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const c of CASES) {
    it(`${c.name}: postmap -q - proxy:ldap:CF prints what postmap -q - ldap:CF prints, and exits the same`, async (tc) => {
      const t = tables.find((x) => x.c === c)!;
      const input = KEYS.join('\n') + '\n';
      const logFrom = inst.log().length;
      const direct = await postmap(['-c', inst.conf, '-q', '-', t.table], input);
      const proxied = await postmap(['-c', inst.conf, '-q', '-', `proxy:${t.table}`], input);
      const d = direct.stdout.toString('latin1');
      const why = `${t.table}\n--- direct:\n${direct.stderr}\n--- proxied:\n${proxied.stderr}\n--- proxymapd:\n${inst.log().slice(-3000)}`;
      // the oracle does what the case is about
      if (c.expect === 'fail') {
        tc.diagnostic(`postmap: ${direct.stderr.trim().split('\n')[0]}`);
        assert.notEqual(direct.status, 0, why);
        assert.match(direct.stderr, /fatal: table .*: query error/, why);
      } else {
        assert.equal(direct.status, 0, why);
        assert.match(d, /^alice@example\.com\tAlice,alice@mail\.example\.com\n/m, why);
        assert.equal(/spy-secret@example\.com/.test(d), c.expect === 'tls', `${c.expect}: the secret branch shows only over TLS\n${why}`);
      }
      if (c.warning) assert.match(direct.stderr, c.warning, why);
      // proxymapd answers the same
      assert.equal(proxied.stdout.toString('latin1'), d, why);
      assert.equal(proxied.status, direct.status, why);
      assert.equal(/query error/.test(proxied.stderr), /query error/.test(direct.stderr), why);
      // start_tls with version 2 warns at open (the first case's proxy_read_maps open), the others at this lookup
      if (c.warning) {
        const from = c.name === 'starttls-version-2' ? 0 : logFrom;
        // the log arrives through a pipe: wait for it (bounded), do not time it
        for (let i = 0; i < 100 && !c.warning.test(inst.log().slice(from)); i++) await new Promise((r) => setTimeout(r, 100));
        assert.match(inst.log().slice(from), c.warning, `proxymapd logs it too\n${why}`);
      }
    });
  }

  it('a failed TLS connection does not stop the next one: a good table still answers through the same proxymapd', async () => {
    const good = tables.find((x) => x.c.name === 'starttls-ca-file')!;
    const bad = tables.find((x) => x.c.name === 'starttls-wrong-ca')!;
    for (let i = 0; i < 2; i++) {
      const b = await postmap(['-c', inst.conf, '-q', 'alice@example.com', `proxy:${bad.table}`]);
      assert.notEqual(b.status, 0);
      const g = await postmap(['-c', inst.conf, '-q', 'spy@example.com', `proxy:${good.table}`]);
      assert.equal(g.status, 0, `${g.stderr}\n${inst.log().slice(-2000)}`);
      assert.match(g.stdout.toString('latin1'), /spy-secret@example\.com/);
    }
  });
});
