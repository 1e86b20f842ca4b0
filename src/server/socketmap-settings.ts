/**
 * The main.cf parameters of the socketmap and tcp_table front-ends
 * (socketmap-server.ts, tcp-frontend.ts), proxymapd extensions that Postfix
 * does not have: where they listen, which request names (socketmap) or
 * addresses (tcp_table, whose requests name no table) map to which tables,
 * the client allow-list, the limits and the optional TLS files (socketmap
 * only). A malformed entry is skipped, and a malformed
 * number replaced by its default, each with a warning.
 */
import { tokenizeQ } from '../util/braces.js';
import { intParam, timeParam, type ParamSource } from '../tables/core/params.js';

export const SOCKETMAP_LISTEN_PARAM = 'proxymapd_socketmap_listen';
export const SOCKETMAP_MAPS_PARAM = 'proxymapd_socketmap_maps';
export const SOCKETMAP_CLIENTS_PARAM = 'proxymapd_socketmap_clients';
export const TCP_MAPS_PARAM = 'proxymapd_tcp_maps';

/** Loopback only: other hosts must be allowed explicitly. */
export const DEFAULT_SOCKETMAP_CLIENTS = '127.0.0.0/8 [::1]/128';
/** Longest request payload ("name key"); Postfix's socketmap client sends keys of at most 10000 bytes (socketmap_max_query_size). */
export const DEFAULT_SOCKETMAP_MAX_REQUEST = 100_000;
/** Postfix's socketmap client closes a connection idle for 10 s, so the server never closes one it still uses. */
export const DEFAULT_SOCKETMAP_IDLE_TIMEOUT = 100;
/** Time to receive a started request, and for a table to answer (then TIMEOUT). */
export const DEFAULT_SOCKETMAP_REQUEST_TIMEOUT = 10;

export type ListenSpec = { kind: 'inet'; host: string; port: number } | { kind: 'unix'; path: string };

export interface SocketmapTls {
  certFile: string;
  keyFile: string;
  /** CAs that sign client certificates ("" = the system's) */
  caFile: string;
  requireClientCert: boolean;
}

export interface SocketmapSettings {
  listen: ListenSpec[];
  /** request name -> table ("type:name", proxy: stripped) */
  maps: Map<string, string>;
  /** tcp_table listeners, each serving one table */
  tcpMaps: Array<{ listen: ListenSpec & { kind: 'inet' }; spec: string }>;
  /** the allow-list text for inet clients */
  clients: string;
  maxRequest: number;
  idleTimeoutMs: number;
  requestTimeoutMs: number;
  /** 0: no bound */
  maxConnections: number;
  /** undefined: plain TCP */
  tls?: SocketmapTls;
}

/** Read the socketmap parameters; `listen` is empty when the front-end is off (the default). */
export function socketmapSettings(src: ParamSource): SocketmapSettings {
  const p = (name: string) => src.param(name) ?? '';
  const certFile = p('proxymapd_socketmap_tls_cert_file').trim();
  const keyFile = p('proxymapd_socketmap_tls_key_file').trim();
  const clients = src.param(SOCKETMAP_CLIENTS_PARAM);
  let tls: SocketmapTls | undefined;
  if (certFile !== '' || keyFile !== '') {
    tls = {
      certFile,
      keyFile: keyFile || certFile,
      caFile: p('proxymapd_socketmap_tls_ca_file').trim(),
      requireClientCert: /^\s*yes\s*$/i.test(p('proxymapd_socketmap_tls_require_client_cert')),
    };
  }
  return {
    listen: parseListen(p(SOCKETMAP_LISTEN_PARAM), src.warn),
    maps: parseMaps(p(SOCKETMAP_MAPS_PARAM), src.warn),
    tcpMaps: parseTcpMaps(p(TCP_MAPS_PARAM), src.warn),
    clients: clients === undefined ? DEFAULT_SOCKETMAP_CLIENTS : clients,
    maxRequest: intParam(src, 'proxymapd_socketmap_max_request', DEFAULT_SOCKETMAP_MAX_REQUEST, { min: 1 }),
    idleTimeoutMs: timeParam(src, 'proxymapd_socketmap_idle_timeout', DEFAULT_SOCKETMAP_IDLE_TIMEOUT, { min: 1 }) * 1000,
    requestTimeoutMs: timeParam(src, 'proxymapd_socketmap_request_timeout', DEFAULT_SOCKETMAP_REQUEST_TIMEOUT, { min: 1 }) * 1000,
    maxConnections: intParam(src, 'proxymapd_socketmap_max_connections', 0),
    tls,
  };
}

