/**
 * ldap: tables (Postfix src/global/dict_ldap.c, ldap_table(5)).
 *
 *   ldap:/etc/postfix/x.cf    parameters from the file
 *   ldap:prefix               parameters prefix_server_host, ... from main.cf
 *
 * Parameters (Postfix 3.7): server_host (host[:port] entries and ldap://,
 * ldaps://, ldapi:// URLs), server_port, version, timeout, search_base and
 * query_filter (templates, RFC 2253 / RFC 2254 quoting of key pieces),
 * result_format (legacy result_filter), domain, terminal_result_attribute,
 * leaf_result_attribute, result_attribute, special_result_attribute,
 * recursion_limit, expansion_limit, size_limit, scope, dereference,
 * chase_referrals, bind (none/simple), bind_dn, bind_pw, start_tls,
 * tls_require_cert, tls_ca_cert_file, tls_ca_cert_dir, tls_cert, tls_key,
 * tls_random_file, tls_cipher_suite, debuglevel, and the ignored cache,
 * cache_expiry and cache_size.
 *
 * Connections come from the shared bounded pool (dbcommon/pool.ts), one
 * pool per way of connecting (Postfix's connection-sharing key plus the
 * pool settings); each server_host URL is one pool host. A whole lookup
 * (its search and the searches of special attributes) runs on one pooled
 * connection. The LDAP protocol is spoken by ldap-client.ts.
 *
 * chase_referrals = yes follows continuation references and referral
 * results as libldap does (ldap-referral.ts: hop limit 5, loops skipped,
 * other servers searched anonymously on short-lived connections); = no
 * ignores references and answers a referral result "try again".
 */
import type { SecureContext as TlsContext } from 'node:tls';
import { DICT_FLAG } from '../../protocol/flags.js';
import { passesUtf8Check } from '../core/casefold.js';
import { NOT_FOUND, RETRY, TableOpenError, type Bytes, type DictErr, type LookupResult, type Table, type TableOpenOptions } from '../core/table.js';
import { requireReadOnly } from '../core/util.js';
import type { TableType } from '../core/registry.js';
import { CfParser } from '../dbcommon/cf.js';
import { ResultCollector, parseDomainFilter } from '../dbcommon/common.js';
import { TemplateContext } from '../dbcommon/template.js';
import type { DomainList } from '../dbcommon/domain.js';
import { warmUpOpens } from '../dbcommon/warmup.js';
import { POOL_RETRY, SqlPool, poolLabel, poolSettings, sharedPool, type PoolDriver, type PoolHost, type PoolView, type WorkResult } from '../dbcommon/pool.js';
import { poolKey } from '../sql/netsql.js';
import {
  LDAP_DECODING_ERROR, LDAP_NO_SUCH_OBJECT, LDAP_SERVER_DOWN, LDAP_SUCCESS, LdapConn, LdapError, ldapErr2String, tlsContext, type LdapTlsSettings,
} from './ldap-client.js';
import { encodeFilter, FilterError, rfc2253Quote, rfc2254Quote } from './ldap-filter.js';
import { isLdapUrl, parseLdapUrl, SCOPE, UrlError, type LdapUrl, type Scope } from './ldap-url.js';
import { chasingSearch, type ChaseSettings } from './ldap-referral.js';
import { collectValues, type AttrLists, type CollectContext } from './ldap-values.js';

const SEPARATORS = /[, \t\r\n]+/;
const split = (s: Bytes) => s.split(SEPARATORS).filter((x) => x !== '');

const BIND = { none: 0, simple: 1, sasl: 2 } as const;
const BIND_NAMES: Record<string, number> = { no: BIND.none, none: BIND.none, yes: BIND.simple, simple: BIND.simple, sasl: BIND.sasl };

/** Everything that decides how a connection is made and used. */
interface ConnSettings {
  serverHost: string;
  hosts: PoolHost<LdapUrl>[];
  version: number;
  timeout: number;
  bind: number;
  bindDn: Bytes;
  bindPw: Bytes;
  dereference: number;
  startTls: boolean;
  /** start_tls or an ldaps:// URL: every connection makes the TLS context first, as Postfix */
  tlsOn: boolean;
  tls: LdapTlsSettings;
}

