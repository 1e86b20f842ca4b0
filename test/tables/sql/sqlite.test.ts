/**
 * sqlite: through the shared conformance suite (the differential tests
 * against postmap, through a running proxymapd, are in test/sql/proxy.test.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { loadSqlite } from '../../../src/addon/sqlite.js';
import { DICT_FLAG } from '../../../src/protocol/flags.js';
import { runConformance } from '../conformance.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-sqlite-conf-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const DB = path.join(dir, 'aliases.db');

/** The database, made when the first case is written (the addon is needed). */
function db(): string {
  if (!fs.existsSync(DB)) {
    const err = loadSqlite().sqliteExec(
      DB,
      `CREATE TABLE aliases (mailbox text, dest text);
INSERT INTO aliases VALUES ('k@example.com', 'kval'), ('multi@example.com', 'm1'), ('multi@example.com', 'm2'),
('o''neil@example.com', 'quoted'), ('empty@example.com', ''), ('nul@example.com', NULL);`,
    );
    if (err) throw new Error(`${DB}: ${err.error}`);
  }
  return DB;
}

const QUERY = "query = SELECT dest FROM aliases WHERE mailbox='%s'\n";

runConformance('sqlite', [
  {
    title: 'plain query: values, several rows joined, quoting, empty and NULL values',
    file: () => `dbpath = ${db()}\n${QUERY}`,
    implFlags: DICT_FLAG.FIXED,
    warnings: [],
    lookups: [
      { key: 'k@example.com', expect: { value: 'kval' } },
      { key: 'K@Example.COM', expect: { value: 'kval' } },
      { key: 'multi@example.com', expect: { value: 'm1,m2' } },
      { key: "o'neil@example.com", expect: { value: 'quoted' } },
      { key: 'empty@example.com', expect: 'notfound' },
      { key: 'nul@example.com', expect: 'notfound' },
      { key: 'nobody@example.com', expect: 'notfound' },
    ],
    sequence: 'unsupported',
  },
  {
    title: 'result_format and domain',
    file: () => `dbpath = ${db()}\n${QUERY}result_format = <%s>\ndomain = example.com\n`,
    lookups: [
      { key: 'k@example.com', expect: { value: '<kval>' } },
      { key: 'k@other.org', expect: 'notfound' },
      { key: 'k', expect: 'notfound' },
    ],
  },
  {
    // (as Postfix's dict_sqlite; the server then serves a surrogate that answers every lookup with RETRY)
    title: 'a database that cannot be opened: the open fails with the library text',
    file: () => `dbpath = ${dir}/missing/none.db\n${QUERY}`,
    openError: `sqlite:{path}: open database ${dir}/missing/none.db: unable to open database file`,
  },
]);
