/**
 * mysql: and pgsql: tables against the real Postfix 3.7.11: for each .cf
 * file, `postmap -q - TYPE:CF` and our table, on the same throwaway server,
 * must give the same answer for every key (value, not found, or RETRY,
 * which postmap reports as a query error).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DICT_ERR, type Bytes } from '../../src/tables/index.js';
import { runConformance, type Expect } from '../tables/conformance.js';
import { DICT_FLAG } from '../../src/protocol/flags.js';
import { runPostmap, skipPostmap, type DiffMode } from '../support/postmap.js';
import { KEYS, credentials, hostLines, loadData, openOurs, writeCf, type Hosts } from './fixtures.js';
import { mariadbSkipReason, pgSkipReason, startMariadb, startPostgres, type DbServer } from './servers.js';

const QUERY_ERROR = /^table [^ ]+: query error(: (.*))?$/;

/** postmap's answers for the keys: batch first; after a query error (postmap exits), key by key. */
async function theirs(mode: DiffMode, spec: string, keys: Bytes[]): Promise<Map<Bytes, Expect>> {
  const res = new Map<Bytes, Expect>();
  const parse = (key: Bytes, stdout: Bytes): Expect => (stdout.startsWith(key + '\t') ? { value: stdout.slice(key.length + 1).replace(/\n$/, '') } : 'notfound');
  const batch = await runPostmap(mode, ['-q', '-', spec], keys.map((k) => k + '\n').join(''));
  if (batch.fatal === undefined) {
    const lines = batch.stdout.split('\n');
    lines.pop();
    let li = 0;
    for (const key of keys) res.set(key, li < lines.length && lines[li]!.startsWith(key + '\t') ? parse(key, lines[li++]! + '\n') : 'notfound');
    assert.equal(li, lines.length, `unparsed postmap output: ${batch.stdout}`);
    return res;
  }
  if (!QUERY_ERROR.test(batch.fatal)) throw new Error(`postmap failed: ${batch.fatal}`);
  for (const key of keys) {
    const r = await runPostmap(mode, ['-q', '-', spec], key + '\n');
    if (r.fatal !== undefined) {
      // postmap adds the errno text for a RETRY, none for a CONFIG error
      const m = QUERY_ERROR.exec(r.fatal);
      assert.ok(m, r.fatal);
      res.set(key, { error: m[2] === undefined ? DICT_ERR.CONFIG : DICT_ERR.RETRY });
    } else res.set(key, parse(key, r.stdout));
  }
  return res;
}

interface Case {
  title: string;
  /** .cf text after the credentials; `{hosts}` picks the host line (default inet) */
  cf: string;
  hosts?: keyof Hosts;
  keys?: Bytes[];
  modes?: ('ascii' | 'utf8')[];
  only?: 'mysql' | 'pgsql';
}

const PLAIN = "query = SELECT dest FROM aliases WHERE mailbox='%s'\n";
const CASES: Case[] = [
  { title: 'plain query', cf: PLAIN, modes: ['ascii', 'utf8'] },
  { title: 'plain query over the UNIX socket', cf: PLAIN, hosts: 'unix' },
  { title: 'plain query, first host dead', cf: PLAIN, hosts: 'failover', keys: ['someone@example.com', 'nobody@example.com'] },
  { title: 'plain query through a URI', cf: PLAIN, hosts: 'uri', only: 'pgsql', keys: ['someone@example.com', "o'neil@example.com"] },
  { title: 'two columns, NULLs and empty values', cf: "query = SELECT dest, extra FROM aliases WHERE mailbox='%s'\n" },
  { title: 'every template specifier', cf: "query = SELECT '%s|%u|%d|%1|%2|%S|%U|%D|%%'\n", modes: ['ascii', 'utf8'] },
  { title: '%u and %d', cf: "query = SELECT dest FROM aliases WHERE mailbox='%u@%d'\n" },
  { title: '%1 and %2 select labels', cf: "query = SELECT dest FROM aliases WHERE mailbox=concat('k@', '%2', '.', '%1')\n", only: 'mysql' },
  { title: 'domain filter', cf: `${PLAIN}domain = example.com, !bad.example.com\n` },
  { title: 'result_format <%u>', cf: `${PLAIN}result_format = <%u>\n` },
  { title: 'result_format <%d>', cf: `${PLAIN}result_format = <%d>\n` },
  { title: 'result_format with key parts', cf: `${PLAIN}result_format = smtp:[%d] key=%S user=%U dom=%D\n` },
  { title: 'expansion_limit', cf: `${PLAIN}expansion_limit = 2\n` },
  { title: 'LIKE wildcards in keys are live', cf: "query = SELECT dest FROM aliases WHERE mailbox LIKE '%s'\n" },
  { title: 'legacy query form', cf: "table = aliases\nselect_field = dest\nwhere_field = mailbox\nadditional_conditions = AND dest LIKE 'm%%'\n" },
  { title: 'SQL error is a temporary error', cf: "query = SELEC dest FROM aliases WHERE mailbox='%s'\n", keys: ['someone@example.com', 'k'] },
  { title: 'missing relation', cf: "query = SELECT dest FROM nosuch WHERE mailbox='%s'\n", keys: ['someone@example.com'] },
  { title: 'stored procedure', cf: "query = CALL lk('%s')\n", only: 'mysql' },
  { title: 'procedure with two result sets', cf: "query = CALL two('%s')\n", only: 'mysql', keys: ['someone@example.com'] },
  { title: 'procedure without a result set', cf: "query = CALL none('%s')\n", only: 'mysql', keys: ['someone@example.com'] },
  { title: 'procedure without a result set, not required', cf: "query = CALL none('%s')\nrequire_result_set = no\n", only: 'mysql', keys: ['someone@example.com'] },
  { title: 'NO_BACKSLASH_ESCAPES from an option file', cf: `${PLAIN}option_file = {dir}/opt.cnf\n`, only: 'mysql' },
  { title: 'select_function', cf: 'select_function = lk\n', only: 'pgsql' },
  { title: 'several statements: the last result counts', cf: "query = SELECT 'first'; SELECT dest FROM aliases WHERE mailbox='%s'\n", only: 'pgsql' },
  { title: 'non-text columns', cf: "query = SELECT 12, 1.5, NULL, 'x' WHERE '%s' <> ''\n", keys: ['a'] },
];

