/**
 * Collecting an ldap: lookup's values from search entries, as Postfix's
 * dict_ldap_get_values() does: attributes in the order the server returns
 * them, mapped to the configured lists (terminal, leaf, regular, special)
 * by name or subtype; special attributes hold DNs or LDAP URLs that are
 * searched in turn (depth-first, into the same result) up to
 * recursion_limit; each search's entries count against size_limit, every
 * appended value against expansion_limit.
 */
import type { Bytes } from '../core/table.js';
import { cString } from '../core/util.js';
import type { ResultCollector } from '../dbcommon/common.js';
import { LDAP_NO_SUCH_OBJECT, LDAP_SUCCESS, ldapErr2String, type LdapEntry, type SearchOutcome } from './ldap-client.js';
import { encodeFilter, FilterError } from './ldap-filter.js';
import { isLdapUrl, parseLdapUrl, SCOPE, UrlError, type Scope } from './ldap-url.js';

/** The configured attributes: one list, terminal then leaf then regular then special. */
export interface AttrLists {
  all: Bytes[];
  numTerminal: number;
  numLeaf: number;
  /** terminal + leaf + regular */
  numAttributes: number;
}

/** attrdesc_subtype(): 1 when b equals a or is a subtype of it (`a;option`), -1 when a is a subtype of b, else 0. */
export function attrSubtype(a: Bytes, b: Bytes): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i]!.toLowerCase() === b[i]!.toLowerCase()) i++;
  if (i === a.length && (i === b.length || b[i] === ';')) return 1;
  if (i === b.length && a[i] === ';') return -1;
  return 0;
}

/** url_attrs(): the attributes to ask for when following a URL, or null to skip it. */
export function urlAttrs(lists: AttrLists, urlAttrList: Bytes[]): Bytes[] | null {
  if (urlAttrList.length === 0) return lists.all;
  const out: Bytes[] = [];
  for (const a1 of urlAttrList) {
    for (const a2 of lists.all) {
      const rel = attrSubtype(a1, a2);
      if (rel > 0) out.push(a2);
      else if (rel < 0) out.push(a1);
    }
  }
  return out.length > 0 ? out : null;
}

/** ldap_get_values_len(): the values of the entry's attribute of that name (case-insensitive), or null. */
function valuesOf(e: LdapEntry, name: Bytes): Bytes[] | null {
  const n = name.toLowerCase();
  for (const a of e.attrs) if (a.type.toLowerCase() === n) return a.vals;
  return null;
}

export interface CollectContext {
  lists: AttrLists;
  parserName: Bytes;
  key: Bytes;
  sizeLimit: number;
  recursionLimit: number;
  out: ResultCollector;
  /** a search on the lookup's connection */
  search(base: Bytes, scope: Scope, filter: Buffer, attrs: readonly Bytes[]): Promise<SearchOutcome>;
  warn(text: string): void;
  /** set on the first error: the lookup answers RETRY */
  error: boolean;
  /** the result code of the last search (libldap's LDAP_OPT_ERROR_NUMBER) */
  lastCode: number;
}

const OBJECTCLASS_ANY = encodeFilter('objectclass=*');

/** dict_ldap_get_values() for the entries of one search at `depth` (1 = the lookup's own search). */
export async function collectValues(cx: CollectContext, entries: LdapEntry[], depth: number): Promise<void> {
  const name = 'dict_ldap_get_values';
  const { lists } = cx;
  // As in Postfix, these carry over from one entry to the next unless recomputed.
  let isLeaf = true;
  let isTerminal = false;
  let count = 0;
  for (const entry of entries) {
    if (!cx.error && cx.sizeLimit && ++count > cx.sizeLimit) {
      cx.warn(`${name}[${depth}]: ${cx.parserName}: Query size limit (${cx.sizeLimit}) exceeded`);
      cx.error = true;
    }
    if (lists.numTerminal > 0) {
      for (let i = 0; i < lists.numTerminal; i++) {
        const vals = valuesOf(entry, lists.all[i]!);
        if (!vals) continue;
        isTerminal = vals.length > 0;
        if (isTerminal) break;
      }
    }
    if (!isTerminal && lists.numLeaf > 0) {
      for (let i = lists.numAttributes; i < lists.all.length; i++) {
        const vals = valuesOf(entry, lists.all[i]!);
        if (!vals) continue;
        isLeaf = vals.length === 0;
        if (!isLeaf) break;
      }
    }
    for (const attr of entry.attrs) {
      const vals = attr.vals;
      if (cx.error || vals.length === 0) continue;
      let i = 0;
      while (i < lists.all.length && attrSubtype(lists.all[i]!, attr.type) <= 0) i++;
      if (i < lists.numAttributes || isTerminal) {
        if ((isTerminal && i >= lists.numTerminal) || (!isLeaf && i < lists.numTerminal + lists.numLeaf)) continue;
        for (const v of vals) {
          if (!cx.out.add(v)) {
            cx.warn(`${name}[${depth}]: ${cx.parserName}: Expansion limit exceeded for key: '${cx.key}'`);
            cx.error = true;
            break;
          }
        }
      } else if (depth < cx.recursionLimit && i < lists.all.length) {
        for (const raw of vals) {
          const v = cString(raw);
          let res: SearchOutcome;
          if (isLdapUrl(v)) {
            let url;
            try {
              url = parseLdapUrl(v);
            } catch (e) {
              if (!(e instanceof UrlError)) throw e;
              cx.warn(`${name}[${depth}]: malformed URL ${v}: ${ldapErr2String(e.code)}(${e.code})`);
              cx.error = true;
              break;
            }
            const attrs = urlAttrs(lists, url.attrs);
            if (attrs === null) continue;
            res = await searchText(cx, url.dn, url.scope, url.filter, attrs);
          } else {
            res = await cx.search(v, SCOPE.BASE, OBJECTCLASS_ANY, lists.all);
          }
          cx.lastCode = res.code;
          if (res.code === LDAP_SUCCESS) await collectValues(cx, res.entries, depth + 1);
          else if (res.code === LDAP_NO_SUCH_OBJECT) cx.warn(`${name}[${depth}]: DN ${v} not found, skipping `);
          else {
            cx.warn(`${name}[${depth}]: search error ${res.code}: ${ldapErr2String(res.code)} `);
            cx.error = true;
          }
          if (cx.error) break;
        }
      } else if (depth >= cx.recursionLimit && i < lists.all.length) {
        cx.warn(`${name}[${depth}]: ${cx.parserName}: Recursion limit exceeded for special attribute ${attr.type}=${cString(vals[0]!)}`);
        cx.error = true;
      }
    }
  }
}

/** A search with a filter in text form: a filter that does not parse is libldap's LDAP_FILTER_ERROR. */
async function searchText(cx: CollectContext, base: Bytes, scope: Scope, filter: Bytes, attrs: readonly Bytes[]): Promise<SearchOutcome> {
  let ber: Buffer;
  try {
    ber = encodeFilter(filter);
  } catch (e) {
    if (!(e instanceof FilterError)) throw e;
    return { code: -7, entries: [], refs: [] };
  }
  return cx.search(base, scope, ber, attrs);
}
