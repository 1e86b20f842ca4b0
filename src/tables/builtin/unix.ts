/**
 * unix:passwd.byname and unix:group.byname (src/util/dict_unix.c).
 * Node has no getpwnam(): the files (/etc/passwd, /etc/group) are parsed
 * and re-read when they change; names not in the files are asked of
 * getent(1), which covers the other NSS sources.
 */
import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { DICT_FLAG } from '../../protocol/flags.js';
import { strerror } from '../../util/strerror.js';
import {
  NOT_FOUND,
  RETRY,
  TableOpenError,
  found,
  type Bytes,
  type LookupResult,
  type Table,
  type TableOpenOptions,
  type TableOpener,
} from '../core/table.js';
import { requireReadOnly } from '../core/util.js';
import type { TableType } from '../core/registry.js';
import { FileStamp } from '../core/filestamp.js';

export interface UnixTableOptions {
  /** Default /etc/passwd. */
  passwdFile?: string;
  /** Default /etc/group. */
  groupFile?: string;
  /** getent command for names not in the files; null disables the fallback. Default 'getent'. */
  getent?: string | null;
  /** Time limit for one getent run, in ms (default 5000); a timeout is a temporary error. */
  getentTimeoutMs?: number;
}

export type UnixDbKind = 'passwd' | 'group';

interface Entry {
  name: Bytes;
  /** Numeric id (uid or gid). */
  id: number;
  /** The value Postfix returns for the entry. */
  value: Bytes;
}

const NUMBER = /^[0-9]+$/;

/** Parse one passwd(5) or group(5) line (bytes) the way glibc's files backend does, roughly. */
export function parseDbLine(kind: UnixDbKind, line: Bytes): Entry | undefined {
  const text = line.replace(/^[ \t\r\v\f]+/, '').replace(/\r?$/, '');
  if (text === '' || text[0] === '#' || text[0] === '+' || text[0] === '-') return undefined;
  const f = text.split(':');
  if (kind === 'passwd') {
    if (f.length < 7 || f[0] === '' || !NUMBER.test(f[2]) || !NUMBER.test(f[3])) return undefined;
    const [name, passwd, uid, gid, gecos, dir] = f;
    const shell = f.slice(6).join(':');
    const id = Number(uid);
    return { name, id, value: `${name}:${passwd}:${id}:${Number(gid)}:${gecos}:${dir}:${shell}` };
  }
  if (f.length < 4 || f[0] === '' || !NUMBER.test(f[2])) return undefined;
  const [name, passwd, gid] = f;
  const members = f
    .slice(3)
    .join(':')
    .split(',')
    .map((m) => m.replace(/^[ \t]+/, ''))
    .filter((m) => m !== '');
  const id = Number(gid);
  return { name, id, value: `${name}:${passwd}:${id}:${members.join(',')}` };
}

/** One parsed database file, reloaded when its inode, size or times change. */
class DbFile {
  private stamp: FileStamp | undefined;
  private byName = new Map<Bytes, Entry>();
  private hasRoot = false;
  /** The error of the last failed read, if the file could not be read. */
  error: unknown;

  constructor(
    private readonly kind: UnixDbKind,
    private readonly path: string,
  ) {}

  private async refresh(): Promise<void> {
    try {
      const st = await stat(this.path);
      if (this.stamp?.matches(st)) return;
      const stamp = FileStamp.of(st);
      const text = (await readFile(this.path)).toString('latin1');
      const byName = new Map<Bytes, Entry>();
      let hasRoot = false;
      for (const line of text.split('\n')) {
        const e = parseDbLine(this.kind, line);
        if (!e) continue;
        if (!byName.has(e.name)) byName.set(e.name, e);
        if (e.id === 0) hasRoot = true;
      }
      this.byName = byName;
      this.hasRoot = hasRoot;
      this.stamp = stamp;
      this.error = undefined;
    } catch (err) {
      this.byName = new Map();
      this.hasRoot = false;
      this.stamp = undefined;
      this.error = err;
    }
  }

  async get(name: Bytes): Promise<Entry | undefined> {
    await this.refresh();
    return this.byName.get(name);
  }

