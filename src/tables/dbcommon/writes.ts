/**
 * Writable SQL tables, a proxymapd extension (Postfix's mysql, pgsql and
 * sqlite tables are read-only): the optional `update_query`,
 * `delete_query` and `sequence_query` parameters, so that a cache such as
 * postscreen_cache_map or address_verify_map can live in a (replicated)
 * database shared by several hosts.
 *
 *   update_query    run for an update; the query template language (%s %u
 *                   %d %S %U %D %1-%9 %%) plus %v, the value. Should insert
 *                   or overwrite (an upsert); it succeeds when the server
 *                   accepted it, whatever the count of affected rows.
 *   delete_query    run for a delete; "not found" when it affected no row.
 *   sequence_query  the walk (first/next), by keyset pagination: run with
 *                   %s = the last key returned ('' for the first call; %s
 *                   and %% are its only specifiers), it must return rows
 *                   (key, value) with keys greater than %s, ordered by key,
 *                   e.g. `SELECT k, v FROM t WHERE k > '%s' ORDER BY k
 *                   LIMIT 1000`. The table keeps one page and asks for the
 *                   next when it runs out; an empty page ends the walk.
 *                   Memory stays bounded by the LIMIT, and deleting the
 *                   current row during the walk (a cache cleanup) loses
 *                   nothing.
 *
 * Substituted pieces (key parts, value, last key) are quoted by the
 * backend's quote function, as in `query`. The write templates share one
 * template context of their own: what they need of a key (a domain, %N
 * labels) does not change which keys `query` looks up; a key that lacks it
 * is not written (the update or delete fails: "not found"). The `domain`
 * filter applies to lookups only.
 *
 * A table opened for writing (proxywrite) must have update_query or
 * delete_query; without them the open fails exactly as it did before
 * (`map requires O_RDONLY access mode`). sequence_query alone adds a
 * sequence to a read-only table.
 */
import { DICT_ERR, TableOpenError, type Bytes, type DictErr, type SequenceResult, type TableOpenOptions, type WriteResult } from '../core/table.js';
import { cString, requireReadOnly } from '../core/util.js';
import { CfParser } from './cf.js';
import { TemplateContext, type QuoteFn } from './template.js';

export const WRITE_OK: WriteResult = Object.freeze({ status: 0, error: 0 }) as WriteResult;
export const WRITE_FAIL: WriteResult = Object.freeze({ status: 1, error: 0 }) as WriteResult;
export const WRITE_RETRY: WriteResult = Object.freeze({ status: -1, error: DICT_ERR.RETRY }) as WriteResult;
export const WRITE_CONFIG: WriteResult = Object.freeze({ status: -1, error: DICT_ERR.CONFIG }) as WriteResult;

/** Split a template at its %v specifiers (%% left as it is): the pieces between. */
function splitAtValue(template: Bytes): Bytes[] {
  const pieces: Bytes[] = [];
  let start = 0;
  for (let i = 0; i < template.length; i++) {
    if (template[i] !== '%') continue;
    if (template[i + 1] === 'v') {
      pieces.push(template.slice(start, i));
      start = i + 2;
    }
    i++;
  }
  pieces.push(template.slice(start));
  return pieces;
}

/** The sequence template split at %s, with %% as %; any other specifier is an open error. */
function compileSequence(template: Bytes, owner: Bytes): Bytes[] {
  const pieces: Bytes[] = [];
  let text = '';
  for (let i = 0; i < template.length; i++) {
    const ch = template[i]!;
    if (ch !== '%') {
      text += ch;
      continue;
    }
    const spec = template[++i];
    if (spec === '%') text += '%';
    else if (spec === 's') {
      pieces.push(text);
      text = '';
    } else {
      throw new TableOpenError(`db_common_parse: ${owner}: Invalid sequence_query template: ${template} (only %s and %% are allowed)`);
    }
  }
  pieces.push(text);
  return pieces;
}

/** A table's write queries, parsed at open. */
export class SqlWrites {
  private constructor(
    private readonly ctx: TemplateContext,
    /** update_query split at %v */
    private readonly update: Bytes[] | null,
    private readonly del: Bytes | null,
    /** sequence_query split at %s */
    private readonly seq: Bytes[] | null,
  ) {}

