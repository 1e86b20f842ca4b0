/**
 * The `domain` parameter of the database client tables: a Postfix match
 * list (string_list_init(..., MATCH_FLAG_RETURN, ...) with match_string;
 * src/util/match_list.c, match_ops.c) and db_common_check_domain().
 *
 * Items are separated by commas and/or whitespace (braces group). An item
 * is a literal domain (compared as an exact string after case folding: no
 * parent-domain matching), `/file/name` (its lines are read as more items,
 * lines starting with '#' skipped), or `type:table` (matches when a lookup
 * of the domain there succeeds). Leading '!'s negate. The first item that
 * hits decides; no hit means no match. A table lookup error makes the
 * check fail with that error.
 */
import { readFileSync } from 'node:fs';
import { DICT_FLAG } from '../../protocol/flags.js';
import { foldUtf8, passesUtf8Check, lowercaseAscii } from '../core/casefold.js';
import { openTable, splitAtColon } from '../core/registry.js';
import { strerror } from '../../util/strerror.js';
import {
  DICT_ERR,
  TableOpenError,
  type Bytes,
  type DictErr,
  type LookupResult,
  type Table,
  type TableOpenOptions,
} from '../core/table.js';

const SEPARATORS = ', \t\r\n';

/** A table item of the list; `table` is null when it could not be opened (Postfix: a surrogate). */
interface TableItem {
  kind: 'table';
  match: boolean;
  spec: Bytes;
  table: Table | null;
  reason: string;
}
type Item = { kind: 'literal'; match: boolean; pattern: Bytes } | TableItem;

/** mystrtokq(): the next token outside braces at `pos`, and where scanning goes on. */
function nextToken(s: Bytes, pos: number): { token: Bytes; next: number } | null {
  let i = pos;
  while (i < s.length && SEPARATORS.includes(s[i])) i++;
  if (i >= s.length) return null;
  const start = i;
  let level = 0;
  for (; i < s.length; i++) {
    const c = s[i];
    if (c === '{') level++;
    else if (level > 0 && c === '}') level--;
    else if (level === 0 && SEPARATORS.includes(c)) return { token: s.slice(start, i), next: i + 1 };
  }
  return { token: s.slice(start), next: s.length };
}

export interface DomainListOptions {
  /** Name for messages (Postfix: the table's parser name). */
  pname: Bytes;
  /** Fold patterns and domains with UTF-8 case folding (smtputf8_enable = yes), else ASCII. */
  utf8: boolean;
  warn(text: string): void;
  /** Open a `type:table` item; default: the table registry, read-only, unfolded. */
  open?(type: Bytes, name: Bytes): Promise<Table>;
  /** For the default opener: main.cf lookups. */
  param?: TableOpenOptions['param'];
}

export class DomainList {
  private constructor(
    private readonly items: Item[],
    private readonly opts: DomainListOptions,
  ) {}

