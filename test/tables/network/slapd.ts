/**
 * A throwaway OpenLDAP slapd for the ldap: table tests
 * (shared/spec/test-servers.md): its own slapd.conf (mdb backend, a monitor
 * database), data loaded offline with slapadd, listening on
 * ldap://127.0.0.1:PORT and on an ldapi:// socket, all in a temporary
 * directory. It can be stopped and started again on the same data (outage
 * tests). Every wait is bounded.
 *
 * With `{ tls: true }` it also gets a throwaway CA and a server certificate
 * for 127.0.0.1 and localhost (made with openssl in the same directory),
 * a second, unrelated CA that signed nothing, a hashed CA directory
 * (`openssl rehash`), and an ldaps://127.0.0.1:TLSPORT listener; StartTLS
 * then works on the ldap:// port too. The secret branch is also readable by
 * anyone on a TLS connection (tls_ssf), so a test can tell TLS from plain.
 *
 * Outside CI a missing slapd makes the tests skip; in CI (CI=true) it fails.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LdapConn } from '../../../src/tables/network/ldap-client.js';
import { encodeFilter } from '../../../src/tables/network/ldap-filter.js';
import { parseLdapUrl, SCOPE } from '../../../src/tables/network/ldap-url.js';
import { skipUnlessPresent } from '../../support/skip.js';
import { freePort } from '../../sql/servers.js';

const SLAPD = '/usr/sbin/slapd';
const SLAPADD = '/usr/sbin/slapadd';
const LDAPSEARCH = '/usr/bin/ldapsearch';
const OPENSSL = '/usr/bin/openssl';
const SCHEMA = '/etc/ldap/schema';

export const SUFFIX = 'dc=example,dc=com';
export const READER_DN = `cn=reader,${SUFFIX}`;
export const READER_PW = 'reader-secret';

/** Why slapd tests must skip (outside CI), or false; `tls`: the TLS setup's openssl too. */
export function slapdSkipReason(opts: { tls?: boolean } = {}): string | false {
  const missing =
    ![SLAPD, SLAPADD, LDAPSEARCH].every((p) => fs.existsSync(p)) ? 'OpenLDAP slapd is not installed (apt-get install slapd ldap-utils)'
    : opts.tls && !fs.existsSync(OPENSSL) ? 'openssl is not installed (apt-get install openssl)'
    : !fs.existsSync(path.join(SCHEMA, 'misc.schema')) ? 'OpenLDAP schemas are missing'
    : process.getuid?.() !== 0 ? 'slapd test servers need root'
    : '';
  return skipUnlessPresent(missing);
}

const b64 = (s: string | Buffer) => (typeof s === 'string' ? Buffer.from(s, 'utf8') : s).toString('base64');

/**
 * The directory: people (multi-valued mail, non-ASCII cn, keys that need
 * filter escaping), a secret branch only the reader DN may read, groups
 * whose members are DNs (one missing) or an LDAP URL, an alias, and
 * `extra` generated users (for size limits and load).
 */
