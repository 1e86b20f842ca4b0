/**
 * Request processing, independent of sockets: a parsed request in, a reply
 * out, with Postfix proxymap's rules (authorization, flags, status mapping).
 * Lookups of the tables in proxymapd_cache_maps go through the lookup cache
 * (cache.ts; Postfix has none), and writes to them drop their answers.
 */
import { DICT_FLAG, PROXY_STAT, type ProxyStatus } from '../protocol/flags.js';
import type { Dialect, Reply, Request, RequestKind, BadRequest } from '../protocol/messages.js';
import { log, logBytes } from '../log.js';
import { DICT_ERR, type FoldMode, type LookupResult, type Table } from '../tables/core/table.js';
import { foldKey, passesUtf8Check } from '../tables/core/casefold.js';
import { nonUtf8KeyWarning, nonUtf8ValueWarning } from '../tables/core/utf8layer.js';
import { INSTANCE_BITS, type Instance, type InstanceKey, type TableInstances } from './instances.js';
import type { CachedTable, LookupCache } from './cache.js';

export type Service = 'proxymap' | 'proxywrite';

export interface HandlerOptions {
  instances: TableInstances;
  /** approved tables per service ("type:name" without proxy:) */
  authorized: Record<Service, ReadonlySet<string>>;
  /** main.cf smtputf8_enable */
  smtputf8: boolean;
  /** whether a table has FIXED keys, as known before opening it (type registry), or undefined */
  typeFixed?: (spec: string) => boolean | undefined;
  /** the lookup cache (proxymapd_cache_maps), if any table is cached */
  cache?: LookupCache;
}

export interface Outcome {
  kind: RequestKind | null;
  dialect: Dialect;
  reply: Reply;
}

const PROXY_PREFIX = 'proxy:';

/** Per-request decision on case folding and the UTF-8 checks. */
interface KeyPlan {
  /** fold mode the instance is opened with (keys of the table's source) */
  instanceFold: FoldMode;
  /** fold to apply to this request's key for FIXED tables */
  keyFold: FoldMode;
  /** apply the UTF-8 layer checks (key and value must be valid UTF-8) */
  utf8: boolean;
}

export class RequestHandler {
  /** the approved tables per service; replaced as a whole by setAuthorized */
  private authorized: Record<Service, ReadonlySet<string>>;

  constructor(private readonly o: HandlerOptions) {
    this.authorized = o.authorized;
  }

  /** Every approved table spec, of both services. */
  approved(): Set<string> {
    return new Set([...this.authorized.proxymap, ...this.authorized.proxywrite]);
  }

  /** The approved tables of a service. */
  approvedFor(service: Service): ReadonlySet<string> {
    return this.authorized[service];
  }

  /**
   * Replace the approved tables of both services at once (a configuration
   * reload): requests decoded from now on are checked against the new sets;
   * requests already past the check finish with the table they got.
   */
  setAuthorized(authorized: Record<Service, ReadonlySet<string>>): void {
    this.authorized = { proxymap: authorized.proxymap, proxywrite: authorized.proxywrite };
  }

  /** Use another lookup cache (or none) from the next request on (a configuration reload). */
  setCache(cache: LookupCache | undefined): void {
    this.o.cache = cache;
  }

