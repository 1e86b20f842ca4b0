/**
 * Typed readers for the main.cf parameters that table types and the daemon
 * read at open or start-up (lmdb_map_size, proxymapd_sql_timeout, ...): one
 * syntax for numbers (decimal digits, surrounding whitespace allowed) and
 * times (digits with an optional s/m/h/d/w unit), one warning text for a bad
 * value. Where Postfix stops with a fatal error on a bad value, proxymapd
 * warns and uses the default: one bad parameter must not take every table
 * down.
 */

/** Where the values come from: main.cf lookups (already $-expanded) and the warning sink. */
export interface ParamSource {
  param(name: string): string | undefined;
  warn(text: string): void;
}

export interface RangeOptions {
  min?: number;
  max?: number;
  /** how the warning names what is used instead (default: the default value itself) */
  fallback?: string;
}

const UNIT_SECONDS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** A Postfix time value in seconds: digits with an optional s/m/h/d/w unit (default seconds); undefined when malformed. */
export function parseTimeSeconds(text: string): number | undefined {
  const m = /^\s*(\d+)\s*([smhdw]?)\s*$/.exec(text);
  return m ? Number(m[1]) * UNIT_SECONDS[m[2]] : undefined;
}

/** A decimal integer (surrounding whitespace allowed); undefined when malformed or unsafe. */
function parseDecimal(text: string): number | undefined {
  if (!/^\s*\d+\s*$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

function read(src: ParamSource, name: string, dflt: number | undefined, o: RangeOptions, parse: (t: string) => number | undefined, shown: string): number | undefined {
  const v = src.param(name);
  if (v === undefined || v.trim() === '') return dflt;
  const n = parse(v);
  if (n !== undefined && n >= (o.min ?? 0) && n <= (o.max ?? Number.MAX_SAFE_INTEGER)) return n;
  src.warn(`invalid ${name} value "${v}": using ${o.fallback ?? shown}`);
  return dflt;
}

/** An integer parameter in [min, max] (default 0 .. 2^53-1); `dflt` when unset, empty or invalid (invalid: a warning). */
export function intParam(src: ParamSource, name: string, dflt: number, o?: RangeOptions): number;
export function intParam(src: ParamSource, name: string, dflt: undefined, o: RangeOptions & { fallback: string }): number | undefined;
export function intParam(src: ParamSource, name: string, dflt: number | undefined, o: RangeOptions = {}): number | undefined {
  return read(src, name, dflt, o, parseDecimal, String(dflt));
}

/** A time parameter in seconds within [min, max]; `dflt` (seconds) when unset, empty or invalid (invalid: a warning). */
export function timeParam(src: ParamSource, name: string, dflt: number, o: RangeOptions = {}): number {
  return read(src, name, dflt, o, parseTimeSeconds, `${dflt}s`) as number;
}
