/**
 * proxymapd as a child of Postfix's master(8), in place of proxymap(8) for
 * the proxymap and proxywrite services (facts: shared/spec/protocol.md §5;
 * Postfix's multi_server.c and proxymap.c).
 *
 * - Command line as master builds it: `-n service -t unix [-u] [-l] [-v]
 *   [-d] [-i max_idle] [-m max_use] [-s count] [-o name=value] ...`
 *   (getopt "cdDi:lm:n:o:s:St:uvVz").
 * - Listening sockets inherited on fd 6.., the status channel on fd 5 (a
 *   stream socket shared with master); fds 3/4 (flow control) are left alone.
 * - Status: 12 bytes {pid, generation, avail} in native byte order: one
 *   TAKEN/AVAIL cycle for the first request, then TAKEN only when requests
 *   have kept the process busy for BUSY_REPORT_MS, AVAIL when none is left
 *   (see busyChanged()).
 * - Exit 0 when master closes the status channel (postfix reload/stop),
 *   after max_idle seconds without clients, and once max_use client
 *   connections have closed and no client is left. daemon_timeout is a
 *   watchdog on every request and on the event loop.
 * - -u: drop privileges to mail_owner after the sockets and configuration
 *   are in place. proxywrite leaves master's process group (setsid), so a
 *   shutdown signal to the group cannot interrupt an update.
 * - Logging to syslog, or to the postlog service when maillog_file is set,
 *   tagged $syslog_name/proxymap, as Postfix daemons log.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Config } from '../config/params.js';
import { configDirectory } from '../config/maincf.js';
import { getLogName, log, setLogName, setLogSink, setVerbose, type LogSink } from '../log.js';
import { maillogSink, setsid, SYSLOG_FACILITIES, type MaillogTarget } from '../addon/maillog.js';
import { strerror } from '../util/strerror.js';
import { createServer, lookupUser, startWarmUps } from './daemon.js';
import { METRICS_LISTEN_PARAM, startMetricsListener, type MetricsHttp } from './http.js';
import type { ProxyServer } from './server.js';
import type { Service } from './handler.js';

/** master_proto.h */
export const MASTER_STATUS_FD = 5;
export const MASTER_LISTEN_FD = 6;
export const MASTER_STAT_TAKEN = 0;
export const MASTER_STAT_AVAIL = 1;

/** How long requests must be in progress without a break before master is told the process is busy (ms). */
export const BUSY_REPORT_MS = 50;

/** Raised for command-line and start-up errors that Postfix reports with msg_fatal(). */
export class MasterFatal extends Error {}

export interface MasterArgs {
  /** -n, else the base name of argv[0] */
  serviceName: string;
  /** -t */
  transport?: string;
  /** -u: drop privileges to mail_owner */
  unprivileged: boolean;
  /** -c: chroot to queue_directory */
  chroot: boolean;
  /** -i: max_idle override (seconds) */
  maxIdle?: number;
  /** -m: max_use override */
  maxUse?: number;
  /** -s: number of listening descriptors from fd 6 */
  socketCount: number;
  /** -v count */
  verbose: number;
  /** -V: log to stderr too */
  logStderr: boolean;
  /** -S: one request on stdin/stdout */
  stdinMode: boolean;
  /** -l, -z, -d, -D: accepted */
  solitary: boolean;
  /** -o name=value, in order */
  overrides: string[];
}

