/** Byte helpers for protocol tests. */

/** An attribute stream written with `|` for each NUL byte ("name|value|...||"), as latin1 bytes. */
export const b = (s: string): Buffer => Buffer.from(s.replace(/\|/g, '\0'), 'latin1');
