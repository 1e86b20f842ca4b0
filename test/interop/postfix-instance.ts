/**
 * An isolated, real Postfix instance in a fresh temporary directory (see
 * /work/shared/spec/real-postfix.md): its own main.cf/master.cf, queue and
 * data directories and maillog; real master(8) with the real proxymap(8) on
 * `$queue/private/proxymap`. For interop tests and the benchmark.
 *
 * Every wait is bounded; a failed start cleans up before throwing; stop()
 * never throws and always removes the directory. Instances still running when
 * the process exits are killed and removed by a synchronous exit hook.
 */
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface MasterCfEdits {
  /**
   * Services to remove, as `name` (every entry of that name) or `name/type`
   * (e.g. `proxymap/unix`); continuation lines go with their entry.
   */
  remove?: string[];
  /** Lines appended at the end of master.cf (after `remove`). */
  append?: string[];
  /** Last step: any transformation of the whole master.cf text. */
  transform?: (text: string) => string;
}

export interface PostfixInstanceOptions {
  /**
   * Extra main.cf parameters; they override the defaults written by the
   * helper (e.g. `proxy_read_maps`, `daemon_directory`, `max_idle`).
   * `$DIR` in a value is replaced by the instance directory.
   */
  mainCf?: Record<string, string>;
  /** Changes to the copied /etc/postfix/master.cf (applied after chroot=n). */
  masterCfEdits?: MasterCfEdits | ((text: string) => string);
  /** Extra files to create before start, paths relative to the instance directory. */
  files?: Record<string, string>;
  /**
   * Services under `$queue/private/` that must accept a connection before
   * start() resolves (default `['proxymap']`; `[]` waits for nothing).
   */
  waitFor?: string[];
  /** For waitFor: also require the 28-byte proxymap announcement (default true). */
  expectAnnouncement?: boolean;
  /** Bound on the whole start (postfix start + readiness), ms (default 30000). */
  startTimeoutMs?: number;
  /** Parent directory for the instance (default os.tmpdir()). */
  parentDir?: string;
  /** Keep the directory after stop() (debugging). */
  keepDir?: boolean;
}

export interface PostfixInstance {
  /** instance root (mode 0755) */
  dir: string;
  /** configuration directory: pass as `postfix -c` / `postmap -c` */
  confDir: string;
  /** queue_directory */
  queueDir: string;
  dataDir: string;
  /** `$queue/private/proxymap` */
  proxymapSocket: string;
  /** `$queue/private/proxywrite` */
  proxywriteSocket: string;
  /** pid of master(8), if it could be read */
  masterPid: number | undefined;
  /** Stop master and every process of this instance, remove the directory. Never throws; idempotent. */
  stop(): Promise<void>;
  /** Current contents of the instance's maillog ("" if none). */
  maillog(): string;
  /** Pids of the instance's live processes (master and its children, by MAIL_CONFIG). */
  processes(): number[];
}

const PROXYMAP_ANNOUNCEMENT = Buffer.from('protocol\0proxymap_protocol\0\0', 'latin1');

const SEARCH_PATH = ['/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/sbin', '/usr/local/bin'];

function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...SEARCH_PATH];
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

let availability: { ok: boolean; reason: string } | undefined;

/** Why Postfix cannot be used here ("" when it can). */
export function postfixUnavailableReason(): string {
  if (!availability) availability = checkAvailable();
  return availability.reason;
}

/**
 * True when a real Postfix instance can be started here: postfix, postconf
 * and postmap installed, master(8) and proxymap(8) present in
 * daemon_directory, a `postfix` user, and we are root.
 */
export function postfixAvailable(): boolean {
  if (!availability) availability = checkAvailable();
  return availability.ok;
}

function checkAvailable(): { ok: boolean; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: 'not Linux' };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return { ok: false, reason: 'not running as root' };
  for (const exe of ['postfix', 'postconf', 'postmap']) {
    if (!findExecutable(exe)) return { ok: false, reason: `${exe} not installed` };
  }
  const r = spawnSync(findExecutable('postconf')!, ['-dh', 'daemon_directory'], { encoding: 'utf8', timeout: 10_000 });
  const daemonDir = r.status === 0 ? r.stdout.trim() : '/usr/lib/postfix/sbin';
  for (const d of ['master', 'proxymap']) {
    try {
      fs.accessSync(path.join(daemonDir, d), fs.constants.X_OK);
    } catch {
      return { ok: false, reason: `${daemonDir}/${d} missing` };
    }
  }
  if (!fs.existsSync('/etc/postfix/master.cf')) return { ok: false, reason: '/etc/postfix/master.cf missing' };
  const id = spawnSync('id', ['-u', 'postfix'], { encoding: 'utf8', timeout: 5000 });
  if (id.status !== 0) return { ok: false, reason: 'no postfix user' };
  return { ok: true, reason: '' };
}