  /** Handle one request; synchronous when the table answers synchronously. */
  handle(req: Request | BadRequest, service: Service): Outcome | Promise<Outcome> {
    if (req.kind === 'bad') {
      if (req.request === null) {
        log.warn(logBytes(req.reason));
        return { kind: null, dialect: req.dialect, reply: { status: PROXY_STAT.BAD } };
      }
      log.warn(`${req.request} request: ${logBytes(req.reason)}`);
      return fail(req.request, req.dialect, PROXY_STAT.BAD);
    }
    const { kind, dialect } = req;
    if (kind === 'sequence' && req.fn !== 0 && req.fn !== 1) {
      return fail(kind, dialect, PROXY_STAT.BAD);
    }
    if ((kind === 'update' || kind === 'delete') && service !== 'proxywrite') {
      log.warn(`refusing ${logBytes(req.table)} ${kind} request on non-proxywrite service`);
      return fail(kind, dialect, PROXY_STAT.DENY);
    }
    let spec = req.table;
    while (spec.startsWith(PROXY_PREFIX)) spec = spec.slice(PROXY_PREFIX.length);
    if (!spec.includes(':')) return fail(kind, dialect, PROXY_STAT.BAD);
    if (!this.authorized[service].has(spec)) {
      const t = logBytes(spec);
      log.warn(`request for unapproved table: "${t}"`);
      log.warn(
        `to approve this table for ${service === 'proxymap' ? 'read-only' : 'read-write'} access, list proxy:${t} in main.cf:${
          service === 'proxymap' ? 'proxy_read_maps' : 'proxy_write_maps'
        }`,
      );
      return fail(kind, dialect, PROXY_STAT.DENY);
    }
    const plan = this.plan(req, spec);
    const ik: InstanceKey = {
      spec,
      writable: service === 'proxywrite',
      fold: plan.instanceFold,
      dup: req.flags & (DICT_FLAG.DUP_IGNORE | DICT_FLAG.DUP_REPLACE),
      // Instance flags: a legacy client repeats them in every request's flags, a new one sends instance_flags.
      bits: (dialect === 'new' ? req.instanceFlags : req.flags) & INSTANCE_BITS,
    };
    const inst = this.o.instances.peek(ik);
    if (inst) return this.execute(req, inst, plan, spec, ik.writable);
    return this.o.instances.get(ik).then((i) => this.execute(req, i, plan, spec, ik.writable));
  }

  /**
   * Decide folding. New-dialect clients say what they want (instance_flags,
   * flags) and send keys unfolded when we report UTF8_ACTIVE. Legacy clients
   * with the UTF-8 layer fold keys themselves and clear FOLD_FIX on the wire;
   * without it they send FOLD_FIX and we fold. A legacy key that is not in
   * folded form therefore comes from a client that asked for no folding.
   */
  private plan(req: Request, spec: string): KeyPlan {
    const utf8Wanted = (f: number) => this.o.smtputf8 && (f & DICT_FLAG.UTF8_REQUEST) !== 0;
    if (req.dialect === 'new') {
      const inst = req.instanceFlags;
      const instanceFold: FoldMode = inst & DICT_FLAG.FOLD_FIX ? (utf8Wanted(inst) ? 'utf8' : 'ascii') : 'none';
      const keyFold: FoldMode = req.flags & DICT_FLAG.FOLD_FIX ? (utf8Wanted(inst) ? 'utf8' : 'ascii') : 'none';
      return { instanceFold, keyFold, utf8: utf8Wanted(inst) };
    }
    const f = req.flags;
    const utf8 = utf8Wanted(f);
    if (req.kind === 'open') {
      // Legacy open carries only instance bits: open the table the way the lookups to come will want it.
      return { instanceFold: this.o.smtputf8 ? 'utf8' : 'ascii', keyFold: 'none', utf8: false };
    }
    if (f & DICT_FLAG.FOLD_FIX) {
      const mode: FoldMode = utf8 ? 'utf8' : 'ascii';
      return { instanceFold: mode, keyFold: mode, utf8 };
    }
    if (utf8 && 'key' in req) {
      // The client folds keys for FIXED tables only: a pattern table's keys say nothing about folding.
      if (this.isFixed(spec) === false) return { instanceFold: 'utf8', keyFold: 'none', utf8 };
      const folded = foldKey(req.key, 'utf8') === req.key;
      return { instanceFold: folded ? 'utf8' : 'none', keyFold: 'none', utf8 };
    }
    if (utf8) return { instanceFold: 'utf8', keyFold: 'none', utf8 };
    return { instanceFold: 'none', keyFold: 'none', utf8: false };
  }

  private isFixed(spec: string): boolean | undefined {
    const known = this.o.instances.knownImplFlags(spec);
    if (known !== undefined) return (known & DICT_FLAG.FIXED) !== 0;
    return this.o.typeFixed?.(spec);
  }

