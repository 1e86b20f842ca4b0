/**
 * A small LDAPv3 (RFC 4511) client over TCP, TLS (ldaps://, StartTLS) and
 * UNIX sockets (ldapi://): simple bind, search, abandon, unbind. Several
 * operations may be outstanding on one connection (message ids).
 * Attribute values are kept as raw bytes (latin1 strings) in the order the
 * server sends them, as libldap gives them to Postfix.
 *
 * Result codes follow libldap: server codes as sent, client-side failures
 * negative (-1 LDAP_SERVER_DOWN, -5 LDAP_TIMEOUT, -7 LDAP_FILTER_ERROR).
 */
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import os from 'node:os';
import type { Bytes } from '../core/table.js';
import { BerReader, berBool, berInt, berStr, tlv, tlvLength, TAG } from './ldap-ber.js';
import type { LdapUrl, Scope } from './ldap-url.js';

export const LDAP_SUCCESS = 0;
export const LDAP_SIZELIMIT_EXCEEDED = 4;
export const LDAP_REFERRAL = 10;
export const LDAP_NO_SUCH_OBJECT = 32;
export const LDAP_SERVER_DOWN = -1;
export const LDAP_DECODING_ERROR = -4;
export const LDAP_TIMEOUT = -5;
export const LDAP_FILTER_ERROR = -7;
export const LDAP_CONNECT_ERROR = -11;

const ERR_TEXT: Record<number, string> = {
  0: 'Success', 1: 'Operations error', 2: 'Protocol error', 3: 'Time limit exceeded', 4: 'Size limit exceeded',
  5: 'Compare False', 6: 'Compare True', 7: 'Authentication method not supported', 8: 'Strong(er) authentication required',
  9: 'Partial results and referral received', 10: 'Referral', 11: 'Administrative limit exceeded', 12: 'Critical extension is unavailable',
  13: 'Confidentiality required', 14: 'SASL bind in progress', 16: 'No such attribute', 17: 'Undefined attribute type',
  18: 'Inappropriate matching', 19: 'Constraint violation', 20: 'Type or value exists', 21: 'Invalid syntax',
  32: 'No such object', 33: 'Alias problem', 34: 'Invalid DN syntax', 35: 'Entry is a leaf', 36: 'Alias dereferencing problem',
  47: 'Proxy Authorization Failure', 48: 'Inappropriate authentication', 49: 'Invalid credentials', 50: 'Insufficient access',
  51: 'Server is busy', 52: 'Server is unavailable', 53: 'Server is unwilling to perform', 54: 'Loop detected',
  64: 'Naming violation', 65: 'Object class violation', 66: 'Operation not allowed on non-leaf', 67: 'Operation not allowed on RDN',
  68: 'Already exists', 69: 'Cannot modify object class', 70: 'Results too large', 71: 'Operation affects multiple DSAs',
  80: 'Internal (implementation specific) error', 118: 'Cancelled', 119: 'No Operation to Cancel', 120: 'Too Late to Cancel',
  121: 'Cannot Cancel', 122: 'Assertion Failed', 123: 'Proxied Authorization Denied',
  [-1]: "Can't contact LDAP server", [-2]: 'Local error', [-3]: 'Encoding error', [-4]: 'Decoding error', [-5]: 'Timed out',
  [-6]: 'Unknown authentication method', [-7]: 'Bad search filter', [-8]: 'User cancelled operation', [-9]: 'Bad parameter to an ldap routine',
  [-10]: 'Out of memory', [-11]: 'Connect error', [-12]: 'Not Supported', [-13]: 'Control not found', [-14]: 'No results returned',
  [-15]: 'More results to return', [-16]: 'Client Loop', [-17]: 'Referral Limit Exceeded', [-18]: 'X.509 Certificate Problem',
};

/** ldap_err2string(). */
export function ldapErr2String(rc: number): string {
  return ERR_TEXT[rc] ?? 'Unknown error';
}

export interface LdapAttr {
  type: Bytes;
  vals: Bytes[];
}

export interface LdapEntry {
  dn: Bytes;
  attrs: LdapAttr[];
}

export interface SearchOutcome {
  code: number;
  entries: LdapEntry[];
  /** search continuation references (URIs), and the referral of a code-10 result */
  refs: Bytes[];
  /** the search continuation references alone, one URI list per SearchResultReference, in the order received */
  continuations?: Bytes[][];
  /** the referral (URIs) of the result alone */
  referral?: Bytes[];
}

/** TLS settings: ldap_table(5)'s tls_* parameters. */
export interface LdapTlsSettings {
  requireCert: boolean;
  caFile: string;
  caDir: string;
  cert: string;
  key: string;
  cipherSuite: string;
}

export interface ConnectOptions {
  url: LdapUrl;
  /** network timeout (ms, 0 = none) */
  timeoutMs: number;
  startTls: boolean;
  tls: LdapTlsSettings;
  /** the context of `tls` made beforehand (tlsContext); made here if absent and needed */
  tlsContext?: tls.SecureContext;
}

