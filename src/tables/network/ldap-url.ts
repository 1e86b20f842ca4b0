/**
 * LDAP URLs (RFC 4516) as OpenLDAP's ldap_is_ldap_url()/ldap_url_parse()
 * read them: `scheme://hostport/dn?attrs?scope?filter?extensions`, with
 * an optional `<...>` enclosure and `URL:` prefix; schemes ldap, ldaps,
 * ldapi (the host is a percent-encoded socket path) and cldap.
 */
import type { Bytes } from '../core/table.js';

export type Scope = 0 | 1 | 2;
export const SCOPE = { BASE: 0, ONE: 1, SUB: 2 } as const;

export interface LdapUrl {
  scheme: 'ldap' | 'ldaps' | 'ldapi' | 'cldap';
  /** host name (ldapi: the socket path), '' for the default */
  host: string;
  port: number;
  dn: Bytes;
  attrs: Bytes[];
  scope: Scope;
  filter: Bytes;
  /** the URL names a DN (non-empty) / a scope: libldap's lud_dn / lud_scope set (how a referral's URL changes the search) */
  hasDn?: boolean;
  hasScope?: boolean;
}

/** ldap_url_parse()'s error numbers (LDAP_URL_ERR_*). */
export const URL_ERR = { BADSCHEME: 3, BADENCLOSURE: 4, BADURL: 5, BADHOST: 6, BADATTRS: 7, BADSCOPE: 8, BADFILTER: 9, BADEXTS: 10 } as const;

export class UrlError extends Error {
  constructor(readonly code: number) {
    super(`LDAP URL error ${code}`);
  }
}

function stripEnclosure(u: Bytes): Bytes | null {
  let s = u;
  let enclosed = false;
  if (s.startsWith('<')) {
    enclosed = true;
    s = s.slice(1);
  }
  if (s.slice(0, 4).toUpperCase() === 'URL:') s = s.slice(4);
  if (enclosed) {
    if (!s.endsWith('>')) return null;
    s = s.slice(0, -1);
  }
  return s;
}

const SCHEMES = ['ldap', 'ldaps', 'ldapi', 'cldap'] as const;

function schemeOf(s: Bytes): (typeof SCHEMES)[number] | undefined {
  const m = /^([A-Za-z]+):\/\//.exec(s);
  if (!m) return undefined;
  const sc = m[1]!.toLowerCase();
  return (SCHEMES as readonly string[]).includes(sc) ? (sc as (typeof SCHEMES)[number]) : undefined;
}

/** ldap_is_ldap_url(). */
export function isLdapUrl(u: Bytes): boolean {
  const s = stripEnclosure(u);
  return s !== null && schemeOf(s) !== undefined;
}

function pctDecode(s: Bytes, code: number): Bytes {
  return s.replace(/%(..)?/g, (m, h: string | undefined) => {
    if (h === undefined || !/^[0-9A-Fa-f]{2}$/.test(h)) throw new UrlError(code);
    return String.fromCharCode(parseInt(h, 16));
  });
}

/** ldap_url_parse(); throws UrlError with its error number. */
export function parseLdapUrl(u: Bytes): LdapUrl {
  const s = stripEnclosure(u);
  if (s === null) throw new UrlError(URL_ERR.BADENCLOSURE);
  const scheme = schemeOf(s);
  if (!scheme) throw new UrlError(URL_ERR.BADSCHEME);
  let rest = s.slice(s.indexOf('://') + 3);
  const slash = rest.indexOf('/');
  const q0 = rest.indexOf('?');
  const hostEnd = slash >= 0 && (q0 < 0 || slash < q0) ? slash : q0 >= 0 ? q0 : rest.length;
  const hostport = rest.slice(0, hostEnd);
  rest = rest.slice(hostEnd);
  let host = '';
  let port = scheme === 'ldaps' ? 636 : 389;
  if (scheme === 'ldapi') {
    host = pctDecode(hostport, URL_ERR.BADHOST);
    port = 0;
  } else if (hostport !== '') {
    let h = hostport;
    let p: string | undefined;
    if (h.startsWith('[')) {
      const close = h.indexOf(']');
      if (close < 0) throw new UrlError(URL_ERR.BADHOST);
      p = h.slice(close + 1).startsWith(':') ? h.slice(close + 2) : undefined;
      h = h.slice(1, close);
    } else {
      const c = h.lastIndexOf(':');
      if (c >= 0) {
        p = h.slice(c + 1);
        h = h.slice(0, c);
      }
    }
    if (p !== undefined && p !== '') {
      if (!/^[0-9]+$/.test(p) || Number(p) > 65535) throw new UrlError(URL_ERR.BADURL);
      port = Number(p);
    }
    host = pctDecode(h, URL_ERR.BADHOST);
  }
  if (rest.startsWith('/')) rest = rest.slice(1);
  const fields = rest === '' && !s.includes('?') ? [] : rest.split('?');
  if (fields.length > 5) throw new UrlError(URL_ERR.BADURL);
  const dn = pctDecode(fields[0] ?? '', URL_ERR.BADURL);
  const attrs = (fields[1] ?? '') === '' ? [] : pctDecode(fields[1]!, URL_ERR.BADATTRS).split(',');
  if (attrs.some((a) => a === '')) throw new UrlError(URL_ERR.BADATTRS);
  let scope: Scope = SCOPE.BASE;
  const sc = pctDecode(fields[2] ?? '', URL_ERR.BADSCOPE).toLowerCase();
  if (sc === 'one' || sc === 'onelevel') scope = SCOPE.ONE;
  else if (sc === 'sub' || sc === 'subtree') scope = SCOPE.SUB;
  else if (sc !== '' && sc !== 'base') throw new UrlError(URL_ERR.BADSCOPE);
  const filter = (fields[3] ?? '') === '' ? '(objectClass=*)' : pctDecode(fields[3]!, URL_ERR.BADFILTER);
  for (const ext of (fields[4] ?? '') === '' ? [] : fields[4]!.split(',')) {
    // a critical extension we do not know makes the URL unusable
    if (ext.startsWith('!')) throw new UrlError(URL_ERR.BADEXTS);
  }
  return { scheme, host, port, dn, attrs, scope, filter, hasDn: dn !== '', hasScope: sc !== '' };
}
