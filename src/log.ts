/**
 * Postfix-style logging: "postfix/proxymap[PID]: warning: text" on stderr.
 * Tests may replace the sink to capture lines.
 */
export type LogLevel = 'info' | 'warning' | 'error' | 'fatal' | 'panic' | 'debug';

export interface LogSink {
  /** line: "prog[pid]: severity: text" (as on stderr); body: "severity: text" (what syslog and postlog get after the tag). */
  (line: string, level: LogLevel, body: string): void;
}

let progName = 'postfix/proxymap';
let verbose = 0;
let sink: LogSink = (line) => {
  process.stderr.write(line + '\n');
};

export function setLogName(name: string): void {
  progName = name;
}
export function getLogName(): string {
  return progName;
}
export function setVerbose(level: number): void {
  verbose = level;
}
export function getVerbose(): number {
  return verbose;
}
export function setLogSink(s: LogSink): LogSink {
  const old = sink;
  sink = s;
  return old;
}

/** Replace non-printable characters by '?' as Postfix does in log text. */
export function printable(s: string): string {
  return s.replace(/[\x00-\x1f\x7f\ufffd]/g, '?');
}

/**
 * Log text for a byte string: well-formed UTF-8 shows as text, every other
 * byte >= 0x80 (and control bytes) as '?', like Postfix's printable().
 */
export function logBytes(b: string): string {
  return Buffer.from(b, 'latin1').toString('utf8');
}

function emit(level: LogLevel, text: string): void {
  const prefix = level === 'info' || level === 'debug' ? '' : level + ': ';
  const body = prefix + printable(text);
  sink(`${progName}[${process.pid}]: ${body}`, level, body);
}

export const log = {
  info: (t: string) => emit('info', t),
  warn: (t: string) => emit('warning', t),
  error: (t: string) => emit('error', t),
  debug: (t: string) => {
    if (verbose > 0) emit('debug', t);
  },
  /** Log a fatal error; the caller decides whether to exit. */
  fatal: (t: string) => emit('fatal', t),
};