  private execute(req: Request, inst: Instance, plan: KeyPlan, spec: string, writable: boolean): Outcome | Promise<Outcome> {
    const { kind, dialect } = req;
    if (!inst.ok) {
      if (kind === 'open') {
        const flags = DICT_FLAG.PATTERN | (dialect === 'new' ? DICT_FLAG.SURROGATE : 0);
        return { kind, dialect, reply: { status: PROXY_STAT.OK, flags } };
      }
      log.warn(`${logBytes(spec)} is unavailable. ${logBytes(inst.reason)}`);
      return fail(kind, dialect, PROXY_STAT.RETRY, dialect === 'new' ? req.flags : 0);
    }
    const table = inst.table;
    switch (kind) {
      case 'open': {
        // The instance flags plus the type's own bits; UTF8_ACTIVE tells a 3.11+ client that we fold and check UTF-8.
        let flags = req.instanceFlags | table.implFlags;
        if (this.o.smtputf8 && req.instanceFlags & DICT_FLAG.UTF8_REQUEST) flags |= DICT_FLAG.UTF8_ACTIVE;
        return { kind, dialect, reply: { status: PROXY_STAT.OK, flags: flags >>> 0 } };
      }
      case 'lookup': {
        const key = this.prepareKey(req.key, plan, table, req.flags, spec);
        if (key === null) return { kind, dialect, reply: { status: PROXY_STAT.NOKEY, flags: replyFlags(req), value: '' } };
        const cached = this.o.cache?.table(spec);
        if (cached) return this.cachedLookup(req, table, plan, spec, key, cached, writable);
        return callThen(() => table.lookup(key, req.flags), spec, 'lookup', (res) => this.lookupOutcome(req, res, plan, spec, key));
      }
      case 'sequence': {
        if (!table.sequence) {
          log.warn(`table ${logBytes(spec)}: sequence operation is not supported`);
          return fail(kind, dialect, PROXY_STAT.CONFIG, replyFlags(req));
        }
        const seq = table.sequence.bind(table);
        return callThen(() => seq(req.fn as 0 | 1, req.flags), spec, 'sequence', (r) =>
          r.found
            ? { kind, dialect, reply: { status: PROXY_STAT.OK, flags: replyFlags(req), key: r.key, value: r.value } }
            : fail(kind, dialect, errStatus(r.error), replyFlags(req)),
        );
      }
      case 'update':
      case 'delete': {
        const op = kind === 'update' ? table.update : table.delete;
        if (!op) {
          log.warn(`table ${logBytes(spec)}: ${kind} operation is not supported`);
          return fail(kind, dialect, PROXY_STAT.CONFIG, replyFlags(req));
        }
        const key = this.prepareKey(req.key, plan, table, req.flags, spec);
        if (key === null) return fail(kind, dialect, PROXY_STAT.NOKEY, replyFlags(req));
        const flags = replyFlags(req);
        if (kind === 'update' && plan.utf8 && !passesUtf8Check(req.value)) {
          log.warn(logBytes(nonUtf8ValueWarning(spec, key, req.value)));
          return fail(kind, dialect, PROXY_STAT.NOKEY, flags);
        }
        const cache = this.o.cache;
        const cached = cache?.table(spec);
        if (cached) cache!.writeStarted(cached);
        const call =
          kind === 'update'
            ? () => table.update!(key, req.value, req.flags | DICT_FLAG.SYNC_UPDATE | DICT_FLAG.DUP_REPLACE)
            : () => table.delete!(key, req.flags | DICT_FLAG.SYNC_UPDATE);
        return callThen(call, spec, kind, (r) => {
          if (cached) cache!.writeDone(cached);
          const status: ProxyStatus = r.status === 0 ? PROXY_STAT.OK : r.status === 1 ? PROXY_STAT.NOKEY : errStatus(r.error);
          return { kind, dialect, reply: { status, flags } };
        });
      }
    }
  }

  /** Fold and check a key; null means "not found" (invalid UTF-8 key). */
  private prepareKey(key: string, plan: KeyPlan, table: Table, flags: number, spec: string): string | null {
    const fixed = (table.implFlags & DICT_FLAG.FIXED) !== 0;
    if (plan.utf8 && !passesUtf8Check(key)) {
      log.warn(logBytes(nonUtf8KeyWarning(spec, key)));
      return null;
    }
    if (fixed) {
      // Without the UTF-8 layer Postfix's tables fold inside their own lookup; composites do it per component.
      if (plan.keyFold === 'none' || (plan.keyFold === 'ascii' && table.foldsKeys)) return key;
      return foldKey(key, plan.keyFold);
    }
    // Pattern tables fold only on FOLD_MUL (no Postfix program sets it).
    if (flags & DICT_FLAG.FOLD_MUL) return foldKey(key, plan.utf8 ? 'utf8' : 'ascii');
    return key;
  }