  /**
   * Build the list (match_list_init). `!` without a pattern throws
   * TableOpenError (Postfix: fatal); a '#' item ends the list with a
   * warning; an unreadable /file becomes an item whose lookups fail.
   */
  static async create(spec: Bytes, opts: DomainListOptions): Promise<DomainList> {
    const fold = (s: Bytes) => (opts.utf8 ? foldUtf8(s) : lowercaseAscii(s));
    const raw: Array<{ match: boolean; text: Bytes; failure?: string }> = [];
    const parse = (text: Bytes, initMatch: boolean) => {
      for (let t = nextToken(text, 0); t !== null; t = nextToken(text, t.next)) {
        const start = t.token;
        if (start.startsWith('#')) {
          opts.warn(`${opts.pname}: comment at end of line is not supported: ${start} ${text.slice(t.next)}`);
          break;
        }
        let match = initMatch;
        let i = 0;
        while (start[i] === '!') {
          match = !match;
          i++;
        }
        const item = start.slice(i);
        if (item === '') throw new TableOpenError(`${opts.pname}: no pattern after '!'`);
        if (item.startsWith('/')) {
          let data: Bytes;
          try {
            data = readFileSync(Buffer.from(item, 'latin1')).toString('latin1');
          } catch (err) {
            raw.push({ match, text: `nofile:${item}`, failure: `open file ${item}: ${strerror(err)}` });
            continue;
          }
          // Lines keep their newline (vstring_fgets), as a comment warning shows.
          for (const line of data.split(/(?<=\n)/)) if (line !== '' && !line.startsWith('#')) parse(line, match);
        } else {
          raw.push({ match, text: item });
        }
      }
    };
    parse(spec, true);

    const items: Item[] = [];
    for (const r of raw) {
      if (r.failure !== undefined) {
        items.push({ kind: 'table', match: r.match, spec: r.text, table: null, reason: r.failure });
      } else if (!r.text.startsWith('[') && r.text.includes(':')) {
        const { type, name } = splitAtColon(r.text)!;
        let table: Table | null = null;
        let reason = '';
        try {
          table = await (opts.open ? opts.open(type, name) : DomainList.defaultOpen(type, name, opts));
        } catch (err) {
          reason = err instanceof TableOpenError ? err.message : String((err as Error).message ?? err);
          opts.warn(reason);
        }
        items.push({ kind: 'table', match: r.match, spec: r.text, table, reason });
      } else {
        items.push({ kind: 'literal', match: r.match, pattern: fold(r.text) });
      }
    }
    return new DomainList(items, opts);
  }

  private static defaultOpen(type: Bytes, name: Bytes, opts: DomainListOptions): Promise<Table> {
    return openTable({
      type,
      name,
      openFlags: DICT_FLAG.UTF8_REQUEST,
      fold: 'none',
      writable: false,
      param: opts.param ?? (() => undefined),
      warn: opts.warn,
    });
  }

  /** Number of items (for tests). */
  get size(): number {
    return this.items.length;
  }

  /**
   * match_list_match(): whether the domain matches, and the lookup error
   * that ended the search (DICT_ERR.NONE when none did).
   */
  async match(domain: Bytes): Promise<{ matched: boolean; error: DictErr }> {
    const folded = this.opts.utf8 ? foldUtf8(domain) : lowercaseAscii(domain);
    for (const item of this.items) {
      if (item.kind === 'literal') {
        if (folded === item.pattern) return { matched: item.match, error: DICT_ERR.NONE };
        continue;
      }
      const res = await this.lookup(item, folded);
      if (res.found) return { matched: item.match, error: DICT_ERR.NONE };
      if (res.error !== DICT_ERR.NONE) {
        this.opts.warn(`${this.opts.pname}: ${item.spec}: table lookup problem`);
        return { matched: false, error: res.error };
      }
    }
    return { matched: false, error: DICT_ERR.NONE };
  }

  private async lookup(item: TableItem, key: Bytes): Promise<LookupResult> {
    if (item.table === null) {
      this.opts.warn(`${item.spec} is unavailable. ${item.reason}`);
      return { found: false, error: DICT_ERR.RETRY };
    }
    // The UTF-8 layer of a table opened with UTF8_REQUEST: non-UTF-8 keys are not found.
    if (this.opts.utf8 && !passesUtf8Check(key)) return { found: false, error: DICT_ERR.NONE };
    try {
      return await item.table.lookup(key, 0);
    } catch {
      return { found: false, error: DICT_ERR.RETRY };
    }
  }

  /**
   * db_common_check_domain(): 1 = look the key up, 0 = skip it (no '@', an
   * empty local part, or a domain that does not match), < 0 = the list's
   * lookup error.
   */
  async check(key: Bytes): Promise<number> {
    const at = key.lastIndexOf('@');
    if (at < 0 || at === 0) return 0;
    const { matched, error } = await this.match(key.slice(at + 1));
    if (!matched) return error;
    return 1;
  }

  async close(): Promise<void> {
    for (const item of this.items) if (item.kind === 'table' && item.table) await item.table.close?.();
  }
}
