/**
 * proxymapd build: create indexed tables from postmap source files, as
 * `postmap [-fFNnruw] type:file ...` does (same output files, same
 * warnings and fatal errors, prefixed "proxymapd:"; exit 0 on success, 1
 * on a fatal error).
 */
import { parseArgs } from 'node:util';
import { ConfigError } from '../config/errors.js';
import { DICT_FLAG } from '../protocol/flags.js';
import { BuildError, buildTable, POSTMAP_BUILD_FLAGS } from '../tables/build/build.js';
import { splitAtColon } from '../tables/index.js';
import type { Bytes } from '../tables/core/table.js';
import { loadConfig } from './common.js';
import { postfixPrintable } from '../util/printable.js';

const PROG = 'proxymapd';
export const BUILD_USAGE = `${PROG} build [-fFNnruw] [-c config_dir] [-o name=value ...] [type:]file ...`;

export { postfixPrintable };

function emit(level: 'warning' | 'fatal', text: Bytes, utf8: boolean): void {
  process.stderr.write(Buffer.from(`${PROG}: ${level}: ${postfixPrintable(text, utf8)}\n`, 'latin1'));
}

function toBytes(arg: string): Bytes {
  return Buffer.from(arg, 'utf8').toString('latin1');
}

export async function runBuild(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      tokens: true,
      options: {
        c: { type: 'string', short: 'c' },
        o: { type: 'string', short: 'o', multiple: true },
        f: { type: 'boolean', short: 'f', multiple: true },
        F: { type: 'boolean', short: 'F', multiple: true },
        N: { type: 'boolean', short: 'N', multiple: true },
        n: { type: 'boolean', short: 'n', multiple: true },
        r: { type: 'boolean', short: 'r', multiple: true },
        u: { type: 'boolean', short: 'u', multiple: true },
        w: { type: 'boolean', short: 'w', multiple: true },
      },
    });
  } catch (e) {
    // getopt's complaint, then postmap's fatal usage message.
    const { code, message } = e as NodeJS.ErrnoException;
    const opt = /'-{1,2}([^',]*)/.exec(message)?.[1] ?? '';
    const what = code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' ? 'option requires an argument' : 'invalid option';
    process.stderr.write(`${PROG}: ${what} -- '${opt}'\n`);
    emit('fatal', `usage: ${BUILD_USAGE}`, false);
    return 1;
  }
  const { values, positionals, tokens } = parsed;
  if (positionals.length === 0) {
    emit('fatal', `usage: ${BUILD_USAGE}`, false);
    return 1;
  }
  // Options take effect in command-line order, as with postmap's getopt loop.
  let dictFlags = POSTMAP_BUILD_FLAGS;
  const { DUP_WARN, DUP_IGNORE, DUP_REPLACE, TRY0NULL, TRY1NULL, FOLD_FIX, UTF8_REQUEST, SRC_RHS_IS_FILE } = DICT_FLAG;
  for (const t of tokens ?? []) {
    if (t.kind !== 'option') continue;
    switch (t.name) {
      case 'f':
        dictFlags &= ~FOLD_FIX;
        break;
      case 'F':
        dictFlags |= SRC_RHS_IS_FILE;
        break;
      case 'N':
        dictFlags = (dictFlags | TRY1NULL) & ~TRY0NULL;
        break;
      case 'n':
        dictFlags = (dictFlags | TRY0NULL) & ~TRY1NULL;
        break;
      case 'r':
        dictFlags = (dictFlags & ~(DUP_WARN | DUP_IGNORE)) | DUP_REPLACE;
        break;
      case 'u':
        dictFlags &= ~UTF8_REQUEST;
        break;
      case 'w':
        dictFlags = (dictFlags & ~(DUP_WARN | DUP_REPLACE)) | DUP_IGNORE;
        break;
    }
  }

  let smtputf8 = false;
  try {
    const config = loadConfig(values as { c?: string; o?: string[] });
    smtputf8 = config.smtputf8();
    const defaultType = config.get('default_database_type');
    const metaDirectory = config.get('meta_directory');
    const warn = (text: string) => emit('warning', text, smtputf8);
    for (const arg of positionals.map(toBytes)) {
      const { type, name: path } = splitAtColon(arg) ?? { type: defaultType, name: arg };
      await buildTable(type, path, { dictFlags, smtputf8, warn, metaDirectory });
    }
    return 0;
  } catch (e) {
    if (e instanceof BuildError || e instanceof ConfigError) {
      emit('fatal', e.message, smtputf8);
      return 1;
    }
    throw e;
  }
}