/** `inet:host:port=type:table` entries (Postfix's tcp client reaches inet addresses only); a `proxy:` prefix is stripped. */
export function parseTcpMaps(text: string, warn: (t: string) => void): SocketmapSettings['tcpMaps'] {
  const out: SocketmapSettings['tcpMaps'] = [];
  for (const token of tokenizeQ(text)) {
    const bad = (why: string) => warn(`${TCP_MAPS_PARAM}: ignoring entry "${token}": ${why}`);
    const eq = token.indexOf('=');
    const listen = eq < 0 ? 'expected inet:host:port=type:table' : parseListenSpec(token.slice(0, eq));
    if (typeof listen === 'string') {
      bad(listen);
      continue;
    }
    if (listen.kind !== 'inet') {
      bad('a tcp_table listener must be inet:host:port');
      continue;
    }
    let spec = token.slice(eq + 1);
    while (spec.startsWith('proxy:')) spec = spec.slice('proxy:'.length);
    const colon = spec.indexOf(':');
    if (colon <= 0 || colon === spec.length - 1) {
      bad('expected a table as type:name after the "="');
      continue;
    }
    out.push({ listen, spec });
  }
  return out;
}

/** `inet:host:port`, `inet:[v6addr]:port`, `unix:/path`, separated by blanks or commas. */
export function parseListen(text: string, warn: (t: string) => void): ListenSpec[] {
  const out: ListenSpec[] = [];
  for (const token of text.split(/[\s,]+/).filter(Boolean)) {
    const spec = parseListenSpec(token);
    if (typeof spec === 'string') warn(`${SOCKETMAP_LISTEN_PARAM}: ignoring "${token}": ${spec}`);
    else out.push(spec);
  }
  return out;
}

function parseListenSpec(token: string): ListenSpec | string {
  if (token.startsWith('unix:')) {
    const path = token.slice(5);
    return path.startsWith('/') ? { kind: 'unix', path } : 'expected unix:/absolute/path';
  }
  if (!token.startsWith('inet:')) return 'expected inet:host:port, inet:[address]:port or unix:/path';
  const m = /^inet:(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(token);
  if (!m || Number(m[3]) > 65535) return 'expected inet:host:port or inet:[address]:port';
  return { kind: 'inet', host: m[1] ?? m[2]!, port: Number(m[3]) };
}

/** `name=type:table` entries (blanks and commas inside `{...}` belong to the table); a `proxy:` prefix is stripped. */
export function parseMaps(text: string, warn: (t: string) => void): Map<string, string> {
  const maps = new Map<string, string>();
  for (const token of tokenizeQ(text)) {
    const eq = token.indexOf('=');
    let spec = eq < 0 ? '' : token.slice(eq + 1);
    while (spec.startsWith('proxy:')) spec = spec.slice('proxy:'.length);
    const colon = spec.indexOf(':');
    if (eq <= 0 || colon <= 0 || colon === spec.length - 1) {
      warn(`${SOCKETMAP_MAPS_PARAM}: ignoring entry "${token}": expected name=type:table`);
      continue;
    }
    const name = token.slice(0, eq);
    if (maps.has(name)) warn(`${SOCKETMAP_MAPS_PARAM}: name "${name}" is listed more than once; using its last entry`);
    maps.set(name, spec);
  }
  return maps;
}
