/**
 * Query and result templates of the database client tables: Postfix's
 * db_common_parse() and db_common_expand() (src/global/db_common.c).
 *
 * Query templates (SQL `query`, ldap `search_base`/`query_filter`,
 * memcache `key_format`) expand the lookup key K; the result template
 * (`result_format`) expands one result value R, with access to K:
 *
 *   %%  a literal %
 *   %s  K (query) / R (result)          %S  K
 *   %u  local part of K / R, or all      %U  local part of K, or all
 *   %d  domain of K / R                  %D  domain of K
 *   %1 .. %9  label N of K's domain, counted from the right (%1 = TLD)
 *
 * The domain is the text after the last '@'. All templates of one table
 * share one context: what any of them needs (a domain, a local part, N
 * labels) is required of every key, and keys without it are skipped
 * (not found, no query). Substituted pieces go through the backend's quote
 * function; literal template text never does.
 */
import { TableOpenError, type Bytes } from '../core/table.js';

/** The backend's escaping of a substituted piece (e.g. SQLite's %q: ' doubled). */
export type QuoteFn = (raw: Bytes) => Bytes;

/** Requirement bits collected from the templates (DB_COMMON_* in db_common.c). */
export const TEMPLATE_FLAG = {
  KEY_DOMAIN: 1 << 0,
  KEY_USER: 1 << 1,
  VALUE_DOMAIN: 1 << 2,
  VALUE_USER: 1 << 3,
  KEY_PARTIAL: 1 << 4,
} as const;

const { KEY_DOMAIN, KEY_USER, VALUE_DOMAIN, VALUE_USER, KEY_PARTIAL } = TEMPLATE_FLAG;

/** The table a context belongs to, for messages: `type:name`. */
export interface TemplateOwner {
  type: Bytes;
  name: Bytes;
}

/** Domain labels as argv_split(domain, ".") gives them: empty labels are dropped. */
export function domainLabels(domain: Bytes): Bytes[] {
  return domain.split('.').filter((l) => l.length > 0);
}

/**
 * One table's template context (DB_COMMON_CTX): the combined requirement
 * flags and the highest %N of all templates parsed into it.
 */
export class TemplateContext {
  flags = 0;
  nparts = 0;
  /** templates split into text and specifiers (a table has two or three) */
  private readonly ops = new Map<Bytes, Bytes[]>();

  constructor(
    readonly owner: TemplateOwner,
    private readonly warn: (text: string) => void,
  ) {}

  /**
   * db_common_parse(): validate a template and add its needs to the
   * context. Returns whether it has any specifier other than %% (is
   * "dynamic"). An invalid specifier throws TableOpenError (Postfix: fatal).
   */
  parse(template: Bytes, kind: 'query' | 'result'): boolean {
    const query = kind === 'query';
    let dynamic = false;
    for (let i = 0; i < template.length; i++) {
      if (template[i] !== '%') continue;
      const c = template[++i];
      switch (c) {
        case '%':
          break;
        case 'u':
          this.flags |= query ? KEY_USER | KEY_PARTIAL : VALUE_USER;
          dynamic = true;
          break;
        case 'd':
          this.flags |= query ? KEY_DOMAIN | KEY_PARTIAL : VALUE_DOMAIN;
          dynamic = true;
          break;
        case 's':
        case 'S':
          dynamic = true;
          break;
        case 'U':
          this.flags |= KEY_PARTIAL | KEY_USER;
          dynamic = true;
          break;
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
        case '8':
        case '9':
          this.nparts = Math.max(this.nparts, c.charCodeAt(0) - 0x30);
          this.flags |= KEY_PARTIAL | KEY_DOMAIN;
          dynamic = true;
          break;
        case 'D':
          this.flags |= KEY_PARTIAL | KEY_DOMAIN;
          dynamic = true;
          break;
        default:
          throw new TableOpenError(`db_common_parse: ${this.owner.name}: Invalid ${kind} template: ${template}`);
      }
    }
    return dynamic;
  }

