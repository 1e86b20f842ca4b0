/**
 * Logging where Postfix daemons log, as Postfix 3.7's maillog_client.c
 * chooses: with `maillog_file` set, records go to the postlog service
 * (`$queue_directory/public/$postlog_service_name`, one AF_UNIX datagram
 * each, formatted as msg_logger.c formats them: "Mmm dd hh:mm:ss host
 * tag[pid]: severity: text"); otherwise to syslog(3) with the tag
 * `$syslog_name/proxymap`, LOG_PID, and the `syslog_facility`.
 *
 * Both need the native addon (native/maillog.c): Node has neither syslog(3)
 * nor datagram UNIX sockets. When it cannot be loaded, lines go to stderr.
 */
import { loadNative } from './load.js';
import type { LogLevel, LogSink } from '../log.js';

interface NativeMaillog {
  syslogOpen(ident: string, facility: number): void;
  syslogWrite(priority: number, text: string): void;
  /** 0 or an errno value. */
  dgramSend(path: string, bytes: Buffer): number;
  /** 0 or an errno value. */
  setsid(): number;
}

/** setsid(2): 0, or an errno value; throws when the addon cannot be loaded. */
export function setsid(): number {
  return native().setsid();
}

function native(): NativeMaillog {
  return loadNative() as unknown as NativeMaillog;
}

/** syslog(3) facilities by the names syslog_facility accepts. */
export const SYSLOG_FACILITIES: Readonly<Record<string, number>> = {
  kern: 0 << 3,
  user: 1 << 3,
  mail: 2 << 3,
  daemon: 3 << 3,
  auth: 4 << 3,
  syslog: 5 << 3,
  lpr: 6 << 3,
  news: 7 << 3,
  uucp: 8 << 3,
  cron: 9 << 3,
  authpriv: 10 << 3,
  ftp: 11 << 3,
  local0: 16 << 3,
  local1: 17 << 3,
  local2: 18 << 3,
  local3: 19 << 3,
  local4: 20 << 3,
  local5: 21 << 3,
  local6: 22 << 3,
  local7: 23 << 3,
};

/** Severity to syslog priority, as msg_syslog.c maps them (fatal and panic: LOG_CRIT). */
const PRIORITY: Record<LogLevel, number> = { info: 6, debug: 6, warning: 4, error: 3, fatal: 2, panic: 2 };

/** Postfix's record length limit for one log text (msg_logger.c, msg_syslog.c). */
const RECLEN = 2000;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => String(n).padStart(2, '0');

/** strftime("%b %d %H:%M:%S ") in local time. */
export function postlogTimestamp(d = new Date()): string {
  return `${MONTHS[d.getMonth()]} ${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} `;
}

/** One postlog record, as msg_logger.c formats it (host: first label only). */
export function postlogRecord(tag: string, hostname: string, body: string, pid = process.pid, now = new Date()): string {
  const host = hostname.split('.')[0];
  return `${postlogTimestamp(now)}${host} ${tag}[${pid}]: ${body.slice(0, RECLEN + 32)}`;
}

export interface MaillogTarget {
  kind: 'syslog' | 'postlog';
  /** the log tag, e.g. postfix/proxymap */
  tag: string;
  /** postlog: the service socket path and the host name */
  path?: string;
  hostname?: string;
  /** syslog: facility number */
  facility?: number;
}

/**
 * A log sink for the target. `fallback` receives a line when the target
 * cannot take it (no addon, postlog service down).
 */
export function maillogSink(target: MaillogTarget, fallback: LogSink): LogSink {
  let nat: NativeMaillog;
  try {
    nat = native();
  } catch {
    return fallback;
  }
  if (target.kind === 'syslog') {
    nat.syslogOpen(target.tag, target.facility ?? SYSLOG_FACILITIES.mail);
    return (line, level, body) => {
      try {
        nat.syslogWrite(PRIORITY[level], body.slice(0, RECLEN + 32));
      } catch {
        fallback(line, level, body);
      }
    };
  }
  const path = target.path!;
  const hostname = target.hostname ?? 'localhost';
  return (line, level, body) => {
    const err = nat.dgramSend(path, Buffer.from(postlogRecord(target.tag, hostname, body), 'utf8'));
    if (err !== 0) fallback(line, level, body);
  };
}
