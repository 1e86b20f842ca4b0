/**
 * Loading the project's native addon (native/addon_init.c and the files it
 * registers, built by node-gyp into build/Release/proxymapd_native.node on
 * `npm install`/`npm ci`).
 *
 * Loaded lazily, on first use (the first regexp/pcre open, say): a missing
 * or broken build makes those opens fail (the table becomes a surrogate)
 * without taking the rest of the server down; the parts with a JavaScript
 * fallback ask through nativeWith().
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeCompilePool } from './compile-pool.js';
import type { NativeExecPool } from './exec-pool.js';
import type { NativePatternEngines } from './pattern-engines.js';
import type { NativeRuleSet } from './ruleset.js';

/** The addon's regexp:/pcre: part: engines, compile jobs, rule sets, evaluation threads. */
export interface NativeEngines extends NativePatternEngines, NativeCompilePool, NativeRuleSet, NativeExecPool {}

/** The package root: the nearest directory above this module with a package.json (src/addon or dist/addon). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return join(dirname(fileURLToPath(import.meta.url)), '..', '..');
    dir = up;
  }
}

/** Where node-gyp puts the addon. */
export const NATIVE_ADDON_PATH = join(packageRoot(), 'build', 'Release', 'proxymapd_native.node');

let cached: NativeEngines | undefined;
let failure: string | undefined;

/**
 * The addon, loaded on first use. Throws an Error naming the path and the
 * cause when it cannot be loaded (not built: run `npm install` / `npm ci`).
 */
export function loadNative(): NativeEngines {
  if (cached) return cached;
  if (failure === undefined) {
    try {
      cached = createRequire(import.meta.url)(NATIVE_ADDON_PATH) as NativeEngines;
      return cached;
    } catch (err) {
      failure = `cannot load native regex engines ${NATIVE_ADDON_PATH}: ${(err as Error).message ?? String(err)}`;
    }
  }
  throw new Error(failure);
}

/**
 * The addon as T when it loads and exports `fn`, else null: for the parts with a JavaScript fallback (socket set,
 * dup, cdb lookups), which must not fail when the addon is missing.
 */
export function nativeWith<T>(fn: string): T | null {
  try {
    const n = loadNative() as unknown as Record<string, unknown>;
    return typeof n[fn] === 'function' ? (n as unknown as T) : null;
  } catch {
    return null;
  }
}