/** A client-side failure with libldap's result code. */
export class LdapError extends Error {
  constructor(readonly code: number, message?: string) {
    super(message ?? ldapErr2String(code));
  }
}

interface Pending {
  entries: LdapEntry[];
  refs: Bytes[];
  continuations: Bytes[][];
  done(code: number, refs: Bytes[]): void;
  timer?: NodeJS.Timeout;
}

/**
 * The name a verified server certificate must match. As libldap's
 * ldap_pvt_tls_check_hostname(): the URL's host, except that no host or
 * "localhost" means this machine's own name (libldap uses its FQDN; here
 * the system host name), so a certificate made out to "localhost" only
 * does not pass.
 */
export function tlsCheckName(host: string): string {
  return host === '' || host.toLowerCase() === 'localhost' ? os.hostname() : host;
}

/**
 * The TLS context of the settings: CA file, every file of the CA directory,
 * client certificate and key, ciphers (libldap's LDAP_OPT_X_TLS_NEWCTX, made
 * before connecting). A file that cannot be read or used: LdapError(-1).
 */
export function tlsContext(t: LdapTlsSettings): tls.SecureContext {
  try {
    const o: tls.SecureContextOptions = {};
    const ca: Buffer[] = [];
    if (t.caFile) ca.push(fs.readFileSync(t.caFile));
    if (t.caDir) {
      let names: string[] = [];
      try {
        names = fs.readdirSync(t.caDir);
      } catch {
        /* a missing directory: no CAs from it (libldap with GnuTLS fails the verification, not the context) */
      }
      for (const f of names) {
        const p = `${t.caDir}/${f}`;
        try {
          if (fs.statSync(p).isFile()) ca.push(fs.readFileSync(p));
        } catch {
          /* unreadable: skipped, as OpenSSL's hashed dir lookup would */
        }
      }
    }
    if (ca.length > 0) o.ca = ca;
    if (t.cert) o.cert = fs.readFileSync(t.cert);
    if (t.key) o.key = fs.readFileSync(t.key);
    if (t.cipherSuite) o.ciphers = t.cipherSuite;
    return tls.createSecureContext(o);
  } catch (e) {
    throw new LdapError(LDAP_SERVER_DOWN, (e as Error).message);
  }
}

function tlsOptions(t: LdapTlsSettings, host: string, context: tls.SecureContext): tls.ConnectionOptions {
  const o: tls.ConnectionOptions = { secureContext: context, rejectUnauthorized: t.requireCert };
  if (host && net.isIP(host) === 0) o.servername = host;
  const name = tlsCheckName(host);
  o.checkServerIdentity = (_servername, cert) => tls.checkServerIdentity(name, cert);
  return o;
}