function postfixUid(): number {
  const id = spawnSync('id', ['-u', 'postfix'], { encoding: 'utf8', timeout: 5000 });
  const uid = Number(id.stdout.trim());
  if (id.status !== 0 || !Number.isInteger(uid)) throw new Error('cannot find the uid of user postfix');
  return uid;
}

function run(file: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string; error?: Error }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      const raw = err ? (err as { code?: unknown }).code : 0;
      const code = typeof raw === 'number' ? raw : null;
      resolve({ code, stdout: String(stdout), stderr: String(stderr), error: err ?? undefined });
    });
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Set the 5th field (chroot) to `n` on every service line of a master.cf text. */
export function unchrootMasterCf(text: string): string {
  return text
    .split('\n')
    .map((line) => {
      if (!/^[^#\s]/.test(line)) return line;
      const m = /^(\S+\s+\S+\s+\S+\s+\S+\s+)(\S+)(.*)$/.exec(line);
      if (!m) return line;
      return m[1] + 'n' + ' '.repeat(Math.max(0, m[2]!.length - 1)) + m[3];
    })
    .join('\n');
}

/** Remove entries (`name` or `name/type`) with their continuation lines. */
export function removeMasterCfServices(text: string, services: string[]): string {
  const out: string[] = [];
  let dropping = false;
  for (const line of text.split('\n')) {
    if (/^[^#\s]/.test(line)) {
      const [name, type] = line.split(/\s+/);
      dropping = services.some((s) => s === name || s === `${name}/${type}`);
    } else if (!/^\s+\S/.test(line)) {
      dropping = false; // a comment or blank line ends an entry's continuation lines
    }
    if (!dropping) out.push(line);
  }
  return out.join('\n');
}

/** Pids of live processes whose environment has MAIL_CONFIG=<confDir> (the instance's children). */
function instancePids(confDir: string): number[] {
  const want = Buffer.from(`MAIL_CONFIG=${confDir}\0`);
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return pids;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    try {
      const env = fs.readFileSync(`/proc/${e}/environ`);
      if (env.includes(want) && !isZombieOrGone(pid)) pids.push(pid);
    } catch {
      /* gone or not ours */
    }
  }
  return pids;
}

/** True if the process does not exist or is a zombie (exited, not yet reaped). */
export function isZombieOrGone(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch {
    return true;
  }
}

function readMasterPid(queueDir: string): number | undefined {
  try {
    const n = Number(fs.readFileSync(path.join(queueDir, 'pid', 'master.pid'), 'latin1').trim());
    return Number.isInteger(n) && n > 1 ? n : undefined;
  } catch {
    return undefined;
  }
}

function tryKill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

/** Synchronous last-resort cleanup of instances left running at process exit. */
const live = new Map<string, { queueDir: string; confDir: string; dir: string; keepDir: boolean }>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const inst of live.values()) {
      const pid = readMasterPid(inst.queueDir);
      if (pid) tryKill(pid, 'SIGKILL');
      for (const p of instancePids(inst.confDir)) tryKill(p, 'SIGKILL');
      if (!inst.keepDir) {
        try {
          fs.rmSync(inst.dir, { recursive: true, force: true });
        } catch {
          /* ignore */
        }
      }
    }
    live.clear();
  });
}

/** Connect to a UNIX socket and (optionally) read the proxymap announcement; bounded by timeoutMs. */
function probe(sockPath: string, expectAnnouncement: boolean, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    let got = Buffer.alloc(0);
    const sock = net.connect({ path: sockPath });
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('error', () => finish(false));
    sock.on('connect', () => {
      if (!expectAnnouncement) finish(true);
    });
    sock.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= PROXYMAP_ANNOUNCEMENT.length) finish(got.subarray(0, PROXYMAP_ANNOUNCEMENT.length).equals(PROXYMAP_ANNOUNCEMENT));
    });
    sock.on('close', () => finish(false));
  });
}

function formatMainCf(params: Record<string, string>): string {
  return Object.entries(params)
    .map(([k, v]) => `${k} = ${v.replace(/\n/g, ' ')}`)
    .join('\n') + '\n';
}

/**
 * Build and start an isolated Postfix instance. Resolves once every service
 * in `waitFor` accepts connections (and announces itself).
 */
