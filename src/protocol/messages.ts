/**
 * proxymap request and reply messages for both protocol dialects:
 *   legacy (Postfix <= 3.10): `table, flags, ...`, replies without flags
 *   new    (Postfix >= 3.11): `table, instance_flags, flags, ...`, replies with flags
 * A request shows its dialect by the attribute after `table`.
 */
import { encodeRecord, parseUnsigned, type AttrRecord } from './codec.js';
import { PROXY_STAT, type ProxyStatus } from './flags.js';

export type Dialect = 'legacy' | 'new';
export type RequestKind = 'open' | 'lookup' | 'update' | 'delete' | 'sequence';
export const REQUEST_KINDS: readonly RequestKind[] = ['open', 'lookup', 'update', 'delete', 'sequence'];

export interface RequestBase {
  dialect: Dialect;
  table: string;
  /** Open-time flags: new dialect `instance_flags`; legacy: the `flags` (INST bits at open). */
  instanceFlags: number;
  /** Per-request flags: new dialect `flags`; legacy `flags` (same as instanceFlags for open). */
  flags: number;
}
export interface OpenRequest extends RequestBase { kind: 'open' }
export interface LookupRequest extends RequestBase { kind: 'lookup'; key: string }
export interface UpdateRequest extends RequestBase { kind: 'update'; key: string; value: string }
export interface DeleteRequest extends RequestBase { kind: 'delete'; key: string }
export interface SequenceRequest extends RequestBase { kind: 'sequence'; fn: number }
export type Request = OpenRequest | LookupRequest | UpdateRequest | DeleteRequest | SequenceRequest;

/** A request that could not be parsed; `kind`/`dialect` say which reply shape to use. */
export interface BadRequest {
  kind: 'bad';
  /** known request kind (reply with its shape), or null for an unknown request name */
  request: RequestKind | null;
  dialect: Dialect;
  reason: string;
}

export interface ParseOutcome {
  request: Request | BadRequest;
  /** non-fatal remarks (e.g. trailing extra attribute), logged as warnings */
  warnings: string[];
}

/** Attributes after `request`, per kind and dialect (names, in order). */
const LEGACY_ATTRS: Record<RequestKind, readonly string[]> = {
  open: ['table', 'flags'],
  lookup: ['table', 'flags', 'key'],
  update: ['table', 'flags', 'key', 'value'],
  delete: ['table', 'flags', 'key'],
  sequence: ['table', 'flags', 'function'],
};
const NEW_ATTRS: Record<RequestKind, readonly string[]> = {
  open: ['table', 'instance_flags'],
  lookup: ['table', 'instance_flags', 'flags', 'key'],
  update: ['table', 'instance_flags', 'flags', 'key', 'value'],
  delete: ['table', 'instance_flags', 'flags', 'key'],
  sequence: ['table', 'instance_flags', 'flags', 'function'],
};

export function requestAttrNames(kind: RequestKind, dialect: Dialect): readonly string[] {
  if (kind === 'lookup') return dialect === 'legacy' ? LEGACY_LOOKUP : NEW_LOOKUP;
  return dialect === 'legacy' ? LEGACY_ATTRS[kind] : NEW_ATTRS[kind];
}
const LEGACY_LOOKUP = LEGACY_ATTRS.lookup;
const NEW_LOOKUP = NEW_ATTRS.lookup;

function isKind(s: string): s is RequestKind {
  return s === 'lookup' || s === 'open' || s === 'update' || s === 'delete' || s === 'sequence';
}

/**
 * Parse one request record with attr_scan STRICT semantics: the wanted
 * attributes must come in order; a missing one, an unexpected one before the
 * last wanted, or a malformed number is BAD. Extra attributes after the last
 * wanted one are a warning only (as in the C server).
 */
export function parseRequest(rec: AttrRecord): ParseOutcome {
  const first = rec[0];
  if (!first || first[0] !== 'request') {
    const reason = first ? `unexpected attribute ${first[0]} (expecting: request)` : 'missing attribute request';
    return { request: { kind: 'bad', request: null, dialect: 'legacy', reason }, warnings: [] };
  }
  const name = first[1];
  if (!isKind(name)) {
    return { request: { kind: 'bad', request: null, dialect: 'legacy', reason: `unrecognized request: "${name}", ignored` }, warnings: [] };
  }
  const third = rec.length > 2 ? rec[2][0] : undefined;
  const dialect: Dialect = third === 'instance_flags' ? 'new' : 'legacy';
  const wanted = requestAttrNames(name, dialect);
  let table = '';
  let key = '';
  let value = '';
  let instF = 0;
  let fl = 0;
  let fn = 0;
  for (let i = 0; i < wanted.length; i++) {
    const want = wanted[i];
    const got = rec[i + 1];
    if (!got) {
      return { request: { kind: 'bad', request: name, dialect, reason: `missing attribute ${want}` }, warnings: [] };
    }
    if (got[0] !== want) {
      return {
        request: { kind: 'bad', request: name, dialect, reason: `unexpected attribute ${got[0]} (expecting: ${want})` },
        warnings: [],
      };
    }
    switch (want) {
      case 'table': table = got[1]; break;
      case 'key': key = got[1]; break;
      case 'value': value = got[1]; break;
      default: {
        const n = parseUnsigned(got[1]);
        if (n === null) {
          return { request: { kind: 'bad', request: name, dialect, reason: `malformed ${want} value "${got[1]}"` }, warnings: [] };
        }
        if (want === 'flags') fl = n;
        else if (want === 'instance_flags') instF = n;
        else fn = n;
      }
    }
  }
  const warnings: string[] = [];
  for (let i = wanted.length + 1; i < rec.length; i++) {
    warnings.push(`unexpected attribute ${rec[i][0]} (expecting: end of request)`);
  }
  const instanceFlags = dialect === 'new' ? instF : fl;
  const flags = dialect === 'new' && name === 'open' ? instF : fl;
  let request: Request;
  switch (name) {
    case 'open':
      request = { kind: 'open', dialect, table, instanceFlags, flags };
      break;
    case 'lookup':
      request = { kind: 'lookup', dialect, table, instanceFlags, flags, key };
      break;
    case 'update':
      request = { kind: 'update', dialect, table, instanceFlags, flags, key, value };
      break;
    case 'delete':
      request = { kind: 'delete', dialect, table, instanceFlags, flags, key };
      break;
    case 'sequence':
      request = { kind: 'sequence', dialect, table, instanceFlags, flags, fn };
      break;
  }
  return { request, warnings };
}

