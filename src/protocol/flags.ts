/**
 * Postfix dictionary flags (src/util/dict.h) and proxymap status codes
 * (src/global/dict_proxy.h). Values are facts of the wire protocol.
 */
export const DICT_FLAG = {
  DUP_WARN: 0x1,
  DUP_IGNORE: 0x2,
  TRY0NULL: 0x4,
  TRY1NULL: 0x8,
  FIXED: 0x10,
  PATTERN: 0x20,
  LOCK: 0x40,
  DUP_REPLACE: 0x80,
  SYNC_UPDATE: 0x100,
  DEBUG: 0x200,
  NO_REGSUB: 0x800,
  NO_PROXY: 0x1000,
  NO_UNAUTH: 0x2000,
  FOLD_FIX: 0x4000,
  FOLD_MUL: 0x8000,
  OPEN_LOCK: 0x10000,
  BULK_UPDATE: 0x20000,
  MULTI_WRITER: 0x40000,
  UTF8_REQUEST: 0x80000,
  UTF8_ACTIVE: 0x100000,
  SRC_RHS_IS_FILE: 0x200000,
  SURROGATE: 0x400000,
} as const;

export const FOLD_ANY = DICT_FLAG.FOLD_FIX | DICT_FLAG.FOLD_MUL;
export const PARANOID = DICT_FLAG.NO_REGSUB | DICT_FLAG.NO_PROXY | DICT_FLAG.NO_UNAUTH;
/** Legacy (<= 3.10) flag classes. */
export const LEGACY_IMPL_MASK = 0x40030;
export const LEGACY_RQST_MASK = 0x8f9c3;
export const LEGACY_INST_MASK = ~(LEGACY_IMPL_MASK | LEGACY_RQST_MASK) >>> 0; // 0xFFF3060C

/** Names as Postfix logs them (dict_mask[] in src/util/dict.c). */
export const FLAG_NAMES: ReadonlyArray<[number, string]> = [
  [0x1, 'warn_dup'], [0x2, 'ignore_dup'], [0x4, 'try0null'], [0x8, 'try1null'],
  [0x10, 'fixed'], [0x20, 'pattern'], [0x40, 'lock'], [0x80, 'replace'],
  [0x100, 'sync_update'], [0x200, 'debug'], [0x800, 'no_regsub'], [0x1000, 'no_proxy'],
  [0x2000, 'no_unauth'], [0x4000, 'fold_fix'], [0x8000, 'fold_mul'], [0x10000, 'open_lock'],
  [0x20000, 'bulk_update'], [0x40000, 'multi_writer'], [0x80000, 'utf8_request'],
  [0x100000, 'utf8_active'], [0x200000, 'src_rhs_is_file'], [0x400000, 'surrogate'],
];

export function flagNames(flags: number): string {
  const out: string[] = [];
  for (const [bit, name] of FLAG_NAMES) if (flags & bit) out.push(name);
  return out.join('|');
}

export const PROXY_STAT = {
  OK: 0,
  NOKEY: 1,
  RETRY: 2,
  BAD: 3,
  DENY: 4,
  CONFIG: 5,
} as const;
export type ProxyStatus = (typeof PROXY_STAT)[keyof typeof PROXY_STAT];

/** Sequence functions (DICT_SEQ_FUN_*). */
export const SEQ_FIRST = 0;
export const SEQ_NEXT = 1;