for (const kind of ['mysql', 'pgsql'] as const) {
  const skip = skipPostmap || (kind === 'mysql' ? mariadbSkipReason() : pgSkipReason());
  describe(`${kind}: tables vs postmap`, { skip, concurrency: 4 }, () => {
    let db: DbServer;
    let hosts: Hosts;
    let dir = '';
    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), `pmd-sqlcf-${kind}-`));
      fs.chmodSync(dir, 0o755);
      db = kind === 'mysql' ? await startMariadb() : await startPostgres();
      await loadData(db);
      hosts = await hostLines(db, dir);
      fs.writeFileSync(path.join(dir, 'opt.cnf'), "[client]\ninit-command = SET sql_mode='NO_BACKSLASH_ESCAPES'\n");
    });
    after(async () => {
      await db?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    // The shared conformance suite, on the real server (the .cf files are written once it runs).
    runConformance(kind, [
      {
        title: 'plain query',
        file: () => credentials(db, hosts.inet) + PLAIN,
        implFlags: DICT_FLAG.FIXED,
        warnings: [],
        lookups: [
          { key: 'k@example.com', expect: { value: 'kval' } },
          { key: 'K@EXAMPLE.com', expect: { value: 'kval' } },
          { key: "o'neil@example.com", expect: { value: 'quoted' } },
          { key: "x' OR '1'='1", expect: 'notfound' },
          { key: 'nobody@example.com', expect: 'notfound' },
        ],
        sequence: 'unsupported',
      },
      {
        title: 'no server listening: a temporary error, never "not found"',
        file: () => credentials(db, hosts.failover.split(/[ ,]+/)[0]!) + PLAIN,
        lookups: [{ key: 'k@example.com', expect: { error: DICT_ERR.RETRY } }],
      },
    ], { randomKeys: 30 });

    CASES.filter((c) => !c.only || c.only === kind).forEach((c, i) => {
      for (const mode of c.modes ?? ['ascii']) {
        it(`${c.title} [${mode}]`, async () => {
          const cf = writeCf(path.join(dir, `${i}-${mode}.cf`), credentials(db, hosts[c.hosts ?? 'inet']!) + c.cf.replaceAll('{dir}', dir));
          const keys = c.keys ?? KEYS;
          const want = await theirs(mode, `${kind}:${cf}`, keys);
          // A failed query takes the host out of service for retry_interval, in Postfix as here; postmap
          // was then asked key by key, each in a fresh process, so each key gets a fresh table (and pool) too.
          const fresh = [...want.values()].some((v) => typeof v === 'object' && 'error' in v);
          let ours = await openOurs(kind, cf, mode);
          try {
            for (const key of keys) {
              if (fresh) {
                await ours.table.close?.();
                ours = await openOurs(kind, cf, mode);
              }
              assert.deepEqual(await ours.lookup(key), want.get(key), `key ${JSON.stringify(key)}`);
            }
          } finally {
            await ours.table.close?.();
          }
        });
      }
    });
  });
}
