/**
 * Start-up warm-up of a mysql/pgsql server (when such tables are
 * approved): the client library is loaded (it is loaded on first use
 * otherwise, which cost the first lookup 50-80 ms), and the open path is
 * run: the first opens of a table ran the parameter-file parser, the
 * template compiler and the pool set-up in the interpreter, 1-3 ms each
 * against Postfix's 0.3 ms. A synthetic parameter file is opened and closed
 * a few times; nothing connects (connections are made by the first lookup).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
// the tables' index, not the bare registry: it registers the types
import type { TableOpener } from '../core/table.js';
import { warmUpMysql } from './mysql-driver.js';
import { warmUpPgsql } from './pgsql-driver.js';

const ROUNDS = 30;

export async function warmUpSql(type: 'mysql' | 'pgsql', open: TableOpener): Promise<void> {
  if (type === 'mysql') warmUpMysql();
  else warmUpPgsql();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxymapd-warm-'));
  try {
    const file = path.join(dir, `${type}.cf`);
    fs.writeFileSync(
      file,
      'hosts = inet:127.0.0.1:9 unix:/nonexistent/warm-up.sock\nuser = warm\npassword = up\ndbname = warm\n' +
        "query = SELECT v FROM t WHERE k='%s' AND d='%d' OR u='%u'\nresult_format = %s\n",
      { mode: 0o600 },
    );
    // Postfix (and the parameter-file reader) treat a file younger than a second as possibly still being written
    fs.utimesSync(file, 1_000_000_000, 1_000_000_000);
    for (let i = 0; i < ROUNDS; i++) {
      const t = await open({ type, name: file, openFlags: 0, fold: 'ascii', writable: false, param: () => undefined, warn: () => undefined });
      await t.close?.();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
