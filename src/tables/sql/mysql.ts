/**
 * mysql: tables (Postfix src/global/dict_mysql.c, mysql_table(5)).
 *
 *   mysql:/etc/postfix/x.cf    parameters from the file
 *   mysql:prefix               parameters prefix_hosts, prefix_query, ... from main.cf
 *
 * Parameters: hosts (default localhost; `unix:/path`, `inet:host[:port]`,
 * `host[:port]`; `localhost` means the default UNIX socket), user,
 * password, dbname (required), query (else the legacy form),
 * result_format, domain, expansion_limit, option_file, option_group
 * (default `client`), require_result_set, tls_cert_file, tls_key_file,
 * tls_CAfile, tls_CApath, tls_ciphers, tls_verify_cert, and from Postfix
 * 3.9 charset, retry_interval and idle_interval; as a proxymapd extension
 * update_query, delete_query and sequence_query (dbcommon/writes.ts:
 * writable through proxywrite only with update_query or delete_query).
 *
 * Connections come from a pool shared by every mysql table that connects
 * the same way (hosts, credentials, database, client settings), bounded by
 * main.cf's proxymapd_sql_max_connections; each table keeps its own host
 * states (see sql/pool.ts for the failover rules and the time budget).
 */
import { TableOpenError, type Table, type TableOpenOptions } from '../core/table.js';
import { SqlWrites } from '../dbcommon/writes.js';
import { buildLegacyQuery, finishSqlSettings } from '../dbcommon/common.js';
import { MysqlConfigError, MysqlDriver, mysqlEscape, mysqlExec, mysqlQuery, mysqlRows, parseMysqlHosts, type MyConn, type MyTarget, type MysqlSettings } from './mysql-driver.js';
import { NetSqlTable, poolKey, type NetSqlBackend } from './netsql.js';
import { SqlPool, poolLabel, poolSettings, sharedPool } from '../dbcommon/pool.js';
import type { TableType } from '../core/registry.js';
import { DICT_FLAG } from '../../protocol/flags.js';
import { warmUpSql } from './warmup.js';

export async function openMysql(opts: TableOpenOptions): Promise<Table> {
  const { cf, writes } = await SqlWrites.open(opts);
  // the order in which Postfix reads (and so complains about) parameters
  const user = cf.getStr('user', '', 0, 0);
  const password = cf.getStr('password', '', 0, 0);
  const dbname = cf.getStr('dbname', '', 1, 0);
  const resultFormat = cf.getStr('result_format', '%s', 1, 0);
  const optionFile = cf.getStr('option_file', null, 0, 0) ?? undefined;
  const optionGroup = cf.getStr('option_group', 'client', 0, 0);
  const tls = {
    keyFile: cf.getStr('tls_key_file', null, 0, 0) ?? undefined,
    certFile: cf.getStr('tls_cert_file', null, 0, 0) ?? undefined,
    caFile: cf.getStr('tls_CAfile', null, 0, 0) ?? undefined,
    caPath: cf.getStr('tls_CApath', null, 0, 0) ?? undefined,
    ciphers: cf.getStr('tls_ciphers', null, 0, 0) ?? undefined,
    verifyCert: cf.getBool('tls_verify_cert', undefined),
  };
  const requireResultSet = cf.getBool('require_result_set', true);
  const expansionLimit = cf.getInt('expansion_limit', 0, 0, 0);
  const query = cf.getStr('query', null, 0, 0) ?? buildLegacyQuery(cf);
  const settings = await finishSqlSettings(cf, opts, query, resultFormat, expansionLimit);
  try {
    // Postfix 3.9+ parameters
    const charset = cf.getStr('charset', null, 0, 0) ?? undefined;
    const retryInterval = cf.getInt('retry_interval', 60, 1, 0);
    const idleInterval = cf.getInt('idle_interval', 60, 1, 0);
    let hosts;
    try {
      hosts = parseMysqlHosts(cf.getStr('hosts', '', 0, 0));
    } catch (e) {
      if (e instanceof MysqlConfigError) throw new TableOpenError(e.message);
      throw e;
    }
    const ps = poolSettings(opts.param, opts.warn);
    const my: MysqlSettings = { user, password, dbname, charset, optionFile, optionGroup, tls };
    // one pool per way of connecting: every table on the same database shares it
    const key = poolKey('mysql', { ...my, tls: JSON.stringify(tls), hosts: hosts.map((h) => h.label), idleInterval, ...ps });
    const shared = sharedPool(key, () => {
      const driver = new MysqlDriver(my);
      return new SqlPool<MyTarget, MyConn>(hosts, driver, {
        maxConnections: ps.maxConnections,
        retryInterval,
        idleInterval,
        connectTimeoutMs: Math.min(driver.connectTimeoutMs, ps.timeoutMs),
        pipeline: ps.pipeline,
        label: poolLabel('mysql', hosts.map((h) => h.label), { dbname, user }),
      });
    });
    const pool = shared.pool.view(retryInterval);
    const release = shared.release;
    const label = `${opts.type}:${opts.name}`;
    const backend: NetSqlBackend<MyTarget, MyConn> = {
      quoter: (conn) => (raw) => mysqlEscape(raw, conn),
      quoteFailure: (host) => ({ kind: 'host-error', message: `${label}: cannot escape the key for ${host.label}` }),
      run: (conn, _host, q) => mysqlQuery(conn, q, requireResultSet, label),
      exec: (conn, _host, q) => mysqlExec(conn, q, label),
      rows: (conn, _host, q) => mysqlRows(conn, q, label),
    };
    return new NetSqlTable({
      type: opts.type, name: opts.name, cf, settings, pool, releasePool: release, backend,
      timeoutMs: ps.timeoutMs, lookupName: 'dict_mysql_lookup', writes, warn: opts.warn,
    });
  } catch (e) {
    await settings.domain?.close();
    throw e;
  }
}

export const mysqlType: TableType = { name: 'mysql', open: openMysql, implFlags: DICT_FLAG.FIXED, writable: true, warmUp: () => warmUpSql('mysql', openMysql) };
