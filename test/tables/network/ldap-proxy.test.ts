/**
 * ldap: tables through a running proxymapd, with the real Postfix postmap
 * (postfix-ldap) as client and oracle, against a throwaway slapd:
 *
 *  - `postmap -q - proxy:ldap:CF` prints exactly what `postmap -q - ldap:CF`
 *    prints, and exits the same, for every .cf file below (plain filter,
 *    templates, domain, result_format, recursion, leaf/terminal, limits,
 *    scope, bind with a DN and password, ldapi://, main.cf form);
 *  - slapd stopped under 20 concurrent clients: RETRY, never a wrong answer
 *    or "not found"; answers again once slapd is back, same proxymapd;
 *  - 100 concurrent clients: slapd never sees more connections from
 *    proxymapd than the pool size (counted with ss on slapd's port).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ProxyConnection } from '../../../src/client/client.js';
import { ProxyTable, type ClientResult } from '../../../src/client/table.js';
import { answerOf, sampleWhile } from '../../support/load.js';
import { postmap, skipReason, startProxymapd, writeTable, type Instance } from '../../interop/harness.js';
import { READER_DN, READER_PW, SUFFIX, slapdSkipReason, startSlapd, type Slapd } from './slapd.js';

const skip = skipReason() || slapdSkipReason();
const POOL_SIZE = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Keys every case is asked (one postmap -q - batch). */
const KEYS = [
  'alice@example.com', 'ALICE@Example.COM', 'bob@example.com', 'carol@other.example', 'juergen@example.com', 'st*r@example.com',
  's*@example.com', '*', 'a(b)c@example.com', 'back\\slash@example.com', 'a,b@example.com', 'nul@example.com', 'empty@example.com',
  'postmaster@example.com', 'dup@example.com', 'grp', 'urlgrp', 'nested', 'alice', 'bob', 'Jürgen Müller', 'jürgen müller',
  'spy@example.com', 'plainkey', '@example.com', 'user@', 'x@a..b', 'nobody@example.com', 'alias-alice', 'someone@mail.example.com',
];

const base = (host: string) => `server_host = ${host}\nsearch_base = ${SUFFIX}\nversion = 3\n`;

interface Case {
  name: string;
  body: (s: Slapd) => string;
  /** keys instead of KEYS (e.g. to keep a failing key out of a batch) */
  keys?: string[];
}

const CASES: Case[] = [
  { name: 'plain', body: (s) => `${base(s.url)}query_filter = (mail=%s)\nresult_attribute = cn, mail, description\n` },
  { name: 'ldapi', body: (s) => `${base(s.ldapi)}query_filter = (mail=%s)\nresult_attribute = mailRoutingAddress\n` },
  { name: 'templates', body: (s) => `${base(s.url)}query_filter = (|(mail=%u@%d)(uid=%u)(mailLocalAddress=%s))\nresult_attribute = mail\nresult_format = %s|%u|%d|%S|%U|%D|%1|%2|%%\n` },
  { name: 'labels', body: (s) => `${base(s.url)}query_filter = (mail=*@%2.%1)\nresult_attribute = uid\n` },
  { name: 'domain', body: (s) => `${base(s.url)}query_filter = (mailLocalAddress=%s)\nresult_attribute = mailRoutingAddress, mailLocalAddress\ndomain = example.com, !bad.example.com\n` },
  { name: 'result-format', body: (s) => `${base(s.url)}query_filter = (mail=%s)\nresult_attribute = mailLocalAddress\nresult_format = <%u> <%d>\n` },
  { name: 'dynamic-base', body: (s) => `server_host = ${s.url}\nversion = 3\nsearch_base = uid=%u, ou=people, ${SUFFIX}\nscope = base\nquery_filter = (objectClass=*)\nresult_attribute = mail\nresult_format = smtp:[%d] key=%S\n` },
  { name: 'recursion', body: (s) => `${base(s.url)}query_filter = (cn=%s)\nresult_attribute = mail\nspecial_result_attribute = member, labeledURI\n`, keys: KEYS.filter((k) => k !== 'loop') },
  { name: 'leaf', body: (s) => `${base(s.url)}query_filter = (cn=%s)\nresult_attribute = description\nleaf_result_attribute = mail\nspecial_result_attribute = member\n` },
  { name: 'terminal', body: (s) => `${base(s.url)}query_filter = (cn=%s)\nresult_attribute = description, mail\nterminal_result_attribute = employeeNumber\nspecial_result_attribute = member\n` },
  { name: 'size-limit', body: (s) => `${base(s.url)}query_filter = (mail=%s)\nresult_attribute = mailRoutingAddress\nsize_limit = 1\n`, keys: ['alice@example.com', 'dup@example.com'] },
  { name: 'expansion-limit', body: (s) => `${base(s.url)}query_filter = (mailLocalAddress=%s)\nresult_attribute = mailRoutingAddress, mail\nexpansion_limit = 2\nsize_limit = 0\n`, keys: ['bob@example.com', 'postmaster@example.com'] },
  { name: 'recursion-limit', body: (s) => `${base(s.url)}query_filter = (cn=%s)\nresult_attribute = mail\nspecial_result_attribute = member\nrecursion_limit = 1\n`, keys: ['alice', 'grp'] },
  { name: 'scope-one', body: (s) => `server_host = ${s.url}\nversion = 3\nsearch_base = ou=people, ${SUFFIX}\nscope = one\nquery_filter = (mail=%s)\nresult_attribute = uid\n` },
  { name: 'scope-base', body: (s) => `server_host = ${s.url}\nversion = 3\nsearch_base = ou=people, ${SUFFIX}\nscope = base\nquery_filter = (mail=%s)\nresult_attribute = uid\n` },
  { name: 'bind-dn', body: (s) => `${base(s.url)}query_filter = (mail=%s)\nresult_attribute = mailRoutingAddress\nbind = yes\nbind_dn = ${READER_DN}\nbind_pw = ${READER_PW}\n` },
  { name: 'anonymous', body: (s) => `${base(s.url)}query_filter = (mail=%s)\nresult_attribute = mailRoutingAddress\nbind = no\n` },
  { name: 'dereference', body: (s) => `${base(s.url)}query_filter = (uid=%s)\nresult_attribute = mail\ndereference = 3\n` },
  { name: 'host-port', body: (s) => `server_host = 127.0.0.1\nserver_port = ${s.port}\nsearch_base = ${SUFFIX}\nquery_filter = (mail=%s)\nresult_attribute = cn\n` },
  { name: 'failover', body: (s) => `server_host = ldap://127.0.0.1:1 ${s.url}\nsearch_base = ${SUFFIX}\nversion = 3\nquery_filter = (mail=%s)\nresult_attribute = cn\n` },
  { name: 'static-base-missing', body: (s) => `server_host = ${s.url}\nversion = 3\nsearch_base = ou=nowhere, ${SUFFIX}\nquery_filter = (mail=%s)\nresult_attribute = cn\n`, keys: ['alice@example.com'] },
];

