/**
 * pgsql: tables (Postfix src/global/dict_pgsql.c, pgsql_table(5)).
 *
 *   pgsql:/etc/postfix/x.cf    parameters from the file
 *   pgsql:prefix               parameters prefix_hosts, prefix_query, ... from main.cf
 *
 * Parameters: hosts (default localhost; `unix:/socket/dir` or `/socket/dir`
 * (port 5432), `inet:host[:port]`, `host[:port]`, or a `postgresql://` URI),
 * user, password, dbname (required unless every host is a URI), query,
 * else select_function (`SELECT fn('%s')`), else the legacy form;
 * result_format, domain, expansion_limit, and from Postfix 3.8/3.9
 * encoding, retry_interval and idle_interval; as a proxymapd extension
 * update_query, delete_query and sequence_query (dbcommon/writes.ts:
 * writable through proxywrite only with update_query or delete_query).
 *
 * Client encoding: Postfix 3.7 always uses LATIN1 (key bytes are Latin-1
 * characters to the server); 3.8+ uses the `encoding` parameter, default
 * UTF8. Here the default is 3.7's LATIN1 and an explicit `encoding` is
 * honoured, so files written for either version answer as that version does.
 *
 * Connections come from a pool shared by every pgsql table that connects
 * the same way (hosts, user, password, dbname, encoding), bounded by
 * main.cf's proxymapd_sql_max_connections; each table keeps its own host
 * states (see sql/pool.ts).
 */
import { TableOpenError, type Table, type TableOpenOptions } from '../core/table.js';
import { buildLegacyQuery, finishSqlSettings } from '../dbcommon/common.js';
import { NetSqlTable, QuoteError, poolKey, type NetSqlBackend } from './netsql.js';
import { PgsqlDriver, parsePgsqlHosts, pgCodec, pgsqlEscape, pgsqlExec, pgsqlQuery, pgsqlRows, type PgConn, type PgTarget } from './pgsql-driver.js';
import { SqlWrites } from '../dbcommon/writes.js';
import { SqlPool, poolLabel, poolSettings, sharedPool } from '../dbcommon/pool.js';
import type { TableType } from '../core/registry.js';
import { DICT_FLAG } from '../../protocol/flags.js';
import { warmUpSql } from './warmup.js';

/** Postfix 3.7's fixed client encoding, the default here. */
export const PGSQL_DEFAULT_ENCODING = 'LATIN1';

export async function openPgsql(opts: TableOpenOptions): Promise<Table> {
  const { cf, writes } = await SqlWrites.open(opts);
  const hostsText = cf.lookup('hosts') ?? '';
  const hosts = parsePgsqlHosts(hostsText);
  const user = cf.getStr('user', '', 0, 0);
  const password = cf.getStr('password', '', 0, 0);
  // Required unless every host is a URI (3.10+; 3.7 always requires it).
  const dbname = cf.getStr('dbname', '', hosts.every((h) => h.kind === 'uri') ? 0 : 1, 0);
  const resultFormat = cf.getStr('result_format', '%s', 1, 0);
  const expansionLimit = cf.getInt('expansion_limit', 0, 0, 0);
  let query = cf.getStr('query', null, 0, 0);
  if (query === null) {
    const fn = cf.getStr('select_function', null, 0, 0);
    query = fn !== null ? `SELECT ${fn}('%s')` : buildLegacyQuery(cf);
  }
  const settings = await finishSqlSettings(cf, opts, query, resultFormat, expansionLimit);
  try {
    const encoding = cf.getStr('encoding', PGSQL_DEFAULT_ENCODING, 1, 0);
    const retryInterval = cf.getInt('retry_interval', 60, 1, 0);
    const idleInterval = cf.getInt('idle_interval', 60, 1, 0);
    const codec = pgCodec(encoding);
    if (!codec) throw new TableOpenError(`${opts.type}:${opts.name}: unsupported client encoding: ${encoding}`);
    const ps = poolSettings(opts.param, opts.warn);
    // one pool per way of connecting: every table on the same database shares it
    const key = poolKey('pgsql', { user, password, dbname, encoding: codec.name, hosts: hosts.map((h) => h.label), idleInterval, ...ps });
    const shared = sharedPool(key, () => {
      const driver = new PgsqlDriver({ user, password, dbname, codec }, ps.timeoutMs);
      return new SqlPool<PgTarget, PgConn>(hosts, driver, {
        maxConnections: ps.maxConnections,
        retryInterval,
        idleInterval,
        connectTimeoutMs: ps.timeoutMs,
        pipeline: ps.pipeline,
        label: poolLabel('pgsql', hosts.map((h) => h.label), { dbname, user }),
      });
    });
    const pool = shared.pool.view(retryInterval);
    const release = shared.release;
    const backend: NetSqlBackend<PgTarget, PgConn> = {
      quoter: (conn) => (raw) => {
        const q = pgsqlEscape(raw, conn, codec);
        if (q === null) throw new QuoteError(`invalid byte sequence for encoding "${codec.name}"`);
        return q;
      },
      // Postfix marks the host down here; a key's bytes say nothing about the host, so only this lookup fails.
      quoteFailure: (host, err) => ({ kind: 'retry', message: `dict pgsql: (host ${host.label}) cannot escape input string: ${err.message}` }),
      run: (conn, host, q) => pgsqlQuery(conn, q, codec, host.label),
      exec: (conn, host, q) => pgsqlExec(conn, q, codec, host.label),
      rows: (conn, host, q) => pgsqlRows(conn, q, codec, host.label),
    };
    return new NetSqlTable({
      type: opts.type, name: opts.name, cf, settings, pool, releasePool: release, backend,
      timeoutMs: ps.timeoutMs, lookupName: 'dict_pgsql_lookup', writes, warn: opts.warn,
    });
  } catch (e) {
    await settings.domain?.close();
    throw e;
  }
}

export const pgsqlType: TableType = { name: 'pgsql', open: openPgsql, implFlags: DICT_FLAG.FIXED, writable: true, warmUp: () => warmUpSql('pgsql', openPgsql) };