  async rootKnown(): Promise<boolean> {
    await this.refresh();
    return this.hasRoot;
  }
}

type GetentResult = { entry: Entry | undefined } | { timedOut: true };

function runGetent(cmd: string, kind: UnixDbKind, key: string, timeout: number): Promise<GetentResult> {
  return new Promise((resolve) => {
    execFile(cmd, [kind, '--', key], { timeout, encoding: 'buffer', maxBuffer: 1 << 20 }, (err, stdout) => {
      if (err && (err.killed || err.signal)) return resolve({ timedOut: true });
      if (err) return resolve({ entry: undefined });
      const line = stdout.toString('latin1').split('\n')[0];
      resolve({ entry: parseDbLine(kind, line) });
    });
  });
}

class UnixTable implements Table {
  readonly type = 'unix';
  readonly implFlags = DICT_FLAG.FIXED;
  private sanityChecked = false;
  private readonly getentCmd: string | null;
  private readonly timeoutMs: number;

  constructor(
    readonly name: string,
    private readonly kind: UnixDbKind,
    private readonly db: DbFile,
    options: UnixTableOptions,
    private readonly warn: (text: string) => void,
  ) {
    this.getentCmd = options.getent === undefined ? 'getent' : options.getent;
    this.timeoutMs = options.getentTimeoutMs ?? 5000;
  }

  /** Ask getent for an exact name; an entry with another name (e.g. found by number) does not count. */
  private async getent(key: Bytes): Promise<GetentResult> {
    if (this.getentCmd === null || key === '' || key.includes('\0')) return { entry: undefined };
    // Arguments are passed as UTF-8: keys that are not valid UTF-8 cannot be asked for.
    const arg = Buffer.from(key, 'latin1').toString('utf8');
    if (Buffer.from(arg, 'utf8').toString('latin1') !== key) return { entry: undefined };
    const res = await runGetent(this.getentCmd, this.kind, arg, this.timeoutMs);
    if ('entry' in res && res.entry?.name !== key) return { entry: undefined };
    return res;
  }

  async lookup(key: Bytes): Promise<LookupResult> {
    let entry = await this.db.get(key);
    if (!entry) {
      const res = await this.getent(key);
      if ('timedOut' in res) {
        this.warn(`${this.type}:${this.name}: getent ${this.kind} lookup timed out for "${key}"`);
        return RETRY;
      }
      entry = res.entry;
    }
    if (entry) {
      this.sanityChecked = true;
      return found(entry.value);
    }
    if (!this.sanityChecked) {
      // First lookup misses: make sure the database works at all (uid/gid 0 must resolve).
      this.sanityChecked = true;
      if (!(await this.db.rootKnown()) && !(await this.rootViaGetent())) {
        const what = this.kind === 'passwd' ? 'password' : 'group';
        this.warn(`cannot access UNIX ${what} database: ${strerror(this.db.error)}`);
        return RETRY;
      }
    }
    return NOT_FOUND;
  }

  private async rootViaGetent(): Promise<boolean> {
    if (this.getentCmd === null) return false;
    const res = await runGetent(this.getentCmd, this.kind, '0', this.timeoutMs);
    return 'entry' in res && res.entry?.id === 0;
  }
}

/** An opener for unix: tables reading the given files (defaults: the system's). */
export function unixOpener(options: UnixTableOptions = {}): TableOpener {
  const files = {
    passwd: new DbFile('passwd', options.passwdFile ?? '/etc/passwd'),
    group: new DbFile('group', options.groupFile ?? '/etc/group'),
  };
  return (opts: TableOpenOptions): Table => {
    requireReadOnly(opts);
    const kind: UnixDbKind | undefined =
      opts.name === 'passwd.byname' ? 'passwd' : opts.name === 'group.byname' ? 'group' : undefined;
    if (!kind) throw new TableOpenError(`unknown table: unix:${opts.name}`);
    return new UnixTable(opts.name, kind, files[kind], options, opts.warn);
  };
}

/** Opener for unix:passwd.byname / unix:group.byname on this system. */
export const openUnix: TableOpener = unixOpener();

export const unixType: TableType = { name: 'unix', open: openUnix, implFlags: DICT_FLAG.FIXED, writable: false };
