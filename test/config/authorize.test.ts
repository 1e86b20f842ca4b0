import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  authorizationParameter,
  authorizedTables,
  formatAuthorized,
  type AuthorizeMode,
  type ProxyService,
} from '../../src/config/authorize.js';
import { Config } from '../../src/config/params.js';
import { ConfigError } from '../../src/config/errors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-auth-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, text, 'latin1');
  return p;
}

function auth(
  entries: Record<string, string>,
  service: ProxyService = 'proxymap',
  mode: AuthorizeMode = 'proxy',
): { tables: string[]; warns: string[] } {
  const warns: string[] = [];
  const config = Config.fromEntries(entries, { hostname: 'host', warn: (m) => warns.push(m) });
  const set = authorizedTables(config, service, (m) => warns.push(m), mode);
  return { tables: [...set].sort(), warns };
}

/** Authorization of a proxy_read_maps value alone (mynetworks etc. stay at their defaults). */
const read = (value: string, extra: Record<string, string> = {}) =>
  auth({ proxy_read_maps: value, ...extra });

describe('authorizedTables: defaults', () => {
  it('authorizes exactly unix:passwd.byname for proxymap', () => {
    const r = auth({});
    assert.deepEqual(r.tables, ['unix:passwd.byname']);
    assert.deepEqual(r.warns, []);
  });

  it('authorizes nothing for proxywrite', () => {
    assert.deepEqual(auth({}, 'proxywrite').tables, []);
  });

  it('lists every referenced table in "all" mode', () => {
    assert.deepEqual(auth({}, 'proxymap', 'all').tables, [
      'hash:/etc/aliases',
      'nis:mail.aliases',
      'static:*',
      'unix:passwd.byname',
    ]);
    assert.deepEqual(auth({}, 'proxywrite', 'all').tables, [
      'btree:/var/lib/postfix/postscreen_cache',
      'btree:/var/lib/postfix/verify_cache',
    ]);
  });

  it('names the parameter of each service', () => {
    assert.equal(authorizationParameter('proxymap'), 'proxy_read_maps');
    assert.equal(authorizationParameter('proxywrite'), 'proxy_write_maps');
  });
});

describe('authorizedTables: table references', () => {
  it('strips proxy: and keeps the rest byte-exact', () => {
    assert.deepEqual(read('proxy:inline:{a=b}').tables, ['inline:{a=b}']);
    assert.deepEqual(read('proxy:inline:{ a=b, c = d }').tables, ['inline:{ a=b, c = d }']);
    assert.deepEqual(read('proxy:hash:/etc/Caf\xe9').tables, ['hash:/etc/Caf\xe9']);
  });

  it('strips every repeated proxy: prefix', () => {
    assert.deepEqual(read('proxy:proxy:x:y proxy:proxy:proxy:z:w').tables, ['x:y', 'z:w']);
  });

  it('ignores tables without proxy:', () => {
    assert.deepEqual(read('hash:/etc/a, btree:/b, proxy:hash:/c').tables, ['hash:/c']);
  });

  it('splits at commas and all blanks, not inside braces', () => {
    assert.deepEqual(read('proxy:a:1,proxy:b:2\tproxy:c:3\r\nproxy:d:{x, y}').tables, [
      'a:1',
      'b:2',
      'c:3',
      'd:{x, y}',
    ]);
  });

  it('skips words that are not table references', () => {
    const r = read(
      'permit_mynetworks [::1]/128 127.0.0.0/8 !proxy:x:y -proxy:a:b check_client_access proxy:hash:/ok proxy',
    );
    assert.deepEqual(r.tables, ['hash:/ok']);
    assert.deepEqual(r.warns, []);
  });

  it('adds the empty name for a bare "proxy:" (as Postfix does)', () => {
    assert.deepEqual(read('proxy:').tables, ['']);
  });

  it('uses the first word of a { type:name option=... } group', () => {
    assert.deepEqual(read('{ proxy:mysql:/x.cf, option=1 }').tables, ['mysql:/x.cf']);
    assert.deepEqual(read('{proxy:pgsql:/p.cf option = {a b}}').tables, ['pgsql:/p.cf']);
    assert.deepEqual(read('{ mysql:/x.cf } { } {}').tables, []);
    assert.deepEqual(read('{ option=1 proxy:mysql:/x.cf }').tables, []);
  });

  it('warns about unbalanced groups', () => {
    const r = read('{ proxy:a:b proxy:c:d');
    assert.deepEqual(r.tables, []);
    assert.deepEqual(r.warns, [`bad syntax in proxy_read_maps content: missing '}' in "{ proxy:a:b proxy:c:d"`]);
    const s = read('{proxy:a:b}x proxy:c:d');
    assert.deepEqual(s.tables, ['c:d']);
    assert.deepEqual(s.warns, [`bad syntax in proxy_read_maps content: syntax error after '}' in "{proxy:a:b}x"`]);
  });

  it('recurses into pipemap:{...} and unionmap:{...}', () => {
    const r = read('pipemap:{proxy:a:b, unionmap:{proxy:c:d, e:f, pipemap:{proxy:g:h}}, proxy:i:j}');
    assert.deepEqual(r.tables, ['a:b', 'c:d', 'g:h', 'i:j']);
  });

  it('authorizes a proxied pipemap as a whole', () => {
    assert.deepEqual(read('proxy:pipemap:{hash:/a, hash:/b}').tables, ['pipemap:{hash:/a, hash:/b}']);
  });

  it('ignores nested maps without braces and warns about bad ones', () => {
    assert.deepEqual(read('pipemap:x unionmap:').tables, []);
    const r = read('unionmap:{proxy:a:b}junk proxy:c:d');
    assert.deepEqual(r.tables, ['c:d']);
    assert.deepEqual(r.warns, [
      `bad syntax in proxy_read_maps content: syntax error after '}' in "{proxy:a:b}junk"`,
    ]);
  });

  it('expands the parameter value before scanning', () => {
    const r = read('$my_maps ${flag?{proxy:yes:1}:{proxy:no:1}}', {
      my_maps: 'proxy:hash:/etc/$name',
      name: 'm',
      flag: 'x',
    });
    assert.deepEqual(r.tables, ['hash:/etc/m', 'yes:1']);
  });

  it('propagates expansion errors as ConfigError', () => {
    assert.throws(() => read('${broken'), ConfigError);
  });
});

