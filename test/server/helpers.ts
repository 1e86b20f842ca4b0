/** Test helpers: an in-process server on a temporary socket with test-double tables. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProxyServer, type ServerOptions } from '../../src/server/server.js';
import { MetricsHttp, parseListenAddress } from '../../src/server/http.js';
import type { LookupCache } from '../../src/server/cache.js';
import type { ReloadOptions } from '../../src/server/instances.js';
import { DICT_FLAG } from '../../src/protocol/flags.js';
import { setLogSink } from '../../src/log.js';
import { TableOpenError, found, NOT_FOUND, type Table, type TableOpenOptions } from '../../src/tables/core/table.js';

/** A FIXED in-memory table: "mem:a=1,b=2" ("unauth:a=1" refuses NO_UNAUTH opens); "slow:MS" answers after MS ms; "broken:x" fails to open. */
export function testOpener(opts: TableOpenOptions): Table {
  if (opts.type === 'broken') throw new TableOpenError(`broken:${opts.name}: cannot open`);
  if (opts.type === 'unauth' && opts.openFlags & DICT_FLAG.NO_UNAUTH) {
    // like socketmap, tcp and memcache: no open for a client that must not get unauthenticated data
    throw new TableOpenError(`unauth:${opts.name} map is not allowed for security-sensitive data`);
  }
  if (opts.type === 'slow') {
    const ms = Number(opts.name);
    return {
      type: 'slow', name: opts.name, implFlags: DICT_FLAG.FIXED,
      lookup: (key) => new Promise((r) => setTimeout(() => r(found(`slow:${key}`)), ms)),
    };
  }
  if (opts.type === 'big') {
    // big:N answers every key with N bytes: key, then "x" up to N
    const n = Number(opts.name);
    return { type: 'big', name: opts.name, implFlags: DICT_FLAG.FIXED, lookup: (key) => found((key + 'x'.repeat(n)).slice(0, n)) };
  }
  if (opts.type === 'throws') {
    return { type: 'throws', name: opts.name, implFlags: DICT_FLAG.PATTERN, lookup: () => { throw new Error('boom'); } };
  }
  if (opts.type === 'rejects') {
    return { type: 'rejects', name: opts.name, implFlags: DICT_FLAG.PATTERN, lookup: () => Promise.reject(new Error('async boom')) };
  }
  const m = new Map<string, string>();
  for (const kv of opts.name.split(',')) {
    const [k, v] = kv.split('=');
    if (k) m.set(k, v ?? '');
  }
  let cursor: Iterator<[string, string]> | null = null;
  return {
    type: opts.type, name: opts.name, implFlags: opts.type === 'pat' ? DICT_FLAG.PATTERN : DICT_FLAG.FIXED,
    lookup: (key) => (m.has(key) ? found(m.get(key)!) : NOT_FOUND),
    sequence: (fn) => {
      if (fn === 0 || !cursor) cursor = m.entries();
      const n = cursor.next();
      return n.done ? { found: false as const, error: 0 as const } : { found: true as const, key: n.value[0], value: n.value[1] };
    },
    update: (key, value) => { m.set(key, value); return { status: 0, error: 0 }; },
    delete: (key) => (m.delete(key) ? { status: 0, error: 0 } : { status: 1, error: 0 }),
  };
}

export interface TestServer {
  server: ProxyServer;
  dir: string;
  proxymap: string;
  proxywrite: string;
  logs: string[];
  /** the metrics listener (opts.metricsListen) */
  http?: MetricsHttp;
  close(): Promise<void>;
}

export async function startTestServer(
  read: string[],
  write: string[] = [],
  opts: {
    smtputf8?: boolean;
    ioDeadlineMs?: number;
    nativeSockets?: boolean;
    busyPollUsec?: number;
    /** metrics on; with metricsListen a listener too (a proxymapd_metrics_listen value, "%d" = the test's directory) */
    metrics?: boolean;
    metricsListen?: string;
    /** tables (default testOpener) */
    opener?: ServerOptions['opener'];
    cache?: LookupCache;
    reload?: Partial<ReloadOptions>;
  } = {},
): Promise<TestServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-test-'));
  const logs: string[] = [];
  const oldSink = setLogSink((line) => logs.push(line));
  const server = new ProxyServer({
    opener: opts.opener ?? testOpener,
    authorized: { proxymap: new Set(read), proxywrite: new Set(write) },
    smtputf8: opts.smtputf8 ?? true,
    param: () => undefined,
    connection: opts.ioDeadlineMs ? { ioDeadlineMs: opts.ioDeadlineMs } : {},
    nativeSockets: opts.nativeSockets,
    busyPollUsec: opts.busyPollUsec,
    metrics: opts.metrics || opts.metricsListen !== undefined,
    cache: opts.cache,
    reload: opts.reload,
  });
  const proxymap = path.join(dir, 'private', 'proxymap');
  const proxywrite = path.join(dir, 'private', 'proxywrite');
  await server.listenPath(proxymap, 'proxymap');
  await server.listenPath(proxywrite, 'proxywrite');
  const where = opts.metricsListen !== undefined ? parseListenAddress(opts.metricsListen.replace('%d', dir)) : null;
  const http = where ? await MetricsHttp.start(server, where) : undefined;
  return {
    server, dir, proxymap, proxywrite, logs, http,
    async close() {
      await http?.close();
      await server.close();
      setLogSink(oldSink);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
