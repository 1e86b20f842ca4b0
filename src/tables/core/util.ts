/** Small helpers shared by the table types. */
import { TableOpenError, type Bytes, type TableOpenOptions } from './table.js';

/** Refuse a writable open the way read-only Postfix types do. */
export function requireReadOnly(opts: TableOpenOptions): void {
  if (opts.writable) throw new TableOpenError(`${opts.type}:${opts.name} map requires O_RDONLY access mode`);
}

/** The bytes before the first NUL: what C code sees of a string. */
export function cString(s: Bytes): Bytes {
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}
