/**
 * ldap: tables with referrals (chase_referrals = yes and = no) through a
 * running proxymapd, with the real Postfix postmap as client and oracle,
 * against two throwaway slapds: the first holds referral objects
 * (objectClass referral) pointing into the second (ou=remote), at a server
 * that is down, and back at itself; the second holds ou=remote, one entry
 * there readable only by the reader DN (a referred search does not bind),
 * and a referral back to the first (two hops).
 *
 * `postmap -q - proxy:ldap:CF` prints exactly what `postmap -q - ldap:CF`
 * prints and exits the same, for keys found locally, only via the
 * referral, in both, and nowhere; searches that cover a referral object
 * (continuation references) and searches based under one (referral
 * results).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { postmap, skipReason, startProxymapd, writeTable, type Instance } from '../../interop/harness.js';
import { freePort } from '../../sql/servers.js';
import { READER_DN, READER_PW, SUFFIX as S, referralLdif, slapdSkipReason, startSlapd, type Slapd } from './slapd.js';

const skip = skipReason() || slapdSkipReason();

const KEYS = ['local@ref.example', 'remote@ref.example', 'both@ref.example', 'none@ref.example', 'dlocal@ref.example', 'llocal@ref.example',
  'hop@ref.example', 'secret@ref.example'];

const person = (uid: string, ou: string, mail: string, val: string) =>
  `dn: uid=${uid},${ou}\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\nuid: ${uid}\ncn: ${uid}\nsn: ${uid}\nmail: ${mail}\nmailRoutingAddress: ${val}\n`;
const ou = (dn: string) => `dn: ${dn}\nobjectClass: organizationalUnit\nou: ${/^ou=([^,]*)/.exec(dn)![1]}\n`;

interface Case {
  name: string;
  /** search_base */
  base: string;
  extra?: string;
  keys?: string[];
}

const CASES: Case[] = [
  // a subtree search covering the referral object: a continuation reference into the second server
  { name: 'reference', base: `ou=ref,${S}` },
  { name: 'reference-one', base: `ou=ref,${S}`, extra: 'scope = one\n' },
  { name: 'reference-bind', base: `ou=ref,${S}`, extra: `bind = yes\nbind_dn = ${READER_DN}\nbind_pw = ${READER_PW}\n` },
  // based at the referral object: a referral result
  { name: 'referral', base: `ou=remote,ou=ref,${S}` },
  { name: 'referral-bind', base: `ou=remote,ou=ref,${S}`, extra: `bind = yes\nbind_dn = ${READER_DN}\nbind_pw = ${READER_PW}\n` },
  // a reference / a referral to a server that is down
  { name: 'reference-down', base: `ou=down,${S}` },
  { name: 'referral-down', base: `ou=gone,ou=down,${S}`, keys: ['dlocal@ref.example'] },
  // a reference back to the search's own base on the same server (a loop), and a referral to its parent
  { name: 'reference-loop', base: `ou=loop,${S}` },
  { name: 'referral-self', base: `ou=self,ou=loop,${S}` },
  // a referral into the second server, whose subtree holds a reference back to the first (two hops)
  { name: 'two-hops', base: `ou=c4,${S}` },
  // special attributes: a member DN under the referral object
  { name: 'special', base: `ou=ref,${S}`, extra: 'special_result_attribute = member\n', keys: ['grp@ref.example', 'local@ref.example'] },
];

