#!/usr/bin/env node
/**
 * Build an SQLite database from an SQL script with the project's native
 * addon (the system libsqlite3): `node scripts/sqlite-db.mjs SCRIPT.sql OUT.db`.
 * Does nothing when OUT.db is newer than the script; otherwise the database
 * is built beside OUT.db and renamed over it, so a running proxymapd sees
 * either the old file or the complete new one.
 */
import { readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [script, out] = process.argv.slice(2);
if (!script || !out) {
  console.error('usage: node scripts/sqlite-db.mjs SCRIPT.sql OUT.db');
  process.exit(2);
}

const mtime = (p) => {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return undefined;
  }
};
const built = mtime(out);
if (built !== undefined && built >= mtime(script)) process.exit(0);

const addon = join(dirname(fileURLToPath(import.meta.url)), '..', 'build', 'Release', 'proxymapd_native.node');
const native = createRequire(import.meta.url)(addon);
const tmp = `${out}.tmp${process.pid}`;
rmSync(tmp, { force: true });
const err = native.sqliteExec(tmp, readFileSync(script, 'latin1'));
if (err) {
  rmSync(tmp, { force: true });
  console.error(`${script}: ${err.error}`);
  process.exit(1);
}
renameSync(tmp, out);
console.error(`built ${out} from ${script}`);