class LdapDriver implements PoolDriver<LdapUrl, LdapConn> {
  constructor(private readonly s: ConnSettings) {}

  async connect(host: PoolHost<LdapUrl>, onLost: () => void): Promise<LdapConn> {
    const s = this.s;
    const timeoutMs = s.timeout * 1000;
    const bindFailure = (rc: number) =>
      new Error(`dict_ldap_connect: Unable to bind to server ${s.serverHost} with dn ${s.bindDn !== '' ? s.bindDn : 'empty or implicit'}: ${rc} (${ldapErr2String(rc)})`);
    let context: TlsContext | undefined;
    if (s.tlsOn) {
      try {
        context = tlsContext(s.tls);
      } catch {
        throw new Error(`dict_ldap_set_tls_options: Unable to allocate new TLS context ${LDAP_SERVER_DOWN}: ${ldapErr2String(LDAP_SERVER_DOWN)}`);
      }
    }
    let conn: LdapConn;
    try {
      conn = await LdapConn.open({ url: host.target, timeoutMs, startTls: s.startTls, tls: s.tls, tlsContext: context });
    } catch (e) {
      const rc = e instanceof LdapError ? e.code : LDAP_SERVER_DOWN;
      if (s.startTls && rc !== LDAP_SERVER_DOWN) throw new Error(`dict_ldap_connect: Unable to set STARTTLS: ${rc}: ${ldapErr2String(rc)}`);
      if (s.bind !== BIND.none) throw bindFailure(rc);
      throw new Error(`dict_ldap_lookup: Search error ${rc}: ${ldapErr2String(rc)} `);
    }
    if (s.bind !== BIND.none) {
      const rc = await conn.bind(s.version, s.bindDn, s.bindPw, timeoutMs);
      if (rc !== LDAP_SUCCESS) {
        conn.close();
        throw bindFailure(rc);
      }
    }
    conn.onLost = onLost;
    return conn;
  }

  close(conn: LdapConn): void {
    conn.close();
  }
}

interface LdapSettings {
  ctx: TemplateContext;
  searchBase: Bytes;
  dynamicBase: boolean;
  query: Bytes;
  resultFormat: Bytes;
  expansionLimit: number;
  sizeLimit: number;
  recursionLimit: number;
  scope: Scope;
  dereference: number;
  timeout: number;
  lists: AttrLists;
  domain: DomainList | null;
  /** chase_referrals = yes: how referred servers are searched; null = referrals not followed */
  chase: ChaseSettings | null;
}

class LdapTable implements Table {
  readonly implFlags = DICT_FLAG.FIXED;
  private closed = false;

  constructor(
    readonly type: string,
    readonly name: Bytes,
    private readonly cf: CfParser,
    private readonly s: LdapSettings,
    private readonly pool: PoolView<LdapUrl, LdapConn>,
    private readonly releasePool: () => void,
    private readonly timeoutMs: number,
    private readonly warn: (t: string) => void,
  ) {}

  async lookup(key: Bytes): Promise<LookupResult> {
    if (this.closed) return RETRY;
    const s = this.s;
    if (!passesUtf8Check(key)) return NOT_FOUND;
    if (s.domain !== null) {
      const rc = await s.domain.check(key);
      if (rc === 0) return NOT_FOUND;
      if (rc < 0) return { found: false, error: rc as DictErr };
    }
    const base = s.ctx.expandQuery(s.searchBase, key, rfc2253Quote);
    if (base === null) return NOT_FOUND;
    const filterText = s.ctx.expandQuery(s.query, key, rfc2254Quote);
    if (filterText === null) return NOT_FOUND;
    let filter: Buffer;
    try {
      filter = encodeFilter(filterText);
    } catch (e) {
      if (!(e instanceof FilterError)) throw e;
      this.warn(`dict_ldap_lookup: Search error -7: ${ldapErr2String(-7)} `);
      return RETRY;
    }
    const r = await this.pool.use((conn) => this.search(conn, key, base, filter), { deadline: Date.now() + this.timeoutMs, warn: this.warn });
    return r === POOL_RETRY ? RETRY : r;
  }