export function testLdif(extra = 0): string {
  const e: string[] = [];
  const add = (dn: string, lines: string[]) => e.push([`dn: ${dn}`, ...lines].join('\n'));
  add(SUFFIX, ['objectClass: dcObject', 'objectClass: organization', 'dc: example', 'o: Example']);
  add(READER_DN, ['objectClass: simpleSecurityObject', 'objectClass: organizationalRole', 'cn: reader', `userPassword: ${READER_PW}`]);
  for (const ou of ['people', 'groups', 'secret', 'aliases', 'bulk']) {
    add(`ou=${ou},${SUFFIX}`, ['objectClass: organizationalUnit', `ou: ${ou}`]);
  }
  const person = (uid: string, attrs: string[], ou = 'people') =>
    add(`uid=${uid},ou=${ou},${SUFFIX}`, ['objectClass: inetOrgPerson', 'objectClass: inetLocalMailRecipient', 'objectClass: labeledURIObject', `uid: ${uid}`, `sn: ${uid}`, ...attrs]);
  person('alice', ['cn: Alice', 'mail: alice@example.com', 'mail: alice.alt@example.com', 'mailRoutingAddress: alice@mail.example.com',
    'mailLocalAddress: alice@example.com', 'mailLocalAddress: postmaster@example.com', 'description: leafdesc-alice']);
  person('bob', ['cn: Bob', 'mail: bob@example.com', 'mailRoutingAddress: bob@mail.example.com', 'employeeNumber: 77',
    'mailLocalAddress: bob@example.com', 'mailLocalAddress: postmaster@example.com', 'description: term-bob']);
  person('carol', ['cn: Carol', 'mail: carol@other.example', 'mailLocalAddress: carol@other.example', 'mailRoutingAddress: carol@mail.other.example']);
  person('juergen', [`cn:: ${b64('Jürgen Müller')}`, 'mail: juergen@example.com', `description:: ${b64('Grüße aus Köln')}`]);
  person('star', ['cn: star', 'mail: st*r@example.com', 'mailRoutingAddress: star-literal@example.com']);
  person('paren', ['cn: paren', 'mail: a(b)c@example.com', 'mailRoutingAddress: paren-literal@example.com']);
  person('bslash', ['cn: bslash', 'mail: back\\slash@example.com', 'mailRoutingAddress: bslash-literal@example.com']);
  person('comma', ['cn: comma', 'mail: a,b@example.com', 'mailRoutingAddress: comma-literal@example.com']);
  // a value holding a NUL byte (Postfix's C strings end there)
  person('nul', ['cn: nul', 'mail: nul@example.com', `description:: ${b64(Buffer.from('before\0after', 'latin1'))}`]);
  person('empty', ['cn: empty', 'mail: empty@example.com', 'mailLocalAddress: @example.com', 'mailLocalAddress: plainvalue', 'mailLocalAddress: u2@']);
  person('spy', ['cn: spy', 'mail: spy@example.com', 'mailRoutingAddress: spy-secret@example.com'], 'secret');
  for (const n of ['dup1', 'dup2', 'dup3']) person(n, [`cn: ${n}`, 'mail: dup@example.com', `mailRoutingAddress: ${n}@example.com`]);
  add(`cn=grp,ou=groups,${SUFFIX}`, ['objectClass: groupOfNames', 'objectClass: inetLocalMailRecipient', 'objectClass: extensibleObject', 'cn: grp', 'mail: grp@example.com',
    'mailLocalAddress: grp@example.com', `member: uid=alice,ou=people,${SUFFIX}`, `member: uid=bob,ou=people,${SUFFIX}`, `member: uid=ghost,ou=people,${SUFFIX}`,
    'description: group-desc']);
  add(`cn=urlgrp,ou=groups,${SUFFIX}`, ['objectClass: groupOfNames', 'objectClass: labeledURIObject', 'cn: urlgrp', `member: cn=grp,ou=groups,${SUFFIX}`,
    `labeledURI: ldap:///ou=people,${SUFFIX}?mail?one?(uid=bob)`]);
  add(`cn=nested,ou=groups,${SUFFIX}`, ['objectClass: groupOfNames', 'cn: nested', `member: cn=grp,ou=groups,${SUFFIX}`, `member: uid=carol,ou=people,${SUFFIX}`]);
  add(`cn=loop,ou=groups,${SUFFIX}`, ['objectClass: groupOfNames', 'cn: loop', `member: cn=loop,ou=groups,${SUFFIX}`]);
  add(`uid=alias-alice,ou=aliases,${SUFFIX}`, ['objectClass: alias', 'objectClass: extensibleObject', 'uid: alias-alice', `aliasedObjectName: uid=alice,ou=people,${SUFFIX}`]);
  for (let i = 0; i < extra; i++) {
    person(`u${i}`, [`cn: u${i}`, `mail: u${i}@bulk.example.com`, `mailRoutingAddress: u${i}@mail.example.com`], 'bulk');
  }
  return `${e.join('\n\n')}\n`;
}

