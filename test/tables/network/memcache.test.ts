/**
 * memcache: against a real memcached (conformance, the backup semantics,
 * writes) and against the real postmap (differential, several .cf
 * variants); a scripted fake server for the replies memcached never sends
 * (malformed lines, over-long lines and values, a missing END, retries).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, openTable, type Table } from '../../../src/tables/index.js';
import { parseEndpoint, valueReplyLength } from '../../../src/tables/network/memcache-proto.js';
import { runConformance, openOptions, type ConformanceCase } from '../conformance.js';
import { runDifferential, runPostmap, skipPostmap, type DiffScenario } from '../../support/postmap.js';
import { memcachedSkipReason, startFakeMemcache, startMemcached, type Memcached } from './memcached.js';

const skip = memcachedSkipReason();
const SEED: Array<[string, string]> = [['hit', 'hello'], ['pfx:u@example.com', 'pfx-value'], ['empty', ''], ['six', '123456'], ['nul', 'ab\0cd']];
const mc: Memcached | null = skip ? null : await startMemcached();
// Everything asynchronous happens before the first test is registered (node:test starts running then).
if (mc) {
  for (const [k, v] of SEED) await mc.set(k, v);
}
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'mc-test-'));
after(async () => {
  await mc?.stop();
  fs.rmSync(scratch, { recursive: true, force: true });
});

/** A port nothing listens on. */
const DEAD = 'inet:127.0.0.1:1';

function writeFile(name: string, text: string): string {
  const p = path.join(scratch, name);
  fs.writeFileSync(p, Buffer.from(text, 'latin1'));
  fs.utimesSync(p, 1_000_000_000, 1_000_000_000);
  return p;
}

async function open(cf: string, over: Parameters<typeof openOptions>[2] = {}, warnings: string[] = []): Promise<Table> {
  return openTable(openOptions('memcache', writeFile(`cf-${Math.random().toString(36).slice(2)}`, cf), { fold: 'ascii', ...over }, warnings));
}

describe('memcache pieces', () => {
  it('VALUE line parsing is sscanf("VALUE %*s %*s %ld")', () => {
    assert.equal(valueReplyLength('VALUE k 0 5'), 5);
    assert.equal(valueReplyLength('VALUE k 0 5 99'), 5);
    assert.equal(valueReplyLength('VALUE  k\t0   +7xyz'), 7);
    assert.equal(valueReplyLength('VALUE k 0 -3'), -3);
    assert.equal(valueReplyLength('VALUE k 0'), null);
    assert.equal(valueReplyLength('VALUE k 0 x'), null);
    assert.equal(valueReplyLength(' VALUE k 0 5'), null);
    assert.equal(valueReplyLength('value k 0 5'), null);
  });

  it('endpoints as auto_clnt/host_port parse them', () => {
    assert.deepEqual(parseEndpoint('inet:localhost:11211'), { kind: 'inet', host: 'localhost', port: 11211, service: '11211', label: 'localhost:11211' });
    assert.equal((parseEndpoint('inet:[::1]:99') as { host: string }).host, '::1');
    assert.equal((parseEndpoint('inet::99') as { host: string }).host, 'localhost');
    assert.deepEqual(parseEndpoint('unix:/x/y'), { kind: 'unix', path: '/x/y', label: '/x/y' });
    assert.deepEqual(parseEndpoint('local:/x/y'), { kind: 'unix', path: '/x/y', label: '/x/y' });
    assert.throws(() => parseEndpoint('tcp:1.2.3.4:5'), /^TableOpenError: invalid transport name: tcp in service: tcp:1.2.3.4:5$/);
    assert.throws(() => parseEndpoint('localhost'), /need service transport:endpoint instead of "localhost"/);
    assert.throws(() => parseEndpoint('inet:'), /need service transport:endpoint/);
    assert.throws(() => parseEndpoint('inet:host'), /host: missing service information/);
    assert.throws(() => parseEndpoint('inet:[::1'), /missing "\]"/);
    assert.throws(() => parseEndpoint('inet:h:12x'), /garbage after numerical service/);
  });
});

