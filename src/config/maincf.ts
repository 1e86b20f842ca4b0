/**
 * main.cf reading with Postfix's syntax (readllines in src/util/readlline.c,
 * dict_load_fp in src/util/dict.c, split_nameval in src/util/split_nameval.c).
 *
 * Text is handled as a byte string (latin1), like the rest of proxymapd.
 * Values are stored raw; $name expansion happens when a parameter is used.
 */
import { readFileSync } from 'node:fs';
import { isSpace } from '../util/braces.js';
import { log } from '../log.js';
import { ConfigError, strerror } from './errors.js';

export { ConfigError } from './errors.js';

/** The compiled-in configuration directory of Postfix. */
export const DEFAULT_CONFIG_DIR = '/etc/postfix';

/** Name of the configuration file inside the configuration directory. */
export const MAIN_CONF_FILE = 'main.cf';

export interface LogicalLine {
  /** the logical line: first physical line plus continuation lines, without newlines */
  text: string;
  /** 1-based number of the physical line where the logical line starts */
  lineno: number;
}

/**
 * Split text into logical lines. A logical line is a physical line that does
 * not start with whitespace, followed by the physical lines that do; those
 * are appended verbatim (leading whitespace included, newline removed).
 * Lines whose first non-blank character is '#' and all-blank lines are
 * dropped, also between continuation lines. A logical line that would start
 * with whitespace (text before any other text) is reported and skipped.
 */
export function readLogicalLines(
  text: string,
  origin: string,
  warn: (msg: string) => void,
): LogicalLine[] {
  const out: LogicalLine[] = [];
  const n = text.length;
  let pos = 0;
  let lineno = 0;

  for (;;) {
    let buf = '';
    let first = 0;
    for (;;) {
      // One physical line, possibly not newline-terminated.
      const start = buf.length;
      const nl = text.indexOf('\n', pos);
      const end = nl < 0 ? n : nl;
      buf += text.slice(pos, end);
      const sawNewline = nl >= 0;
      pos = sawNewline ? nl + 1 : n;
      if (sawNewline || buf.length > start) lineno++;
      // Drop comment, all-blank and empty lines.
      let cp = start;
      while (cp < buf.length && isSpace(buf[cp])) cp++;
      if (cp === buf.length || buf[cp] === '#') buf = buf.slice(0, start);
      else if (start === 0) first = lineno;
      if (!sawNewline) break;
      // Stop before the next logical line: a line that starts with neither
      // whitespace nor '#'.
      if (buf.length > 0) {
        const next = pos < n ? text[pos] : undefined;
        if (next !== '#' && !isSpace(next)) break;
      }
    }
    if (buf.length === 0) {
      if (pos >= n) return out;
      continue;
    }
    if (isSpace(buf[0])) {
      warn(
        `${origin}: logical line must not start with whitespace: ` +
          `"${buf.slice(0, 30)}${buf.length > 30 ? '...' : ''}"`,
      );
      continue;
    }
    out.push({ text: buf, lineno: first });
  }
}

export type NameVal = { name: string; value: string } | { error: string };

/**
 * Split "name = value" (split_nameval): the name runs to the first blank or
 * '='; blanks around '=' and trailing blanks of the value are removed.
 */
export function splitNameVal(buf: string): NameVal {
  const n = buf.length;
  let np = 0;
  while (np < n && isSpace(buf[np])) np++;
  if (np >= n || buf[np] === '=') return { error: 'missing attribute name' };
  let ep = np;
  while (ep < n && !isSpace(buf[ep]) && buf[ep] !== '=') ep++;
  let cp = ep;
  while (cp < n && isSpace(buf[cp])) cp++;
  if (buf[cp] !== '=') return { error: "missing '=' after attribute name" };
  let vp = cp + 1;
  while (vp < n && isSpace(buf[vp])) vp++;
  let ve = n;
  while (ve > vp && isSpace(buf[ve - 1])) ve--;
  return { name: buf.slice(np, ep), value: buf.slice(vp, ve) };
}

/**
 * Parse main.cf text into raw name/value pairs. `origin` names the file in
 * messages. A line without '=' throws ConfigError; a repeated name keeps the
 * last value and warns when the value changes.
 */
export function parseMainCf(
  text: string,
  origin: string,
  warn: (msg: string) => void,
): Map<string, string> {
  const params = new Map<string, string>();
  for (const line of readLogicalLines(text, origin, warn)) {
    const nv = splitNameVal(line.text);
    if ('error' in nv) {
      throw new ConfigError(`${origin}, line ${line.lineno}: ${nv.error}: "${line.text}"`);
    }
    const old = params.get(nv.name);
    if (old !== undefined && old !== nv.value) {
      warn(`${origin}, line ${line.lineno}: overriding earlier entry: ${nv.name}=${old}`);
    }
    params.set(nv.name, nv.value);
  }
  return params;
}

/** Path of main.cf in a configuration directory (Postfix simply joins with '/'). */
export function mainCfPath(configDir: string): string {
  return `${configDir}/${MAIN_CONF_FILE}`;
}

/** Read and parse DIR/main.cf. A missing or unreadable file throws ConfigError. */
export function readMainCf(
  configDir: string,
  warn: (msg: string) => void = log.warn,
): Map<string, string> {
  const path = mainCfPath(configDir);
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch (err) {
    const verb = (err as NodeJS.ErrnoException).code === 'EISDIR' ? 'read' : 'open';
    throw new ConfigError(`${verb} ${path}: ${strerror(err)}`, { cause: err });
  }
  return parseMainCf(text, path, warn);
}

/**
 * The configuration directory: the -c option, else $MAIL_CONFIG, else
 * /etc/postfix. (Postfix commands turn -c into MAIL_CONFIG, so -c wins.)
 */
export function configDirectory(
  opts: { c?: string },
  env: NodeJS.ProcessEnv = process.env,
): string {
  if (opts.c !== undefined) return opts.c;
  const fromEnv = env.MAIL_CONFIG;
  return fromEnv !== undefined ? fromEnv : DEFAULT_CONFIG_DIR;
}
