/**
 * Start-up warm-up of a mysql/pgsql server (when such tables are
 * approved): the client library is loaded (it is loaded on first use
 * otherwise, which cost the first lookup 50-80 ms), and the open path is
 * run (dbcommon/warmup.ts).
 */
import type { TableOpener } from '../core/table.js';
import { warmUpOpens } from '../dbcommon/warmup.js';
import { warmUpMysql } from './mysql-driver.js';
import { warmUpPgsql } from './pgsql-driver.js';

export async function warmUpSql(type: 'mysql' | 'pgsql', open: TableOpener): Promise<void> {
  if (type === 'mysql') warmUpMysql();
  else warmUpPgsql();
  await warmUpOpens(
    type,
    open,
    'hosts = inet:127.0.0.1:9 unix:/nonexistent/warm-up.sock\nuser = warm\npassword = up\ndbname = warm\n' +
      "query = SELECT v FROM t WHERE k='%s' AND d='%d' OR u='%u'\nresult_format = %s\n",
  );
}
