/** Readers for the daemon's own main.cf parameters, shared by the types that read one at start. */

/**
 * An integer parameter in 0..max: undefined when unset or empty, and when
 * invalid (with a warning that names `fallback`, what is used instead).
 */
export function readIntParam(
  ctx: { param(name: string): string | undefined; warn(text: string): void },
  name: string,
  max: number,
  fallback: string,
): number | undefined {
  const v = ctx.param(name);
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > max) {
    ctx.warn(`invalid ${name} value "${v}": using ${fallback}`);
    return undefined;
  }
  return n;
}
