/**
 * A proxied table as Postfix's dict_proxy client sees it: open once, then
 * lookups with the flags and client-side case folding of the chosen dialect.
 */
import { DICT_FLAG, FOLD_ANY, LEGACY_IMPL_MASK, LEGACY_INST_MASK, LEGACY_RQST_MASK, PROXY_STAT } from '../protocol/flags.js';
import type { Dialect, Reply } from '../protocol/messages.js';
import { foldKey, passesUtf8Check } from '../tables/core/casefold.js';
import type { ProxyConnection } from './client.js';

/** Flags `postmap -q` opens tables with: DUP_WARN|LOCK|FOLD_FIX|UTF8_REQUEST. */
export const POSTMAP_QUERY_FLAGS = DICT_FLAG.DUP_WARN | DICT_FLAG.LOCK | DICT_FLAG.FOLD_FIX | DICT_FLAG.UTF8_REQUEST;

export interface ProxyTableOptions {
  dialect: Dialect;
  /** open-time dictionary flags (default POSTMAP_QUERY_FLAGS) */
  openFlags?: number;
  /** the client's smtputf8_enable: enables the client-side UTF-8 layer */
  smtputf8: boolean;
}

export type ClientResult =
  | { status: 'found'; value: string }
  | { status: 'notfound' }
  | { status: 'error'; code: number; reason: string };

export type SequenceClientResult =
  | { status: 'found'; key: string; value: string }
  | { status: 'end' }
  | { status: 'error'; code: number; reason: string };

export class ProxyTable {
  /** the table's current flags, as the client keeps them */
  flags: number;
  private readonly openFlags: number;
  private instFlags = 0;
  private opened = false;

  constructor(
    private readonly conn: ProxyConnection,
    /** "type:name", without the proxy: prefix */
    readonly name: string,
    private readonly opts: ProxyTableOptions,
  ) {
    this.openFlags = opts.openFlags ?? POSTMAP_QUERY_FLAGS;
    this.flags = this.openFlags;
  }

  /** Whether this client folds keys and checks UTF-8 itself (the dict_utf8 layer). */
  get clientUtf8Layer(): boolean {
    if (!this.opts.smtputf8 || !(this.openFlags & DICT_FLAG.UTF8_REQUEST)) return false;
    return this.opts.dialect === 'legacy' || !(this.flags & DICT_FLAG.UTF8_ACTIVE);
  }

  async open(): Promise<Reply> {
    const legacy = this.opts.dialect === 'legacy';
    this.instFlags = legacy ? (this.openFlags & LEGACY_INST_MASK) >>> 0 : this.openFlags;
    const r = await this.conn.request({
      kind: 'open',
      dialect: this.opts.dialect,
      table: this.name,
      instanceFlags: this.instFlags,
      flags: this.instFlags,
    });
    if (r.status === PROXY_STAT.OK) {
      const rf = r.flags ?? 0;
      this.flags = legacy ? ((this.openFlags & ~LEGACY_IMPL_MASK) | (rf & LEGACY_IMPL_MASK)) >>> 0 : rf;
      this.opened = true;
    }
    return r;
  }

  /** Flags sent with a request (legacy: instance bits + request bits). */
  private wireFlags(flags: number): number {
    return this.opts.dialect === 'legacy' ? (this.instFlags | (flags & LEGACY_RQST_MASK)) >>> 0 : flags >>> 0;
  }

  /** First (0) or next (1) entry; the cursor lives in the server's table instance. */
  async sequence(fn: 0 | 1): Promise<SequenceClientResult> {
    if (!this.opened) {
      const r = await this.open();
      if (r.status !== PROXY_STAT.OK) return statusResult(r.status, 'open') as SequenceClientResult;
    }
    const r = await this.conn.request({
      kind: 'sequence',
      dialect: this.opts.dialect,
      table: this.name,
      instanceFlags: this.instFlags,
      flags: this.wireFlags(this.flags),
      fn,
    });
    if (r.status === PROXY_STAT.OK) return { status: 'found', key: r.key ?? '', value: r.value ?? '' };
    if (r.status === PROXY_STAT.NOKEY) return { status: 'end' };
    return statusResult(r.status, 'sequence') as SequenceClientResult;
  }