/** More for a slapd: entries loaded with the test directory (by slapadd, before start) and identities to bind as. */
export interface SlapdOptions {
  /** LDIF entries appended to the test directory (under SUFFIX; their parents first) */
  ldif?: string;
  /** simple-bind identities (`cn=NAME,SUFFIX`, password), e.g. one per client whose connections are counted */
  binders?: Record<string, string>;
  /** also an ldaps:// listener and StartTLS, with a throwaway CA (`Slapd.tls`) */
  tls?: boolean;
  /** the TCP port to listen on (default: a free one), e.g. chosen before start so that another server's referral can name it */
  port?: number;
  /** slapd.conf `access` lines placed before the default ones (the first matching rule wins) */
  access?: string[];
}

/**
 * A referral object (objectClass referral, RFC 3296) at `dn` (under SUFFIX,
 * its parent present) whose `ref` values are `refs`, as LDIF for
 * SlapdOptions.ldif: slapd answers a search based at or below it with a
 * referral result (code 10), and a search whose scope covers it with a
 * search continuation reference; core.schema has the classes, nothing else
 * is configured (no client sends ManageDsaIT).
 */
export function referralLdif(dn: string, refs: string[]): string {
  const rdn = /^([^=,]+)=([^,]*)/.exec(dn);
  if (!rdn) throw new Error(`bad DN ${dn}`);
  return [`dn: ${dn}`, 'objectClass: referral', 'objectClass: extensibleObject', `${rdn[1]}: ${rdn[2]}`, ...refs.map((r) => `ref: ${r}`), ''].join('\n');
}

/** `count` generated mail users under ou=NAME: `uid=userI`, mail `userI@DOMAIN`, mailRoutingAddress `value(i)`. */
export function generatedUsers(ou: string, count: number, domain: string, value: (i: number) => string): string {
  const e = [`dn: ou=${ou},${SUFFIX}\nobjectClass: organizationalUnit\nou: ${ou}`];
  for (let i = 0; i < count; i++) {
    e.push(
      `dn: uid=user${i},ou=${ou},${SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n` +
        `uid: user${i}\ncn: user${i}\nsn: user${i}\nmail: user${i}@${domain}\nmailRoutingAddress: ${value(i)}`,
    );
  }
  return `${e.join('\n\n')}\n`;
}

/** A client connection slapd holds, from cn=Connections,cn=Monitor. */
export interface MonitorConnection {
  /** slapd's connection number (increases with every connection accepted) */
  id: number;
  /** the DN it is bound as, lower case ('' = anonymous) */
  authzDn: string;
}

export interface Slapd {
  readonly dir: string;
  readonly port: number;
  /** ldap://127.0.0.1:PORT */
  readonly url: string;
  /** the ldapi:// URL of its socket (percent-encoded path) */
  readonly ldapi: string;
  readonly socket: string;
  /** slapd's process id (0 while halted) */
  readonly pid: number;
  /** with `tls`: the ldaps:// listener and the certificate files */
  readonly tls?: SlapdTls;
  /** Client connections open on the TCP port right now (counted on the server side with ss). */
  connections(): Promise<number>;
  /**
   * A connection of the caller's own over ldapi:// (anonymous) that lists slapd's client connections with their
   * bound DNs (cn=Connections,cn=Monitor), for counting them per bind DN while they are used; it lists itself too.
   */
  monitor(): Promise<{ list(): Promise<MonitorConnection[]>; close(): void }>;
  /** Stop (keeps the data) / start again on the same port and socket. */
  halt(): Promise<void>;
  start(): Promise<void>;
  /** Stop for good and remove the directory. */
  stop(): Promise<void>;
}