/** Parse the command line master(8) passes (getopt "cdDi:lm:n:o:s:St:uvVz", no other arguments). */
export function parseMasterArgs(args: string[], argv0: string): MasterArgs {
  const out: MasterArgs = {
    serviceName: path.basename(argv0),
    unprivileged: false,
    chroot: false,
    socketCount: 1,
    verbose: 0,
    logStderr: false,
    stdinMode: false,
    solitary: false,
    overrides: [],
  };
  const withArg = new Set(['i', 'm', 'n', 'o', 's', 't']);
  const flags = new Set(['c', 'd', 'D', 'l', 'S', 'u', 'v', 'V', 'z']);
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i];
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') break;
    for (let j = 1; j < a.length; j++) {
      const c = a[j];
      if (withArg.has(c)) {
        let value = a.slice(j + 1);
        if (value === '') {
          if (i + 1 >= args.length) throw new MasterFatal(`invalid option: ${c}`);
          value = args[++i];
        }
        applyOption(out, c, value);
        break;
      }
      if (!flags.has(c)) throw new MasterFatal(`invalid option: ${c}`);
      applyOption(out, c, '');
    }
  }
  if (i < args.length) throw new MasterFatal(`unexpected command-line argument: ${args[i]}`);
  return out;
}

function positiveInt(v: string): number | undefined {
  return /^\d+$/.test(v) ? Number(v) : undefined;
}

function applyOption(out: MasterArgs, c: string, v: string): void {
  switch (c) {
    case 'c':
      out.chroot = true;
      break;
    case 'i': {
      const n = positiveInt(v);
      if (n === undefined || n <= 0) throw new MasterFatal(`invalid max_idle time: ${v}`);
      out.maxIdle = n;
      break;
    }
    case 'm': {
      const n = positiveInt(v);
      if (n === undefined) throw new MasterFatal(`invalid max_use: ${v}`);
      out.maxUse = n;
      break;
    }
    case 'n':
      out.serviceName = v;
      break;
    case 'o':
      if (!/^\s*[^=\s]+\s*=/.test(v)) throw new MasterFatal(`invalid "-o ${v}" option value: missing '='`);
      out.overrides.push(v);
      break;
    case 's': {
      const n = positiveInt(v);
      if (n === undefined || n <= 0) throw new MasterFatal(`invalid socket_count: ${v}`);
      out.socketCount = n;
      break;
    }
    case 'S':
      out.stdinMode = true;
      break;
    case 't':
      out.transport = v;
      break;
    case 'u':
      out.unprivileged = true;
      break;
    case 'v':
      out.verbose++;
      break;
    case 'V':
      out.logStderr = true;
      break;
    case 'l':
    case 'z':
      out.solitary = c === 'l';
      break;
    default: // d, D: nothing to do
      break;
  }
}

/** The service a master.cf service name selects (proxymap.c; 3.11's export-proxy- prefix is not a service here). */
export function serviceOf(name: string): Service {
  if (name === 'proxywrite') return 'proxywrite';
  if (name === 'proxymap') return 'proxymap';
  throw new MasterFatal(`invalid service name: "${name}" - service name must be "proxywrite" or "proxymap"`);
}

/** The GENERATION environment value (octal), as master sets it; 0 when absent. */
export function parseGeneration(v: string | undefined): number {
  if (v === undefined) return 0;
  if (!/^[0-9]+$/.test(v)) throw new MasterFatal(`bad generation: ${v}`);
  // strtoul(..., 8) stops at the first non-octal digit.
  const m = /^[0-7]*/.exec(v)![0];
  return m === '' ? 0 : parseInt(m, 8) >>> 0;
}

/** One status message: struct { int pid; unsigned gen; int avail; } in native byte order. */
export function statusMessage(pid: number, gen: number, avail: number): Buffer {
  const b = Buffer.alloc(12);
  if (os.endianness() === 'LE') {
    b.writeInt32LE(pid, 0);
    b.writeUInt32LE(gen >>> 0, 4);
    b.writeInt32LE(avail, 8);
  } else {
    b.writeInt32BE(pid, 0);
    b.writeUInt32BE(gen >>> 0, 4);
    b.writeInt32BE(avail, 8);
  }
  return b;
}

