/**
 * proxymapd query: look keys up through a proxymap server, with postmap -q's
 * output and exit status (0 found, 1 not found; `-` reads keys from stdin).
 */
import { ProxyConnection } from '../client/client.js';
import { POSTMAP_QUERY_FLAGS, ProxyTable } from '../client/table.js';
import { DICT_FLAG, PROXY_STAT } from '../protocol/flags.js';
import type { Dialect } from '../protocol/messages.js';
import { socketPaths } from '../server/daemon.js';
import { bytesToUtf8 } from '../tables/core/table.js';
import { CONFIG_OPTIONS, loadConfig, parse } from './common.js';

const PROG = 'proxymapd';

function out(s: string): void {
  process.stdout.write(Buffer.from(s, 'latin1'));
}
function warn(s: string): void {
  process.stderr.write(`${PROG}: warning: ${bytesToUtf8(s)}\n`);
}
class Fatal extends Error {}

async function readStdinLines(): Promise<string[]> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('latin1');
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

export async function runQuery(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    ...CONFIG_OPTIONS,
    f: { type: 'boolean', short: 'f' },
    u: { type: 'boolean', short: 'u' },
    dialect: { type: 'string' },
  });
  if (positionals.length < 2) {
    process.stderr.write(`usage: ${PROG} query [-c config_dir] [-f] [-u] key|- table ...\n`);
    return 2;
  }
  const dialect = (values.dialect ?? 'legacy') as Dialect;
  if (dialect !== 'legacy' && dialect !== 'new') {
    process.stderr.write(`${PROG}: fatal: unknown dialect ${dialect}\n`);
    return 2;
  }
  const config = loadConfig(values as { c?: string; o?: string[] });
  let openFlags = POSTMAP_QUERY_FLAGS;
  if (values.f) openFlags &= ~DICT_FLAG.FOLD_FIX;
  if (values.u) openFlags &= ~DICT_FLAG.UTF8_REQUEST;
  const [keyArg, ...tableArgs] = positionals.map((p) => Buffer.from(p, 'utf8').toString('latin1'));
  const conn = await ProxyConnection.connect(socketPaths(config).proxymap, { timeoutMs: 3600_000 });
  const tables = tableArgs.map((t) => {
    let name = t;
    while (name.startsWith('proxy:')) name = name.slice(6);
    return { label: t.startsWith('proxy:') ? t : `proxy:${t}`, table: new ProxyTable(conn, name, { dialect, openFlags, smtputf8: config.smtputf8() }) };
  });

  /** First table that has the key, postmap style; undefined when none does. */
  const lookupAll = async (key: string): Promise<string | undefined> => {
    for (const { label, table } of tables) {
      const r = await table.lookup(key);
      if (r.status === 'found') {
        if (r.value === '') {
          warn(`table ${label}: key ${key}: empty string result is not allowed`);
          warn(`table ${label} should return NO RESULT in case of NOT FOUND`);
        }
        return r.value;
      }
      if (r.status === 'error') {
        if (r.code === PROXY_STAT.DENY) throw new Fatal(`proxymap service is not configured for table "${bytesToUtf8(table.name)}"`);
        if (r.code === PROXY_STAT.BAD) throw new Fatal(`proxymap lookup failed for table "${bytesToUtf8(table.name)}" key "${bytesToUtf8(key)}": invalid request`);
        throw new Fatal(`table ${bytesToUtf8(label)}: query error`);
      }
    }
    return undefined;
  };

  try {
    if (keyArg === '-') {
      let any = false;
      for (const key of await readStdinLines()) {
        const v = await lookupAll(key);
        if (v !== undefined) {
          out(`${key}\t${v}\n`);
          any = true;
        }
      }
      return any ? 0 : 1;
    }
    const v = await lookupAll(keyArg);
    if (v === undefined) return 1;
    out(v + '\n');
    return 0;
  } catch (e) {
    if (e instanceof Fatal) {
      process.stderr.write(`${PROG}: fatal: ${e.message}\n`);
      return 1;
    }
    throw e;
  } finally {
    conn.close();
  }
}