describe('authorizedTables: /file/name lists', () => {
  it('reads logical lines of the file', () => {
    const f = file(
      'list1',
      '# comment\nproxy:hash:/one, hash:/not\n  proxy:btree:/continued\n\nproxy:inline:{k=v}\n',
    );
    assert.deepEqual(read(`${f}, proxy:cdb:/direct`).tables, [
      'btree:/continued',
      'cdb:/direct',
      'hash:/one',
      'inline:{k=v}',
    ]);
  });

  it('follows file references inside files and braces', () => {
    const inner = file('inner', 'proxy:lmdb:/inner\n');
    const outer = file('outer', `${inner}\nproxy:lmdb:/outer\n`);
    assert.deepEqual(read(`{ ${outer} }`).tables, ['lmdb:/inner', 'lmdb:/outer']);
  });

  it('uses the file name as origin in warnings', () => {
    const f = file('badgroup', '{ proxy:a:b\n');
    const r = read(f);
    assert.deepEqual(r.warns, [`bad syntax in ${f} content: missing '}' in "{ proxy:a:b"`]);
  });

  it('warns about unreadable files and continues', () => {
    const missing = path.join(tmp, 'missing');
    const r = read(`${missing} ${tmp} proxy:a:b`);
    assert.deepEqual(r.tables, ['a:b']);
    assert.deepEqual(r.warns, [`open ${missing}: No such file or directory`, `read ${tmp}: Is a directory`]);
  });

  it('does not loop on a file that lists itself', () => {
    const self = path.join(tmp, 'self');
    fs.writeFileSync(self, `proxy:x:y\n${self}\n`);
    const r = read(self);
    assert.deepEqual(r.tables, ['x:y']);
    assert.equal(r.warns.length, 1);
  });
});

describe('authorizedTables: restriction classes and proxywrite', () => {
  const entries = {
    smtpd_restriction_classes: 'cls1, cls2 undefined_class',
    cls1: 'check_sender_access proxy:hash:/a',
    cls2: '$cls1, check_client_access {proxy:btree:/b}',
  };

  it('proxymap scans every restriction class', () => {
    assert.deepEqual(auth(entries).tables, ['btree:/b', 'hash:/a', 'unix:passwd.byname']);
  });

  it('proxywrite ignores restriction classes and reads proxy_write_maps', () => {
    assert.deepEqual(auth(entries, 'proxywrite').tables, []);
    const w = auth(
      { proxy_write_maps: 'proxy:btree:/w $address_verify_map', address_verify_map: 'proxy:btree:/v' },
      'proxywrite',
    );
    assert.deepEqual(w.tables, ['btree:/v', 'btree:/w']);
  });

  it('a class may name a parameter with a built-in default', () => {
    assert.deepEqual(
      auth({ proxy_read_maps: '', smtpd_restriction_classes: 'local_recipient_maps' }).tables,
      ['unix:passwd.byname'],
    );
  });
});

describe('formatAuthorized', () => {
  it('prints sorted names in byte order, one per line', () => {
    assert.equal(formatAuthorized(new Set(['b:x', 'a:y', 'B:z', '\xe9:q', 'a:x'])), 'B:z\na:x\na:y\nb:x\n\xe9:q\n');
  });

  it('prints nothing for an empty set', () => {
    assert.equal(formatAuthorized(new Set()), '');
  });
});