/** Where this configuration sends log records (maillog_client.c's choice). */
export function maillogTarget(config: Config, tag: string): MaillogTarget {
  const maillogFile = config.get('maillog_file');
  if (maillogFile !== '') {
    return {
      kind: 'postlog',
      tag,
      path: path.join(config.get('queue_directory'), 'public', config.get('postlog_service_name') || 'postlog'),
      hostname: config.get('myhostname'),
    };
  }
  const facilityName = config.get('syslog_facility').toLowerCase();
  let facility = SYSLOG_FACILITIES[facilityName];
  if (facility === undefined) {
    log.warn(`unknown syslog facility: "${facilityName}"; using "mail"`);
    facility = SYSLOG_FACILITIES.mail;
  }
  return { kind: 'syslog', tag, facility };
}

export interface MasterChildHooks {
  /** exit the process (tests replace it) */
  exit?: (code: number) => void;
}

/**
 * Run as master's child until it is time to exit. Returns the exit status
 * (the caller exits with it). Start-up errors are logged as fatal and give 1.
 */
export async function runMasterChild(args: MasterArgs, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const stderrSink: LogSink = (line) => {
    try {
      fs.writeSync(2, line + '\n');
    } catch {
      /* stderr closed */
    }
  };
  setLogSink(stderrSink);
  setVerbose(args.verbose + (env.MAIL_VERBOSE ? 1 : 0));
  let config: Config;
  try {
    config = Config.load(configDirectory({}, env), { overrides: args.overrides, processName: 'proxymap' });
    setLogName(`${config.get('syslog_name') || 'postfix'}/proxymap`);
    const target = maillogTarget(config, getLogName());
    const mailSink = maillogSink(target, stderrSink);
    setLogSink(
      args.logStderr && mailSink !== stderrSink
        ? (line, level, body) => {
            mailSink(line, level, body);
            stderrSink(line, level, body);
          }
        : mailSink,
    );
  } catch (e) {
    log.fatal((e as Error).message);
    return 1;
  }

  let child: MasterChild;
  try {
    if (args.stdinMode) throw new MasterFatal('-S (one request on standard input) is not supported by proxymapd');
    if (args.transport === undefined) throw new MasterFatal('no transport type specified');
    if (args.transport !== 'unix' && args.transport !== 'inet')
      throw new MasterFatal(`unsupported transport type: ${args.transport}`);
    if (args.chroot)
      throw new MasterFatal('proxymapd does not run chrooted: set the chroot field of its master.cf entry to "n"');
    const service = serviceOf(args.serviceName);
    const generation = parseGeneration(env.GENERATION);
    child = new MasterChild(config, args, service, generation);
    await child.start();
  } catch (e) {
    log.fatal(e instanceof MasterFatal ? e.message : ((e as Error).message ?? String(e)));
    return 1;
  }
  return child.done;
}

