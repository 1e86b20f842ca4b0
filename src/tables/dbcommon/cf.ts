/**
 * Configuration of the database client tables (mysql, pgsql, sqlite, ldap,
 * memcache): Postfix's cfg_parser (src/global/cfg_parser.c) and the
 * parameter-file reader it uses (dict_load_file_xt/dict_load_fp in
 * src/util/dict.c, readllines, split_nameval).
 *
 * The table name decides where parameters come from:
 *  - a name starting with '/' or '.' is a parameter file of `name = value`
 *    lines, read once at open. Values are literal: no $name expansion, no
 *    quoting, and a '#' after text is part of the value;
 *  - any other name is a prefix: parameter P is main.cf's `NAME_P`, read
 *    (already $-expanded) through TableOpenOptions.param.
 *
 * Postfix's fatal configuration errors are thrown as TableOpenError with
 * Postfix's text (the server turns the table into a surrogate that answers
 * "try again"; postmap would exit with the same text after "fatal: ").
 */
import { closeSync, fstatSync, openSync, readFileSync, type Stats } from 'node:fs';
import { isSpace } from '../../util/braces.js';
import { readLogicalLines } from '../../util/lines.js';
import { strerror } from '../../util/strerror.js';
import { splitNameVal } from '../../util/nameval.js';
import { TableOpenError, type Bytes, type TableOpenOptions } from '../core/table.js';
import { cString } from '../core/util.js';
import { FileStamp } from '../core/filestamp.js';

/** What a parser needs from the table's open options. */
export type CfOpenOptions = Pick<TableOpenOptions, 'param' | 'warn'>;

/** Whether a table name is a parameter file (Postfix: starts with '/' or '.'). */
export function isParameterFile(name: Bytes): boolean {
  return name.startsWith('/') || name.startsWith('.');
}


/**
 * Parse parameter-file text into `into` (dict_load_fp): logical lines as
 * readllines() makes them, each `name = value`; a later duplicate wins,
 * with Postfix's warning when its value differs. `path` names the file in
 * messages. A malformed line throws TableOpenError (Postfix: fatal).
 */
export function parseParameterText(
  text: Bytes,
  path: Bytes,
  warn: (text: string) => void,
  into: Map<Bytes, Bytes> = new Map(),
): Map<Bytes, Bytes> {
  for (const { text: raw, lineNo } of readLogicalLines(text, path, warn)) {
    // The rest of Postfix sees C strings: a NUL ends the line.
    const line = cString(raw);
    const nv = splitNameVal(line);
    if ('error' in nv) throw new TableOpenError(`${path}, line ${lineNo}: ${nv.error}: "${line}"`);
    const old = into.get(nv.name);
    if (old !== undefined && old !== nv.value) warn(`${path}, line ${lineNo}: overriding earlier entry: ${nv.name}=${old}`);
    into.set(nv.name, nv.value);
  }
  return into;
}

/** strtol(s, &end, 10) over the whole string, as Postfix's int getters use it: undefined unless it all parses into a C int. */
export function parseCInt(s: Bytes): number | undefined {
  let i = 0;
  while (i < s.length && isSpace(s[i])) i++;
  let neg = false;
  if (s[i] === '+' || s[i] === '-') neg = s[i++] === '-';
  const digits = i;
  let value = 0;
  while (i < s.length && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= 0x39) {
    value = value * 10 + (s.charCodeAt(i) - 0x30);
    if (value > 2 ** 40) value = 2 ** 40; // far out of int range; keeps the arithmetic exact
    i++;
  }
  if (s.length === 0 || i === digits || i !== s.length) return undefined;
  const v = neg ? -value : value;
  return v > 2147483647 || v < -2147483648 ? undefined : v;
}

/** The file's owner: uid 0 is trusted (dict->owner). */
export interface CfOwner {
  uid: number;
  trusted: boolean;
}

/**
 * One table's parameters, with Postfix's typed getters. Absent
 * parameters take the default; violations throw TableOpenError with the
 * text Postfix's fatal error has.
 */
export class CfParser {
  private constructor(
    /** The table name (parser->name): the file path or the main.cf prefix. */
    readonly name: Bytes,
    private readonly values: ReadonlyMap<Bytes, Bytes> | null,
    private readonly param: ((name: string) => string | undefined) | null,
    /** The parameter file's owner (main.cf form: undefined). */
    readonly owner?: CfOwner,
    /** Identity of the parameter file as read (main.cf form: undefined). */
    readonly fileStamp?: FileStamp,
  ) {}

  /** True for the parameter-file form. */
  get fromFile(): boolean {
    return this.values !== null;
  }