if (mc) {
  const texthash = writeFile('backup.txt', 'bk@example.com backup-value\nBoth@Example.com from-backup\nhit not-this-one\n');
  const lmdbDir = fs.mkdtempSync(path.join(scratch, 'lmdb-'));
  const plain = `memcache = ${mc.inet}\nmax_try = 1\n`;

  const cases: ConformanceCase[] = [
    {
      title: 'plain lookups; no backup, so first/next warn and find nothing',
      file: plain,
      implFlags: DICT_FLAG.FIXED,
      lookups: [
        { key: 'hit', expect: { value: 'hello' } },
        { key: 'HIT', expect: { value: 'hello' } },
        { key: 'miss', expect: 'notfound' },
        { key: 'a b', expect: 'notfound' },
        { key: 'tab\tkey', expect: 'notfound' },
        { key: 'empty', expect: { value: '' } },
        { key: 'nul', expect: { value: 'ab' } },
      ],
      sequence: [],
    },
    {
      title: 'key_format and domain',
      file: `memcache = ${mc.inet}\nmax_try = 1\nkey_format = pfx:%s\ndomain = example.com\n`,
      lookups: [
        { key: 'u@example.com', expect: { value: 'pfx-value' } },
        { key: 'U@Example.COM', expect: { value: 'pfx-value' } },
        { key: 'u@other.com', expect: 'notfound' },
        { key: 'hit', expect: 'notfound' },
      ],
    },
    {
      title: 'the UNIX socket endpoint',
      file: `memcache = ${mc.unix}\nmax_try = 1\n`,
      writable: true,
      writes: [{ op: 'update', key: 'unix-only', value: 'via-socket', expect: 0 }],
      afterWrites: [{ key: 'unix-only', expect: { value: 'via-socket' } }],
    },
    {
      title: 'texthash backup: misses are answered by the backup, first/next go to it',
      file: `memcache = ${mc.inet}\nmax_try = 1\nbackup = texthash:${texthash}\n`,
      lookups: [
        { key: 'bk@example.com', expect: { value: 'backup-value' } },
        { key: 'both@example.com', expect: { value: 'from-backup' } },
        { key: 'hit', expect: { value: 'hello' } },
        { key: 'nowhere', expect: 'notfound' },
      ],
      sequence: [
        ['bk@example.com', 'backup-value'],
        ['both@example.com', 'from-backup'],
        ['hit', 'not-this-one'],
      ],
    },
    {
      title: 'memcache down with a backup: the backup answers, never "try again"',
      file: `memcache = ${DEAD}\nbackup = texthash:${texthash}\n`,
      lookups: [
        { key: 'bk@example.com', expect: { value: 'backup-value' } },
        { key: 'nowhere', expect: 'notfound' },
      ],
    },
    {
      title: 'memcache down without a backup: RETRY, never "not found"',
      file: `memcache = ${DEAD}\n`,
      writable: true,
      lookups: [{ key: 'hit', expect: { error: DICT_ERR.RETRY } }],
      writes: [
        { op: 'update', key: 'k', value: 'v', expect: -1 },
        { op: 'delete', key: 'k', expect: -1 },
      ],
    },
    {
      title: 'writable without a backup: set, get, delete',
      file: plain,
      writable: true,
      writes: [
        { op: 'update', key: 'W1', value: 'one', expect: 0 },
        { op: 'update', key: 'w2', value: 'two', expect: 0 },
        { op: 'delete', key: 'w2', expect: 0 },
        { op: 'delete', key: 'w2', expect: 1 },
        { op: 'update', key: 'a b', value: 'x', expect: 1 },
        { op: 'delete', key: 'a b', expect: 1 },
        { op: 'update', key: 'big', value: 'x'.repeat(10241), expect: 1 },
      ],
      afterWrites: [
        { key: 'w1', expect: { value: 'one' } },
        { key: 'w2', expect: 'notfound' },
        { key: 'big', expect: 'notfound' },
      ],
    },
    {
      title: 'writable with an lmdb backup: both are written, the backup status wins',
      file: () => `memcache = ${mc.inet}\nmax_try = 1\nbackup = lmdb:${lmdbDir}/bk${Math.random().toString(36).slice(2)}\n`,
      writable: true,
      writes: [
        { op: 'update', key: 'L1', value: 'lmdb-one', expect: 0 },
        { op: 'delete', key: 'never-there', expect: 1 },
      ],
      afterWrites: [{ key: 'l1', expect: { value: 'lmdb-one' } }],
    },
    { title: 'bad transport', file: 'memcache = tcp:127.0.0.1:5\n', openError: 'invalid transport name: tcp in service: tcp:127.0.0.1:5' },
    { title: 'max_try below 1', file: 'max_try = 0\n', openError: '{path}: invalid max_try parameter value 0 < 1' },
    { title: 'bad ttl', file: 'ttl = 1h\n', openError: '{path}: bad numerical configuration: ttl = 1h' },
    { title: 'bad key_format', file: 'key_format = %x\n', openError: 'db_common_parse: {path}: Invalid query template: %x' },
    { title: 'missing parameter file', name: '/nonexistent/mc.cf', openError: 'open /nonexistent/mc.cf: No such file or directory' },
    { title: 'backup of an unknown type', file: 'backup = nosuch:x\n', openError: 'unsupported dictionary type: nosuch' },
  ];
  runConformance('memcache', cases, { randomKeys: 40 });

  describe('memcache backup semantics and writes (real memcached)', () => {
    it('a backup hit is stored in memcache under the formatted key with flags and ttl', async () => {
      const t = await open(`memcache = ${mc.inet}\nkey_format = pfx:%s\nflags = 5\nttl = 120\nbackup = texthash:${texthash}\n`);
      assert.equal(await mc.get('pfx:bk@example.com'), undefined);
      assert.deepEqual(await t.lookup('BK@example.com', 0), { found: true, value: 'backup-value' });
      assert.equal(await mc.get('pfx:bk@example.com'), 'backup-value');
      const meta = await mc.raw('mg pfx:bk@example.com f t\r\n');
      assert.match(meta, /^HD f5 t1[12]\d\r\n/, meta);
      // memcache now answers first, even when the backup changes its mind
      await mc.set('pfx:bk@example.com', 'cached');
      assert.deepEqual(await t.lookup('bk@example.com', 0), { found: true, value: 'cached' });
      await t.close?.();
    });

    it('an update goes to memcache and the backup; the backup key is the unformatted one', async () => {
      const db = `lmdb:${lmdbDir}/upd`;
      const t = await open(`memcache = ${mc.inet}\nkey_format = k-%s\nbackup = ${db}\n`, { writable: true });
      assert.deepEqual(await t.update!('Up@Example.com', 'v1', 0), { status: 0, error: 0 });
      assert.equal(await mc.get('k-up@example.com'), 'v1');
      const b = await openTable(openOptions('lmdb', `${lmdbDir}/upd`, { fold: 'ascii' }));
      assert.deepEqual(await b.lookup('up@example.com', 0), { found: true, value: 'v1' });
      await b.close?.();
      assert.deepEqual(await t.delete!('up@example.com', 0), { status: 0, error: 0 });
      assert.equal(await mc.get('k-up@example.com'), undefined);
      await t.close?.();
    });

    it('updates with a key that cannot be used warn as Postfix does', async () => {
      const warnings: string[] = [];
      const t = await open(`memcache = ${mc.inet}\ndomain = example.com\n`, { writable: true }, warnings);
      const name = (t as { name: string }).name;
      assert.deepEqual(await t.update!('a b@example.com', 'x', 0), { status: 1, error: 0 });
      assert.deepEqual(await t.update!('x@other.com', 'x', 0), { status: 1, error: 0 });
      assert.deepEqual(await t.update!('', 'x', 0), { status: 1, error: 0 });
      assert.deepEqual(await t.update!('ok@example.com', 'y'.repeat(10241), 0), { status: 1, error: 0 });
      assert.deepEqual(warnings, [
        `${name}: skipping update for name "a b@example.com": name contains space`,
        `${name}: skipping update for name "x@other.com": domain mismatch`,
        `${name}: skipping update for name "": empty lookup key`,
        `database memcache:${name}: data for key ok@example.com is too long (data_size_limit=10240) -- not stored`,
      ]);
      await t.close?.();
    });

    it('first/next without a backup: the warning postmap -s logs, nothing listed', async () => {
      const cf = writeFile('noseq.cf', `memcache = ${mc.inet}\n`);
      const theirs = await runPostmap('ascii', ['-s', `memcache:${cf}`]);
      const warnings: string[] = [];
      const t = await openTable(openOptions('memcache', cf, { fold: 'ascii' }, warnings));
      assert.deepEqual(await t.sequence!(0, 0), { found: false, error: DICT_ERR.NONE });
      assert.deepEqual(warnings, theirs.warnings);
      assert.deepEqual(warnings, [`database memcache:${cf}: first/next support requires backup database`]);
      assert.equal(theirs.stdout, '');
      await t.close?.();
    });

    it('the main.cf prefix form', async () => {
      const params: Record<string, string> = { mcx_memcache: mc.inet, mcx_key_format: 'pfx:%s' };
      const t = await openTable(openOptions('memcache', 'mcx', { fold: 'ascii', param: (n) => params[n] }));
      assert.deepEqual(await t.lookup('u@example.com', 0), { found: true, value: 'pfx-value' });
      await t.close?.();
      const bad = { mcy_max_try: 'many' } as Record<string, string>;
      await assert.rejects(openTable(openOptions('memcache', 'mcy', { param: (n) => bad[n] })), /^TableOpenError: bad numerical configuration: mcy_max_try = many$/);
    });

    it('concurrent lookups on one table each get their own answer', async () => {
      const t = await open(`memcache = ${mc.inet}\n`);
      for (let i = 0; i < 30; i++) await mc.set(`c${i}`, `value-${i}-${'z'.repeat(i * 50)}`);
      const res = await Promise.all(Array.from({ length: 300 }, (_, n) => t.lookup(`c${n % 30}`, 0)));
      res.forEach((r, n) => assert.deepEqual(r, { found: true, value: `value-${n % 30}-${'z'.repeat((n % 30) * 50)}` }));
      await t.close?.();
    });

    it('after memcached restarts the table reconnects by itself', async () => {
      const t = await open(`memcache = ${mc.inet}\n`);
      assert.deepEqual(await t.lookup('hit', 0), { found: true, value: 'hello' });
      await mc.halt();
      assert.deepEqual(await t.lookup('hit', 0), { found: false, error: DICT_ERR.RETRY });
      await mc.start();
      await mc.set('hit', 'hello');
      assert.deepEqual(await t.lookup('hit', 0), { found: true, value: 'hello' });
      await t.close?.();
      for (const [k, v] of SEED) await mc.set(k, v);
    });
  });

  // ---- differential against the real postmap ----
  const lmdbSrc = path.join(scratch, 'pm-backup');
  fs.writeFileSync(lmdbSrc, 'lm@example.com lmdb-value\nLmUpper@Example.com upper-in-lmdb\n');
  if (!skipPostmap) {
    fs.writeFileSync(path.join(scratch, 'main.cf'), '');
    const r = spawnSync('postmap', ['-c', scratch, `lmdb:${lmdbSrc}`]);
    assert.equal(r.status, 0, r.stderr.toString());
  }
  const KEYS = [
    'hit', 'HIT', 'miss', 'a b', 'u@example.com', 'U@Example.COM', 'u@other.com', 'bk@example.com', 'Both@Example.com',
    'lm@example.com', 'lmupper@example.com', 'six', 'empty2', 'nul', '@example.com', 'user@', 'x@a.b.example.com',
  ];
  const scenarios: DiffScenario[] = [
    { title: 'plain', file: `memcache = ${mc.inet}\n`, keys: KEYS },
    { title: 'key_format pfx:%s', file: `memcache = ${mc.inet}\nkey_format = pfx:%s\n`, keys: KEYS },
    { title: 'key_format %u/%d/%2 (suppressed without a domain)', file: `memcache = ${mc.inet}\nkey_format = %u-%d-%2\n`, keys: KEYS },
    { title: 'domain filter', file: `memcache = ${mc.inet}\nkey_format = pfx:%s\ndomain = example.com other.com\n`, keys: KEYS },
    { title: 'texthash backup', file: `memcache = ${mc.inet}\nbackup = texthash:${texthash}\nttl = 60\n`, keys: KEYS, list: true },
    { title: 'lmdb backup', file: `memcache = ${mc.inet}\nkey_format = lm:%s\nbackup = lmdb:${lmdbSrc}\n`, keys: KEYS, list: true },
    { title: 'data_size_limit = 5 (a 6-byte value is a bad reply)', file: `memcache = ${mc.inet}\ndata_size_limit = 5\nmax_try = 1\n`, keys: ['hit', 'six', 'miss'] },
    { title: 'line_size_limit = 12 (VALUE lines too long)', file: `memcache = ${mc.inet}\nline_size_limit = 12\nmax_try = 1\n`, keys: ['hit', 'six', 'miss'] },
    { title: 'unix socket', file: `memcache = ${mc.unix}\n`, keys: ['hit', 'miss'] },
    { title: 'server down, no backup', file: `memcache = ${DEAD}\n`, keys: ['hit', 'a b', ''] },
    { title: 'server down, texthash backup', file: `memcache = ${DEAD}\nbackup = texthash:${texthash}\n`, keys: KEYS },
    { title: 'bad max_try', file: `max_try = 0\n`, keys: ['hit'] },
    { title: 'bad endpoint', file: `memcache = foo:bar\n`, keys: ['hit'] },
  ];
  runDifferential('memcache', scenarios);

  // ---- a scripted server for what memcached never sends ----
  describe('memcache malformed replies (scripted server)', () => {
    const cases: Array<{ title: string; reply: (line: string) => string | null; cf?: string; want: unknown; warnings: (n: string) => string[]; connections?: number }> = [
      {
        title: 'an unknown reply: two tries on two connections, the warning on the second, RETRY',
        reply: () => 'HUH\r\n',
        want: { found: false, error: DICT_ERR.RETRY },
        warnings: (n) => [`${n}: unexpected memcache server reply: HUH`],
        connections: 2,
      },
      {
        title: 'a reply line is cut to 30 bytes in the warning',
        reply: () => `SERVER_ERROR ${'x'.repeat(50)}\r\n`,
        want: { found: false, error: DICT_ERR.RETRY },
        warnings: (n) => [`${n}: unexpected memcache server reply: SERVER_ERROR ${'x'.repeat(17)}`],
      },
      {
        title: 'a missing END after the value: the value counts, the connection is dropped',
        reply: () => 'VALUE k 0 3\r\nabc\r\nNOPE\r\n',
        want: { found: true, value: 'abc' },
        warnings: () => [],
      },
      {
        title: 'bare LF line ends are accepted',
        reply: () => 'VALUE k 0 3\nabc\r\nEND\n',
        want: { found: true, value: 'abc' },
        warnings: () => [],
      },
      {
        title: 'a data block without its CRLF',
        reply: () => 'VALUE k 0 3\r\nabcd\r\nEND\r\n',
        want: { found: false, error: DICT_ERR.RETRY },
        warnings: (n) => [`${n}: EOF receiving memcache server reply`],
      },
      {
        title: 'an over-long value',
        cf: 'data_size_limit = 2\n',
        reply: () => 'VALUE k 0 3\r\nabc\r\nEND\r\n',
        want: { found: false, error: DICT_ERR.RETRY },
        warnings: (n) => [`${n}: unexpected memcache server reply: VALUE k 0 3`],
      },
      {
        title: 'an over-long line',
        cf: 'line_size_limit = 4\n',
        reply: () => 'ENDX\r\n',
        want: { found: false, error: DICT_ERR.RETRY },
        warnings: (n) => [`database memcache:${n}: I/O error`],
      },
      {
        title: 'a line exactly at the limit (CR as the last byte allowed)',
        cf: 'line_size_limit = 4\n',
        reply: () => 'END\r\n',
        want: { found: false, error: DICT_ERR.NONE },
        warnings: () => [],
      },
      {
        title: 'the server hangs up at once',
        reply: () => null,
        want: { found: false, error: DICT_ERR.RETRY },
        warnings: (n) => [`database memcache:${n}: I/O error`],
      },
      {
        title: 'the server does not answer: time limit',
        cf: 'timeout = 1\n',
        reply: () => '',
        want: { found: false, error: DICT_ERR.RETRY },
        warnings: (n) => [`database memcache:${n}: I/O error: Connection timed out`],
      },
    ];
    for (const c of cases) {
      it(c.title, async () => {
        const fake = await startFakeMemcache(c.reply);
        const warnings: string[] = [];
        try {
          const t = await open(`memcache = ${fake.inet}\n${c.cf ?? ''}`, {}, warnings);
          assert.deepEqual(await t.lookup('k', 0), c.want);
          assert.deepEqual(warnings, c.warnings(t.name));
          if (c.connections !== undefined) assert.equal(fake.connections, c.connections);
          assert.ok(fake.lines.every((l) => l === 'get k'), JSON.stringify(fake.lines));
          await t.close?.();
        } finally {
          await fake.close();
        }
      });
    }

    it('set and delete replies: update failed / delete failed warnings, NOT_FOUND is "not deleted"', async () => {
      const replies: Record<string, string> = { set: 'NOT_STORED\r\n', delete: 'NOT_FOUND\r\n' };
      const fake = await startFakeMemcache((line) => (line === '<data>' ? replies.set! : line.startsWith('delete') ? replies.delete! : 'END\r\n'));
      const warnings: string[] = [];
      try {
        const t = await open(`memcache = ${fake.inet}\nflags = 7\nttl = 99\n`, { writable: true }, warnings);
        assert.deepEqual(await t.update!('K', 'val', 0), { status: -1, error: DICT_ERR.RETRY });
        assert.deepEqual(await t.delete!('K', 0), { status: 1, error: 0 });
        replies.delete = 'ERROR\r\n';
        assert.deepEqual(await t.delete!('K', 0), { status: -1, error: DICT_ERR.RETRY });
        assert.deepEqual(warnings, [`database memcache:${t.name}: update failed: NOT_STORED`, `database memcache:${t.name}: delete failed: ERROR`]);
        assert.deepEqual(fake.lines.slice(0, 2), ['set k 7 99 3', 'val']);
        await t.close?.();
      } finally {
        await fake.close();
      }
    });
  });
} else {
  describe('memcache against memcached', { skip }, () => {
    it('needs memcached', () => undefined);
  });
}