  async lookup(key: string): Promise<ClientResult> {
    if (!this.opened) {
      const r = await this.open();
      if (r.status !== PROXY_STAT.OK) return statusResult(r.status, 'open');
    }
    let flags = this.flags;
    let k = key;
    const layer = this.clientUtf8Layer;
    if (layer) {
      if (!passesUtf8Check(k)) return { status: 'notfound' };
      const fixed = (flags & DICT_FLAG.FIXED) !== 0;
      if ((fixed && flags & DICT_FLAG.FOLD_FIX) || (!fixed && flags & DICT_FLAG.FOLD_MUL)) k = foldKey(k, 'utf8');
      flags &= ~FOLD_ANY;
    }
    const r = await this.conn.request({
      kind: 'lookup',
      dialect: this.opts.dialect,
      table: this.name,
      instanceFlags: this.instFlags,
      flags: this.wireFlags(flags),
      key: k,
    });
    this.adoptReplyFlags(r, layer ? this.flags & FOLD_ANY : 0);
    if (r.status === PROXY_STAT.OK) {
      const value = r.value ?? '';
      if (layer && !passesUtf8Check(value)) return { status: 'error', code: PROXY_STAT.CONFIG, reason: 'non-UTF-8 value' };
      return { status: 'found', value };
    }
    return statusResult(r.status, 'lookup');
  }

  /**
   * New dialect: the reply's flags become the table's flags, as dict_proxy
   * stores them; the fold bits the client's UTF-8 layer took off the request
   * (it folded the key itself) are put back, as dict_utf8 restores them after
   * each call, so later requests fold too.
   */
  private adoptReplyFlags(r: Reply, keptFold: number): void {
    if (this.opts.dialect === 'new' && r.flags !== undefined && r.status !== PROXY_STAT.BAD && r.status !== PROXY_STAT.DENY) {
      this.flags = (r.flags | keptFold) >>> 0;
    }
  }

  /** update (proxywrite only): the key is folded and checked as for a lookup; OK, NOKEY or an error. */
  update(key: string, value: string): Promise<WriteClientResult> {
    return this.write('update', key, value);
  }

  /** delete (proxywrite only): OK when something was deleted, notfound when not. */
  delete(key: string): Promise<WriteClientResult> {
    return this.write('delete', key, '');
  }

  private async write(kind: 'update' | 'delete', key: string, value: string): Promise<WriteClientResult> {
    if (!this.opened) {
      const r = await this.open();
      if (r.status !== PROXY_STAT.OK) return statusResult(r.status, 'open') as WriteClientResult;
    }
    let flags = this.flags;
    let k = key;
    const layer = this.clientUtf8Layer;
    if (layer) {
      // dict_utf8: a non-UTF-8 key or value is skipped with a warning.
      if (!passesUtf8Check(k) || (kind === 'update' && !passesUtf8Check(value))) return { status: 'notfound' };
      const fixed = (flags & DICT_FLAG.FIXED) !== 0;
      if ((fixed && flags & DICT_FLAG.FOLD_FIX) || (!fixed && flags & DICT_FLAG.FOLD_MUL)) k = foldKey(k, 'utf8');
      flags &= ~FOLD_ANY;
    }
    const base = { dialect: this.opts.dialect, table: this.name, instanceFlags: this.instFlags, flags: this.wireFlags(flags), key: k };
    const r = await this.conn.request(kind === 'update' ? { ...base, kind, value } : { ...base, kind });
    this.adoptReplyFlags(r, layer ? this.flags & FOLD_ANY : 0);
    if (r.status === PROXY_STAT.OK) return { status: 'ok' };
    return statusResult(r.status, kind) as WriteClientResult;
  }
}

export type WriteClientResult = { status: 'ok' } | { status: 'notfound' } | { status: 'error'; code: number; reason: string };

function statusResult(status: number, op: string): ClientResult {
  if (status === PROXY_STAT.NOKEY) return { status: 'notfound' };
  const reason =
    status === PROXY_STAT.DENY ? 'not configured' :
    status === PROXY_STAT.BAD ? 'invalid request' :
    status === PROXY_STAT.RETRY ? 'temporary error' :
    status === PROXY_STAT.CONFIG ? 'configuration error' : `unexpected ${op} status ${status}`;
  return { status: 'error', code: status, reason };
}
