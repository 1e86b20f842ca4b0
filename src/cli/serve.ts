/**
 * proxymapd serve: standalone daemon on $queue_directory/private/{proxymap,proxywrite},
 * with a control socket beside them (proxymapd status), SIGHUP reloading
 * main.cf, systemd readiness notification when NOTIFY_SOCKET is set, and
 * the optional socketmap front-end (proxymapd_socketmap_listen).
 */
import { log, setLogName, setVerbose } from '../log.js';
import { createServer, reconfigureCache, listenControl, listenStandalone, startWarmUps, systemdListenFds } from '../server/daemon.js';
import { ControlServer, addServerSections, registerCachePurge } from '../server/control.js';
import { ConfigReloader, type LiveConfig } from '../server/reload.js';
import { SystemdNotifier } from '../server/notify.js';
import { METRICS_LISTEN_PARAM, startMetricsListener } from '../server/http.js';
import { socketmapConfig, startSocketmap } from '../server/socketmap-server.js';
import { CONFIG_OPTIONS, loadConfig, parse } from './common.js';

export async function runServe(args: string[]): Promise<number> {
  const { values } = parse(args, CONFIG_OPTIONS);
  const config = loadConfig(values as { c?: string; o?: string[] });
  setLogName(`${config.get('syslog_name') || 'postfix'}/proxymap`);
  setVerbose((values.v as boolean[] | undefined)?.length ?? 0);
  const notifier = SystemdNotifier.fromEnv();
  const live: LiveConfig = { config };
  const server = createServer({ config, live });
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
  const reloader = new ConfigReloader(server, live, () => loadConfig(values as { c?: string; o?: string[] }));
  const control = new ControlServer();
  addServerSections(control, server, { configDir: config.configDir, mode: 'standalone' });
  control.addSection('reload', () => reloader.status());
  registerCachePurge(control, server);
  control.addSection('cache', () => server.cache?.stats() ?? 'off');
  reloader.onReload.push((cfg) => reconfigureCache(server, cfg));
  try {
    await listenControl(control, config, inherited.length === 0);
  } catch (e) {
    log.warn(`control socket: ${(e as Error).message}; proxymapd status will not reach this server`);
  }
  const metricsHttp = await startMetricsListener(server, config.get(METRICS_LISTEN_PARAM));
  const socketmap = await startSocketmap(server, (n) => config.lookup(n));
  if (socketmap) reloader.onReload.push((cfg) => socketmap.configure(socketmapConfig((n) => cfg.lookup(n))));
  if (metricsHttp) log.info(`metrics and health checks on ${metricsHttp.address}`);
  startWarmUps(server);
  const approved = () => `${server.handler.approvedFor('proxymap').size} read, ${server.handler.approvedFor('proxywrite').size} write tables approved`;
  // Signal handlers first: a service manager told READY may signal at once.
  process.on('SIGHUP', () => {
    log.info('SIGHUP: reloading configuration');
    notifier?.reloading();
    const ok = reloader.reload();
    notifier?.ready(ok ? approved() : `reload failed, old configuration kept: ${reloader.status().lastError}`);
  });
  const stopped = new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info(`${sig}: shutting down`);
      notifier?.stopping();
      Promise.all([control.close(), socketmap?.close(), server.close(), metricsHttp?.close()]).then(() => resolve(), resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  notifier?.ready(approved());
  await stopped;
  return 0;
}