  /**
   * Read update_query, delete_query and sequence_query. A writable open
   * (proxywrite) without update_query or delete_query fails as Postfix's
   * read-only types fail it, as does one whose parameter file cannot be read.
   */
  static async open(opts: TableOpenOptions): Promise<{ cf: CfParser; writes: SqlWrites }> {
    let cf: CfParser;
    try {
      cf = await CfParser.open(opts.name, opts);
    } catch (e) {
      if (opts.writable) requireReadOnly(opts);
      throw e;
    }
    const update = cf.getStr('update_query', null, 0, 0);
    const del = cf.getStr('delete_query', null, 0, 0);
    if (update === null && del === null) requireReadOnly(opts);
    const seq = cf.getStr('sequence_query', null, 0, 0);
    const ctx = new TemplateContext({ type: opts.type, name: opts.name }, opts.warn);
    // %v is the value: the pieces around it are query templates
    const pieces = update === null ? null : splitAtValue(update);
    for (const p of pieces ?? []) ctx.parse(p, 'query');
    if (del !== null) ctx.parse(del, 'query');
    return { cf, writes: new SqlWrites(ctx, opts.writable ? pieces : null, opts.writable ? del : null, seq === null ? null : compileSequence(seq, opts.name)) };
  }

  get canUpdate(): boolean {
    return this.update !== null;
  }

  get canDelete(): boolean {
    return this.del !== null;
  }

  get canSequence(): boolean {
    return this.seq !== null;
  }

  /** The update query for key and value, or null when the key lacks what the templates need. */
  updateQuery(key: Bytes, value: Bytes, quote?: QuoteFn): Bytes | null {
    if (this.update === null || key === '') return null;
    let out = '';
    for (let i = 0; i < this.update.length; i++) {
      if (i > 0) out += quote ? quote(value) : value;
      const piece = this.update[i]!;
      if (piece === '') continue;
      const q = this.ctx.expandQuery(piece, key, quote);
      if (q === null) return null;
      out += q;
    }
    return out;
  }

  /** The delete query for key, or null when the key lacks what the template needs. */
  deleteQuery(key: Bytes, quote?: QuoteFn): Bytes | null {
    if (this.del === null || key === '') return null;
    return this.ctx.expandQuery(this.del, key, quote);
  }

  /** The sequence query for the page after `last` ('' for the first page). */
  sequenceQuery(last: Bytes, quote?: QuoteFn): Bytes {
    const q = quote ? quote(last) : last;
    return this.seq!.join(q);
  }
}

/** What one page fetch gives: the rows (all columns, null = SQL NULL), or an error. */
export type PageResult = { rows: (Bytes | null)[][] } | { error: DictErr };

/**
 * The keyset walk of sequence_query: one page buffered; the next fetched
 * with the last key returned. A page that starts with the last key again
 * (a query that does not select keys greater than %s) ends the walk with a
 * configuration error instead of looping. A failed fetch answers the error
 * and keeps the position, so the next call asks for the same page again.
 */
export class SqlSequence {
  private page: [Bytes, Bytes][] = [];
  private pos = 0;
  private last: Bytes = '';

  constructor(
    private readonly fetch: (last: Bytes) => Promise<PageResult>,
    private readonly warn: (text: string) => void,
    /** `type:name` for messages */
    private readonly label: string,
  ) {}

  async next(fn: 0 | 1): Promise<SequenceResult> {
    if (fn === 0) this.reset();
    if (this.pos >= this.page.length) {
      const r = await this.fetch(this.last);
      if ('error' in r) return { found: false, error: r.error };
      const page: [Bytes, Bytes][] = [];
      for (const row of r.rows) {
        const key = row[0] == null ? '' : cString(row[0]);
        if (key !== '') page.push([key, row[1] == null ? '' : cString(row[1])]);
      }
      if (page.length === 0) {
        this.reset();
        return { found: false, error: DICT_ERR.NONE };
      }
      if (this.last !== '' && page[0]![0] === this.last) {
        this.warn(`${this.label}: sequence_query returned the last key '${this.last}' again: it must select keys greater than %s, ordered by key`);
        this.reset();
        return { found: false, error: DICT_ERR.CONFIG };
      }
      this.page = page;
      this.pos = 0;
    }
    const [key, value] = this.page[this.pos++]!;
    this.last = key;
    return { found: true, key, value };
  }

  private reset(): void {
    this.page = [];
    this.pos = 0;
    this.last = '';
  }
}