async function withClients<T>(socket: string, table: string, clients: number, body: (t: ProxyTable, i: number) => Promise<T>): Promise<T[]> {
  const conns = await Promise.all(Array.from({ length: clients }, () => ProxyConnection.connect(socket, { timeoutMs: 60_000 })));
  try {
    return await Promise.all(conns.map((c, i) => body(new ProxyTable(c, table, { dialect: 'legacy', smtputf8: true }), i)));
  } finally {
    for (const c of conns) c.close();
  }
}

describe('ldap: tables through proxymapd, against the real postmap and a real slapd', { skip, timeout: 600_000 }, () => {
  let dir = '';
  let slapd: Slapd;
  let inst: Instance;
  const tables: { name: string; table: string; keys: string[] }[] = [];
  let plain = '';
  before(async () => {
    dir = fs.mkdtempSync('/tmp/pmd-ldapproxy-');
    fs.chmodSync(dir, 0o755);
    slapd = await startSlapd(50);
    for (const c of CASES) {
      const f = path.join(dir, `${c.name}.cf`);
      writeTable(f, c.body(slapd));
      tables.push({ name: c.name, table: `ldap:${f}`, keys: c.keys ?? KEYS });
    }
    plain = tables.find((t) => t.name === 'plain')!.table;
    const mainCf: Record<string, string> = {
      ldap_test_base: SUFFIX,
      ldapprefix_server_host: slapd.url,
      ldapprefix_search_base: '${ldap_test_base}',
      ldapprefix_version: '3',
      ldapprefix_query_filter: '(mail=%s)',
      ldapprefix_result_attribute: 'mailRoutingAddress',
      ldapprefix_result_format: 'via-main.cf:%s',
    };
    tables.push({ name: 'main.cf', table: 'ldap:ldapprefix', keys: KEYS });
    inst = await startProxymapd({
      ...mainCf,
      compatibility_level: '3.6',
      proxy_read_maps: tables.map((t) => `proxy:${t.table}`).join(' '),
      proxymapd_sql_max_connections: String(POOL_SIZE),
      proxymapd_sql_timeout: '5s',
    }, dir);
  });
  after(async () => {
    await inst?.stop();
    await slapd?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it(`100 concurrent clients never make proxymapd hold more than ${POOL_SIZE} LDAP connections (counted by slapd's side)`, async () => {
    const keys = ['alice@example.com', 'bob@example.com', 'nobody@example.com', 'st*r@example.com', 'juergen@example.com'];
    const want = new Map<string, string | null>();
    for (const k of keys) {
      const r = await postmap(['-c', inst.conf, '-q', k, plain]);
      want.set(k, r.status === 0 ? r.stdout.toString('latin1').replace(/\n$/, '') : null);
    }
    assert.ok(want.get('alice@example.com'));
    const { result: rounds, peak, samples } = await sampleWhile(() => slapd.connections(), () =>
    withClients(inst.proxymap, plain, 100, async (t, i) => {
      const bad: string[] = [];
      for (let n = 0; n < 8; n++) {
        const key = keys[(i + n) % keys.length]!;
        const r: ClientResult = await t.lookup(key);
        const got = answerOf(r);
        if (got !== want.get(key)) bad.push(`${key}: ${got} (want ${want.get(key)})`);
      }
      return bad;
    }), 20);
    const wrong = rounds.flat();
    assert.deepEqual(wrong, [], inst.log().slice(-2000));
    assert.ok(samples >= 3, `connections counted ${samples} times`);
    assert.ok(peak >= 1, 'slapd saw proxymapd connect');
    // first test: no other pool holds connections yet, and the oracle's postmap runs have ended
    assert.ok(peak <= POOL_SIZE, `peak ${peak} slapd connections > pool size ${POOL_SIZE}`);
  });

  it('postmap -q - proxy:ldap:CF prints what postmap -q - ldap:CF prints, and exits the same', async () => {
    let found = 0;
    for (const t of tables) {
      const input = t.keys.join('\n') + '\n';
      const direct = await postmap(['-c', inst.conf, '-q', '-', t.table], input);
      const proxied = await postmap(['-c', inst.conf, '-q', '-', `proxy:${t.table}`], input);
      const d = direct.stdout.toString('latin1');
      assert.equal(proxied.stdout.toString('latin1'), d, `${t.table}\n${direct.stderr}\n${proxied.stderr}\n${inst.log().slice(-3000)}`);
      assert.equal(proxied.status, direct.status, `${t.table}\n${direct.stderr}\n${proxied.stderr}`);
      assert.equal(/query error/.test(proxied.stderr), /query error/.test(direct.stderr), `${t.table}\n${direct.stderr}\n${proxied.stderr}`);
      found += d.split('\n').filter(Boolean).length;
    }
    assert.ok(found > 40, `the tables answer (${found} values)`);
  });

  it('every key alone: same answer and exit status (the limit cases end a batch at the first error)', async () => {
    for (const name of ['size-limit', 'expansion-limit', 'recursion-limit', 'static-base-missing', 'recursion']) {
      const t = tables.find((x) => x.name === name)!;
      for (const key of [...t.keys, ...(name === 'recursion' ? ['loop'] : [])]) {
        const direct = await postmap(['-c', inst.conf, '-q', key, t.table]);
        const proxied = await postmap(['-c', inst.conf, '-q', key, `proxy:${t.table}`]);
        assert.equal(proxied.stdout.toString('latin1'), direct.stdout.toString('latin1'), `${t.table} ${key}\n${direct.stderr}\n${proxied.stderr}`);
        assert.equal(proxied.status, direct.status, `${t.table} ${key}\n${direct.stderr}\n${proxied.stderr}`);
      }
    }
  });

  it('slapd stopped under 20 clients: RETRY, never a wrong answer or not-found; answers again after, same proxymapd', async () => {
    const keys = ['alice@example.com', 'bob@example.com', 'juergen@example.com'];
    const want = new Map<string, string>();
    for (const k of keys) {
      const r = await postmap(['-c', inst.conf, '-q', k, plain]);
      assert.equal(r.status, 0);
      want.set(k, r.stdout.toString('latin1').replace(/\n$/, ''));
    }
    const seen = { found: 0, retry: 0, retryWhileDown: 0 };
    const bad: string[] = [];
    let stop = false;
    let down = false;
    const load = withClients(inst.proxymap, plain, 20, async (t, i) => {
      for (let j = 0; !stop; j++) {
        const key = keys[(i + j) % keys.length]!;
        const r = await t.lookup(key);
        if (r.status === 'found') {
          if (r.value !== want.get(key)) bad.push(`${key}: ${r.value}`);
          else seen.found++;
        } else if (r.status === 'notfound') bad.push(`${key}: not found`);
        else {
          seen.retry++;
          if (down) seen.retryWhileDown++;
        }
        await sleep(5);
      }
    });
    await sleep(1000);
    await slapd.halt();
    down = true;
    await sleep(3000);
    down = false;
    await slapd.start();
    const before = seen.found;
    const deadline = Date.now() + 30_000;
    while (seen.found < before + 50 && Date.now() < deadline) await sleep(100);
    stop = true;
    await load;
    assert.deepEqual(bad, []);
    assert.ok(seen.retryWhileDown > 0, `lookups during the outage answer RETRY (${JSON.stringify(seen)})`);
    assert.ok(seen.found >= before + 50, `lookups succeed again after slapd is back (${JSON.stringify(seen)})`);
    const after = await postmap(['-c', inst.conf, '-q', 'alice@example.com', `proxy:${plain}`]);
    assert.equal(after.stdout.toString('latin1'), `${want.get('alice@example.com')}\n`);
  });
});
