/** proxymapd serve: standalone daemon on $queue_directory/private/{proxymap,proxywrite}. */
import { log, setLogName, setVerbose } from '../log.js';
import { createServer, listenStandalone, startWarmUps, systemdListenFds } from '../server/daemon.js';
import { METRICS_LISTEN_PARAM, startMetricsListener } from '../server/http.js';
import { CONFIG_OPTIONS, loadConfig, parse } from './common.js';

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
  const metricsHttp = await startMetricsListener(server, config.get(METRICS_LISTEN_PARAM));
  if (metricsHttp) log.info(`metrics and health checks on ${metricsHttp.address}`);
  startWarmUps(server);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info(`${sig}: shutting down`);
      Promise.all([server.close(), metricsHttp?.close()]).then(() => resolve(), resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}
