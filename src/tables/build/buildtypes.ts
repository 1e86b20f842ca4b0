/**
 * Types shared by the indexed-table builders (postmap's bulk-mode creation,
 * src/global/mkmap_open.c): the source reader in build.ts produces
 * BuildEntry records, a TableBuilder per type writes the file.
 *
 * Kept apart from build.ts so that the builders (cdb.ts, lmdb.ts, db.ts)
 * can import it without an import cycle.
 */
import type { Bytes } from '../core/table.js';

/** One record read from a postmap source file, in source order. */
export interface BuildEntry {
  /** The key as the table stores it: folded per the build options, no NUL terminator. */
  key: Bytes;
  /** The value (base64 of the named files with -F), no NUL terminator. */
  value: Bytes;
  /** Line number of the source line, for diagnostics. */
  lineNo: number;
}

export interface BuildOptions {
  /**
   * DICT_FLAG_* bits as postmap passes them to mkmap_open(): the duplicate
   * policy (DUP_WARN, DUP_IGNORE for -w, DUP_REPLACE for -r), the NUL mode
   * (TRY1NULL for -N, TRY0NULL for -n, neither: the type's default),
   * FOLD_FIX, UTF8_REQUEST, SRC_RHS_IS_FILE, BULK_UPDATE. mkmap_open()
   * always adds DUP_WARN; builders do the same.
   */
  dictFlags: number;
  /** Warning sink; text as Postfix words it, without the "postmap: warning: " prefix. */
  warn(text: string): void;
  /**
   * Status of the source file: as postmap does by default, new files get
   * group/other read permission only where the source has it, and when
   * running as root they are owned by the source file's owner.
   */
  source?: { mode: number; uid: number; gid: number };
}

/**
 * Builds `type:path` from entries (the output file name is the type's:
 * path.cdb, path.lmdb, path.db). Throws BuildError with Postfix's fatal
 * message text; warnings go to opts.warn.
 */
export type TableBuilder = (path: Bytes, entries: Iterable<BuildEntry>, opts: BuildOptions) => void | Promise<void>;

/** A fatal build error; the message is Postfix's text (without "fatal: "). */
export class BuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BuildError';
  }
}