  /** The lookup on one connection: the search, then the values (with recursion). */
  private async search(conn: LdapConn, key: Bytes, base: Bytes, filter: Buffer): Promise<WorkResult<LookupResult>> {
    const s = this.s;
    const waitMs = s.timeout * 1000;
    const chase = s.chase;
    const run = (b: Bytes, scope: Scope, f: Buffer, attrs: readonly Bytes[]) =>
      chase !== null && conn.url !== null
        ? chasingSearch(conn, conn.url, chase, b, scope, f, attrs)
        : conn.search(b, scope, s.dereference, s.sizeLimit, s.timeout, f, attrs, waitMs);
    const res = await run(base, s.scope, filter, s.lists.all);
    if (res.code === LDAP_SERVER_DOWN) {
      // Postfix reconnects and searches once more: the pool takes another connection
      return { kind: 'host-error', message: `dict_ldap_lookup: Search error ${res.code}: ${ldapErr2String(res.code)} ` };
    }
    if (res.code === LDAP_NO_SUCH_OBJECT) {
      if (s.dynamicBase) return { kind: 'ok', value: NOT_FOUND };
      return { kind: 'retry', message: `dict_ldap_lookup: ${this.cf.name}: Search base '${base}' not found: ${res.code}: ${ldapErr2String(res.code)}` };
    }
    if (res.code !== LDAP_SUCCESS) {
      // Postfix tears the connection down and answers "try again"
      conn.close();
      return { kind: 'retry', message: `dict_ldap_lookup: Search error ${res.code}: ${ldapErr2String(res.code)} ` };
    }
    const cx: CollectContext = {
      lists: s.lists,
      parserName: this.cf.name,
      key,
      sizeLimit: s.sizeLimit,
      recursionLimit: s.recursionLimit,
      out: new ResultCollector(s, key),
      search: run,
      warn: this.warn,
      error: false,
      lastCode: LDAP_SUCCESS,
    };
    await collectValues(cx, res.entries, 1);
    if (cx.lastCode !== LDAP_SUCCESS && cx.lastCode !== LDAP_DECODING_ERROR) {
      this.warn(`dict_ldap_lookup: Had some trouble with entries returned by search: ${ldapErr2String(cx.lastCode)}`);
    }
    if (cx.error) return { kind: 'ok', value: RETRY };
    return { kind: 'ok', value: cx.out.result() };
  }

  changed(): Promise<boolean> {
    return this.cf.changed();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.releasePool();
    await this.s.domain?.close();
  }
}

/** server_host as Postfix builds its URL list: URLs kept (unparsable ones skipped), host[:port] made into ldap:// URLs. */
function parseServerHost(cf: CfParser, port: number, version: { v: number }, warn: (t: string) => void): { list: string[]; ssl: boolean } {
  const list: string[] = [];
  let ssl = false;
  for (const h of split(cf.getStr('server_host', 'localhost', 1, 0))) {
    if (isLdapUrl(h)) {
      let u: LdapUrl;
      try {
        u = parseLdapUrl(h);
      } catch (e) {
        if (!(e instanceof UrlError)) throw e;
        warn(`dict_ldap_open: error parsing URL ${h}: ${e.code}: ${ldapErr2String(e.code)}; skipping`);
        continue;
      }
      if (u.scheme !== 'ldap' && version.v !== 3) {
        warn(`dict_ldap_open: URL scheme ${u.scheme} requires protocol version 3`);
        version.v = 3;
      }
      if (u.scheme === 'ldaps') ssl = true;
      list.push(h);
    } else {
      list.push(h.includes(':') ? `ldap://${h}` : `ldap://${h}:${port}`);
    }
  }
  return { list, ssl };
}

