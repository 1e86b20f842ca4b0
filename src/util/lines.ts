/**
 * Logical-line reader with the semantics of Postfix's readllines()
 * (src/util/readlline.c), shared by main.cf, the client tables' parameter
 * files, texthash, postmap sources and the pattern tables.
 */
import { isSpaceCode } from './ctype.js';

/** Byte strings (one char per byte), as the table code passes them. */
type Bytes = string;

export interface LogicalLine {
  /** The joined text, without newlines; continuation lines keep their leading whitespace. */
  text: Bytes;
  /** Number of the first physical line that contributed text (1-based). */
  lineNo: number;
}

/**
 * Split text into logical lines (scanLogicalLines() collected): comment
 * lines (first non-whitespace byte '#') and blank lines are dropped and do
 * not end a logical line; a line starting with whitespace continues the
 * previous one. A logical line that starts with whitespace is dropped with
 * Postfix's warning, prefixed with origin (the file name).
 */
export function readLogicalLines(text: Bytes, origin: string, warn: (text: string) => void): LogicalLine[] {
  const out: LogicalLine[] = [];
  scanLogicalLines(text, origin, warn, {
    line(s: Bytes, b: number, e: number, lineNo: number): void {
      out.push({ text: b === 0 && e === s.length ? s : s.slice(b, e), lineNo });
    },
  });
  return out;
}

/** Receives logical lines s[b, e) (a method, so that call sites see one stable target). */
export interface LineSink {
  line(s: Bytes, b: number, e: number, lineNo: number): void;
}

/** Hand a finished logical line to the sink, or warn about one that starts with whitespace. */
function emitLine(s: Bytes, b: number, e: number, lineNo: number, origin: string, warn: (text: string) => void, sink: LineSink): void {
  if (isSpaceCode(s.charCodeAt(b))) {
    const line = s.slice(b, e);
    const nul = line.indexOf('\0');
    const shown = nul >= 0 && nul < 30 ? line.slice(0, nul) : line.slice(0, 30);
    warn(`${origin}: logical line must not start with whitespace: "${shown}${line.length > 30 ? '...' : ''}"`);
  } else {
    sink.line(s, b, e, lineNo);
  }
}

/**
 * readllines() over a whole text: hands each logical line to the sink as s[b, e), where s is
 * the text itself for a one-line logical line (no copy) or the joined lines.
 */
export function scanLogicalLines(text: Bytes, origin: string, warn: (text: string) => void, sink: LineSink): void {
  const n = text.length;
  let pos = 0;
  let lineNo = 0;
  // The logical line being collected: text[lb, le) alone, or joined in acc.
  let have = false;
  let lb = 0;
  let le = 0;
  let acc: string | undefined;
  let first = 0;
  while (pos < n) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = n;
    lineNo++;
    let i = pos;
    while (i < nl && isSpaceCode(text.charCodeAt(i))) i++;
    // Blank and comment lines neither add text nor end a logical line.
    if (i < nl && text.charCodeAt(i) !== 0x23 /* # */) {
      if (have && i === pos) {
        if (acc === undefined) emitLine(text, lb, le, first, origin, warn, sink);
        else emitLine(acc, 0, acc.length, first, origin, warn, sink);
        have = false;
        acc = undefined;
      }
      if (!have) {
        have = true;
        first = lineNo;
        lb = pos;
        le = nl;
      } else {
        acc = (acc ?? text.slice(lb, le)) + text.slice(pos, nl);
      }
    }
    pos = nl + 1;
  }
  if (have) {
    if (acc === undefined) emitLine(text, lb, le, first, origin, warn, sink);
    else emitLine(acc, 0, acc.length, first, origin, warn, sink);
  }
}