export interface SlapdTls {
  readonly port: number;
  /** ldaps://127.0.0.1:TLSPORT */
  readonly url: string;
  /** the CA that signed the server certificate (PEM) */
  readonly caFile: string;
  /** a directory holding caFile under its OpenSSL subject hash (openssl rehash) */
  readonly caDir: string;
  /** a CA that did not sign the server certificate */
  readonly otherCaFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/** A CA, a server certificate it signs (127.0.0.1, localhost), another CA, a hashed CA dir. */
export async function makeCerts(dir: string, port: number): Promise<SlapdTls> {
  const f = (n: string) => path.join(dir, n);
  const ssl = async (args: string[]) => {
    const r = await runCmd(OPENSSL, args, 120_000);
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.out}`);
  };
  fs.writeFileSync(f('openssl.cnf'), [
    '[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', 'CN = unused',
    '[ca]', 'basicConstraints = critical, CA:TRUE', 'keyUsage = critical, keyCertSign, cRLSign', 'subjectKeyIdentifier = hash',
    '[server]', 'basicConstraints = critical, CA:FALSE', 'keyUsage = critical, digitalSignature, keyEncipherment',
    'extendedKeyUsage = serverAuth', 'subjectAltName = DNS:localhost, IP:127.0.0.1', 'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid',
    '',
  ].join('\n'));
  const ca = async (name: string, cn: string) =>
    ssl(['req', '-config', f('openssl.cnf'), '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '7', '-subj', `/O=proxymapd tests/CN=${cn}`,
      '-extensions', 'ca', '-keyout', f(`${name}.key`), '-out', f(`${name}.pem`)]);
  await ca('ca', 'proxymapd test CA');
  await ca('other-ca', 'proxymapd unrelated test CA');
  await ssl(['req', '-config', f('openssl.cnf'), '-new', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-subj', '/O=proxymapd tests/CN=localhost',
    '-keyout', f('server.key'), '-out', f('server.csr')]);
  await ssl(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-set_serial', '2', '-sha256', '-days', '7',
    '-extfile', f('openssl.cnf'), '-extensions', 'server', '-out', f('server.pem')]);
  const caDir = f('cadir');
  fs.mkdirSync(caDir);
  fs.copyFileSync(f('ca.pem'), path.join(caDir, 'ca.pem'));
  await ssl(['rehash', caDir]);
  for (const n of ['ca.key', 'other-ca.key', 'server.key']) fs.chmodSync(f(n), 0o600);
  return {
    port, url: `ldaps://127.0.0.1:${port}`, caFile: f('ca.pem'), caDir, otherCaFile: f('other-ca.pem'), certFile: f('server.pem'), keyFile: f('server.key'),
  };
}

async function runCmd(cmd: string, args: string[], timeoutMs = 30_000): Promise<{ status: number; out: string }> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString('utf8')));
  child.stderr.on('data', (b: Buffer) => (out += b.toString('utf8')));
  const [code] = (await once(child, 'close')) as [number | null];
  return { status: code ?? -1, out };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Start a slapd with the test directory (plus `extra` bulk users, and opts.ldif, opts.binders); `tls`: also ldaps:// and StartTLS. */
