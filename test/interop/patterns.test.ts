/**
 * Pattern and composite tables through proxymapd, compared with the real
 * postmap's direct lookup (the generated cases are in test/difftest/).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { postmap, skipReason, startProxymapd, writeTable, type Instance } from './harness.js';

const skip = skipReason();

const REGEXP = ['/^p(foo|foobar)/ P:$1', '/^w(a|(b))+$/ E:[$1][$2]', '/^CaSe(.*)$/ F:$1', 'if /^i/', '/^in(.*)/ IN:$1', 'endif', '/^(.)/ first:$1'];
const PCRE = ['/^p(foo|foobar)/ P:$1', '/^t(.*?)u/ T:$1', '/\\Aanc\\Z/ A', '/^(?<nm>na)me$/ N:$1', '/^é$/ e-acute'];
const CIDR = ['192.168.0.0/16 net16', '[172.16.0.0/12] b1', '2001:db8::/32 v6', 'IF !1.2.3.0/24', '1.0.0.0/8 outside', 'ENDIF'];

for (const level of ['3.6', '0']) describe(`pattern and composite tables through proxymapd (compatibility_level ${level})`, { skip }, () => {
  let inst: Instance;
  let dir: string;
  let tables: string[];
  const keys = ['pfoobar', 'wba', 'CASEAbC', 'inside', 'Inx', 'tabuxu', 'anc', 'name', 'é', 'É', '192.168.2.3', '172.17.1.1',
    '2001:0DB8::1', '1.2.3.4', '1.9.9.9', 'A', 'a', 'b', 'B', 'x', ''];
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-pat-'));
    const f = (name: string, lines: string[]) => {
      const p = path.join(dir, name);
      writeTable(p, lines.join('\n') + '\n');
      return p;
    };
    const re = f('re', REGEXP);
    const pc = f('pc', PCRE);
    const ci = f('ci', CIDR);
    const th = f('th', ['A b', 'b c', 'x Y']);
    tables = [
      `regexp:${re}`, `pcre:${pc}`, `cidr:${ci}`,
      'regexp:{{/^(f)oo$/ got $1}, {/bar/ B}}', 'cidr:{{1.2.3.0/24 net},{::1 lo}}',
      'pipemap:{inline:{a=B},inline:{b=c}}', `pipemap:{texthash:${th},texthash:${th}}`,
      `unionmap:{regexp:{{/(.)/ $1}},inline:{a=b}}`, `unionmap:{inline:{a=1},static:2,inline:{a=3}}`,
      `unionmap:{cidr:${ci},pcre:${pc}}`,
    ];
    inst = await startProxymapd({ compatibility_level: level, proxy_read_maps: tables.map((t) => `proxy:${t.replace(/\$/g, '$$$$')}`).join(' ') }, dir);
  });
  after(async () => {
    await inst?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('every table, every key, batch mode: same output and status', async () => {
    const input = keys.join('\n') + '\n';
    let found = 0;
    for (const t of tables) {
      const direct = await postmap(['-c', inst.conf, '-q', '-', t], input);
      const proxied = await postmap(['-c', inst.conf, '-q', '-', `proxy:${t}`], input);
      assert.equal(proxied.stdout.toString('latin1'), direct.stdout.toString('latin1'), `${t}\n${proxied.stderr}`);
      assert.equal(proxied.status, direct.status, t);
      found += direct.stdout.toString('latin1').split('\n').filter(Boolean).length;
    }
    assert.ok(found > 20, `the tables answer (${found} found)`);
  });

  it('single-key lookups, including a value that is not valid UTF-8 (query error on both paths)', async () => {
    for (const [t, k] of [[tables[0], 'é'], [tables[0], 'pfoobar'], [tables[5], 'A'], [tables[7], 'A']] as const) {
      const direct = await postmap(['-c', inst.conf, '-q', k, t]);
      const proxied = await postmap(['-c', inst.conf, '-q', k, `proxy:${t}`]);
      assert.equal(proxied.stdout.toString('latin1'), direct.stdout.toString('latin1'), `${t} ${k}`);
      assert.equal(proxied.status, direct.status, `${t} ${k}\n${proxied.stderr}`);
    }
  });
});

describe('no_regsub from a client (trivial-rewrite transport maps)', { skip }, () => {
  it('a regexp/pcre rule whose value uses $n does not match; others still do', async () => {
    const { ProxyConnection } = await import('../../src/client/client.js');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-regsub-'));
    const re = path.join(dir, 're');
    const pc = path.join(dir, 'pc');
    writeTable(re, '/^(a)(.*)$/ sub:$1\n/^a/ plain\n');
    writeTable(pc, '/^(a)(.*)$/ sub:$1\n');
    const inst = await startProxymapd({ proxy_read_maps: `proxy:regexp:${re} proxy:pcre:${pc}` }, dir);
    try {
      const c = await ProxyConnection.connect(inst.proxymap);
      const lookup = (t: string, flags: number) =>
        c.exchangeRaw(Buffer.from(`request\0lookup\0table\0${t}\0flags\0${flags}\0key\0abc\0\0`, 'latin1'));
      assert.deepEqual(await lookup(`regexp:${re}`, 0), [['status', '0'], ['value', 'sub:a']]);
      assert.deepEqual(await lookup(`regexp:${re}`, 0x800), [['status', '0'], ['value', 'plain']]);
      assert.deepEqual(await lookup(`pcre:${pc}`, 0x800), [['status', '1'], ['value', '']]);
      c.close();
    } finally {
      await inst.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
