/** environ:name (src/util/dict_env.c): lookups in an environment; the name is ignored. */
import { DICT_FLAG } from '../../protocol/flags.js';
import type { TableType, TypeContext } from '../core/registry.js';
import { NOT_FOUND, found, type Bytes, type LookupResult, type Table, type TableOpenOptions, type TableOpener, type WriteResult } from '../core/table.js';

/** A mutable environment (like process.env): names and values are ordinary (UTF-16) strings. */
export type Environment = Record<string, string | undefined>;

/** Key bytes as an environment variable name, or undefined when no name can match. */
function envName(key: Bytes): string | undefined {
  if (key === '' || key.includes('=') || key.includes('\0')) return undefined;
  const name = Buffer.from(key, 'latin1').toString('utf8');
  return Buffer.from(name, 'utf8').toString('latin1') === key ? name : undefined;
}

/**
 * An opener whose tables look up keys in `env` (default: the live
 * process.env), which must already be the environment the daemon would
 * have (Postfix daemons keep only import_environment). Writable opens
 * support update, which sets a variable like setenv().
 */
export function environOpener(env: Environment = process.env): TableOpener {
  return (opts: TableOpenOptions): Table => {
    const table: Table = {
      type: 'environ',
      name: opts.name,
      implFlags: DICT_FLAG.FIXED,
      lookup(key: Bytes): LookupResult {
        const name = envName(key);
        const value = name === undefined ? undefined : env[name];
        return value === undefined ? NOT_FOUND : found(Buffer.from(value, 'utf8').toString('latin1'));
      },
    };
    if (opts.writable) {
      table.update = (key: Bytes, value: Bytes): WriteResult => {
        const name = envName(key);
        if (name !== undefined) env[name] = Buffer.from(value, 'latin1').toString('utf8');
        return { status: 0, error: 0 };
      };
    }
    return table;
  };
}

/** Opener for environ:name over process.env. */
export const openEnviron: TableOpener = environOpener();

/**
 * The environment Postfix daemons run with: only the names listed in
 * import_environment, plus the NAME=value settings listed there.
 */
export function importEnvironment(spec: string, env: NodeJS.ProcessEnv = process.env): Environment {
  const out: Environment = {};
  for (const item of spec.split(/[\s,]+/).filter(Boolean)) {
    const eq = item.indexOf('=');
    if (eq > 0) out[item.slice(0, eq)] = item.slice(eq + 1);
    else if (env[item] !== undefined) out[item] = env[item];
  }
  return out;
}

/** environ: tables of a daemon see its import_environment (configure), elsewhere the process environment. */
let daemonOpener: TableOpener = openEnviron;

export const environType: TableType = {
  name: 'environ',
  open: (opts) => daemonOpener(opts),
  implFlags: DICT_FLAG.FIXED,
  writable: true,
  configure(ctx: TypeContext) {
    // (a main.cf always has import_environment, by default Postfix's list; without one, the process environment)
    const spec = ctx.param('import_environment');
    daemonOpener = spec === undefined ? openEnviron : environOpener(importEnvironment(spec, ctx.env));
  },
};
