/**
 * cdb lookups with positioned reads (native/cdb.c), without fs.readSync's
 * per-call cost. Used by src/tables/indexed/cdb.ts; null without the addon
 * (the JavaScript reads are used then).
 */
import type { Bytes } from '../tables/core/table.js';
import { nativeWith } from './load.js';

export interface NativeCdb {
  /** value, 0 not found, -1 not a valid cdb, -errno */
  cdbFind(fd: number, header: Buffer, fsize: number, dend: number, key: Bytes): string | number;
}

/** The addon's cdb lookup, or null when it cannot be loaded. */
export function loadCdb(): NativeCdb | null {
  return nativeWith<NativeCdb>('cdbFind');
}
