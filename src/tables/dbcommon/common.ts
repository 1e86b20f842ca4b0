/**
 * The lookup pipeline the database client tables share (mysql, pgsql,
 * sqlite, ldap): from a key to a query, and from result values to the
 * table's answer. Backend-neutral: the backend supplies its quoting, runs
 * the query its own way, and writes its own warnings.
 *
 *   const plan = await planQuery(settings, key, { utf8Check: true, quote });
 *   if (plan.kind === 'skip') return plan.result;        // not found / domain-list error
 *   ...run plan.query, then for each value (row by row, column by column):
 *   const out = new ResultCollector(settings, key);
 *   if (!out.add(value)) { warn('...Expansion limit exceeded...'); return RETRY }
 *   return out.result();
 */
import { passesUtf8Check } from '../core/casefold.js';
import { DICT_ERR, NOT_FOUND, RETRY, found, type Bytes, type DictErr, type LookupResult, type TableOpenOptions } from '../core/table.js';
import { utf8Active } from '../core/casefold.js';
import { cString } from '../core/util.js';
import type { CfParser } from './cf.js';
import { DomainList } from './domain.js';
import { TemplateContext, type QuoteFn } from './template.js';

/** What the shared pipeline needs of a table's configuration. */
export interface SqlSettings {
  ctx: TemplateContext;
  /** The query template (`query`, or the legacy form). */
  query: Bytes;
  /** `result_format` (default `%s`). */
  resultFormat: Bytes;
  /** `expansion_limit` (0 or negative: unlimited). */
  expansionLimit: number;
  /** The `domain` filter, or null when empty. */
  domain: DomainList | null;
}

/**
 * db_common_sql_build_query(): the legacy query built from `table`,
 * `select_field`, `where_field` and `additional_conditions`:
 * `SELECT f FROM t WHERE w='%s' conditions` (a template itself, so a literal
 * '%' in the conditions must be written %%).
 */
export function buildLegacyQuery(cf: CfParser): Bytes {
  // Each is required: an absent or empty one fails the length check (Postfix: fatal).
  const table = cf.getStr('table', null, 1, 0);
  const select = cf.getStr('select_field', null, 1, 0);
  const where = cf.getStr('where_field', null, 1, 0);
  const conditions = cf.getStr('additional_conditions', '', 0, 0);
  return `SELECT ${select} FROM ${table} WHERE ${where}='%s' ${conditions}`;
}

/** Whether match lists fold with UTF-8 case folding: smtputf8_enable, as the table's options tell it. */
export function matchListUtf8(opts: Pick<TableOpenOptions, 'fold' | 'openFlags' | 'param'>): boolean {
  if (utf8Active(opts.fold, opts.openFlags)) return true;
  try {
    return (opts.param('smtputf8_enable') ?? '').toLowerCase() === 'yes';
  } catch {
    return false;
  }
}

/**
 * db_common_parse_domain(): the `domain` parameter as a match list, or
 * null when it is empty.
 */
export async function parseDomainFilter(
  cf: CfParser,
  opts: Pick<TableOpenOptions, 'fold' | 'openFlags' | 'param' | 'warn'>,
): Promise<DomainList | null> {
  const spec = cf.getStr('domain', '', 0, 0);
  if (spec === '') return null;
  return DomainList.create(spec, { pname: cf.name, utf8: matchListUtf8(opts), warn: opts.warn, param: opts.param });
}

/**
 * Read the settings every SQL type has, in the order sqlite reads them:
 * `query` (else the legacy form), `result_format`, `expansion_limit`, then
 * the templates are parsed (query first) and the `domain` list built.
 * Types that read parameters in another order (mysql, pgsql: result_format
 * and expansion_limit before query) use the pieces directly.
 */
export async function loadSqlSettings(
  cf: CfParser,
  opts: Pick<TableOpenOptions, 'type' | 'name' | 'fold' | 'openFlags' | 'param' | 'warn'>,
): Promise<SqlSettings> {
  const query = cf.getStr('query', null) ?? buildLegacyQuery(cf);
  const resultFormat = cf.getStr('result_format', '%s', 1, 0);
  const expansionLimit = cf.getInt('expansion_limit', 0, 0, 0);
  return finishSqlSettings(cf, opts, query, resultFormat, expansionLimit);
}

