/** proxymapd serve: standalone daemon on $queue_directory/private/{proxymap,proxywrite}. */
import { log, setLogName, setVerbose } from '../log.js';
import { createServer, listenStandalone, systemdListenFds } from '../server/daemon.js';
import { CONFIG_OPTIONS, loadConfig, parse } from './common.js';
import { warmUpCidr } from '../tables/pattern/cidr.js';
import { warmUpPatterns } from '../tables/pattern/pattern.js';
import { pcreDialect } from '../tables/pattern/pcre.js';
import { regexpDialect } from '../tables/pattern/regexp.js';
import { warmUpTextHash } from '../tables/file/texthash.js';
import { warmUpSql } from '../tables/sql/warmup.js';
import { splitCompositeName } from '../tables/index.js';

/** The table types named by approved specs, composites' components included. */
export function approvedTypes(specs: Iterable<string>): Set<string> {
  const out = new Set<string>();
  const visit = (spec: string, depth: number): void => {
    const colon = spec.indexOf(':');
    if (colon <= 0) return;
    const type = spec.slice(0, colon);
    out.add(type);
    if (depth < 16 && (type === 'pipemap' || type === 'unionmap' || type === 'randmap')) {
      for (const c of splitCompositeName(spec.slice(colon + 1)) ?? []) visit(c.replace(/^(proxy:)+/, ''), depth + 1);
    }
  };
  for (const s of specs) visit(s, 0);
  return out;
}

export async function runServe(args: string[]): Promise<number> {
  const { values } = parse(args, CONFIG_OPTIONS);
  const config = loadConfig(values as { c?: string; o?: string[] });
  setLogName(`${config.get('syslog_name') || 'postfix'}/proxymap`);
  setVerbose((values.v as boolean[] | undefined)?.length ?? 0);
  const server = createServer({ config });
  const inherited = systemdListenFds();
  if (inherited.length > 0) {
    // Socket activation: the sockets already listen; do not bind paths.
    for (const { fd, service } of inherited) await server.listenFd(fd, service);
    delete process.env.LISTEN_FDS;
    delete process.env.LISTEN_PID;
    delete process.env.LISTEN_FDNAMES;
    log.info(`proxymapd ready: ${inherited.map((l) => `${l.service} on fd ${l.fd}`).join(', ')}`);
  } else {
    const paths = await listenStandalone(server, config);
    log.info(`proxymapd ready: proxymap on ${paths.proxymap}, proxywrite on ${paths.proxywrite}`);
  }
  // Compile the regexp/pcre and cidr parsers' hot paths while idle (and load the regex engines' addon), so that a
  // large table's first open is fast. cidr last (and twice, with a pause for V8's background compiler), since the
  // pattern warm-up throws away some of the code the cidr one had optimized. Only for the types that may be opened:
  // the warm-up costs tens of MiB (compiler threads, a grown heap) that a server without such tables need not carry.
  const types = approvedTypes(server.handler.approved());
  const patternDialects = [regexpDialect, pcreDialect].filter((d) => types.has(d.kind));
  // texthash: the first open of a large source would otherwise run in the interpreter.
  if (types.has('texthash')) setTimeout(() => warmUpTextHash(), 20).unref();
  // mysql, pgsql: the client library and the open path (see sql/warmup.ts).
  for (const type of ['mysql', 'pgsql'] as const) {
    if (types.has(type)) setTimeout(() => warmUpSql(type).catch((e) => log.warn(`start-up warm-up: ${(e as Error).message}`)), 10).unref();
  }
  if (patternDialects.length > 0 || types.has('cidr')) {
    setTimeout(() => {
      void (async () => {
        if (patternDialects.length > 0) await warmUpPatterns(patternDialects);
        if (!types.has('cidr')) return;
        for (let round = 0; round < 2; round++) {
          warmUpCidr();
          await new Promise<void>((resolve) => setTimeout(resolve, 100).unref());
        }
      })().catch((e) => log.warn(`start-up warm-up: ${(e as Error).message}`));
    }, 50).unref();
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info(`${sig}: shutting down`);
      server.close().then(resolve, resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}