export async function openLdap(opts: TableOpenOptions): Promise<Table> {
  requireReadOnly(opts);
  const cf = await CfParser.open(opts.name, opts);
  const src = opts.name;
  const warn = opts.warn;
  // the order in which Postfix reads (and so complains about) parameters
  const serverHostRaw = cf.getStr('server_host', 'localhost', 1, 0);
  const serverPort = cf.getInt('server_port', 389, 0, 0);
  // Debian's Postfix 3.7 (the oracle) defaults to 3; upstream's dict_ldap.c has 2
  const version = { v: cf.getInt('version', 3, 2, 0) };
  if (version.v !== 2 && version.v !== 3) {
    warn(`dict_ldap_open: ${src} Unknown version ${version.v}, using 2.`);
    version.v = 2;
  }
  void serverHostRaw;
  const { list: urls, ssl } = parseServerHost(cf, serverPort, version, warn);
  const scopeName = cf.getStr('scope', 'sub', 1, 0);
  let scope: Scope;
  switch (scopeName.toLowerCase()) {
    case 'one': scope = SCOPE.ONE; break;
    case 'base': scope = SCOPE.BASE; break;
    case 'sub': scope = SCOPE.SUB; break;
    default:
      warn(`dict_ldap_open: ${src}: Unrecognized value ${scopeName} specified for scope; using sub`);
      scope = SCOPE.SUB;
  }
  const searchBase = cf.getStr('search_base', '', 0, 0);
  const timeout = cf.getInt('timeout', 10, 0, 0);
  const query = cf.getStr('query_filter', '(mailacceptinggeneralid=%s)', 0, 0);
  const resultFormat = cf.getStr('result_format', null, 0, 0) ?? cf.getStr('result_filter', '%s', 1, 0);
  const ctx = new TemplateContext({ type: opts.type, name: opts.name }, warn);
  const dynamicBase = ctx.parse(searchBase, 'query');
  if (!ctx.parse(query, 'query')) warn(`dict_ldap_open: ${src}: Fixed query_filter ${query} is probably useless`);
  ctx.parse(resultFormat, 'result');
  const domain = await parseDomainFilter(cf, opts);
  try {
    const terminal = split(cf.getStr('terminal_result_attribute', '', 0, 0));
    const leaf = split(cf.getStr('leaf_result_attribute', '', 0, 0));
    const regular = split(cf.getStr('result_attribute', 'maildrop', 0, 0));
    const special = split(cf.getStr('special_result_attribute', '', 0, 0));
    const lists: AttrLists = {
      all: [...terminal, ...leaf, ...regular, ...special],
      numTerminal: terminal.length,
      numLeaf: leaf.length,
      numAttributes: terminal.length + leaf.length + regular.length,
    };
    const bindOpt = cf.getStr('bind', 'yes', 1, 0);
    const bind = BIND_NAMES[bindOpt.toLowerCase()];
    if (bind === undefined) throw new TableOpenError(`${cf.name}: unsupported parameter value: bind = ${bindOpt}`);
    const bindDn = cf.getStr('bind_dn', '', 0, 0);
    const bindPw = cf.getStr('bind_pw', '', 0, 0);
    if (cf.getBool('cache', false)) warn(`dict_ldap_open: ${src} ignoring cache`);
    if (cf.getInt('cache_expiry', -1, 0, 0) >= 0) warn(`dict_ldap_open: ${src} ignoring cache_expiry`);
    if (cf.getInt('cache_size', -1, 0, 0) >= 0) warn(`dict_ldap_open: ${src} ignoring cache_size`);
    const recursionLimit = cf.getInt('recursion_limit', 1000, 1, 0);
    const expansionLimit = cf.getInt('expansion_limit', 0, 0, 0);
    const sizeLimit = cf.getInt('size_limit', expansionLimit, 0, 0);
    let dereference = cf.getInt('dereference', 0, 0, 0);
    if (dereference < 0 || dereference > 3) {
      warn(`dict_ldap_open: ${src} Unrecognized value ${dereference} specified for dereference; using 0`);
      dereference = 0;
    }
    const chaseReferrals = cf.getBool('chase_referrals', false);
    if (bind === BIND.sasl) {
      // read as Postfix does, so that bad values fail the same way, then refuse
      cf.getStr('sasl_mechs', '', 0, 0);
      cf.getStr('sasl_realm', '', 0, 0);
      cf.getStr('sasl_authz_id', '', 0, 0);
      cf.getInt('sasl_minssf', 0, 0, 4096);
      throw new TableOpenError(`${cf.name}: unsupported parameter value: bind = ${bindOpt} (proxymapd's LDAP client has no SASL support; use bind = simple or none)`);
    }
    const startTls = cf.getBool('start_tls', false);
    if (startTls && version.v < 3) {
      warn(`dict_ldap_open: ${src} start_tls requires protocol version 3`);
      version.v = 3;
    }
    const tls: LdapTlsSettings = {
      requireCert: cf.getBool('tls_require_cert', false),
      caFile: cf.getStr('tls_ca_cert_file', '', 0, 0),
      caDir: cf.getStr('tls_ca_cert_dir', '', 0, 0),
      cert: cf.getStr('tls_cert', '', 0, 0),
      key: cf.getStr('tls_key', '', 0, 0),
      cipherSuite: cf.getStr('tls_cipher_suite', '', 0, 0),
    };
    // tls_random_file: OpenSSL in Node seeds itself; read for its syntax only.
    cf.getStr('tls_random_file', '', 0, 0);
    cf.getInt('debuglevel', 0, 0, 0);
    const tlsOn = startTls || ssl;
    const hosts: PoolHost<LdapUrl>[] = (urls.length > 0 ? urls : ['ldap://localhost:389']).map((label) => {
      const target = parseLdapUrl(label);
      return { label, kind: target.scheme === 'ldapi' ? 'unix' : 'inet', target };
    });
    const ps = poolSettings(opts.param, warn);
    const conn: ConnSettings = {
      serverHost: urls.join(' '), hosts, version: version.v, timeout, bind, bindDn: bind ? bindDn : '', bindPw: bind ? bindPw : '',
      dereference, startTls, tlsOn, tls: tlsOn ? tls : { requireCert: false, caFile: '', caDir: '', cert: '', key: '', cipherSuite: '' },
    };
    const key = poolKey('ldap', { ...conn, hosts: urls, tls: JSON.stringify(conn.tls), chaseReferrals, ...ps });
    const shared = sharedPool(key, () =>
      new SqlPool<LdapUrl, LdapConn>(hosts, new LdapDriver(conn), {
        maxConnections: ps.maxConnections,
        // Postfix tries the servers again at the next lookup: no back-off beyond the current second
        retryInterval: 0,
        // Postfix keeps its connection with no idle timer; an hour keeps an idle pool from holding slapd slots forever
        idleInterval: 3600,
        connectTimeoutMs: timeout > 0 ? Math.min(timeout * 1000, ps.timeoutMs) : ps.timeoutMs,
        pipeline: ps.pipeline,
        // libldap goes down server_host in the order written and stays with the first that answers
        hostOrder: 'listed',
        label: poolLabel('ldap', hosts.map((h) => h.label), { bind_dn: conn.bindDn }),
      }),
    );
    const settings: LdapSettings = {
      ctx, searchBase, dynamicBase, query, resultFormat, expansionLimit, sizeLimit, recursionLimit, scope, dereference, timeout, lists, domain,
      chase: chaseReferrals
        ? { dereference, sizeLimit, timeLimit: timeout, waitMs: timeout * 1000, connectMs: timeout > 0 ? Math.min(timeout * 1000, ps.timeoutMs) : ps.timeoutMs, tls: conn.tls }
        : null,
    };
    return new LdapTable(opts.type, opts.name, cf, settings, shared.pool.view(0), shared.release, ps.timeoutMs, warn);
  } catch (e) {
    await domain?.close();
    throw e;
  }
}

/** The open path warmed up at start (nothing connects: the pool connects at the first lookup). */
const WARM_UP_CF =
  'server_host = ldap://127.0.0.1:9 ldapi://%2Fnonexistent%2Fwarm-up.sock\nsearch_base = dc=warm, dc=up\n' +
  'query_filter = (|(mail=%s)(uid=%u))\nresult_attribute = mail, cn\nspecial_result_attribute = member\nresult_format = %s\ndomain = warm.up\n';

export const ldapType: TableType = {
  name: 'ldap',
  open: openLdap,
  implFlags: DICT_FLAG.FIXED,
  writable: false,
  warmUp: () => warmUpOpens('ldap', openLdap, WARM_UP_CF),
};