describe('ldap: referrals through proxymapd, against the real postmap and two real slapds', { skip, timeout: 600_000 }, () => {
  let dir = '';
  let s1: Slapd;
  let s2: Slapd;
  let inst: Instance;
  const tables: { name: string; table: string; keys: string[] }[] = [];
  before(async () => {
    dir = fs.mkdtempSync('/tmp/pmd-ldapref-');
    fs.chmodSync(dir, 0o755);
    const [p1, p2, pdown] = [await freePort(), await freePort(), await freePort()];
    const u = (p: number, dn: string) => `ldap://127.0.0.1:${p}/${dn}`;
    const l1 = [
      ou(`ou=ref,${S}`), person('loc', `ou=ref,${S}`, 'local@ref.example', 'local-s1'), person('both', `ou=ref,${S}`, 'both@ref.example', 'both-s1'),
      referralLdif(`ou=remote,ou=ref,${S}`, [u(p2, `ou=remote,${S}`)]),
      person('zlate', `ou=ref,${S}`, 'both@ref.example', 'both-s1-late'),
      `dn: cn=grp,ou=ref,${S}\nobjectClass: groupOfNames\nobjectClass: extensibleObject\ncn: grp\nmail: grp@ref.example\n` +
        `member: uid=loc,ou=ref,${S}\nmember: uid=rem,ou=remote,ou=ref,${S}\nmember: uid=rboth,ou=remote,${S}\n`,
      ou(`ou=down,${S}`), person('dloc', `ou=down,${S}`, 'dlocal@ref.example', 'dlocal-s1'),
      referralLdif(`ou=gone,ou=down,${S}`, [u(pdown, `ou=remote,${S}`)]),
      ou(`ou=loop,${S}`), person('lloc', `ou=loop,${S}`, 'llocal@ref.example', 'llocal-s1'),
      referralLdif(`ou=self,ou=loop,${S}`, [u(p1, `ou=loop,${S}`)]),
      referralLdif(`ou=c4,${S}`, [u(p2, `ou=c5,${S}`)]),
      ou(`ou=c6,${S}`), person('hop6', `ou=c6,${S}`, 'hop@ref.example', 'hop6'),
    ].join('\n');
    const l2 = [
      ou(`ou=remote,${S}`), person('rem', `ou=remote,${S}`, 'remote@ref.example', 'remote-s2'), person('rboth', `ou=remote,${S}`, 'both@ref.example', 'both-s2'),
      person('rsec', `ou=remote,${S}`, 'secret@ref.example', 'secret-s2'),
      ou(`ou=c5,${S}`), person('hop5', `ou=c5,${S}`, 'hop@ref.example', 'hop5'),
      referralLdif(`ou=c5b,ou=c5,${S}`, [u(p1, `ou=c6,${S}`)]),
    ].join('\n');
    s2 = await startSlapd(0, { port: p2, ldif: l2, access: [`access to dn.exact="uid=rsec,ou=remote,${S}" by dn.exact="${READER_DN}" read by * none`] });
    s1 = await startSlapd(0, { port: p1, ldif: l1 });
    for (const c of CASES) {
      for (const chase of ['yes', 'no']) {
        const name = `${c.name}-${chase}`;
        const f = path.join(dir, `${name}.cf`);
        writeTable(f, `server_host = ${s1.url}\nsearch_base = ${c.base}\nversion = 3\ntimeout = 10\nquery_filter = (mail=%s)\n` +
          `result_attribute = mailRoutingAddress\nchase_referrals = ${chase}\n${c.extra ?? ''}`);
        tables.push({ name, table: `ldap:${f}`, keys: c.keys ?? KEYS });
      }
    }
    inst = await startProxymapd({
      compatibility_level: '3.6',
      proxy_read_maps: tables.map((t) => `proxy:${t.table}`).join(' '),
      proxymapd_sql_timeout: '30s',
    }, dir);
  });
  after(async () => {
    await inst?.stop();
    await s1?.stop();
    await s2?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('postmap -q - proxy:ldap:CF prints what postmap -q - ldap:CF prints, and exits the same (chase_referrals = yes and no)', async () => {
    const answers = new Map<string, string>();
    for (const t of tables) {
      const input = t.keys.join('\n') + '\n';
      const direct = await postmap(['-c', inst.conf, '-q', '-', t.table], input);
      const proxied = await postmap(['-c', inst.conf, '-q', '-', `proxy:${t.table}`], input);
      const d = direct.stdout.toString('latin1');
      const msg = `${t.name}\n${direct.stderr}\n${proxied.stderr}\n${inst.log().slice(-3000)}`;
      assert.equal(proxied.stdout.toString('latin1'), d, msg);
      assert.equal(proxied.status, direct.status, msg);
      assert.equal(/query error/.test(proxied.stderr), /query error/.test(direct.stderr), msg);
      answers.set(t.name, `${direct.status} ${d}`);
      if (process.env.LDAP_REF_DEBUG) console.log(t.name, direct.status, JSON.stringify(d), direct.stderr.toString().trim());
    }
    // the cases test what they are meant to: the oracle follows the referral only with chase_referrals = yes
    assert.match(answers.get('reference-yes')!, /remote@ref\.example\tremote-s2/);
    assert.match(answers.get('reference-yes')!, /both@ref\.example\tboth-s1,both-s1-late,both-s2/);
    assert.doesNotMatch(answers.get('reference-no')!, /remote-s2/);
    assert.match(answers.get('referral-yes')!, /^0 /);
    assert.match(answers.get('referral-no')!, /^1 /);
    assert.doesNotMatch(answers.get('reference-bind-yes')!, /secret-s2/);
  });

  it('every key alone, for the tables whose batch fails (a batch ends at the first error): same answer and exit status', async () => {
    const failing: typeof tables = [];
    for (const t of tables) {
      const r = await postmap(['-c', inst.conf, '-q', '-', t.table], t.keys.join('\n') + '\n');
      if (r.status !== 0) failing.push(t);
    }
    assert.ok(failing.some((t) => t.name === 'referral-no'), failing.map((t) => t.name).join(' '));
    for (const t of failing) {
      for (const key of t.keys) {
        const direct = await postmap(['-c', inst.conf, '-q', key, t.table]);
        const proxied = await postmap(['-c', inst.conf, '-q', key, `proxy:${t.table}`]);
        const msg = `${t.name} ${key}\n${direct.stderr}\n${proxied.stderr}`;
        assert.equal(proxied.stdout.toString('latin1'), direct.stdout.toString('latin1'), msg);
        assert.equal(proxied.status, direct.status, msg);
      }
    }
  });
});
