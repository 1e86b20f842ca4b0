/**
 * ldap: through the shared conformance suite, against a throwaway slapd
 * (the differential tests through proxymapd are in ldap-proxy.test.ts),
 * plus the filter and quoting helpers.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DICT_ERR } from '../../../src/tables/core/table.js';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { encodeFilter, FilterError, rfc2253Quote, rfc2254Quote } from '../../../src/tables/network/ldap-filter.js';
import { parseLdapUrl } from '../../../src/tables/network/ldap-url.js';
import { attrSubtype } from '../../../src/tables/network/ldap-values.js';
import { runConformance } from '../conformance.js';
import { SUFFIX, slapdSkipReason, startSlapd, type Slapd } from './slapd.js';
import '../../../src/tables/types.js';

const skip = slapdSkipReason();
let slapd: Slapd | undefined;
const url = () => slapd!.url;

// The hooks live in a suite: Node 20 runs root-level before() hooks once per top-level suite, and the slapds of
// the extra runs were never stopped.
describe('ldap: tables against one throwaway slapd', () => {
  before(async () => {
    if (!skip) slapd = await startSlapd();
  });
  after(async () => {
    await slapd?.stop();
  });

  describe('ldap helpers', () => {
    it('quotes key pieces as Postfix does', () => {
      assert.equal(rfc2254Quote('a*b(c)d\\e'), 'a\\2Ab\\28c\\29d\\5Ce');
      assert.equal(rfc2253Quote('a,b c#d+e;f<g>h"i\\j\tk'), 'a\\2Cb\\20c\\23d\\2Be\\3Bf\\3Cg\\3Eh\\22i\\5Cj\\09k');
    });
    it('encodes filters and refuses bad ones', () => {
      assert.equal(encodeFilter('(mail=a\\2Ab)').toString('hex'), 'a30b04046d61696c0403612a62');
      assert.equal(encodeFilter('objectclass=*').toString('hex'), '870b6f626a656374636c617373');
      assert.throws(() => encodeFilter('(mail=a'), FilterError);
      assert.throws(() => encodeFilter('(mail=a)(x=y)'), FilterError);
      assert.throws(() => encodeFilter('(&)'), FilterError);
      assert.ok(encodeFilter('(&(a=b*c*d)(!(e>=f))(g:dn:2.5.13.2:=h))').length > 0);
    });
    it('parses LDAP URLs and attribute subtypes', () => {
      const u = parseLdapUrl('ldap:///ou=people,dc=ex?mail?one?(uid=bob)');
      assert.deepEqual([u.dn, u.attrs, u.scope, u.filter], ['ou=people,dc=ex', ['mail'], 1, '(uid=bob)']);
      assert.equal(parseLdapUrl('ldapi://%2Ftmp%2Fs').host, '/tmp/s');
      assert.equal(attrSubtype('mail', 'MAIL;lang-en'), 1);
      assert.equal(attrSubtype('mail;x', 'mail'), -1);
      assert.equal(attrSubtype('mail', 'mailx'), 0);
    });
  });

  if (!skip) {
    runConformance('ldap', [
      {
        title: 'plain filter: values in server order, folding, escaping, not found',
        file: () => `server_host = ${url()}\nsearch_base = ${SUFFIX}\nquery_filter = (mail=%s)\nresult_attribute = cn, mail\n`,
        implFlags: DICT_FLAG.FIXED,
        warnings: [],
        lookups: [
          { key: 'alice@example.com', expect: { value: 'Alice,alice@example.com,alice.alt@example.com' } },
          { key: 'st*r@example.com', expect: { value: 'star,st*r@example.com' } },
          { key: 's*@example.com', expect: 'notfound' },
          { key: 'nobody@example.com', expect: 'notfound' },
        ],
        sequence: 'unsupported',
      },
      {
        title: 'special attributes: DNs followed, a missing DN skipped',
        file: () => `server_host = ${url()}\nsearch_base = ${SUFFIX}\nquery_filter = (cn=%s)\nresult_attribute = mail\nspecial_result_attribute = member\n`,
        lookups: [{ key: 'grp', expect: { value: 'grp@example.com,alice@example.com,alice.alt@example.com,bob@example.com' } }],
      },
      {
        title: 'expansion limit: RETRY',
        file: () => `server_host = ${url()}\nsearch_base = ${SUFFIX}\nquery_filter = (mail=%s)\nresult_attribute = mail\nexpansion_limit = 1\n`,
        lookups: [{ key: 'alice@example.com', expect: { error: DICT_ERR.RETRY } }],
      },
      {
        title: 'an unreachable server: RETRY',
        file: () => `server_host = ldap://127.0.0.1:1\nsearch_base = ${SUFFIX}\nquery_filter = (mail=%s)\n`,
        lookups: [{ key: 'alice@example.com', expect: { error: DICT_ERR.RETRY } }],
      },
      {
        title: 'bad bind value: the open fails with Postfix text',
        file: `bind = maybe\n`,
        openError: '{path}: unsupported parameter value: bind = maybe',
      },
      {
        title: 'bad template: the open fails',
        file: `query_filter = (mail=%x)\n`,
        openError: 'db_common_parse: {path}: Invalid query template: (mail=%x)',
      },
    ], { randomKeys: 10 });
  }
});
