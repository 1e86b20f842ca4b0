/** proxymapd list: the approved tables, as Postfix's export-proxy-* hook prints them. */
import { authorizedTables, formatAuthorized } from '../config/authorize.js';
import { log } from '../log.js';
import { CONFIG_OPTIONS, loadConfig, parse } from './common.js';

export function runList(args: string[]): number {
  const { values } = parse(args, { ...CONFIG_OPTIONS, service: { type: 'string' } });
  const service = (values.service as string | undefined) ?? 'proxymap';
  if (service !== 'proxymap' && service !== 'proxywrite') {
    process.stderr.write(`proxymapd: fatal: invalid service name: ${service}\n`);
    return 1;
  }
  const config = loadConfig(values as { c?: string; o?: string[] });
  const set = authorizedTables(config, service, log.warn);
  process.stdout.write(Buffer.from(formatAuthorized(set), 'latin1'));
  return 0;
}
