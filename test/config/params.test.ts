import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import {
  BUILTIN_DEFAULTS,
  Config,
  convTime,
  MACRO_PROCESSING_ERROR,
  PROXY_READ_MAPS_3_7,
} from '../../src/config/params.js';
import { ConfigError } from '../../src/config/errors.js';
import { parseMainCf } from '../../src/config/maincf.js';
import {
  cleanupConfDirs,
  makeConfDir,
  normalizeWs,
  postconf,
  postconfExpanded,
  skipNoPostconf,
} from './postconf.js';

after(cleanupConfDirs);

const cfg = (entries: Record<string, string>, opts: ConstructorParameters<typeof Config>[1] = {}) =>
  Config.fromEntries(entries, { hostname: 'host', warn: () => {}, ...opts });

describe('Config: values and precedence', () => {
  it('expands main.cf values fully', () => {
    const c = cfg({ a: '$b/x', b: '${c?{yes}}', c: '1' });
    assert.equal(c.get('a'), 'yes/x');
    assert.equal(c.raw('a'), '$b/x');
  });

  it('returns "" for undefined parameters and reports has() correctly', () => {
    const c = cfg({ e: '' });
    assert.equal(c.get('nonexistent_param'), '');
    assert.equal(c.has('nonexistent_param'), false);
    assert.equal(c.lookup('nonexistent_param'), undefined);
    assert.equal(c.has('e'), true);
    assert.equal(c.lookup('e'), '');
    assert.equal(c.has('transport_maps'), true, 'built-in default (empty)');
  });

  it('applies -o overrides over main.cf, raw and expanded at use', () => {
    const c = cfg({ a: '1', b: '2' }, { overrides: ['a = $b', 'c=3'] });
    assert.equal(c.get('a'), '2');
    assert.equal(c.get('c'), '3');
    const m = cfg({ a: '1' }, { overrides: new Map([['a', 'x']]) });
    assert.equal(m.get('a'), 'x');
  });

  it('rejects a malformed -o argument like Postfix', () => {
    assert.throws(() => cfg({}, { overrides: ['novalue'] }), {
      name: 'ConfigError',
      message: `invalid "-o novalue" option value: missing '=' after attribute name`,
    });
  });

  it('sets config_directory and process_name before main.cf, service_name after everything', () => {
    const c = cfg({}, { configDir: '/x/conf', processName: 'proxymap', serviceName: 'proxywrite' });
    assert.equal(c.configDir, '/x/conf');
    assert.equal(c.get('config_directory'), '/x/conf');
    assert.equal(c.get('process_name'), 'proxymap');
    assert.equal(c.get('service_name'), 'proxywrite');
    const o = cfg(
      { config_directory: '/elsewhere', process_name: 'p', service_name: 's' },
      { processName: 'proxymap', serviceName: 'svc', overrides: ['service_name=o'] },
    );
    assert.equal(o.get('config_directory'), '/elsewhere');
    assert.equal(o.get('process_name'), 'p');
    assert.equal(o.get('service_name'), 'svc');
    assert.deepEqual(o.explicitNames(), ['config_directory', 'process_name', 'service_name']);
  });

  it('loads DIR/main.cf with Config.load', () => {
    const dir = makeConfDir('queue_directory = /q\nmax_use = 7\n');
    const c = Config.load(dir, { warn: () => {} });
    assert.equal(c.configDir, dir);
    assert.equal(c.get('config_directory'), dir);
    assert.equal(c.get('queue_directory'), '/q');
    assert.equal(c.getInt('max_use'), 7);
  });
});

