/**
 * Test data and .cf files for the mysql/pgsql tests: the same rows in both
 * servers, host lines for each way of reaching them, and a lookup helper
 * that opens our table the way postmap opens Postfix's.
 */
import fs from 'node:fs';
import path from 'node:path';
import '../../src/tables/index.js';
import { DICT_FLAG } from '../../src/protocol/flags.js';
import { openTable, type Bytes, type Table, type TableOpenOptions } from '../../src/tables/index.js';
import { dictLookup, openOptions, outcome, type Expect } from '../tables/conformance.js';
import { freePort, type DbServer } from './servers.js';

/** Rows of `aliases(mailbox, dest, extra)`; null is SQL NULL. Byte strings (UTF-8 text as bytes). */
export const ALIASES: [Bytes, Bytes | null, Bytes | null][] = [
  ['someone@example.com', 'a@x.org', 'col2a'],
  ['someone@example.com', 'b@y.org', null],
  ['someone@example.com', '', 'col2c'],
  ["o'neil@example.com", 'quoted', 'q2'],
  ['back\\slash@example.com', 'bs', null],
  ['SomeOne2@example.com', 'mixed', null],
  ['k@%', 'pct', null],
  ['k_example.com', 'us', null],
  ['caf\xc3\xa9@example.com', 'cafe-utf8', null],
  ['fmt@example.com', 'plain', null],
  ['fmt@example.com', '@dom.org', null],
  ['fmt@example.com', 'user@dom.org', null],
  ['fmt@example.com', 'u2@', null],
  ['multi@example.com', 'm1', null],
  ['multi@example.com', 'm2', null],
  ['multi@example.com', 'm3', null],
  ['multi@example.com', 'm4', null],
  ['euro@example.com', '\xc3\xa9\xe2\x82\xac', null],
  ['latin@example.com', '\xc3\xa9t\xc3\xa9', null],
  ['dq"x@example.com', 'dq', null],
  ['k@example.com', 'kval', null],
  ['k@sub.example.com', 'sub', null],
  ['k@other.com', 'other', null],
  ['someone@mail.example.com', 'mail', null],
  ['nul@example.com', null, null],
];

/** Keys worth asking every table (byte strings). */
export const KEYS: Bytes[] = [
  'someone@example.com', 'SOMEONE@Example.COM', "o'neil@example.com", 'back\\slash@example.com', 'someone2@example.com',
  'k@%', 'k_example.com', 'k@example.co_', 'caf\xc3\xa9@example.com', 'caf\xe9@example.com', 'fmt@example.com',
  'multi@example.com', 'euro@example.com', 'latin@example.com', 'dq"x@example.com', 'k@example.com',
  'k@EXAMPLE.com', 'k', '@example.com', 'k@other.com', 'k@sub.example.com', 'plainkey', 'user@', 'a@b', 'x@a..b',
  'someone@mail.example.com', 'nul@example.com', "x' OR '1'='1", "x\\' OR 1=1 -- ", 'nobody@example.com',
];

function sqlString(s: Bytes | null, kind: 'mysql' | 'pgsql'): string {
  if (s === null) return 'NULL';
  const text = Buffer.from(s, 'latin1').toString('utf8');
  const q = text.replace(/'/g, "''");
  return kind === 'mysql' ? `'${q.replace(/\\/g, '\\\\')}'` : `'${q}'`;
}

/** Create the tables, procedures and functions the tests use. */
export async function loadData(db: DbServer): Promise<void> {
  const kind = db.kind;
  const text = kind === 'mysql' ? 'varchar(200)' : 'text';
  const rows = ALIASES.map((r) => `(${r.map((v) => sqlString(v, kind)).join(', ')})`).join(',\n');
  let sql = `CREATE TABLE aliases (mailbox ${text}, dest ${text}, extra ${text});\nINSERT INTO aliases VALUES\n${rows};\n`;
  sql += `CREATE TABLE big (k ${text}, v ${text});\n`;
  if (kind === 'mysql') {
    sql += `DELIMITER //
CREATE PROCEDURE lk(IN kk varchar(200)) BEGIN SELECT dest FROM aliases WHERE mailbox=kk; END//
CREATE PROCEDURE two(IN kk varchar(200)) BEGIN SELECT dest FROM aliases WHERE mailbox=kk; SELECT 'x'; END//
CREATE PROCEDURE none(IN kk varchar(200)) BEGIN DO 1; END//
DELIMITER ;
GRANT SELECT, EXECUTE ON ${db.db}.* TO '${db.user}'@'%';
`;
  } else {
    sql += `CREATE FUNCTION lk(text) RETURNS SETOF text AS $$ SELECT dest FROM aliases WHERE mailbox = $1 $$ LANGUAGE sql;
GRANT SELECT ON aliases, big TO ${db.user};
`;
  }
  await db.sql(sql);
}

export interface Hosts {
  inet: string;
  unix: string;
  /** a dead TCP port first, then the live one */
  failover: string;
  /** pgsql only */
  uri?: string;
}

/** Host lines reaching the server every way. For pgsql's UNIX host (port 5432 only) a directory with a symlinked socket. */
export async function hostLines(db: DbServer, scratch: string): Promise<Hosts> {
  const dead = await freePort();
  if (db.kind === 'mysql') {
    return { inet: `inet:127.0.0.1:${db.port}`, unix: `unix:${db.socket}`, failover: `inet:127.0.0.1:${dead}, inet:127.0.0.1:${db.port}` };
  }
  const dir = path.join(scratch, 'pgsock');
  fs.mkdirSync(dir, { recursive: true });
  const link = path.join(dir, '.s.PGSQL.5432');
  if (!fs.existsSync(link)) fs.symlinkSync(path.join(db.socket, `.s.PGSQL.${db.port}`), link);
  const uri = `postgresql://${db.user}:${encodeURIComponent(db.password)}@127.0.0.1:${db.port}/${db.db}`;
  return { inet: `inet:127.0.0.1:${db.port}`, unix: `unix:${dir}`, failover: `inet:127.0.0.1:${dead} inet:127.0.0.1:${db.port}`, uri };
}

/** The lines of a .cf file that reach `db` through `hosts`. */
export function credentials(db: DbServer, hosts: string): string {
  return `hosts = ${hosts}\nuser = ${db.user}\npassword = ${db.password}\ndbname = ${db.db}\n`;
}

/** Write a .cf file (mtime backdated: Postfix re-reads a file younger than a second). */
export function writeCf(file: string, text: string): string {
  fs.writeFileSync(file, Buffer.from(text, 'latin1'));
  fs.utimesSync(file, 1_000_000_000, 1_000_000_000);
  return file;
}

export interface OurTable {
  table: Table;
  opts: TableOpenOptions;
  warnings: string[];
  lookup(key: Bytes): Promise<Expect>;
}

/** Open our table as postmap opens Postfix's (FOLD_FIX; UTF-8 layer in utf8 mode). */
export async function openOurs(type: string, name: string, mode: 'ascii' | 'utf8' = 'ascii', params: Record<string, string> = {}): Promise<OurTable> {
  const warnings: string[] = [];
  const opts = openOptions(type, name, {
    fold: mode,
    openFlags: mode === 'utf8' ? DICT_FLAG.UTF8_ACTIVE : 0,
    param: (n) => params[n],
  }, warnings);
  const table = await openTable(opts);
  return { table, opts, warnings, lookup: async (key) => outcome(await dictLookup(table, key, opts)) };
}