  /**
   * db_common_expand(). With key === null, `format` is a query template and
   * `value` the lookup key; otherwise `format` is the result template,
   * `value` one result and `key` the lookup key. The expansion is appended
   * to `result`, after a ',' when `result` is not empty. Returns the new
   * buffer, or null when the value is skipped: a null value (silently), an
   * empty one (with Postfix's warning), or one that lacks what the
   * templates need.
   */
  expand(format: Bytes, value: Bytes | null, key: Bytes | null, result: Bytes, quote?: QuoteFn): Bytes | null {
    if (value === null) return null;
    const { type, name } = this.owner;
    if (value.length === 0) {
      if (key !== null) this.warn(`table "${type}:${name}": empty lookup result for: "${key}" -- ignored`);
      else this.warn(`table "${type}:${name}": empty query string -- ignored`);
      return null;
    }
    const flags = this.flags;
    // Index just after the last '@' of a string, or -1 without one (strrchr + 1).
    const domainStart = (s: Bytes) => {
      const at = s.lastIndexOf('@');
      return at < 0 ? -1 : at + 1;
    };
    let vdomain = -1;
    let kdomain = -1;
    if (key !== null) {
      if (flags & (VALUE_DOMAIN | VALUE_USER)) vdomain = domainStart(value);
      if (((vdomain < 0 || vdomain === value.length) && flags & VALUE_DOMAIN) || (vdomain === 1 && flags & VALUE_USER)) {
        return null;
      }
      if (flags & (KEY_DOMAIN | KEY_USER)) kdomain = domainStart(key);
      if (((kdomain < 0 || kdomain === key.length) && flags & KEY_DOMAIN) || (kdomain === 1 && flags & KEY_USER)) {
        this.warn(`db_common_expand: ${name}: lookup key '${value}' skipped after query`);
        return null;
      }
    } else {
      if (flags & (KEY_DOMAIN | KEY_USER)) vdomain = domainStart(value);
      if (((vdomain < 0 || vdomain === value.length) && flags & KEY_DOMAIN) || (vdomain === 1 && flags & KEY_USER)) {
        return null;
      }
    }

    let parts: Bytes[] | null = null;
    if (this.nparts > 0) {
      const d = key !== null ? kdomain : vdomain;
      parts = domainLabels(d < 0 ? '' : (key ?? value).slice(d));
      if (parts.length < this.nparts) return null;
      for (let i = 0; i < this.nparts; i++) if (parts[parts.length - i - 1].length === 0) return null;
    }

    let out = result.length > 0 ? `${result},` : result;
    const dflag = key !== null ? VALUE_DOMAIN : KEY_DOMAIN;
    const panic = (what: string) => {
      throw new Error(`db_common_expand: ${name}: ${format}: ${what}`);
    };
    // literal text and specifiers alternate: ops[0] text, ops[1] specifier, ops[2] text ...
    const ops = this.compiled(format);
    for (let i = 0; ; i += 2) {
      out += ops[i]!;
      if (i + 1 >= ops.length) break;
      const spec = ops[i + 1]!;
      let piece: Bytes;
      switch (spec) {
        case 's':
          piece = value;
          break;
        case 'u':
          piece = vdomain >= 0 ? value.slice(0, vdomain - 1) : value;
          break;
        case 'd':
          if (!(flags & dflag)) panic('bad query/result template context');
          if (vdomain < 0) panic('expanding domain-less key or value');
          piece = value.slice(vdomain);
          break;
        case 'S':
          piece = key ?? value;
          break;
        case 'U':
          if (key !== null) piece = kdomain >= 0 ? key.slice(0, kdomain - 1) : key;
          else piece = vdomain >= 0 ? value.slice(0, vdomain - 1) : value;
          break;
        case 'D': {
          if (!(flags & KEY_DOMAIN)) panic('bad query/result template context');
          const d = key !== null ? kdomain : vdomain;
          if (d < 0) panic('expanding domain-less key or value');
          piece = (key ?? value).slice(d);
          break;
        }
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
        case '8':
        case '9': {
          const n = spec.charCodeAt(0) - 0x30;
          if (!(flags & KEY_DOMAIN) || this.nparts < n) panic('bad query/result template context');
          if (parts === null || parts.length < this.nparts) panic('key has too few domain labels');
          piece = parts![parts!.length - n]!;
          break;
        }
        default:
          // db_common_parse() rejected these already.
          throw new Error(`db_common_expand: ${name}: invalid ${key !== null ? 'result' : 'query'} template '${format}'`);
      }
      out += quote ? quote(piece) : piece;
    }
    return out;
  }

  /** A template split once into literal text (with %% as %) and the specifiers between: [text, spec, text, ...]. */
  private compiled(format: Bytes): Bytes[] {
    let ops = this.ops.get(format);
    if (ops === undefined) {
      ops = [];
      let text = '';
      for (let i = 0; i < format.length; i++) {
        const ch = format[i]!;
        if (ch !== '%') {
          text += ch;
          continue;
        }
        const spec = format[++i];
        if (spec === '%') {
          text += '%';
          continue;
        }
        ops.push(text, spec ?? '');
        text = '';
      }
      ops.push(text);
      this.ops.set(format, ops);
    }
    return ops;
  }

  /** Expand a query template for a key: the text, or null when the key is skipped. */
  expandQuery(format: Bytes, key: Bytes, quote?: QuoteFn): Bytes | null {
    return this.expand(format, key, null, '', quote);
  }
}
