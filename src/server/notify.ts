/**
 * systemd service readiness (sd_notify(3), the protocol of Type=notify
 * units), without libsystemd: "KEY=value" lines in one AF_UNIX datagram to
 * $NOTIFY_SOCKET, sent through the project's addon (native/notify.c).
 *
 * Postfix's proxymap has nothing like it (master(8) supervises it); here it
 * is for `proxymapd serve` run by systemd (contrib/systemd/). Without
 * NOTIFY_SOCKET nothing is sent; without the addon neither, noted once in
 * the debug log. NOTIFY_SOCKET is removed from the environment when read,
 * so that programs started later (table helpers) do not talk to systemd.
 */
import os from 'node:os';
import { log } from '../log.js';
import { loadNotify, type NativeNotify } from '../addon/notify.js';
import { strerror } from '../util/strerror.js';

export class SystemdNotifier {
  private warned = false;

  private constructor(
    /** the socket address: a path, or "@name" (abstract) */
    readonly address: string,
    private readonly native: NativeNotify,
  ) {}

  /** The notifier for $NOTIFY_SOCKET (removed from env), or null when unset or the addon is unavailable. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): SystemdNotifier | null {
    const address = env.NOTIFY_SOCKET;
    delete env.NOTIFY_SOCKET;
    if (!address) return null;
    const native = loadNotify();
    if (!native) {
      log.debug(`NOTIFY_SOCKET is set, but the native addon is not available: readiness is not reported to systemd`);
      return null;
    }
    return new SystemdNotifier(address, native);
  }

  /** Send the lines as one message; a failure is logged once, never thrown. */
  send(...lines: string[]): void {
    const err = this.native.notifySend(this.address, Buffer.from(lines.map((l) => l.replace(/\n/g, ' ')).join('\n') + '\n', 'utf8'));
    if (err !== 0 && !this.warned) {
      this.warned = true;
      const code = Object.entries(os.constants.errno).find(([, n]) => n === err)?.[0] ?? String(err);
      log.warn(`cannot notify systemd at ${this.address}: ${strerror(code)}`);
    }
  }

  ready(status?: string): void {
    this.send('READY=1', ...(status ? [`STATUS=${status}`] : []));
  }

  /** Reloading, with the CLOCK_MONOTONIC time systemd wants alongside (Type=notify-reload checks it). */
  reloading(): void {
    this.send('RELOADING=1', `MONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`, 'STATUS=reloading configuration');
  }

  stopping(): void {
    this.send('STOPPING=1', 'STATUS=shutting down');
  }

  status(text: string): void {
    this.send(`STATUS=${text}`);
  }
}