describe('Config: built-in defaults', () => {
  it('authorizes unix:passwd.byname through local_recipient_maps', () => {
    const c = cfg({});
    assert.equal(c.get('local_recipient_maps'), 'proxy:unix:passwd.byname hash:/etc/aliases, nis:mail.aliases');
  });

  it('derives myhostname and mydomain as Postfix does', () => {
    assert.equal(cfg({}).get('myhostname'), 'host.localdomain');
    assert.equal(cfg({}).get('mydomain'), 'localdomain');
    assert.equal(cfg({}, { hostname: 'h.example.org' }).get('mydomain'), 'example.org');
    assert.equal(cfg({ mydomain: 'example.com' }).get('myhostname'), 'host.example.com');
    assert.equal(cfg({ myhostname: 'a.b.c' }).get('mydomain'), 'b.c');
    assert.equal(cfg({ myhostname: 'short' }).get('mydomain'), 'localdomain');
    // Postfix evaluates mydomain before myhostname exists: "host." results.
    assert.equal(cfg({ mydomain: '$myhostname' }).get('myhostname'), 'host.');
    assert.equal(cfg({ mydomain: '$myhostname' }).get('mydestination'), 'host., localhost.host., localhost');
  });

  it('does not loop when myhostname refers to mydomain', () => {
    // mydomain's default needs myhostname, which is not known yet: both come out short.
    const c = cfg({ myhostname: 'mx.$mydomain' });
    assert.equal(c.get('myhostname'), 'mx.');
    assert.equal(c.get('mydomain'), '');
  });

  it('follows compatibility_level', () => {
    const at = (level?: string) => cfg(level === undefined ? {} : { compatibility_level: level });
    assert.equal(at().get('smtputf8_enable'), 'no');
    assert.equal(at().smtputf8(), false);
    assert.equal(at('1').smtputf8(), true);
    assert.equal(at('3.6').smtputf8(), true);
    assert.equal(at().get('relay_domains'), 'host.localdomain, localhost.localdomain, localhost');
    assert.equal(at('1').get('relay_domains'), 'host.localdomain, localhost.localdomain, localhost');
    assert.equal(at('2').get('relay_domains'), '');
    assert.equal(at('3.6').get('relay_domains'), '');
  });

  it('lists the 3.7 proxy_read_maps references', () => {
    assert.equal(PROXY_READ_MAPS_3_7.length, 78);
    assert.equal(cfg({}).raw('proxy_read_maps')?.split(' ').length, 78);
    assert.equal(
      cfg({}).raw('proxy_write_maps'),
      '$smtp_sasl_auth_cache_name $lmtp_sasl_auth_cache_name $address_verify_map $postscreen_cache_map',
    );
  });

  it('uses os.hostname() by default', () => {
    const h = os.hostname();
    const c = Config.fromEntries({});
    assert.equal(c.get('myhostname'), h.includes('.') ? h : `${h}.localdomain`);
  });
});

describe('Config: typed access', () => {
  it('converts time values', () => {
    const c = cfg({ t1: '10', t2: '2m', t3: '1h', t4: '2d', t5: '1w', t6: '5s', t7: '10x', t8: '', t9: '-1s' });
    assert.equal(c.getTime('t1'), 10);
    assert.equal(c.getTime('t1', 'm'), 600);
    assert.equal(c.getTime('t2'), 120);
    assert.equal(c.getTime('t3'), 3600);
    assert.equal(c.getTime('t4'), 172800);
    assert.equal(c.getTime('t5'), 604800);
    assert.equal(c.getTime('t6'), 5);
    assert.equal(c.getTime('ipc_timeout'), 3600);
    assert.equal(c.getTime('ipc_idle'), 5);
    assert.equal(c.getTime('max_idle'), 100);
    assert.equal(c.getTime('daemon_timeout'), 18000);
    for (const bad of ['t7', 't8', 't9']) {
      assert.throws(() => c.getTime(bad), {
        name: 'ConfigError',
        message: `parameter ${bad}: bad time value or unit: ${c.get(bad)}`,
      });
    }
    assert.equal(c.getTime('undefined_time', 's', 42), 42);
  });

  it('convTime follows conv_time limits', () => {
    assert.equal(convTime('3549w'), 3549 * 604800);
    assert.equal(convTime('3550w'), undefined);
    assert.equal(convTime('24855d'), undefined);
    assert.equal(convTime('24854d'), 24854 * 86400);
    assert.equal(convTime('2147483647'), 2147483647);
    assert.equal(convTime('2147483648'), undefined);
    assert.equal(convTime('5sx'), 5, 'only the first unit letter counts');
    assert.equal(convTime(' 7'), 7);
  });

  it('converts integers', () => {
    const c = cfg({ i1: '42', i2: '-3', i3: '4x', i4: '', i5: '99999999999' });
    assert.equal(c.getInt('i1'), 42);
    assert.equal(c.getInt('i2'), -3);
    assert.equal(c.getInt('max_use'), 100);
    assert.equal(c.getInt('line_length_limit'), 2048);
    for (const bad of ['i3', 'i4', 'i5']) {
      assert.throws(() => c.getInt(bad), {
        name: 'ConfigError',
        message: `bad numerical configuration: ${bad} = ${c.get(bad)}`,
      });
    }
    assert.equal(c.getInt('undefined_int', 9), 9);
  });

  it('converts booleans case-insensitively', () => {
    const c = cfg({ b1: 'YES', b2: 'No', b3: 'true' });
    assert.equal(c.getBool('b1'), true);
    assert.equal(c.getBool('b2'), false);
    assert.throws(() => c.getBool('b3'), { message: 'bad boolean configuration: b3 = true' });
    assert.equal(c.getBool('undefined_bool', true), true);
  });

  it('turns expansion errors into ConfigError after a warning', () => {
    const warns: string[] = [];
    const c = Config.fromEntries({ a: '$b', b: '$a', bad: '${x' }, { warn: (m) => warns.push(m) });
    assert.throws(
      () => c.get('a'),
      (e: unknown) => e instanceof ConfigError && e.message === MACRO_PROCESSING_ERROR,
    );
    assert.throws(() => c.get('bad'), { message: 'dictionary mail_dict: macro processing error' });
    assert.deepEqual(warns, ['unreasonable macro call nesting: "a"', 'truncated macro reference: "${x"']);
  });
});