export async function startSlapd(extra = 0, opts: SlapdOptions = {}): Promise<Slapd> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-ldap-'));
  fs.chmodSync(dir, 0o755);
  const data = path.join(dir, 'data');
  fs.mkdirSync(data);
  const socket = path.join(dir, 'ldapi.sock');
  const pidfile = path.join(dir, 'slapd.pid');
  const conf = path.join(dir, 'slapd.conf');
  const port = opts.port ?? (await freePort());
  const url = `ldap://127.0.0.1:${port}`;
  const ldapi = `ldapi://${encodeURIComponent(socket)}`;
  let tlsInfo: SlapdTls | undefined;
  try {
    if (opts.tls) tlsInfo = await makeCerts(dir, await freePort());
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const listeners = [`${url}/`, ...(tlsInfo ? [`${tlsInfo.url}/`] : []), ldapi].join(' ');
  fs.writeFileSync(conf, [
    ...['core', 'cosine', 'inetorgperson', 'nis', 'misc'].map((s) => `include ${SCHEMA}/${s}.schema`),
    `pidfile ${pidfile}`,
    'modulepath /usr/lib/ldap',
    'moduleload back_mdb',
    'moduleload back_monitor',
    'sizelimit unlimited',
    ...(tlsInfo ? [`TLSCACertificateFile ${tlsInfo.caFile}`, `TLSCertificateFile ${tlsInfo.certFile}`, `TLSCertificateKeyFile ${tlsInfo.keyFile}`] : []),
    'database mdb',
    `suffix "${SUFFIX}"`,
    `rootdn "cn=admin,${SUFFIX}"`,
    'rootpw admin-secret',
    `directory ${data}`,
    'maxsize 104857600',
    'index objectClass,uid,mail,cn,mailLocalAddress eq',
    ...(opts.access ?? []),
    'access to attrs=userPassword by anonymous auth by * none',
    `access to dn.subtree="ou=secret,${SUFFIX}" by dn.exact="${READER_DN}" read${tlsInfo ? ' by tls_ssf=1 read' : ''} by * none`,
    'access to * by * read',
    'database monitor',
    '',
  ].join('\n'));
  const ldif = path.join(dir, 'data.ldif');
  const binders = Object.entries(opts.binders ?? {}).map(
    ([cn, pw]) => `dn: cn=${cn},${SUFFIX}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\ncn: ${cn}\nuserPassword: ${pw}\n`,
  );
  fs.writeFileSync(ldif, [testLdif(extra), ...binders, opts.ldif ?? ''].join('\n'));
  let pid = 0;
  const server: Slapd = {
    dir, port, url, ldapi, socket, tls: tlsInfo,
    get pid() {
      return pid;
    },
    async connections() {
      const r = await runCmd('ss', ['-Htn', 'state', 'established', `( sport = :${port} )`]);
      if (r.status !== 0) throw new Error(`ss failed: ${r.out}`);
      return r.out.split('\n').filter((l) => l.trim() !== '').length;
    },
    async monitor() {
      const conn = await LdapConn.open({
        url: parseLdapUrl(ldapi),
        timeoutMs: 10_000,
        startTls: false,
        tls: { requireCert: false, caFile: '', caDir: '', cert: '', key: '', cipherSuite: '' },
      });
      const filter = encodeFilter('(objectClass=monitorConnection)');
      return {
        async list() {
          const r = await conn.search('cn=Connections,cn=Monitor', SCOPE.ONE, 0, 0, 0, filter, ['monitorConnectionNumber', 'monitorConnectionAuthzDN'], 10_000);
          if (r.code !== 0) throw new Error(`cn=Monitor search: result ${r.code}`);
          return r.entries.map((e) => {
            const v = (name: string) => e.attrs.find((a) => a.type.toLowerCase() === name.toLowerCase())?.vals[0] ?? '';
            return { id: Number(v('monitorConnectionNumber')), authzDn: v('monitorConnectionAuthzDN').toLowerCase() };
          });
        },
        close: () => conn.close(),
      };
    },
    async halt() {
      if (pid === 0) return;
      const p = pid;
      pid = 0;
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
      const deadline = Date.now() + 15_000;
      while (alive(p)) {
        if (Date.now() > deadline) throw new Error('slapd did not exit');
        await new Promise((r) => setTimeout(r, 50));
      }
      fs.rmSync(socket, { force: true });
    },
    async start() {
      if (pid !== 0) return;
      fs.rmSync(pidfile, { force: true });
      const r = await runCmd(SLAPD, ['-f', conf, '-h', listeners]);
      if (r.status !== 0) throw new Error(`slapd failed to start: ${r.out}`);
      const deadline = Date.now() + 30_000;
      for (;;) {
        if (fs.existsSync(pidfile)) pid = Number(fs.readFileSync(pidfile, 'utf8').trim()) || 0;
        if (pid !== 0) {
          const q = await runCmd(LDAPSEARCH, ['-x', '-H', url, '-b', SUFFIX, '-s', 'base', 'dn'], 10_000);
          if (q.status === 0) return;
        }
        if (Date.now() > deadline) throw new Error(`slapd did not answer within 30 s`);
        await new Promise((res) => setTimeout(res, 100));
      }
    },
    async stop() {
      try {
        await server.halt();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  try {
    const r = await runCmd(SLAPADD, ['-q', '-f', conf, '-l', ldif], 120_000);
    if (r.status !== 0) throw new Error(`slapadd failed: ${r.out}`);
    await server.start();
    return server;
  } catch (e) {
    await server.stop();
    throw e;
  }
}
