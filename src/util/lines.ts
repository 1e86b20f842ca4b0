/**
 * Logical-line reader with the semantics of Postfix's readllines()
 * (src/util/readlline.c), shared by main.cf, the client tables' parameter
 * files, texthash, postmap sources and the pattern tables.
 */
import { isSpaceCode } from './braces.js';

/** Byte strings (one char per byte), as the table code passes them. */
type Bytes = string;

export interface LogicalLine {
  /** The joined text, without newlines; continuation lines keep their leading whitespace. */
  text: Bytes;
  /** Number of the first physical line that contributed text (1-based). */
  lineNo: number;
}

/** True for a physical line that is empty, all whitespace, or a comment. */
function isIgnorable(line: Bytes): boolean {
  let i = 0;
  let c = line.charCodeAt(0);
  while (c === 32 || (c >= 9 && c <= 13)) c = line.charCodeAt(++i);
  return i === line.length || c === 0x23;
}

/**
 * Split text into logical lines. Comment lines (first non-whitespace byte
 * '#') and blank lines are dropped and do not end a logical line; a line
 * starting with whitespace continues the previous one. A logical line that
 * starts with whitespace is dropped with Postfix's warning, prefixed with
 * origin (the file name).
 */
export function readLogicalLines(text: Bytes, origin: string, warn: (text: string) => void): LogicalLine[] {
  const out: LogicalLine[] = [];
  // The logical line being collected (continuation lines appended), and its first line's number.
  let cur: Bytes | null = null;
  let first = 0;

  const finish = (joined: Bytes) => {
    if (isSpaceCode(joined.charCodeAt(0))) {
      const nul = joined.indexOf('\0');
      const shown = nul >= 0 && nul < 30 ? joined.slice(0, nul) : joined.slice(0, 30);
      warn(`${origin}: logical line must not start with whitespace: "${shown}${joined.length > 30 ? '...' : ''}"`);
    } else {
      out.push({ text: joined, lineNo: first });
    }
  };

  const n = text.length;
  // A trailing newline does not start another (empty) physical line.
  for (let start = 0, index = 0; start < n; index++) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = n;
    const line = text.slice(start, end);
    start = end + 1;
    if (isIgnorable(line)) continue;
    if (cur !== null && !isSpaceCode(line.charCodeAt(0))) {
      finish(cur);
      cur = null;
    }
    if (cur === null) {
      first = index + 1;
      cur = line;
    } else {
      cur += line;
    }
  }
  if (cur !== null) finish(cur);
  return out;
}