export async function startPostfixInstance(opts: PostfixInstanceOptions = {}): Promise<PostfixInstance> {
  if (!postfixAvailable()) throw new Error(`real Postfix not available: ${postfixUnavailableReason()}`);
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const deadline = Date.now() + startTimeoutMs;
  const postfixBin = findExecutable('postfix')!;

  const dir = fs.mkdtempSync(path.join(opts.parentDir ?? os.tmpdir(), 'pfinst-'));
  const confDir = path.join(dir, 'conf');
  const queueDir = path.join(dir, 'queue');
  const dataDir = path.join(dir, 'data');
  const maillogPath = path.join(dir, 'maillog');
  const keepDir = opts.keepDir ?? false;
  let stopped = false;
  let masterPid: number | undefined;
  let stopping: Promise<void> | undefined;

  const maillog = (): string => {
    try {
      return fs.readFileSync(maillogPath, 'utf8');
    } catch {
      return '';
    }
  };

  const stop = (): Promise<void> => {
    if (!stopping) stopping = doStop();
    return stopping;
  };

  const doStop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    try {
      const pid = masterPid ?? readMasterPid(queueDir);
      if (pid !== undefined && !isZombieOrGone(pid)) {
        await run(postfixBin, ['-c', confDir, 'stop'], 15_000);
        // master exits after terminating its children; wait a bounded time
        const until = Date.now() + 10_000;
        while (!isZombieOrGone(pid) && Date.now() < until) await sleep(50);
        if (!isZombieOrGone(pid)) tryKill(pid, 'SIGKILL');
      }
      // children that outlived master (or a master whose pid we never learned)
      let others = instancePids(confDir);
      if (others.length) {
        for (const p of others) tryKill(p, 'SIGTERM');
        const until = Date.now() + 3_000;
        while ((others = others.filter((p) => !isZombieOrGone(p))).length && Date.now() < until) await sleep(50);
        for (const p of others) tryKill(p, 'SIGKILL');
      }
    } catch {
      /* never throw from stop */
    } finally {
      live.delete(dir);
      if (!keepDir) {
        try {
          fs.rmSync(dir, { recursive: true, force: true });
        } catch {
          /* ignore */
        }
      }
    }
  };

  installExitHook();
  live.set(dir, { queueDir, confDir, dir, keepDir });

  try {
    fs.chmodSync(dir, 0o755);
    fs.mkdirSync(confDir);
    fs.mkdirSync(queueDir);
    fs.mkdirSync(dataDir);
    fs.chownSync(dataDir, postfixUid(), -1);

    let masterCf = unchrootMasterCf(fs.readFileSync('/etc/postfix/master.cf', 'utf8'));
    const edits = opts.masterCfEdits;
    if (typeof edits === 'function') masterCf = edits(masterCf);
    else if (edits) {
      if (edits.remove?.length) masterCf = removeMasterCfServices(masterCf, edits.remove);
      if (edits.append?.length) masterCf = masterCf.replace(/\n*$/, '\n') + edits.append.join('\n') + '\n';
      if (edits.transform) masterCf = edits.transform(masterCf);
    }
    fs.writeFileSync(path.join(confDir, 'master.cf'), masterCf);

    const params: Record<string, string> = {
      queue_directory: queueDir,
      data_directory: dataDir,
      mail_owner: 'postfix',
      setgid_group: 'postdrop',
      compatibility_level: '3.6',
      maillog_file: maillogPath,
      maillog_file_prefixes: `/var, /dev/stdout, ${dir}`,
      inet_interfaces: 'loopback-only',
      master_service_disable: 'inet',
      myhostname: 'pfinst.localdomain',
    };
    for (const [k, v] of Object.entries(opts.mainCf ?? {})) params[k] = v.split('$DIR').join(dir);
    fs.writeFileSync(path.join(confDir, 'main.cf'), formatMainCf(params));

    for (const [rel, content] of Object.entries(opts.files ?? {})) {
      const p = path.join(dir, rel);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, content, { mode: 0o644 });
    }

    const r = await run(postfixBin, ['-c', confDir, 'start'], Math.max(1000, deadline - Date.now()));
    if (r.code !== 0) {
      throw new Error(`postfix -c ${confDir} start failed (${r.error?.message ?? r.code}): ${(r.stderr + r.stdout).trim()}`);
    }

    // master writes its pid file shortly after start
    while ((masterPid = readMasterPid(queueDir)) === undefined && Date.now() < deadline) await sleep(25);
    if (masterPid === undefined) throw new Error('master(8) did not write its pid file');

    for (const svc of opts.waitFor ?? ['proxymap']) {
      const sockPath = path.join(queueDir, 'private', svc);
      for (;;) {
        if (isZombieOrGone(masterPid)) throw new Error('master(8) exited during start');
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`timed out waiting for ${sockPath}`);
        if (await probe(sockPath, opts.expectAnnouncement ?? true, Math.min(2000, left))) break;
        await sleep(50);
      }
    }
  } catch (e) {
    const log = maillog();
    await stop();
    const err = e instanceof Error ? e : new Error(String(e));
    if (log) err.message += `\n--- maillog ---\n${log}`;
    throw err;
  }

  return {
    dir,
    confDir,
    queueDir,
    dataDir,
    proxymapSocket: path.join(queueDir, 'private', 'proxymap'),
    proxywriteSocket: path.join(queueDir, 'private', 'proxywrite'),
    get masterPid() {
      return masterPid;
    },
    stop,
    maillog,
    processes: () => instancePids(confDir),
  };
}