/** Parse the query and result templates into one context and build the domain list. */
export async function finishSqlSettings(
  cf: CfParser,
  opts: Pick<TableOpenOptions, 'type' | 'name' | 'fold' | 'openFlags' | 'param' | 'warn'>,
  query: Bytes,
  resultFormat: Bytes,
  expansionLimit: number,
): Promise<SqlSettings> {
  const ctx = new TemplateContext({ type: opts.type, name: opts.name }, opts.warn);
  ctx.parse(query, 'query');
  ctx.parse(resultFormat, 'result');
  const domain = await parseDomainFilter(cf, opts);
  return { ctx, query, resultFormat, expansionLimit, domain };
}

export type QueryPlan = { kind: 'skip'; result: LookupResult } | { kind: 'query'; query: Bytes };

export interface PlanOptions {
  /** Skip keys that are not valid UTF-8 (sqlite, ldap; mysql/pgsql only in Postfix snapshot builds). */
  utf8Check: boolean;
  /** The backend's quoting of substituted pieces; omit to expand without quoting (mysql/pgsql's pre-check). */
  quote?: QuoteFn;
}

/**
 * Steps 2, 4 and 5 of the pipeline for an already case-folded key: the
 * UTF-8 check, the domain filter, and the query expansion (which skips keys
 * that lack what the templates need, and warns about an empty key).
 */
export function planQuery(s: SqlSettings, key: Bytes, opts: PlanOptions): QueryPlan | Promise<QueryPlan> {
  if (opts.utf8Check && !passesUtf8Check(key)) return { kind: 'skip', result: NOT_FOUND };
  // without a domain list, no turn of the event loop
  if (s.domain === null) return expandPlan(s, key, opts);
  return s.domain.check(key).then((rc): QueryPlan => {
    if (rc === 0) return { kind: 'skip', result: NOT_FOUND };
    if (rc < 0) return { kind: 'skip', result: { found: false, error: rc as DictErr } };
    return expandPlan(s, key, opts);
  });
}

function expandPlan(s: SqlSettings, key: Bytes, opts: PlanOptions): QueryPlan {
  const query = s.ctx.expandQuery(s.query, key, opts.quote);
  if (query === null) return { kind: 'skip', result: NOT_FOUND };
  return { kind: 'query', query };
}

/**
 * The values of one lookup through `result_format`, joined with ',' (steps
 * 7 and 8). NULLs are skipped silently, empty values with Postfix's
 * warning, values that lack what the result template needs silently.
 */
export class ResultCollector {
  private buf: Bytes = '';
  private count = 0;
  private over = false;

  constructor(
    private readonly s: Pick<SqlSettings, 'ctx' | 'resultFormat' | 'expansionLimit'>,
    private readonly key: Bytes,
  ) {}

  /**
   * Add one value (a C string: only the bytes before a NUL count). Returns
   * false when it is one expansion more than `expansion_limit` allows: the
   * caller logs its warning and stops; result() is then RETRY.
   */
  add(value: Bytes | null): boolean {
    if (this.over) return false;
    const next = this.s.ctx.expand(this.s.resultFormat, value === null ? null : cString(value), this.key, this.buf);
    if (next === null) return true;
    this.buf = next;
    if (this.s.expansionLimit > 0 && ++this.count > this.s.expansionLimit) {
      this.over = true;
      return false;
    }
    return true;
  }

  /** Whether the expansion limit was exceeded. */
  get exceeded(): boolean {
    return this.over;
  }

  /** The joined text so far. */
  get text(): Bytes {
    return this.buf;
  }

  /** RETRY when over the limit, FOUND(text) when anything was added, else NOTFOUND. */
  result(): LookupResult {
    if (this.over) return RETRY;
    return this.buf.length > 0 ? found(this.buf) : NOT_FOUND;
  }
}

/** Error codes as a LookupResult. */
export function failure(error: DictErr): LookupResult {
  return error === DICT_ERR.NONE ? NOT_FOUND : { found: false, error };
}
