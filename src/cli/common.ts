/** Shared CLI helpers: option parsing and configuration loading. */
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { Config } from '../config/params.js';
import { configDirectory } from '../config/maincf.js';

export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;

export function parse<T extends Options>(args: string[], options: T) {
  try {
    return parseArgs<{ args: string[]; options: T; allowPositionals: true; strict: true }>({
      args,
      options,
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export const CONFIG_OPTIONS = {
  c: { type: 'string', short: 'c' },
  o: { type: 'string', short: 'o', multiple: true },
  v: { type: 'boolean', short: 'v', multiple: true },
} as const;

/** Load main.cf from -c DIR, $MAIL_CONFIG or /etc/postfix, with -o overrides. */
export function loadConfig(values: { c?: string; o?: string[] }): Config {
  const dir = configDirectory({ c: values.c !== undefined ? path.resolve(values.c) : undefined }, process.env);
  return Config.load(dir, { overrides: values.o ?? [], processName: 'proxymapd' });
}

export function fatal(prog: string, text: string): number {
  process.stderr.write(`${prog}: fatal: ${text}\n`);
  return 1;
}
