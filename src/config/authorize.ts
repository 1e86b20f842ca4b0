/**
 * The set of tables a proxymap/proxywrite server may open, computed as
 * Postfix 3.11+ does it (authorize_proxied_maps and friends in
 * src/proxymap/proxymap.c): every `proxy:type:name` reference in the expanded
 * proxy_read_maps (proxymap) or proxy_write_maps (proxywrite), looking inside
 * `{ type:name option=... }` groups, pipemap:{...}/unionmap:{...} and
 * /file/name lists; proxymap also scans each smtpd_restriction_classes class.
 */
import { readFileSync } from 'node:fs';
import { extpar, tokenize, tokenizeQ } from '../util/braces.js';
import { strerror } from '../util/strerror.js';
import { readLogicalLines } from './maincf.js';
import type { Config } from './params.js';

export type ProxyService = 'proxymap' | 'proxywrite';

/**
 * 'proxy' authorizes only proxy:-prefixed references (normal service and the
 * export-proxy- hook); 'all' lists every type:name reference with any proxy:
 * prefixes removed (the export-all- hook).
 */
export type AuthorizeMode = 'proxy' | 'all';

const SEPARATORS = ', \t\r\n';
const PROXY_COLON = 'proxy:';
const NESTED_PREFIXES = ['unionmap:', 'pipemap:'];

/** Parameter holding the authorization list of a service. */
export function authorizationParameter(service: ProxyService): string {
  return service === 'proxywrite' ? 'proxy_write_maps' : 'proxy_read_maps';
}

function isAsciiAlnum(c: string | undefined): boolean {
  return c !== undefined && /^[A-Za-z0-9]$/.test(c);
}

class Authorizer {
  readonly tables = new Set<string>();
  /** files being read, to stop a file list that includes itself */
  private readonly openFiles = new Set<string>();

  constructor(
    private readonly mode: AuthorizeMode,
    private readonly warn: (msg: string) => void,
  ) {}

  /** Scan a list of table references; `origin` names its source in warnings. */
  scan(list: string, origin: string): void {
    for (let token of tokenizeQ(list, SEPARATORS)) {
      // { type:name attr=value ... }: only the first word names the table.
      if (token[0] === '{') {
        const inner = extpar(token, false);
        if (inner.error !== undefined) {
          this.warn(`bad syntax in ${origin} content: ${inner.error}`);
          continue;
        }
        const first = tokenizeQ(inner.text, SEPARATORS)[0];
        if (first === undefined) continue;
        token = first;
      }
      if (token[0] === '/') {
        this.scanFile(token);
        continue;
      }
      // Skip [ipv6::addr], permit_mynetworks and other non-table words.
      if (!isAsciiAlnum(token[0]) || !token.includes(':')) continue;
      const prefix = NESTED_PREFIXES.find((p) => token.startsWith(p));
      if (prefix !== undefined) {
        const nested = token.slice(prefix.length);
        if (nested[0] !== '{') continue;
        const inner = extpar(nested, false);
        if (inner.error !== undefined) {
          this.warn(`bad syntax in ${origin} content: ${inner.error}`);
          continue;
        }
        this.scan(inner.text, origin);
        continue;
      }
      if (this.mode === 'proxy' && !token.startsWith(PROXY_COLON)) continue;
      while (token.startsWith(PROXY_COLON)) token = token.slice(PROXY_COLON.length);
      this.tables.add(token);
    }
  }

  /** Scan each logical line of a /file/name list. */
  private scanFile(file: string): void {
    if (this.openFiles.has(file)) {
      // Postfix would recurse until it runs out of stack or descriptors.
      this.warn(`${file}: file includes itself; ignoring the nested reference`);
      return;
    }
    let text: string;
    try {
      text = readFileSync(file, 'latin1');
    } catch (err) {
      // Postfix opens with open(2); a directory opens but fails to read.
      const verb = (err as NodeJS.ErrnoException).code === 'EISDIR' ? 'read' : 'open';
      this.warn(`${verb} ${file}: ${strerror(err)}`);
      return;
    }
    this.openFiles.add(file);
    try {
      for (const line of readLogicalLines(text, file, this.warn)) this.scan(line.text, file);
    } finally {
      this.openFiles.delete(file);
    }
  }
}

/**
 * Compute the tables a service may open. Entries are table names without
 * the proxy: prefix, byte-exact as clients send them (e.g. `inline:{a=b}`).
 * Throws ConfigError when a parameter fails to expand.
 */
export function authorizedTables(
  config: Config,
  service: ProxyService,
  warn: (msg: string) => void,
  mode: AuthorizeMode = 'proxy',
): Set<string> {
  const auth = new Authorizer(mode, warn);
  const param = authorizationParameter(service);
  auth.scan(config.get(param), param);
  if (service === 'proxymap') {
    // Restriction classes: each listed name is a parameter holding a list.
    for (const cls of tokenize(config.get('smtpd_restriction_classes'), SEPARATORS)) {
      if (config.has(cls)) auth.scan(config.get(cls), 'smtpd_restriction_classes');
    }
  }
  return auth.tables;
}

/**
 * The set as Postfix's export-proxy-/export-all- test hook prints it: sorted
 * in byte order, one name per line, each line newline-terminated.
 */
export function formatAuthorized(tables: Iterable<string>): string {
  return [...tables]
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((t) => t + '\n')
    .join('');
}
