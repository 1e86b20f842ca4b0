/**
 * main.cf reading with Postfix's syntax (readllines in src/util/readlline.c,
 * dict_load_fp in src/util/dict.c, split_nameval in src/util/split_nameval.c).
 *
 * Text is handled as a byte string (latin1), like the rest of proxymapd.
 * Values are stored raw; $name expansion happens when a parameter is used.
 */
import { readFileSync } from 'node:fs';
import { log } from '../log.js';
import { ConfigError } from './errors.js';
import { strerror } from '../util/strerror.js';
import { splitNameVal } from '../util/nameval.js';
import { readLogicalLines } from '../util/lines.js';

export { ConfigError } from './errors.js';

/** The compiled-in configuration directory of Postfix. */
export const DEFAULT_CONFIG_DIR = '/etc/postfix';

/** Name of the configuration file inside the configuration directory. */
export const MAIN_CONF_FILE = 'main.cf';

export { readLogicalLines, type LogicalLine } from '../util/lines.js';


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
      throw new ConfigError(`${origin}, line ${line.lineNo}: ${nv.error}: "${line.text}"`);
    }
    const old = params.get(nv.name);
    if (old !== undefined && old !== nv.value) {
      warn(`${origin}, line ${line.lineNo}: overriding earlier entry: ${nv.name}=${old}`);
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