describe('Config versus real postconf', { skip: skipNoPostconf }, () => {
  const ours = (text: string, opts: ConstructorParameters<typeof Config>[1] = {}) =>
    new Config(parseMainCf(text, 'main.cf', () => {}), { warn: () => {}, ...opts });

  it('has the same unexpanded defaults as postconf -d', () => {
    const names = [...BUILTIN_DEFAULTS.keys()].filter((n) => n !== 'mynetworks');
    const r = postconf(['-dh', ...names]);
    assert.equal(r.status, 0, r.stderr);
    names.forEach((n, i) => assert.equal(normalizeWs(BUILTIN_DEFAULTS.get(n)!), r.lines[i], n));
  });

  it('expands an all-default configuration the same way', () => {
    const dir = makeConfDir('');
    const names = [...BUILTIN_DEFAULTS.keys(), 'myhostname', 'mydomain'].filter(
      (n) => n !== 'mynetworks' && n !== 'proxy_read_maps',
    );
    const theirs = postconfExpanded(dir, names);
    const c = ours('', { configDir: dir });
    names.forEach((n, i) => assert.equal(normalizeWs(c.get(n)), theirs[i], n));
  });

  it('expands proxy_read_maps and proxy_write_maps the same way', () => {
    const text = 'mynetworks = 127.0.0.0/8\nalias_maps = proxy:hash:/etc/aliases\nvirtual_maps = inline:{a=b}\n';
    const dir = makeConfDir(text);
    const theirs = postconfExpanded(dir, ['proxy_read_maps', 'proxy_write_maps']);
    const c = ours(text, { configDir: dir });
    assert.equal(normalizeWs(c.get('proxy_read_maps')), theirs[0]);
    assert.equal(normalizeWs(c.get('proxy_write_maps')), theirs[1]);
  });

  const levelNames = ['smtputf8_enable', 'relay_domains', 'mynetworks_style', 'smtpd_relay_restrictions'];
  for (const level of [undefined, '0', '1', '2', '3.6', '3.10']) {
    it(`evaluates compatibility_level ${level ?? '(unset)'} the same way`, () => {
      const text = level === undefined ? '' : `compatibility_level = ${level}\n`;
      const dir = makeConfDir(text);
      const theirs = postconfExpanded(dir, levelNames);
      const c = ours(text, { configDir: dir });
      levelNames.forEach((n, i) => assert.equal(normalizeWs(c.get(n)), theirs[i], n));
    });
  }

  for (const text of ['mydomain = example.com', 'myhostname = a.b.c', 'myhostname = short', 'mydomain = $myhostname',
    'myhostname = mx.$mydomain']) {
    it(`derives host and domain like postconf for "${text}"`, () => {
      const dir = makeConfDir(text + '\n');
      const names = ['myhostname', 'mydomain', 'mydestination', 'relay_domains'];
      const theirs = postconfExpanded(dir, names);
      const c = ours(text + '\n', { configDir: dir });
      names.forEach((n, i) => assert.equal(normalizeWs(c.get(n)), theirs[i], n));
    });
  }

  it('applies -o overrides like postconf -o', () => {
    const text = 'smtpd_restriction_classes = a\na = 1\n';
    const dir = makeConfDir(text);
    const overrides = ['a=2 $compatibility_level', 'compatibility_level=2'];
    const names = ['a', 'relay_domains', 'smtputf8_enable'];
    const theirs = postconfExpanded(dir, names, overrides.flatMap((o) => ['-o', o]));
    const c = ours(text, { configDir: dir, overrides });
    names.forEach((n, i) => assert.equal(normalizeWs(c.get(n)), theirs[i], n));
  });
});
