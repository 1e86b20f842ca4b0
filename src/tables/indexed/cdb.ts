/**
 * cdb: D. J. Bernstein's constant database, as Postfix uses it through
 * tinycdb (src/util/dict_cdb.c): a read-only table type and the builder
 * behind `postmap cdb:file` / `proxymapd build cdb:file`.
 *
 * File layout (all integers little-endian uint32): a 2048-byte header of
 * 256 (table position, slot count) pairs; the records (key length, value
 * length, key, value) from offset 2048 in insertion order; then 256 hash
 * tables of (hash, record position) slots, linear probing. A lookup reads
 * the file with positioned reads on an open descriptor; only the header is
 * kept in memory.
 */
import {
  closeSync,
  constants as fsConstants,
  fchmodSync,
  fchownSync,
  fstatSync,
  ftruncateSync,
  openSync,
  readSync,
  renameSync,
  statSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { constants as osConstants } from 'node:os';
import { loadCdb, type NativeCdb } from '../../addon/cdb.js';
import { DICT_FLAG } from '../../protocol/flags.js';
import { BuildError, type BuildEntry, type BuildOptions } from '../build/buildtypes.js';
import { strerror } from '../../util/strerror.js';
import { DICT_ERR, TableOpenError, type Bytes, type LookupResult, type Table, type TableOpenOptions } from '../core/table.js';
import { cString } from '../core/util.js';
import type { TableType } from '../core/registry.js';
import { FileStamp } from '../core/filestamp.js';

const { TRY0NULL, TRY1NULL, FIXED } = DICT_FLAG;
const TRY_BOTH = TRY0NULL | TRY1NULL;

const HEADER_SIZE = 2048;
const EPROTO_TEXT = 'Protocol error';
/** Hash-table slots fetched per read (a table is at most half full, so one read nearly always suffices). */
const SLOTS_PER_READ = 16;
/** Bytes fetched per record read: the record header, the key and the start of the value. */
const RECORD_READ = 512;

/** The cdb hash: h = 5381; h = ((h << 5) + h) ^ byte, modulo 2^32, over a byte string. */
export function cdbHash(s: Bytes): number {
  let h = 5381;
  for (let i = 0; i < s.length; i++) h = (((h << 5) + h) ^ (s.charCodeAt(i) & 0xff)) >>> 0;
  return h;
}

function cdbHashBuf(b: Buffer): number {
  let h = 5381;
  for (let i = 0; i < b.length; i++) h = (((h << 5) + h) ^ b[i]) >>> 0;
  return h;
}

let native: NativeCdb | null | undefined;

/** native/cdb.c: the lookup's reads without fs.readSync's per-call cost; null without the addon. */
function nativeCdb(): NativeCdb | null {
  return native === undefined ? (native = loadCdb()) : native;
}

/**
 * Which implementation lookups use: 'native' (the addon, the default when it
 * loads) or 'js' (fs.readSync, the fallback). For tests that hold the two to
 * the same answers.
 */
export function setCdbEngine(engine: 'native' | 'js'): void {
  native = engine === 'js' ? null : undefined;
}

/** errno numbers to their code names (for strerror()). */
const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

/** A read error with its strerror() text (EPROTO: the file is not a valid cdb). */
class CdbReadError extends Error {}


function toPath(name: Bytes): Buffer {
  return Buffer.from(name, 'latin1');
}

/** Read exactly len bytes at pos, or fewer at end of file. */
function preadFully(fd: number, buf: Buffer, len: number, pos: number): number {
  let got = 0;
  while (got < len) {
    const n = readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/** A read-only cdb table (dict_cdbq_* in src/util/dict_cdb.c). */
export class CdbTable implements Table {
  readonly type = 'cdb';
  /** The file actually read: `<name>.cdb`, the name Postfix uses in messages. */
  readonly path: Bytes;
  private fd: number;
  private readonly header: Buffer;
  /** File size at open (tinycdb maps that much). */
  private readonly fsize: number;
  /** End of the data section: the first hash table's position, clamped to [2048, fsize]. */
  private readonly dend: number;
  /** TRY0NULL/TRY1NULL: which key forms to try; the first hit makes the choice sticky. */
  private tryFlags: number;
  private readonly slotBuf = Buffer.allocUnsafe(SLOTS_PER_READ * 8);
  private recBuf = Buffer.allocUnsafe(RECORD_READ);
  private readonly id: FileStamp;
  /** The value of the last successful find. */
  private value: Bytes = '';

  constructor(
    readonly name: Bytes,
    private readonly warn: (text: string) => void,
    fd: number,
    st: Stats,
    header: Buffer,
    tryFlags: number,
  ) {
    this.path = name + '.cdb';
    this.fd = fd;
    this.header = header;
    this.id = FileStamp.of(st, false);
    this.fsize = st.size % 2 ** 32;
    const first = header.readUInt32LE(0);
    this.dend = first < HEADER_SIZE ? HEADER_SIZE : first >= this.fsize ? this.fsize : first;
    this.tryFlags = tryFlags;
  }

  /** FIXED, plus the NUL modes still in play (as Postfix reports dict->flags). */
  get implFlags(): number {
    return FIXED | this.tryFlags;
  }

  lookup(key: Bytes, _flags = 0): LookupResult {
    if (this.fd < 0) return { found: false, error: DICT_ERR.RETRY };
    const name = cString(key);
    let status = 0;
    try {
      if (this.tryFlags & TRY1NULL) {
        status = this.find(name + '\0');
        if (status > 0) this.tryFlags &= ~TRY0NULL;
      }
      if (status === 0 && this.tryFlags & TRY0NULL) {
        status = this.find(name);
        if (status > 0) this.tryFlags &= ~TRY1NULL;
      }
    } catch (err) {
      // Postfix dies here (msg_fatal); the client sees a temporary failure.
      const text = err instanceof CdbReadError ? err.message : strerror(err);
      this.warn(`error reading ${this.path}: ${text}`);
      return { found: false, error: DICT_ERR.RETRY };
    }
    if (status === 0) return { found: false, error: DICT_ERR.NONE };
    // The value is used as a C string.
    return { found: true, value: cString(this.value) };
  }

  /** tinycdb's cdb_find(): 1 found (this.value set), 0 not found; throws CdbReadError on a bad file. */
  private find(key: Bytes): number {
    const native = nativeCdb();
    if (native) {
      const r = native.cdbFind(this.fd, this.header, this.fsize, this.dend, key);
      if (typeof r === 'string') {
        this.value = r;
        return 1;
      }
      if (r === 0) return 0;
      throw new CdbReadError(r === -1 ? EPROTO_TEXT : strerror(ERRNO_NAMES.get(-r) ?? String(-r)));
    }
    return this.findJs(key);
  }

  /** find() without the addon: the same reads with fs.readSync (and the reference for native/cdb.c). */
  private findJs(key: Bytes): number {
    const klen = key.length;
    const { dend, fsize, header } = this;
    if (klen >= dend) return 0;
    const hval = cdbHash(key);
    const toc = (hval & 255) << 3;
    const n = header.readUInt32LE(toc + 4);
    if (n === 0) return 0;
    const htab = header.readUInt32LE(toc);
    if (n > Math.floor(fsize / 8) || htab < dend || htab > fsize || n * 8 > fsize - htab) {
      throw new CdbReadError(EPROTO_TEXT);
    }
    let slot = (hval >>> 8) % n;
    let todo = n;
    const buf = this.slotBuf;
    while (todo > 0) {
      const cnt = Math.min(todo, n - slot, SLOTS_PER_READ);
      if (preadFully(this.fd, buf, cnt * 8, htab + slot * 8) !== cnt * 8) throw new CdbReadError(EPROTO_TEXT);
      for (let j = 0; j < cnt; j++) {
        const pos = buf.readUInt32LE(j * 8 + 4);
        if (pos === 0) return 0;
        if (buf.readUInt32LE(j * 8) === hval) {
          if (pos > dend - 8) throw new CdbReadError(EPROTO_TEXT);
          if (this.matchRecord(pos, key)) return 1;
        }
      }
      todo -= cnt;
      slot += cnt;
      if (slot >= n) slot = 0;
    }
    return 0;
  }

  /** Compare the record at pos with key; on a match load its value. */
  private matchRecord(pos: number, key: Bytes): boolean {
    const klen = key.length;
    const { dend } = this;
    if (this.recBuf.length < 8 + klen) this.recBuf = Buffer.allocUnsafe(8 + klen + RECORD_READ);
    let buf = this.recBuf;
    // Never read past the data section (nor ask for more than the buffer holds).
    const want = Math.min(buf.length, dend - pos);
    const got = preadFully(this.fd, buf, want, pos);
    if (got < 8) throw new CdbReadError(EPROTO_TEXT);
    if (buf.readUInt32LE(0) !== klen) return false;
    if (dend - klen < pos + 8) throw new CdbReadError(EPROTO_TEXT);
    if (got < 8 + klen) throw new CdbReadError(EPROTO_TEXT);
    for (let i = 0; i < klen; i++) if (buf[8 + i] !== (key.charCodeAt(i) & 0xff)) return false;
    const vlen = buf.readUInt32LE(4);
    const kpos = pos + 8;
    if (dend < vlen || dend - vlen < kpos + klen) throw new CdbReadError(EPROTO_TEXT);
    const start = 8 + klen;
    if (start + vlen <= got) {
      this.value = buf.toString('latin1', start, start + vlen);
    } else {
      buf = Buffer.allocUnsafe(vlen);
      if (preadFully(this.fd, buf, vlen, kpos + klen) !== vlen) throw new CdbReadError(EPROTO_TEXT);
      this.value = buf.toString('latin1');
    }
    return true;
  }

  /** True when `<name>.cdb` was replaced, modified or removed since it was opened. */
  changed(): boolean {
    return this.id.changedAtSync(toPath(this.path));
  }

  close(): void {
    if (this.fd >= 0) {
      const fd = this.fd;
      this.fd = -1;
      try {
        closeSync(fd);
      } catch {
        // nothing to do
      }
    }
  }
}

/** The open-mode error of Postfix 3.7 (dict_cdb_open), for anything but read-only or bulk create. */
export const CDB_OPEN_MODE_ERROR =
  'dict_cdb_open: inappropriate open flags for cdb database - specify O_RDONLY or O_WRONLY|O_CREAT|O_TRUNC';

/** Opener for cdb:name (reads name.cdb). */
export function openCdb(opts: TableOpenOptions): Table {
  if (opts.writable) throw new TableOpenError(CDB_OPEN_MODE_ERROR);
  const { name } = opts;
  const path = name + '.cdb';
  let fd: number;
  try {
    fd = openSync(toPath(path), fsConstants.O_RDONLY);
  } catch (err) {
    throw new TableOpenError(`open database ${path}: ${strerror(err)}`);
  }
  const initError = (text: string) => {
    closeSync(fd);
    return new TableOpenError(`dict_cdbq_open: unable to init ${path}: ${text}`);
  };
  let st: Stats;
  const header = Buffer.alloc(HEADER_SIZE);
  try {
    st = fstatSync(fd);
    // tinycdb mmap()s the file: a directory or other non-mappable file fails with ENODEV.
    if (!st.isFile() && !st.isBlockDevice()) throw initError('No such device');
    if (st.size < HEADER_SIZE) throw initError(EPROTO_TEXT);
    if (preadFully(fd, header, HEADER_SIZE, 0) !== HEADER_SIZE) throw initError(EPROTO_TEXT);
  } catch (err) {
    if (err instanceof TableOpenError) throw err;
    throw initError(strerror(err));
  }
  // Warn if the source file is newer than the indexed file, unless it changed only seconds ago.
  try {
    const src = statSync(toPath(name));
    const srcMtime = Math.floor(src.mtimeMs / 1000);
    if (srcMtime > Math.floor(st.mtimeMs / 1000) && srcMtime < Math.floor(Date.now() / 1000) - 100) {
      opts.warn(`database ${path} is older than source file ${name}`);
    }
  } catch {
    // no source file: nothing to compare
  }
  // Undecided about the NUL terminator: try both forms.
  const tryFlags = opts.openFlags & TRY_BOTH || TRY_BOTH;
  return new CdbTable(name, opts.warn, fd, st, header, tryFlags);
}

// ---------------------------------------------------------------------------
// Building (tinycdb's cdb_make_* with cdb_make_put()'s modes, as dict_cdbm_* uses them)

/** cdb_make_put() modes: ADD keeps every record, REPLACE removes earlier ones, INSERT refuses a duplicate. */
export type CdbPutMode = 'add' | 'replace' | 'insert';

/** A system-level failure while writing, with errno text. */
class CdbWriteError extends Error {}

const U32_MAX = 0xffffffff;

/**
 * Writes a cdb file the way tinycdb does, byte for byte: records are
 * appended through a write buffer; REPLACE removes the earlier record by
 * moving the following data down in the file (leaving the old tail in
 * place past the new end, as tinycdb does); the hash tables are laid out
 * at the end with the records of each bucket in file order.
 */
export class CdbMaker {
  private buf = Buffer.alloc(64 * 1024);
  /** Bytes pending in buf; they belong at file offset dpos - bufLen. */
  private bufLen = HEADER_SIZE; // the header space, zero-filled until finish()
  private dpos = HEADER_SIZE;
  private count = 0;
  private live = 0;
  private hvals = new Uint32Array(1024);
  private rpos = new Uint32Array(1024);
  private rlen = new Uint32Array(1024);
  private alive = new Uint8Array(1024);
  /** hash value -> index (or indexes) of the live records with that hash */
  private readonly byHash = new Map<number, number | number[]>();
  private readonly scratch = Buffer.alloc(8);

  constructor(private readonly fd: number) {}

  private writeAt(data: Buffer, pos: number): void {
    let off = 0;
    while (off < data.length) off += writeSync(this.fd, data, off, data.length - off, pos + off);
  }

  private flush(): void {
    if (this.bufLen === 0) return;
    this.writeAt(this.buf.subarray(0, this.bufLen), this.dpos - this.bufLen);
    this.bufLen = 0;
  }

  /** Append bytes at dpos through the buffer. */
  private append(data: Buffer): void {
    if (this.bufLen + data.length > this.buf.length) {
      this.flush();
      if (data.length > this.buf.length) {
        this.writeAt(data, this.dpos);
        this.dpos += data.length;
        return;
      }
    }
    data.copy(this.buf, this.bufLen);
    this.bufLen += data.length;
    this.dpos += data.length;
  }

  private grow(): void {
    const n = this.hvals.length * 2;
    const g = <T extends Uint32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a as never);
      return b;
    };
    this.hvals = g(this.hvals, (k) => new Uint32Array(k));
    this.rpos = g(this.rpos, (k) => new Uint32Array(k));
    this.rlen = g(this.rlen, (k) => new Uint32Array(k));
    this.alive = g(this.alive, (k) => new Uint8Array(k));
  }

  private readExact(len: number, pos: number): Buffer {
    const b = Buffer.allocUnsafe(len);
    if (preadFully(this.fd, b, len, pos) !== len) throw new CdbWriteError(EPROTO_TEXT);
    return b;
  }

  /** Whether the live record idx has exactly this key (data already flushed). */
  private matches(idx: number, key: Buffer): boolean {
    const pos = this.rpos[idx];
    const head = this.readExact(8, pos);
    if (head.readUInt32LE(0) !== key.length) return false;
    return key.length === 0 || this.readExact(key.length, pos + 8).equals(key);
  }

  /** Remove record idx from the file, moving later data down (tinycdb's remove_record()). */
  private remove(idx: number): void {
    const at = this.rpos[idx];
    const len = this.rlen[idx];
    let todo = this.dpos - at - len;
    this.dpos -= len;
    let pos = at;
    const chunk = Buffer.allocUnsafe(Math.min(todo, 64 * 1024));
    while (todo > 0) {
      const r = Math.min(todo, chunk.length);
      const got = preadFully(this.fd, chunk, r, pos + len);
      if (got !== r) throw new CdbWriteError(EPROTO_TEXT);
      this.writeAt(chunk.subarray(0, r), pos);
      pos += r;
      todo -= r;
    }
    for (let j = idx + 1; j < this.count; j++) if (this.alive[j]) this.rpos[j] -= len;
    this.alive[idx] = 0;
    this.live--;
    this.unindex(this.hvals[idx], idx);
  }

  private unindex(h: number, idx: number): void {
    const cur = this.byHash.get(h);
    if (cur === idx) this.byHash.delete(h);
    else if (Array.isArray(cur)) {
      const rest = cur.filter((i) => i !== idx);
      if (rest.length === 1) this.byHash.set(h, rest[0]);
      else this.byHash.set(h, rest);
    }
  }

  private index(h: number, idx: number): void {
    const cur = this.byHash.get(h);
    if (cur === undefined) this.byHash.set(h, idx);
    else if (Array.isArray(cur)) cur.push(idx);
    else this.byHash.set(h, [cur, idx]);
  }

  /**
   * cdb_make_put(): 0 added, 1 duplicate (INSERT: not added; REPLACE:
   * added after removing the earlier record). Throws CdbWriteError.
   */
  put(key: Buffer, value: Buffer, mode: CdbPutMode): 0 | 1 {
    const hval = cdbHashBuf(key);
    let dup: 0 | 1 = 0;
    if (mode !== 'add') {
      const cur = this.byHash.get(hval);
      if (cur !== undefined) {
        const cands = typeof cur === 'number' ? [cur] : [...cur];
        this.flush();
        // Newest first, as tinycdb walks its record lists.
        for (let c = cands.length - 1; c >= 0; c--) {
          const idx = cands[c];
          if (!this.matches(idx, key)) continue;
          dup = 1;
          if (mode === 'insert') return 1;
          this.remove(idx);
        }
      }
    }
    if (key.length > U32_MAX - (this.dpos + 8) || value.length > U32_MAX - (this.dpos + key.length + 8)) {
      throw new CdbWriteError(strerror('ENOMEM'));
    }
    if (this.count === this.hvals.length) this.grow();
    const idx = this.count++;
    this.hvals[idx] = hval;
    this.rpos[idx] = this.dpos;
    this.rlen[idx] = 8 + key.length + value.length;
    this.alive[idx] = 1;
    this.live++;
    this.index(hval, idx);
    this.scratch.writeUInt32LE(key.length, 0);
    this.scratch.writeUInt32LE(value.length, 4);
    this.append(this.scratch);
    this.append(key);
    this.append(value);
    return dup;
  }

  /** cdb_make_finish(): write the hash tables and the header. Throws CdbWriteError. */
  finish(): void {
    if (Math.floor((U32_MAX - this.dpos) / 8) < this.live) throw new CdbWriteError(strerror('ENOMEM'));
    // Live records grouped by bucket, in file order (a stable counting sort).
    const counts = new Uint32Array(257);
    for (let i = 0; i < this.count; i++) if (this.alive[i]) counts[(this.hvals[i] & 255) + 1]++;
    let largest = 0;
    for (let t = 0; t < 256; t++) largest = Math.max(largest, counts[t + 1]);
    for (let t = 0; t < 256; t++) counts[t + 1] += counts[t];
    const order = new Uint32Array(this.live);
    const fill = counts.slice(0, 256);
    for (let i = 0; i < this.count; i++) if (this.alive[i]) order[fill[this.hvals[i] & 255]++] = i;

    const toc = Buffer.alloc(HEADER_SIZE);
    const table = Buffer.alloc(largest * 2 * 8);
    for (let t = 0; t < 256; t++) {
      const len = (counts[t + 1] - counts[t]) * 2;
      toc.writeUInt32LE(this.dpos, t * 8);
      toc.writeUInt32LE(len, t * 8 + 4);
      if (len === 0) continue;
      const slots = table.subarray(0, len * 8);
      slots.fill(0);
      for (let k = counts[t]; k < counts[t + 1]; k++) {
        const idx = order[k];
        const h = this.hvals[idx];
        let hi = (h >>> 8) % len;
        while (slots.readUInt32LE(hi * 8 + 4) !== 0) if (++hi === len) hi = 0;
        slots.writeUInt32LE(h, hi * 8);
        slots.writeUInt32LE(this.rpos[idx], hi * 8 + 4);
      }
      this.append(slots);
    }
    this.flush();
    this.writeAt(toc, 0);
  }
}

/** How dict_cdbm_update() maps the duplicate flags onto put modes. */
function putMode(dictFlags: number): CdbPutMode {
  if (dictFlags & DICT_FLAG.DUP_IGNORE) return 'add';
  if (dictFlags & DICT_FLAG.DUP_REPLACE) return 'replace';
  return 'insert';
}

/**
 * Build `<path>.cdb` from entries, as `postmap cdb:<path>` does: written to
 * `<path>.cdb.tmp`, then renamed. Keys and values get a NUL terminator with
 * TRY1NULL (-N) only; the default is without. Duplicates follow the put
 * modes (see putMode). The output is byte-identical to postmap's.
 */
export function buildCdb(path: Bytes, entries: Iterable<BuildEntry>, opts: BuildOptions): void {
  const cdbPath = path + '.cdb';
  const tmpPath = path + '.cdb.tmp';
  let flags = opts.dictFlags | DICT_FLAG.DUP_WARN;
  if ((flags & TRY_BOTH) === 0) flags |= TRY0NULL;
  else if ((flags & TRY_BOTH) === TRY_BOTH) flags &= ~TRY0NULL;
  const withNul = (flags & TRY1NULL) !== 0;
  const mode = putMode(flags);

  let fd: number;
  let created = true;
  const { O_RDWR, O_CREAT, O_EXCL } = fsConstants;
  try {
    try {
      fd = openSync(toPath(tmpPath), O_RDWR | O_CREAT | O_EXCL, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      created = false;
      fd = openSync(toPath(tmpPath), O_RDWR | O_CREAT, 0o644);
    }
  } catch (err) {
    throw new BuildError(`open database ${tmpPath}: ${strerror(err)}`);
  }
  try {
    try {
      if (created) {
        // postmap's umask: 022, plus (~source_mode & 077) for a regular source file.
        const { source } = opts;
        fchmodSync(fd, 0o644 & ~(0o022 | (source ? ~source.mode & 0o077 : 0)));
        // As root, postmap runs as the source file's owner.
        if (source && process.geteuid?.() === 0 && (source.uid !== 0 || source.gid !== process.getegid?.())) {
          fchownSync(fd, source.uid, source.gid);
        }
      }
      if (fstatSync(fd).size > 0) ftruncateSync(fd, 0);
    } catch (err) {
      throw new BuildError(`initialize database ${tmpPath}: ${strerror(err)}`);
    }
    const maker = new CdbMaker(fd);
    for (const { key, value } of entries) {
      const k = Buffer.from(withNul ? key + '\0' : key, 'latin1');
      const v = Buffer.from(withNul ? value + '\0' : value, 'latin1');
      let r: number;
      try {
        r = maker.put(k, v, mode);
      } catch (err) {
        throw new BuildError(`error writing ${tmpPath}: ${err instanceof CdbWriteError ? err.message : strerror(err)}`);
      }
      if (r > 0 && mode === 'insert') {
        const text = `${path}: duplicate entry: "${key}"`;
        if (!(flags & DICT_FLAG.DUP_WARN)) throw new BuildError(text);
        opts.warn(text);
      }
    }
    try {
      maker.finish();
    } catch (err) {
      throw new BuildError(`finish database ${tmpPath}: ${err instanceof CdbWriteError ? err.message : strerror(err)}`);
    }
    try {
      renameSync(toPath(tmpPath), toPath(cdbPath));
    } catch (err) {
      throw new BuildError(`rename database from ${tmpPath} to ${cdbPath}: ${strerror(err)}`);
    }
  } finally {
    try {
      closeSync(fd);
    } catch {
      // already reported or irrelevant
    }
  }
}

export const cdbType: TableType = { name: 'cdb', open: openCdb, implFlags: DICT_FLAG.FIXED, writable: false, build: buildCdb };
