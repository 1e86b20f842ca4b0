/**
 * Configuration reload of a standalone server (`proxymapd serve`, on
 * SIGHUP). Postfix's proxymap has none: under master(8) `postfix reload`
 * makes every daemon exit and be started again, and that stays so in
 * master(8) mode (src/server/master.ts does not use this module).
 *
 * main.cf is read again with the -c directory and -o overrides of the
 * start. A main.cf that cannot be read or parsed, or whose authorization
 * parameters fail to expand, changes nothing: the error is logged and the
 * running configuration stays. Otherwise, at once and for the requests
 * that arrive from then on:
 *
 *  - proxy_read_maps, proxy_write_maps (and the smtpd_restriction_classes
 *    lists the proxymap service searches): the approved tables are replaced
 *    as a whole; instances of tables no longer approved leave service and
 *    are closed after the reload grace period (requests that already hold
 *    one finish with it). Open client connections stay open.
 *  - parameters that tables read when they are opened: tables opened after
 *    the reload see the new values (open ones keep theirs).
 *  - proxymapd_table_check_interval.
 *  - whatever the onReload hooks re-read (the lookup cache: its maps).
 *
 * Parameters that need a restart (a change is logged as a warning):
 * RESTART_PARAMETERS below, and smtputf8_enable (with compatibility_level,
 * which sets its default).
 */
import { authorizedTables } from '../config/authorize.js';
import type { Config } from '../config/params.js';
import { log } from '../log.js';
import type { ProxyServer } from './server.js';

/** Read once at start; changing them takes a restart. */
export const RESTART_PARAMETERS = [
  'queue_directory',
  'proxymap_service_name',
  'proxywrite_service_name',
  'proxymapd_control_service_name',
  'mail_owner',
  'import_environment',
  'syslog_name',
  'proxymapd_busy_poll_usec',
  'proxymapd_metrics_listen',
  'proxymapd_pattern_threads',
  // the socketmap/tcp_table front-end's listeners (its maps, allow-list and limits are re-read)
  'proxymapd_socketmap_listen',
  'proxymapd_tcp_maps',
  'proxymapd_socketmap_tls_cert_file',
  'proxymapd_socketmap_tls_key_file',
  'proxymapd_socketmap_tls_ca_file',
  'proxymapd_socketmap_tls_require_client_cert',
] as const;

/** The configuration tables read their parameters from; replaced by a reload. */
export interface LiveConfig {
  config: Config;
}

export interface ReloadStatus {
  reloads: number;
  failures: number;
  lastReload?: string;
  lastFailure?: string;
  lastError?: string;
}

export class ConfigReloader {
  /** Called with the new configuration after each successful reload (errors are logged, not thrown). */
  readonly onReload: Array<(config: Config) => void> = [];
  private reloads = 0;
  private failures = 0;
  private lastReloadAt?: number;
  private lastFailureAt?: number;
  private lastError?: string;

  constructor(
    private readonly server: ProxyServer,
    private readonly live: LiveConfig,
    /** read main.cf again as at start (throws ConfigError when it cannot) */
    private readonly load: () => Config,
  ) {}

  /** Re-read main.cf and apply it; false (and the old configuration kept) when it cannot be used. */
  reload(): boolean {
    const old = this.live.config;
    let next: Config, read: Set<string>, write: Set<string>, checkMs: number, restart: string[];
    try {
      next = this.load();
      read = authorizedTables(next, 'proxymap', log.warn);
      write = authorizedTables(next, 'proxywrite', log.warn);
      checkMs = next.getTime('proxymapd_table_check_interval', 's', 1) * 1000;
      restart = RESTART_PARAMETERS.filter((p) => next.get(p) !== old.get(p));
      if (next.smtputf8() !== old.smtputf8()) restart.push('smtputf8_enable');
    } catch (e) {
      this.failures++;
      this.lastFailureAt = Date.now();
      this.lastError = (e as Error)?.message ?? String(e);
      log.error(`cannot reload configuration: ${this.lastError}; keeping the current configuration`);
      return false;
    }
    this.live.config = next;
    this.server.handler.setAuthorized({ proxymap: read, proxywrite: write });
    const closed = this.server.instances.closeUnapproved((spec, writable) => (writable ? write : read).has(spec));
    this.server.instances.setCheckInterval(checkMs);
    for (const hook of this.onReload) {
      try {
        hook(next);
      } catch (e) {
        log.error(`configuration reload: ${(e as Error)?.message ?? String(e)}`);
      }
    }
    for (const p of restart) log.warn(`parameter ${p} has changed; restart proxymapd to apply it`);
    if (closed > 0) log.info(`closing ${closed} table instance${closed === 1 ? '' : 's'} no longer approved`);
    this.reloads++;
    this.lastReloadAt = Date.now();
    log.info(`reloaded configuration: ${read.size} read, ${write.size} write tables approved`);
    return true;
  }

  status(): ReloadStatus {
    const iso = (t?: number) => (t === undefined ? undefined : new Date(t).toISOString());
    return {
      reloads: this.reloads,
      failures: this.failures,
      lastReload: iso(this.lastReloadAt),
      lastFailure: iso(this.lastFailureAt),
      lastError: this.lastError,
    };
  }
}