class MasterChild {
  private server!: ProxyServer;
  private metricsHttp: MetricsHttp | null = null;
  private status!: net.Socket;
  private idleTimer: NodeJS.Timeout | null = null;
  private exiting = false;
  private resolveDone!: (code: number) => void;
  readonly done: Promise<number>;
  private readonly maxIdleMs: number;
  private readonly maxUse: number;
  private readonly daemonTimeoutMs: number;
  /** a taken/available cycle has been reported */
  private cycled = false;
  /** master was told "taken" and not yet "available" */
  private reportedTaken = false;
  private busyTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly config: Config,
    private readonly args: MasterArgs,
    private readonly service: Service,
    private readonly generation: number,
  ) {
    this.done = new Promise((r) => (this.resolveDone = r));
    this.maxIdleMs = (args.maxIdle ?? config.getTime('max_idle', 's')) * 1000;
    this.maxUse = args.maxUse ?? config.getInt('max_use');
    this.daemonTimeoutMs = config.getTime('daemon_timeout', 's') * 1000;
  }

  async start(): Promise<void> {
    // A file-size limit signal must not kill the process (multi_server.c ignores it; SIGPIPE is ignored by Node).
    process.on('SIGXFSZ', () => {});
    this.server = createServer({ config: this.config });
    for (let i = 0; i < this.args.socketCount; i++) {
      try {
        await this.server.listenFd(MASTER_LISTEN_FD + i, this.service);
      } catch (e) {
        throw new MasterFatal(`cannot use the listening socket on descriptor ${MASTER_LISTEN_FD + i}: ${(e as Error).message}`);
      }
    }
    // before dropping privileges (a port below 1024, a socket in a root-owned directory); a failure is a warning
    this.metricsHttp = await startMetricsListener(this.server, this.config.get(METRICS_LISTEN_PARAM));
    if (this.args.unprivileged) this.dropPrivileges();
    if (this.service === 'proxywrite') {
      try {
        const err = setsid();
        if (err !== 0) log.warn(`setsid: ${strerror(errnoName(err))}`);
      } catch (e) {
        log.warn(`setsid: ${(e as Error).message}`);
      }
    }
    this.openStatusChannel();
    startWarmUps(this.server);
    this.server.onBusyChange = (busy) => this.busyChanged(busy);
    this.server.onConnectionOpened = () => this.cancelIdle();
    this.server.onConnectionClosed = (open) => {
      // max_use counts closed client connections, as multi_server.c does.
      if (this.maxUse > 0 && this.server.closedCount >= this.maxUse && open === 0) {
        log.debug('use count limit reached -- exiting');
        void this.exit(0);
        return;
      }
      if (open === 0) this.armIdle();
    };
    this.armIdle();
    this.startWatchdogs();
    const term = () => {
      log.debug('SIGTERM -- exiting');
      void this.exit(0);
    };
    process.on('SIGTERM', term);
    process.on('SIGINT', term);
    log.debug(`${this.service} service started (generation ${this.generation.toString(8)})`);
  }

  /** chroot_uid(): setgid, initgroups, setuid to mail_owner. */
  private dropPrivileges(): void {
    const owner = this.config.get('mail_owner');
    const pw = lookupUser(owner);
    if (!pw) throw new MasterFatal(`unknown mail_owner: ${owner}`);
    if (pw.uid === 0) throw new MasterFatal(`mail_owner ${owner} has privileged user ID`);
    const p = process as NodeJS.Process & { initgroups?: (user: string, extraGroup: number) => void };
    if (!p.setgid || !p.setuid || !p.initgroups) throw new MasterFatal('cannot drop privileges on this platform');
    try {
      p.setgid(pw.gid);
      p.initgroups(owner, pw.gid);
      p.setuid(pw.uid);
    } catch (e) {
      throw new MasterFatal(`cannot drop privileges to ${owner}: ${(e as Error).message}`);
    }
  }

  private openStatusChannel(): void {
    try {
      fs.fstatSync(MASTER_STATUS_FD);
    } catch {
      throw new MasterFatal(`no status channel on descriptor ${MASTER_STATUS_FD}: not started by master(8)?`);
    }
    this.status = new net.Socket({ fd: MASTER_STATUS_FD, readable: true, writable: true });
    this.status.on('data', () => {}); // master never writes; keep reading to see EOF
    const gone = (why: string) => {
      log.debug(`master status channel ${why} -- exiting`);
      void this.exit(0);
    };
    this.status.on('end', () => gone('closed'));
    this.status.on('error', (e) => gone(`error: ${e.message}`));
    this.status.on('close', () => gone('closed'));
  }

  /**
   * Busy/available reporting. master needs "taken" only to decide whether to
   * start another process for a waiting client; a concurrent server that is
   * busy for a moment still accepts and serves new clients. So after the
   * first request (a complete taken/available cycle, which tells master the
   * process started well), "taken" is sent only when requests have been in
   * progress without a break for BUSY_REPORT_MS, and "available" when the
   * last one finished. This spares master two wake-ups per request.
   */
  private busyChanged(busy: boolean): void {
    if (busy) {
      if (!this.cycled) {
        this.sendStatus(MASTER_STAT_TAKEN);
        this.reportedTaken = true;
        return;
      }
      if (this.busyTimer || this.reportedTaken) return;
      this.busyTimer = setTimeout(() => {
        this.busyTimer = null;
        this.sendStatus(MASTER_STAT_TAKEN);
        this.reportedTaken = true;
      }, BUSY_REPORT_MS);
      return;
    }
    if (this.busyTimer) {
      clearTimeout(this.busyTimer);
      this.busyTimer = null;
    }
    if (this.reportedTaken) {
      this.sendStatus(MASTER_STAT_AVAIL);
      this.reportedTaken = false;
      this.cycled = true;
    }
  }

  private sendStatus(avail: number): void {
    if (this.exiting || this.status.destroyed) return;
    this.status.write(statusMessage(process.pid, this.generation, avail), (err) => {
      if (err) {
        log.debug(`status update: ${err.message} -- exiting`);
        void this.exit(0);
      }
    });
  }

  private armIdle(): void {
    this.cancelIdle();
    if (this.maxIdleMs <= 0) return;
    this.idleTimer = setTimeout(() => {
      log.debug('idle timeout -- exiting');
      void this.exit(0);
    }, this.maxIdleMs);
  }

  private cancelIdle(): void {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
  }

  /**
   * daemon_timeout: a request in progress for longer, or an event loop that
   * has not turned for that long (a worker thread watches a heartbeat), ends
   * the process with "fatal: watchdog timeout", as Postfix's watchdog does.
   */
  private startWatchdogs(): void {
    const limit = this.daemonTimeoutMs;
    if (limit <= 0) return;
    const tick = Math.min(1000, Math.max(10, Math.floor(limit / 4)));
    const beat = new Int32Array(new SharedArrayBuffer(4));
    const t0 = Date.now();
    Atomics.store(beat, 0, 0);
    setInterval(() => {
      Atomics.store(beat, 0, Math.floor((Date.now() - t0) / 10));
      const oldest = this.server.oldestRequestStart();
      if (oldest !== 0 && Date.now() - oldest > limit) {
        log.fatal('watchdog timeout');
        process.exit(1);
      }
    }, tick).unref();
    // The event-loop watchdog: a worker that kills the process when the heartbeat stops.
    const src = `
      const { workerData } = require('node:worker_threads');
      const fs = require('node:fs');
      const beat = workerData.beat, t0 = workerData.t0, limit = workerData.limit;
      setInterval(() => {
        const last = t0 + Atomics.load(beat, 0) * 10;
        if (Date.now() - last > limit) {
          try { fs.writeSync(2, workerData.tag + '[' + process.pid + ']: fatal: watchdog timeout\\n'); } catch {}
          process.kill(process.pid, 'SIGKILL');
        }
      }, workerData.tick);`;
    try {
      const w = new Worker(src, { eval: true, workerData: { beat, t0, limit: limit + tick, tick, tag: getLogName() } });
      w.unref();
      w.on('error', (e) => log.warn(`watchdog thread: ${e.message}`));
    } catch (e) {
      log.warn(`watchdog thread: ${(e as Error).message}`);
    }
  }

  /** Stop serving and finish: requests in progress get a moment to complete, then tables are closed. */
  async exit(code: number): Promise<void> {
    if (this.exiting) return;
    this.exiting = true;
    this.cancelIdle();
    try {
      this.status?.destroy();
    } catch {
      /* ignore */
    }
    const deadline = Date.now() + 2000;
    try {
      await this.server.stopListening();
      while (this.server.oldestRequestStart() !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      await Promise.all([this.server.close(true), this.metricsHttp?.close()]);
    } catch (e) {
      log.warn(`while exiting: ${(e as Error).message}`);
    }
    this.resolveDone(code);
  }
}

function errnoName(n: number): string {
  for (const [name, v] of Object.entries(os.constants.errno)) if (v === n) return name;
  return String(n);
}