  /**
   * A lookup of a cached table: the answer from the cache, or from the table
   * and then kept if it is one the cache may keep (found and passing the
   * UTF-8 check, or not found). The entry's key names everything besides the
   * folded key that can change the answer: service, dialect, fold modes,
   * UTF-8 checks, request and instance flags.
   */
  private cachedLookup(
    req: Request & { kind: 'lookup' },
    table: Table,
    plan: KeyPlan,
    spec: string,
    key: string,
    cached: CachedTable,
    writable: boolean,
  ): Outcome | Promise<Outcome> {
    const cache = this.o.cache!;
    const { kind, dialect } = req;
    const variant =
      (writable ? 1 : 0) | (dialect === 'new' ? 2 : 0) | (FOLD_CODE[plan.instanceFold] << 2) | (FOLD_CODE[plan.keyFold] << 4) | (plan.utf8 ? 64 : 0);
    const ck = `${variant}/${req.flags}/${req.instanceFlags}\0${key}`;
    const hit = cache.get(cached, ck);
    if (hit !== undefined) {
      const flags = replyFlags(req);
      return hit === null ? fail(kind, dialect, PROXY_STAT.NOKEY, flags) : { kind, dialect, reply: { status: PROXY_STAT.OK, flags, value: hit } };
    }
    const generation = cached.generation;
    return callThen(() => table.lookup(key, req.flags), spec, 'lookup', (res) => {
      const out = this.lookupOutcome(req, res, plan, spec, key);
      const status = out.reply.status;
      if (status === PROXY_STAT.OK) cache.set(cached, ck, out.reply.value!, generation);
      else if (status === PROXY_STAT.NOKEY) cache.set(cached, ck, null, generation);
      return out;
    });
  }

  private lookupOutcome(req: Request, r: LookupResult, plan: KeyPlan, spec: string, key: string): Outcome {
    const { kind, dialect } = req;
    const flags = replyFlags(req);
    if (r.found) {
      if (plan.utf8 && !passesUtf8Check(r.value)) {
        log.warn(logBytes(nonUtf8ValueWarning(spec, key, r.value)));
        return fail(kind, dialect, PROXY_STAT.CONFIG, flags);
      }
      return { kind, dialect, reply: { status: PROXY_STAT.OK, flags, value: r.value } };
    }
    return fail(kind, dialect, r.error === DICT_ERR.NONE ? PROXY_STAT.NOKEY : errStatus(r.error), flags);
  }
}

const FOLD_CODE: Record<FoldMode, number> = { none: 0, ascii: 1, utf8: 2 };

/** Reply flags of a successful request in the new dialect (the request's flags plus what the op adds). */
function replyFlags(req: Request): number {
  if (req.dialect === 'legacy') return 0;
  if (req.kind === 'update') return (req.flags | DICT_FLAG.SYNC_UPDATE | DICT_FLAG.DUP_REPLACE) >>> 0;
  if (req.kind === 'delete') return (req.flags | DICT_FLAG.SYNC_UPDATE) >>> 0;
  return req.flags >>> 0;
}

function errStatus(err: number): ProxyStatus {
  if (err === DICT_ERR.NONE) return PROXY_STAT.NOKEY;
  return err === DICT_ERR.RETRY ? PROXY_STAT.RETRY : PROXY_STAT.CONFIG;
}

function fail(kind: RequestKind, dialect: Dialect, status: ProxyStatus, flags = 0): Outcome {
  return { kind, dialect, reply: { status, flags, value: '', key: '' } };
}

/**
 * Run a table operation and continue with `then`: a throw or a rejection
 * becomes a RETRY result, with a warning (a table bug must never take the
 * server down). An asynchronous answer costs one turn of the promise queue,
 * not two (a catch, then a then).
 */
function callThen<T extends { found: boolean } | { status: number }, U>(
  fn: () => T | Promise<T>,
  spec: string,
  op: string,
  then: (t: T) => U,
): U | Promise<U> {
  const onError = (e: unknown): T => {
    log.warn(`table ${logBytes(spec)}: ${op} failed: ${(e as Error)?.message ?? String(e)}`);
    return ({ found: false, status: -1, error: DICT_ERR.RETRY } as unknown) as T;
  };
  let r: T | Promise<T>;
  try {
    r = fn();
  } catch (e) {
    return then(onError(e));
  }
  return r instanceof Promise ? r.then(then, (e: unknown) => then(onError(e))) : then(r);
}

export type { Table };