  /**
   * Open a table's configuration (cfg_parser_alloc). A parameter file that
   * cannot be read throws TableOpenError("open NAME: errno text"); a file
   * written within the last second is read again after 0.3 s until it is
   * stable, as Postfix does.
   */
  static async open(name: Bytes, opts: CfOpenOptions): Promise<CfParser> {
    if (!isParameterFile(name)) return CfParser.fromMainCf(name, opts.param);
    const path = Buffer.from(name, 'latin1');
    const values = new Map<Bytes, Bytes>();
    for (;;) {
      const before = Math.floor(Date.now() / 1000);
      // A small file read synchronously on one descriptor (as cfg_parser does): no thread-pool round trips per open.
      let data: Buffer;
      let st: Stats;
      let fd: number;
      try {
        fd = openSync(path, 'r');
      } catch (err) {
        throw new TableOpenError(`open ${name}: ${strerror(err)}`);
      }
      try {
        try {
          data = readFileSync(fd);
        } catch (err) {
          // vstream_fopen() succeeds on a directory; reading it fails.
          throw new TableOpenError(`read ${name}: ${strerror(err)}`);
        }
        try {
          st = fstatSync(fd);
        } catch (err) {
          throw new TableOpenError(`fstat ${name}: ${strerror(err)}`);
        }
      } finally {
        closeSync(fd);
      }
      parseParameterText(data.toString('latin1'), name, opts.warn, values);
      const after = Math.floor(Date.now() / 1000);
      const mtime = Math.floor(st.mtimeMs / 1000);
      if (mtime < before - 1 || mtime > after) {
        return new CfParser(name, values, null, { uid: st.uid, trusted: st.uid === 0 }, FileStamp.of(st));
      }
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  /** Parameters from text, as if read from the file `name` (tests, tools). */
  static fromText(name: Bytes, text: Bytes, warn: (text: string) => void = () => {}): CfParser {
    return new CfParser(name, parseParameterText(text, name, warn), null);
  }

  /** The main.cf form: parameter P is `NAME_P` looked up through `param`. */
  static fromMainCf(name: Bytes, param: (name: string) => string | undefined): CfParser {
    return new CfParser(name, null, param);
  }

  /** Has the parameter file changed since it was read (replaced, rewritten, removed)? Always false for the main.cf form. */
  async changed(): Promise<boolean> {
    return this.fileStamp !== undefined && this.fileStamp.changedAt(this.name);
  }

  /** The parameter names the file sets (main.cf form: undefined, the names cannot be listed). */
  names(): Bytes[] | undefined {
    return this.values !== null ? [...this.values.keys()] : undefined;
  }

  /** The raw value or undefined (main.cf form: `NAME_P`, already $-expanded). */
  lookup(param: string): Bytes | undefined {
    if (this.values !== null) return this.values.get(param);
    try {
      return this.param!(this.mainName(param));
    } catch (err) {
      // A main.cf expansion error is fatal in Postfix too.
      throw new TableOpenError((err as Error).message ?? String(err));
    }
  }

  private mainName(param: string): string {
    return `${this.name}_${param}`;
  }

  /**
   * cfg_get_str(): the value, else `defval`. `min`/`max` limit the length
   * (0 = no limit). With defval null the default is "" and an empty result
   * comes back as null.
   */
  getStr(param: string, defval: Bytes, min?: number, max?: number): Bytes;
  getStr(param: string, defval: null, min?: number, max?: number): Bytes | null;
  getStr(param: string, defval: Bytes | null, min = 0, max = 0): Bytes | null {
    const value = this.lookup(param) ?? defval ?? '';
    const len = value.length;
    const where = this.fromFile ? `${this.name}: ` : '';
    const shown = this.fromFile ? param : this.mainName(param);
    if (min && len < min) throw new TableOpenError(`${where}bad string length ${len} < ${min}: ${shown} = ${value}`);
    if (max && len > max) throw new TableOpenError(`${where}bad string length ${len} > ${max}: ${shown} = ${value}`);
    return defval === null && value === '' ? null : value;
  }

  /**
   * cfg_get_int(): a decimal C int (the whole value must parse), else
   * `defval`; `min`/`max` are checked when non-zero.
   */
  getInt(param: string, defval: number, min = 0, max = 0): number {
    const raw = this.lookup(param);
    const where = this.fromFile ? `${this.name}: ` : '';
    const shown = this.fromFile ? param : this.mainName(param);
    let value = defval;
    if (raw !== undefined) {
      const v = parseCInt(raw);
      if (v === undefined) throw new TableOpenError(`${where}bad numerical configuration: ${shown} = ${raw}`);
      value = v;
    }
    if (min && value < min) throw new TableOpenError(`${where}invalid ${shown} parameter value ${value} < ${min}`);
    if (max && value > max) throw new TableOpenError(`${where}invalid ${shown} parameter value ${value} > ${max}`);
    return value;
  }

  /**
   * cfg_get_bool(): `yes` or `no` (any case), else `defval` (which may be
   * undefined, for "not set").
   */
  getBool(param: string, defval: boolean): boolean;
  getBool(param: string, defval: undefined): boolean | undefined;
  getBool(param: string, defval: boolean | undefined): boolean | undefined {
    const raw = this.lookup(param);
    if (raw === undefined) return defval;
    const lower = raw.toLowerCase();
    if (lower === 'yes') return true;
    if (lower === 'no') return false;
    const where = this.fromFile ? `${this.name}: ` : '';
    const shown = this.fromFile ? param : this.mainName(param);
    throw new TableOpenError(`${where}bad boolean configuration: ${shown} = ${raw}`);
  }
}
