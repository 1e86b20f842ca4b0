/**
 * C-locale character classes by char code (ISSPACE, ISALNUM, ISDIGIT), as
 * Postfix's ctype macros see bytes. NaN (the end of a string) is in no class.
 */

/** ISSPACE: SP HT LF VT FF CR. */
export function isSpaceCode(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

/** ISALNUM, ASCII only. */
export function isAlnumCode(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/** ISDIGIT. */
export function isDigitCode(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** Postfix's alldig(): non-empty and all ASCII digits. */
export function allDigits(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (!isDigitCode(s.charCodeAt(i))) return false;
  return true;
}