export interface Reply {
  status: ProxyStatus;
  /** reply flags (new dialect; legacy open) */
  flags?: number;
  value?: string;
  key?: string;
}

/**
 * Encode a reply in the shape the request kind and dialect require; every
 * attribute is sent whatever the status. `kind` null = unknown request:
 * just the status.
 */
export function encodeReply(kind: RequestKind | null, dialect: Dialect, r: Reply): Buffer {
  return Buffer.from(encodeReplyString(kind, dialect, r), 'latin1');
}

/** encodeReply as a byte string (one char per byte), for writing with the 'latin1' encoding. */
export function encodeReplyString(kind: RequestKind | null, dialect: Dialect, r: Reply): string {
  const status = r.status;
  if (kind === null) return `status\0${status}\0\0`;
  const flags = String((r.flags ?? 0) >>> 0);
  const withFlags = dialect === 'new';
  switch (kind) {
    case 'open':
      return `status\0${status}\0flags\0${flags}\0\0`;
    case 'lookup':
      return withFlags
        ? `status\0${status}\0flags\0${flags}\0value\0${r.value ?? ''}\0\0`
        : `status\0${status}\0value\0${r.value ?? ''}\0\0`;
    case 'update':
    case 'delete':
      return withFlags ? `status\0${status}\0flags\0${flags}\0\0` : `status\0${status}\0\0`;
    case 'sequence':
      return withFlags
        ? `status\0${status}\0flags\0${flags}\0key\0${r.key ?? ''}\0value\0${r.value ?? ''}\0\0`
        : `status\0${status}\0key\0${r.key ?? ''}\0value\0${r.value ?? ''}\0\0`;
  }
}

/** Encode a request (used by the client library and tests). */
export function encodeRequest(req: Request): Buffer {
  const names = requestAttrNames(req.kind, req.dialect);
  const attrs: Array<[string, string | number]> = [['request', req.kind]];
  for (const n of names) {
    switch (n) {
      case 'table': attrs.push([n, req.table]); break;
      case 'instance_flags': attrs.push([n, req.instanceFlags]); break;
      case 'flags': attrs.push([n, req.kind === 'open' ? req.instanceFlags : req.flags]); break;
      case 'key': attrs.push([n, (req as LookupRequest).key]); break;
      case 'value': attrs.push([n, (req as UpdateRequest).value]); break;
      case 'function': attrs.push([n, (req as SequenceRequest).fn]); break;
    }
  }
  return encodeRecord(attrs);
}

/** The names a reply record must carry, in order. */
export function replyAttrNames(kind: RequestKind, dialect: Dialect): readonly string[] {
  const f = dialect === 'new';
  switch (kind) {
    case 'open': return ['status', 'flags'];
    case 'lookup': return f ? ['status', 'flags', 'value'] : ['status', 'value'];
    case 'update':
    case 'delete': return f ? ['status', 'flags'] : ['status'];
    case 'sequence': return f ? ['status', 'flags', 'key', 'value'] : ['status', 'key', 'value'];
  }
}

/** Parse a reply record strictly (as the C client does); throws on a mismatch. */
export function parseReply(kind: RequestKind, dialect: Dialect, rec: AttrRecord): Reply {
  const names = replyAttrNames(kind, dialect);
  if (rec.length !== names.length) {
    throw new Error(`reply has ${rec.length} attributes, expected ${names.length} (${names.join(',')})`);
  }
  const r: Reply = { status: PROXY_STAT.BAD };
  names.forEach((n, i) => {
    const [name, value] = rec[i];
    if (name !== n) throw new Error(`unexpected attribute ${name} in reply (expecting: ${n})`);
    if (n === 'status' || n === 'flags') {
      const v = parseUnsigned(value);
      if (v === null) throw new Error(`malformed ${n} in reply: "${value}"`);
      if (n === 'status') r.status = v as ProxyStatus;
      else r.flags = v;
    } else if (n === 'value') r.value = value;
    else if (n === 'key') r.key = value;
  });
  return r;
}

export const ANNOUNCEMENT = encodeRecord([['protocol', 'proxymap_protocol']]);
