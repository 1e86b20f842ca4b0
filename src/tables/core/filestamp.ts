/**
 * Change detection for tables read from a file: the one representation of
 * "this version of the file" (device, inode, size, modification and change
 * times as Node's fs.Stats has them, in milliseconds) and the test whether
 * a path still names it. Postfix's dict_changed_name() compares only the
 * modification time; a replaced or rewritten file is also caught here by
 * its inode, size and change time.
 */
import { statSync, type Stats } from 'node:fs';
import { stat } from 'node:fs/promises';

type StatLike = Pick<Stats, 'dev' | 'ino' | 'size' | 'mtimeMs' | 'ctimeMs'>;

export class FileStamp {
  private constructor(
    readonly dev: number,
    readonly ino: number,
    readonly size: number,
    readonly mtimeMs: number,
    /** undefined: the change time is not compared (a chmod or link count change is no change) */
    readonly ctimeMs: number | undefined,
  ) {}

  /** The stamp of a stat result; withCtime false leaves the change time out of the comparison. */
  static of(st: StatLike, withCtime = true): FileStamp {
    return new FileStamp(st.dev, st.ino, st.size, st.mtimeMs, withCtime ? st.ctimeMs : undefined);
  }

  /** From the addon's stat array [dev, ino, size, mtime s, mtime ns, ctime s, ctime ns]. */
  static fromNative(st: ArrayLike<number>): FileStamp {
    return new FileStamp(st[0], st[1], st[2], st[3] * 1e3 + st[4] / 1e6, st[5] * 1e3 + st[6] / 1e6);
  }

  /** Does `st` describe this version of the file? */
  matches(st: StatLike): boolean {
    return (
      st.ino === this.ino &&
      st.dev === this.dev &&
      st.size === this.size &&
      st.mtimeMs === this.mtimeMs &&
      (this.ctimeMs === undefined || st.ctimeMs === this.ctimeMs)
    );
  }

  /** True when `path` was replaced, modified or removed since this stamp was taken (or cannot be examined). */
  async changedAt(path: string): Promise<boolean> {
    try {
      return !this.matches(await stat(Buffer.from(path, 'latin1')));
    } catch {
      return true;
    }
  }

  /** changedAt() without a thread-pool round trip. */
  changedAtSync(path: string | Buffer): boolean {
    try {
      return !this.matches(statSync(typeof path === 'string' ? Buffer.from(path, 'latin1') : path));
    } catch {
      return true;
    }
  }
}