export class LdapConn {
  private socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private dead = false;
  /** the URL it was opened with (set by open()) */
  url: LdapUrl | null = null;
  /** called once when the connection ends without close() */
  onLost: () => void = () => undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.attach();
  }

  private attach(): void {
    this.socket.on('data', (d: Buffer) => this.onData(d));
    this.socket.on('error', () => this.fail());
    this.socket.on('close', () => this.fail());
  }

  /** Open the transport (and TLS for ldaps:// or StartTLS). Rejects with LdapError(-1). */
  static async open(o: ConnectOptions): Promise<LdapConn> {
    const u = o.url;
    const context = u.scheme === 'ldaps' || o.startTls ? (o.tlsContext ?? tlsContext(o.tls)) : undefined;
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      let s: net.Socket;
      try {
        if (u.scheme === 'ldapi') s = net.createConnection(u.host || '/var/run/slapd/ldapi');
        else if (u.scheme === 'ldaps') s = tls.connect({ host: u.host || 'localhost', port: u.port, ...tlsOptions(o.tls, u.host, context!) });
        else s = net.createConnection({ host: u.host || 'localhost', port: u.port });
      } catch (e) {
        reject(new LdapError(LDAP_SERVER_DOWN, (e as Error).message));
        return;
      }
      const timer = o.timeoutMs > 0 ? setTimeout(() => {
        s.destroy();
        reject(new LdapError(LDAP_SERVER_DOWN));
      }, o.timeoutMs) : undefined;
      s.once(u.scheme === 'ldaps' ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', () => {
        clearTimeout(timer);
        s.destroy();
        reject(new LdapError(LDAP_SERVER_DOWN));
      });
    });
    sock.setNoDelay(true);
    const c = new LdapConn(sock);
    c.url = u;
    if (o.startTls) await c.startTls(o, context!);
    return c;
  }

  get alive(): boolean {
    return !this.dead;
  }

  private fail(): void {
    if (this.dead) return;
    this.dead = true;
    this.socket.destroy();
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.done(LDAP_SERVER_DOWN, []);
    }
    this.onLost();
  }

  /** Unbind and close. */
  close(): void {
    if (this.dead) return;
    try {
      this.socket.write(tlv(TAG.SEQUENCE, [berInt(this.nextId++), tlv(0x42, Buffer.alloc(0))]));
    } catch {
      /* closing anyway */
    }
    this.dead = true;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.done(LDAP_SERVER_DOWN, []);
    }
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    try {
      for (;;) {
        const n = tlvLength(this.buf);
        if (n === 0) break;
        const msg = this.buf.subarray(0, n);
        this.buf = this.buf.subarray(n);
        this.dispatch(msg);
      }
    } catch {
      // a malformed message (BerError) or one this client cannot take apart: the connection is lost, never the process
      this.fail();
    }
  }

  private dispatch(msg: Buffer): void {
    const r = new BerReader(msg).reader(TAG.SEQUENCE);
    const id = r.int();
    const op = r.next();
    const p = this.pending.get(id);
    if (id === 0) {
      // notice of disconnection (unsolicited)
      this.fail();
      return;
    }
    if (!p) return;
    const body = new BerReader(op.body);
    switch (op.tag) {
      case 0x64: {
        // SearchResultEntry
        const dn = body.str();
        const attrs: LdapAttr[] = [];
        const list = body.reader(TAG.SEQUENCE);
        while (!list.done) {
          const a = list.reader(TAG.SEQUENCE);
          const type = a.str();
          const vals: Bytes[] = [];
          const set = a.reader(TAG.SET);
          while (!set.done) vals.push(set.str());
          attrs.push({ type, vals });
        }
        p.entries.push({ dn, attrs });
        return;
      }
      case 0x73: {
        // SearchResultReference
        const uris: Bytes[] = [];
        while (!body.done) uris.push(body.str());
        p.refs.push(...uris);
        p.continuations.push(uris);
        return;
      }
      default: {
        // an LDAPResult: resultCode, matchedDN, diagnosticMessage, [3] referral
        const code = body.int(TAG.ENUMERATED);
        body.str();
        body.str();
        const refs: Bytes[] = [];
        if (body.peekTag() === 0xa3) {
          const rr = body.reader(0xa3);
          while (!rr.done) refs.push(rr.str());
        }
        this.pending.delete(id);
        clearTimeout(p.timer);
        p.done(code, refs);
      }
    }
  }

  /** Send one request; resolves with the result code and what came before it. waitMs 0: no client limit. */
  private request(op: Buffer, waitMs: number): Promise<SearchOutcome> {
    return new Promise((resolve) => {
      if (this.dead) {
        resolve({ code: LDAP_SERVER_DOWN, entries: [], refs: [] });
        return;
      }
      const id = this.nextId++;
      if (this.nextId > 0x7fffffff) this.nextId = 1;
      const p: Pending = {
        entries: [],
        refs: [],
        continuations: [],
        done: (code, refs) => resolve({ code, entries: p.entries, refs: [...p.refs, ...refs], continuations: p.continuations, referral: refs }),
      };
      if (waitMs > 0) {
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          // ldap_abandon
          if (!this.dead) this.socket.write(tlv(TAG.SEQUENCE, [berInt(this.nextId++), berInt(id, 0x50)]));
          resolve({ code: LDAP_TIMEOUT, entries: [], refs: [] });
        }, waitMs);
      }
      this.pending.set(id, p);
      this.socket.write(tlv(TAG.SEQUENCE, [berInt(id), op]));
    });
  }

  /** A simple bind; the result code. */
  async bind(version: number, dn: Bytes, password: Bytes, waitMs: number): Promise<number> {
    const op = tlv(0x60, [berInt(version), berStr(dn), berStr(password, 0x80)]);
    return (await this.request(op, waitMs)).code;
  }

  /** The StartTLS extended operation, then TLS on the same socket. */
  private async startTls(o: ConnectOptions, context: tls.SecureContext): Promise<void> {
    const op = tlv(0x77, [berStr('1.3.6.1.4.1.1466.20037', 0x80)]);
    const res = await this.request(op, o.timeoutMs);
    if (res.code !== LDAP_SUCCESS) {
      this.close();
      throw new LdapError(res.code);
    }
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('error');
    plain.removeAllListeners('close');
    const secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
      let s: tls.TLSSocket;
      try {
        s = tls.connect({ socket: plain, ...tlsOptions(o.tls, o.url.host, context) });
      } catch (e) {
        reject(new LdapError(-12, (e as Error).message));
        return;
      }
      s.once('secureConnect', () => {
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (e) => {
        s.destroy();
        reject(new LdapError(LDAP_CONNECT_ERROR, e.message));
      });
    });
    this.socket = secure;
    this.attach();
  }

  /** A search; entries, references and the result code (negative: client side). */
  search(
    base: Bytes,
    scope: Scope,
    deref: number,
    sizeLimit: number,
    timeLimit: number,
    filter: Buffer,
    attrs: readonly Bytes[],
    waitMs: number,
  ): Promise<SearchOutcome> {
    const op = tlv(0x63, [
      berStr(base),
      berInt(scope, TAG.ENUMERATED),
      berInt(deref, TAG.ENUMERATED),
      berInt(sizeLimit),
      berInt(timeLimit),
      berBool(false),
      filter,
      tlv(TAG.SEQUENCE, attrs.map((a) => berStr(a))),
    ]);
    return this.request(op, waitMs);
  }
}
