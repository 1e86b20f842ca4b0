/**
 * chase_referrals = yes: following referrals the way OpenLDAP's libldap
 * does for Postfix (LDAP_OPT_REFERRALS on; Postfix sets no rebind
 * procedure), for one search (the lookup's own, or a special attribute's):
 *
 *  - search continuation references (SearchResultReference) and referral
 *    results (code 10) are followed by searching the referred server: the
 *    URL's DN replaces the base (a reference without a DN: the empty DN; a
 *    referral without one: the original base); the URL's scope if it has
 *    one, else for a reference base/one -> base and sub -> sub, for a
 *    referral the original scope; filter, attributes, size and time limits,
 *    dereferencing are the original search's (libldap ignores a URL's
 *    filter and attributes when chasing);
 *  - a referred server that is the lookup's own (same scheme, host
 *    case-insensitively, port) is searched on the lookup's connection, with
 *    its bind; any other server on a new connection that does not bind
 *    (libldap without a rebind procedure: anonymous);
 *  - the URLs of one reference/referral are tried in order until one server
 *    can be searched; one that names a DN already searched on the same
 *    server in this search is a loop and skipped (LDAP_CLIENT_LOOP);
 *  - the hop limit (LDAP_OPT_REFHOPLIMIT, 5) counts as libldap does: every
 *    followed referral is a child of the original request, numbered by the
 *    original's count of children so far; a request numbered 5 or more
 *    (the original: once it has 5 children) follows nothing more;
 *  - a reference that cannot be followed (server down, loop, hop limit, bad
 *    URL) is dropped without a word; a referral result that cannot be
 *    followed stays code 10 ("Referral"); a followed one becomes success;
 *  - the entries of the referred searches come after the original's (each
 *    followed depth-first, in the order the references came), and the
 *    search's code is the original's, or if that is success the first
 *    other code of a referred search (libldap's merge_error_info).
 *
 * Connections: short-lived. A referred server other than the lookup's own
 * gets one connection when first referred to, reused for the rest of that
 * one search and closed when it ends; with the hop limit a search opens at
 * most 5 of them, so the total is bounded by 5 per concurrent lookup (the
 * lookups themselves are bounded by the connection pool).
 */
import type { Bytes } from '../core/table.js';
import { LDAP_REFERRAL, LDAP_SUCCESS, LdapConn, type LdapEntry, type LdapTlsSettings, type SearchOutcome } from './ldap-client.js';
import { parseLdapUrl, SCOPE, type LdapUrl, type Scope } from './ldap-url.js';

/** libldap's default LDAP_OPT_REFHOPLIMIT. */
export const REF_HOP_LIMIT = 5;

export interface ChaseSettings {
  dereference: number;
  sizeLimit: number;
  /** seconds, sent to the server */
  timeLimit: number;
  /** client wait per search, ms (0 = none) */
  waitMs: number;
  /** connect timeout for referred servers, ms (0 = none) */
  connectMs: number;
  tls: LdapTlsSettings;
}

const serverKey = (u: LdapUrl) => `${u.scheme}://${u.host.toLowerCase()}:${u.port}`;

/** One original search and the referrals followed from it. */
class Chase {
  /** the original request's count of children (lr_parentcnt of the original) */
  private children = 0;
  /** (server, DN) of the requests made, for loop detection */
  private readonly visited: { key: string; dn: Bytes }[] = [];
  /** first non-success code of a referred search */
  private childCode = LDAP_SUCCESS;
  private readonly entries: LdapEntry[] = [];
  private readonly conns = new Map<string, LdapConn>();

  constructor(
    private readonly primary: LdapConn,
    private readonly primaryKey: string,
    private readonly s: ChaseSettings,
    private readonly base: Bytes,
    private readonly scope: Scope,
    private readonly filter: Buffer,
    private readonly attrs: readonly Bytes[],
  ) {}

  async run(): Promise<SearchOutcome> {
    this.visited.push({ key: this.primaryKey, dn: this.base });
    try {
      const res = await this.searchOn(this.primary, this.base, this.scope);
      const code = await this.handle(res, () => this.children);
      const final = code !== LDAP_SUCCESS ? code : this.childCode;
      return { code: final, entries: this.entries, refs: [] };
    } finally {
      for (const c of this.conns.values()) c.close();
    }
  }

  private searchOn(conn: LdapConn, base: Bytes, scope: Scope): Promise<SearchOutcome> {
    const s = this.s;
    return conn.search(base, scope, s.dereference, s.sizeLimit, s.timeLimit, this.filter, this.attrs, s.waitMs);
  }

  /** One request's outcome: its entries kept, its references and referral followed; its own code after that. */
  private async handle(res: SearchOutcome, parentCount: () => number): Promise<number> {
    this.entries.push(...res.entries);
    for (const uris of res.continuations ?? []) await this.follow(uris, true, parentCount());
    if (res.code === LDAP_REFERRAL && (res.referral ?? []).length > 0) {
      return (await this.follow(res.referral!, false, parentCount())) ? LDAP_SUCCESS : LDAP_REFERRAL;
    }
    return res.code;
  }

  /** ldap_chase_v3referrals(): true when one of the URLs was followed. */
  private async follow(uris: Bytes[], sref: boolean, parentCount: number): Promise<boolean> {
    if (parentCount >= REF_HOP_LIMIT) return false;
    for (const uri of uris) {
      let url: LdapUrl;
      try {
        url = parseLdapUrl(uri);
      } catch {
        // libldap gives up on the whole list
        return false;
      }
      if (url.host === '' && url.scheme !== 'ldapi') return false;
      const key = serverKey(url);
      const existing = key === this.primaryKey ? this.primary : this.conns.get(key);
      if (existing && url.hasDn && this.visited.some((v) => v.key === key && v.dn === url.dn)) continue;
      const base = url.hasDn ? url.dn : sref ? '' : this.base;
      const scope: Scope = url.hasScope ? url.scope : sref ? (this.scope === SCOPE.SUB ? SCOPE.SUB : SCOPE.BASE) : this.scope;
      const conn = existing ?? (await this.connect(key, url));
      if (!conn) continue;
      const mine = ++this.children;
      this.visited.push({ key, dn: base });
      const res = await this.searchOn(conn, base, scope);
      const code = await this.handle(res, () => mine);
      if (code !== LDAP_SUCCESS && this.childCode === LDAP_SUCCESS) this.childCode = code;
      return true;
    }
    return false;
  }

  private async connect(key: string, url: LdapUrl): Promise<LdapConn | null> {
    try {
      const c = await LdapConn.open({ url, timeoutMs: this.s.connectMs, startTls: false, tls: this.s.tls });
      this.conns.set(key, c);
      return c;
    } catch {
      return null;
    }
  }
}

/** A search on the lookup's connection (whose server is `primaryUrl`) with referrals followed. */
export function chasingSearch(
  conn: LdapConn,
  primaryUrl: LdapUrl,
  s: ChaseSettings,
  base: Bytes,
  scope: Scope,
  filter: Buffer,
  attrs: readonly Bytes[],
): Promise<SearchOutcome> {
  return new Chase(conn, serverKey(primaryUrl), s, base, scope, filter, attrs).run();
}
