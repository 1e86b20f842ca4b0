/**
 * Bulk-mode table creation, as `postmap type:file` does it
 * (src/postmap/postmap.c, src/global/mkmap_open.c, Postfix 3.7): a reader
 * for postmap source files that yields the records in source order, and a
 * registry of per-type builders that write the indexed file.
 *
 * The source grammar is texthash's (lines.ts, splitKeyValue in core/source.ts);
 * keys are folded as postmap folds them (UTF-8 casefolding when the UTF-8
 * layer is active, ASCII otherwise, none with -f). Duplicate handling and
 * the NUL-terminator default belong to each table type and are done by the
 * builders.
 */
import { readdirSync, readFileSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { DICT_FLAG } from '../../protocol/flags.js';
import { BuildError, type BuildEntry, type BuildOptions } from './buildtypes.js';
import { foldKey } from '../core/casefold.js';
import { readLogicalLines } from '../../util/lines.js';
import { defaultRegistry, type TableRegistry } from '../core/registry.js';
import { strerror } from '../../util/strerror.js';
import type { Bytes, FoldMode } from '../core/table.js';
import { parseSourceLine, type SourceLineOptions } from '../core/source.js';

export { BuildError, type BuildEntry, type BuildOptions, type TableBuilder } from './buildtypes.js';
export { buildCdb } from '../indexed/cdb.js';

/** postmap's dict flags before option processing (DUP_WARN|FOLD_FIX|UTF8_REQUEST), plus BULK_UPDATE for creation. */
export const POSTMAP_BUILD_FLAGS =
  DICT_FLAG.DUP_WARN | DICT_FLAG.FOLD_FIX | DICT_FLAG.UTF8_REQUEST | DICT_FLAG.BULK_UPDATE;

/** Table types Postfix 3.7 (Debian build) knows without dynamicmaps.cf (dict_open.c, mail_dict.c). */
const POSTFIX_TYPES = [
  'environ', 'internal', 'unix', 'tcp', 'hash', 'btree', 'nis', 'regexp', 'static', 'cidr', 'texthash',
  'socketmap', 'fail', 'pipemap', 'randmap', 'unionmap', 'inline', 'proxy', 'memcache',
];

/** Types listed in $meta_directory/dynamicmaps.cf and dynamicmaps.cf.d/* (first field of each line). */
export function dynamicMapTypes(metaDirectory: string): string[] {
  const files = [join(metaDirectory, 'dynamicmaps.cf')];
  try {
    const dir = join(metaDirectory, 'dynamicmaps.cf.d');
    for (const f of readdirSync(dir).sort()) files.push(join(dir, f));
  } catch {
    // no such directory
  }
  const types: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const fields = line.trim().split(/\s+/);
      if (fields[0] && !fields[0].startsWith('#')) types.push(fields[0]);
    }
  }
  return types;
}

/**
 * Postfix 3.7's fatal error for a type without bulk-mode creation: a type
 * it knows "does not support bulk-mode creation.", anything else suggests
 * a missing package (Debian's dynamicmaps.c). Known are Postfix's built-in
 * types, those in dynamicmaps.cf, and the types proxymapd can open.
 */
export function unsupportedBuildMessage(type: string, metaDirectory = '/etc/postfix', registry: TableRegistry = defaultRegistry): string {
  const known = new Set([...POSTFIX_TYPES, ...registry.names(), ...dynamicMapTypes(metaDirectory)]);
  return known.has(type)
    ? `unsupported dictionary type: ${type} does not support bulk-mode creation.`
    : `unsupported dictionary type: ${type}. Is the postfix-${type} package installed?`;
}

export interface SourceOptions {
  /** postmap's dict flags; FOLD_FIX, UTF8_REQUEST and SRC_RHS_IS_FILE matter here. */
  dictFlags: number;
  /** smtputf8_enable: with UTF8_REQUEST it turns on the UTF-8 layer. */
  smtputf8: boolean;
  /** Warning sink (Postfix's text without prefix). */
  warn(text: string): void;
}

/** Whether the UTF-8 layer is active and how keys are folded, for postmap's flags. */
export function sourceFolding(dictFlags: number, smtputf8: boolean): { utf8: boolean; fold: FoldMode } {
  const utf8 = smtputf8 && (dictFlags & DICT_FLAG.UTF8_REQUEST) !== 0;
  const fold: FoldMode = !(dictFlags & DICT_FLAG.FOLD_FIX) ? 'none' : utf8 ? 'utf8' : 'ascii';
  return { utf8, fold };
}

/**
 * The records of postmap source text, in order, with postmap's warnings
 * (emitted as the records are consumed, so that they interleave with the
 * builder's duplicate warnings as postmap's do). `origin` is the file name
 * as given on the command line.
 */
export function* parsePostmapSource(text: Bytes, origin: Bytes, opts: SourceOptions): Generator<BuildEntry> {
  const { warn, dictFlags } = opts;
  const { utf8, fold } = sourceFolding(dictFlags, opts.smtputf8);
  const lineOpts: SourceLineOptions = { utf8Check: utf8, rhsIsFile: (dictFlags & DICT_FLAG.SRC_RHS_IS_FILE) !== 0, badFormatSuffix: '', warn };
  for (const { text: raw, lineNo } of readLogicalLines(text, origin, warn)) {
    const rec = parseSourceLine(raw, `${origin}, line ${lineNo}`, lineOpts);
    if (rec === null) continue;
    const { key, value } = rec;
    yield { key: foldKey(key, fold), value, lineNo };
  }
}

/**
 * Read a postmap source file. Throws BuildError("open <path>: <error>") as
 * postmap dies; a directory reads as empty (as postmap's reads of it fail).
 */
export function readPostmapSource(path: Bytes): { text: Bytes; st: Stats } {
  const p = Buffer.from(path, 'latin1');
  let st: Stats;
  try {
    st = statSync(p);
  } catch (err) {
    throw new BuildError(`open ${path}: ${strerror(err)}`);
  }
  if (st.isDirectory()) return { text: '', st };
  try {
    return { text: readFileSync(p).toString('latin1'), st };
  } catch (err) {
    throw new BuildError(`open ${path}: ${strerror(err)}`);
  }
}

export interface BuildTableOptions extends SourceOptions {
  /** Where dynamicmaps.cf lives (meta_directory), for the unsupported-type message. */
  metaDirectory?: string;
  /** The types and their builders (default: the built-in ones). */
  registry?: TableRegistry;
}

/**
 * `postmap type:path`: read the source `path` and build the table with the
 * type's builder. Throws BuildError with postmap's fatal text.
 */
export async function buildTable(type: string, path: Bytes, opts: BuildTableOptions): Promise<void> {
  if (type === 'proxy') throw new BuildError("can't create maps via the proxy service");
  const { text, st } = readPostmapSource(path);
  const registry = opts.registry ?? defaultRegistry;
  const builder = registry.builder(type);
  if (!builder) throw new BuildError(unsupportedBuildMessage(type, opts.metaDirectory, registry));
  const dictFlags = opts.dictFlags | DICT_FLAG.BULK_UPDATE;
  const buildOpts: BuildOptions = {
    dictFlags,
    warn: opts.warn,
    source: st.isFile() ? { mode: st.mode, uid: st.uid, gid: st.gid } : undefined,
  };
  await builder(path, parsePostmapSource(text, path, { ...opts, dictFlags }), buildOpts);
}
