import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { DICT_ERR, unixOpener } from '../../../src/tables/index.js';
import { openOptions, runConformance } from '../conformance.js';
import { runDifferential } from '../../support/postmap.js';

// Fake databases and a fake getent(1) standing for the other NSS sources.
const dir = mkdtempSync(join(tmpdir(), 'unix-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const passwdFile = join(dir, 'passwd');
const groupFile = join(dir, 'group');
const getent = join(dir, 'getent');
writeFileSync(
  passwdFile,
  [
    'root:x:0:0:root:/root:/bin/bash',
    '# comment',
    '  ',
    'alice:x:1000:1000:Alice,,,:/home/alice:/bin/sh',
    'Bob:x:1001:1001::/home/bob:/bin/sh',
    'bad:x:notnum:1::/:/bin/sh',
    'alice:x:2000:2000:second:/:/bin/false',
    'odd:x:007:07:a:b:c:d',
    '+nis',
    'short:x:1:1',
  ].join('\n') + '\n',
);
writeFileSync(groupFile, 'root:x:0:\nadm:x:4:syslog,alice\nspaced:x:6: a,, b\n');
writeFileSync(
  getent,
  `#!/bin/sh
case "$1 $3" in
  "passwd carol") echo 'carol:x:3000:3000:NSS user:/home/carol:/bin/sh' ;;
  "passwd dave") echo 'Dave:x:3001:3001::/:/bin/sh' ;;
  "passwd 0") echo 'root:x:0:0:root:/root:/bin/bash' ;;
  "passwd slow") sleep 5 ;;
  "group staff") echo 'staff:x:50:carol' ;;
  *) exit 2 ;;
esac
`,
);
chmodSync(getent, 0o755);

const opener = unixOpener({ passwdFile, groupFile, getent, getentTimeoutMs: 300 });
const found = (value: string) => ({ value });

runConformance(
  'unix',
  [
    {
      title: 'passwd.byname',
      name: 'passwd.byname',
      implFlags: DICT_FLAG.FIXED,
      warnings: [],
      lookups: [
        { key: 'root', expect: found('root:x:0:0:root:/root:/bin/bash') },
        { key: 'ROOT', expect: found('root:x:0:0:root:/root:/bin/bash') },
        { key: 'alice', expect: found('alice:x:1000:1000:Alice,,,:/home/alice:/bin/sh') },
        { key: 'odd', expect: found('odd:x:7:7:a:b:c:d') },
        { key: 'Bob', expect: 'notfound' },
        { key: 'bad', expect: 'notfound' },
        { key: 'short', expect: 'notfound' },
        { key: '+nis', expect: 'notfound' },
        { key: 'carol', expect: found('carol:x:3000:3000:NSS user:/home/carol:/bin/sh') },
        { key: 'dave', expect: 'notfound' },
        { key: '', expect: 'notfound' },
      ],
      sequence: 'unsupported',
    },
    {
      title: 'passwd.byname without folding',
      name: 'passwd.byname',
      fold: 'none',
      lookups: [
        { key: 'Bob', expect: found('Bob:x:1001:1001::/home/bob:/bin/sh') },
        { key: 'bob', expect: 'notfound' },
      ],
    },
    {
      title: 'group.byname',
      name: 'group.byname',
      lookups: [
        { key: 'root', expect: found('root:x:0:') },
        { key: 'adm', expect: found('adm:x:4:syslog,alice') },
        { key: 'spaced', expect: found('spaced:x:6:a,b') },
        { key: 'staff', expect: found('staff:x:50:carol') },
        { key: 'nogroup', expect: 'notfound' },
      ],
    },
    { title: 'unknown table', name: 'shadow.byname', openError: 'unknown table: unix:shadow.byname' },
    { title: 'writable open', name: 'passwd.byname', writable: true, openError: 'unix:passwd.byname map requires O_RDONLY access mode' },
  ],
  { opener, randomKeys: 20 },
);

test('unix: a getent timeout is a temporary error', async () => {
  const warnings: string[] = [];
  const table = await opener(openOptions('unix', 'passwd.byname', {}, warnings));
  assert.deepEqual(await table.lookup('slow', 0), { found: false, error: DICT_ERR.RETRY });
  assert.equal(warnings.length, 1);
});

test('unix: files are re-read when they change', async () => {
  const table = await opener(openOptions('unix', 'group.byname'));
  assert.deepEqual(await table.lookup('new', 0), { found: false, error: DICT_ERR.NONE });
  writeFileSync(groupFile, 'root:x:0:\nnew:x:7:a\n');
  try {
    assert.deepEqual(await table.lookup('new', 0), { found: true, value: 'new:x:7:a' });
  } finally {
    writeFileSync(groupFile, 'root:x:0:\nadm:x:4:syslog,alice\nspaced:x:6: a,, b\n');
  }
});

test('unix: a first miss without a working database is a temporary error', async () => {
  const broken = unixOpener({ passwdFile: join(dir, 'missing'), getent: null });
  const warnings: string[] = [];
  const table = await broken(openOptions('unix', 'passwd.byname', {}, warnings));
  assert.deepEqual(await table.lookup('nobody', 0), { found: false, error: DICT_ERR.RETRY });
  assert.deepEqual(warnings, ['cannot access UNIX password database: No such file or directory']);
  assert.deepEqual(await table.lookup('nobody', 0), { found: false, error: DICT_ERR.NONE });
});

// Real system databases against real postmap.
const KEYS = ['root', 'ROOT', 'Root', 'daemon', 'bin', 'adm', 'nogroup', 'nobody', 'nosuchuser', '0', ''];
runDifferential('unix', [
  { title: 'passwd.byname', name: 'passwd.byname', keys: KEYS, list: true },
  { title: 'group.byname', name: 'group.byname', keys: KEYS, list: true },
  { title: 'unknown table', name: 'foo', keys: ['root'], modes: ['utf8'] },
]);
