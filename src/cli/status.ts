/**
 * proxymapd status | cache purge: ask the running standalone server of a
 * configuration over its control socket (src/server/control.ts). Postfix
 * has no counterpart (postfix status only says whether master(8) runs).
 *
 * status prints one screen: the process, reloads, connections, the open
 * tables and their errors, then every other section the server reports
 * (cache, pools, ...) rendered generically. --json prints the reply as is.
 */
import { controlRequest, controlSocketPath, type ControlReply, type TableStatus } from '../server/control.js';
import { CONFIG_OPTIONS, fatal, loadConfig, parse, UsageError } from './common.js';

const OPTIONS = { ...CONFIG_OPTIONS, json: { type: 'boolean' } } as const;

/** The control socket of the configuration given by -c / -o, or a fatal message. */
function socketOf(values: { c?: string; o?: string[] }): string {
  const config = loadConfig(values);
  const p = controlSocketPath((n) => config.lookup(n), config.get('queue_directory'));
  if (p === undefined) throw new UsageError('proxymapd_control_service_name is empty: this configuration has no control socket');
  return p;
}

async function ask(prog: string, values: { c?: string; o?: string[] }, cmd: string, args: string[]): Promise<ControlReply | number> {
  let sock: string;
  try {
    sock = socketOf(values);
  } catch (e) {
    return fatal(prog, (e as Error).message);
  }
  try {
    return await controlRequest(sock, cmd, args);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') return fatal(prog, `no proxymapd server is running for this configuration (nothing listens on ${sock})`);
    if (code === 'EACCES') return fatal(prog, `${sock}: permission denied (run as root or mail_owner)`);
    return fatal(prog, (e as Error).message);
  }
}

export async function runStatus(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, OPTIONS);
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const reply = await ask('proxymapd status', values, 'status', []);
  if (typeof reply === 'number') return reply;
  if ('error' in reply) return fatal('proxymapd status', reply.error);
  process.stdout.write(values.json ? JSON.stringify(reply.result, null, 2) + '\n' : renderStatus(reply.result as Record<string, unknown>));
  return 0;
}

export async function runCache(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, OPTIONS);
  const [sub, ...rest] = positionals;
  if (sub !== 'purge' || rest.length > 1) throw new UsageError('usage: proxymapd cache purge [-c config_dir] [table]');
  const reply = await ask('proxymapd cache', values, 'cache-purge', rest);
  if (typeof reply === 'number') return reply;
  if ('error' in reply) return fatal('proxymapd cache', reply.error);
  if (values.json) process.stdout.write(JSON.stringify(reply.result) + '\n');
  else {
    const n = (reply.result as { purged?: unknown })?.purged;
    process.stdout.write(typeof n === 'number' ? `purged ${n} cache entr${n === 1 ? 'y' : 'ies'}${rest[0] ? ` of ${rest[0]}` : ''}\n` : render(reply.result, ''));
  }
  return 0;
}

/** "2026-12-06T20:42:50.123Z" as "2026-12-06 20:42:50" (UTC), "-" when absent. */
function when(t: unknown): string {
  return typeof t === 'string' ? t.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-';
}

function duration(seconds: number): string {
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600), m = Math.floor((seconds % 3600) / 60);
  return d > 0 ? `${d}d${h}h${m}m` : h > 0 ? `${h}h${m}m` : `${m}m${seconds % 60}s`;
}

/** The status reply as text. */
export function renderStatus(st: Record<string, unknown>): string {
  const out: string[] = [];
  const p = st.process as { pid: number; mode: string; configDir: string; uptimeSeconds: number; rssBytes: number } | undefined;
  if (p) out.push(`proxymapd pid ${p.pid} (${p.mode}), up ${duration(p.uptimeSeconds)}, config ${p.configDir}, rss ${(p.rssBytes / 1048576).toFixed(1)} MB`);
  const r = st.reload as { reloads: number; failures: number; lastReload?: string; lastFailure?: string; lastError?: string } | undefined;
  if (r) {
    let line = `reloads: ${r.reloads}${r.lastReload ? `, last ${when(r.lastReload)}` : ''}`;
    if (r.failures > 0) line += `; failed: ${r.failures}, last ${when(r.lastFailure)}: ${r.lastError}`;
    out.push(line);
  }
  const c = st.connections as { open: Record<string, number>; accepted: Record<string, number> } | undefined;
  if (c) out.push(`connections: ${Object.keys(c.open).map((s) => `${s} ${c.open[s]} open (${c.accepted[s] ?? 0} accepted)`).join(', ')}`);
  const t = st.tables as { approved: Record<string, number>; open: TableStatus[]; errors: Array<{ table: string; at: string; message: string }> } | undefined;
  if (t) {
    out.push('', `tables: ${t.approved.proxymap} read, ${t.approved.proxywrite} write approved; ${t.open.length} open`);
    if (t.open.length > 0) {
      const rows = [
        ['SERVICE', 'TABLE', 'INST', 'OPENED', 'RELOADS', 'LAST RELOAD', 'STATE'],
        ...t.open.map((o) => [o.service, o.table, String(o.instances), when(o.openedAt), String(o.reloads), when(o.lastReload), o.ok ? 'ok' : 'unavailable']),
      ];
      const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
      for (const row of rows) out.push('  ' + row.map((cell, i) => (i === 2 || i === 4 ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  ').trimEnd());
    }
    if (t.errors.length > 0) {
      out.push('  last errors:');
      for (const e of t.errors) out.push(`    ${e.table} at ${when(e.at)}: ${e.message}`);
    }
  }
  for (const [name, value] of Object.entries(st)) {
    if (['process', 'reload', 'connections', 'tables'].includes(name)) continue;
    out.push('', `${name}:`, render(value, '  ').trimEnd());
  }
  return out.join('\n') + '\n';
}

/** Any JSON value as indented "key: value" lines. */
function render(v: unknown, indent: string): string {
  if (v === null || typeof v !== 'object') return `${indent}${String(v)}\n`;
  if (Array.isArray(v)) {
    if (v.every((x) => x === null || typeof x !== 'object')) return `${indent}${v.join(', ')}\n`;
    return v.map((x) => (x !== null && typeof x === 'object' && !Array.isArray(x) ? `${indent}- ${inline(x as Record<string, unknown>)}\n` : render(x, indent))).join('');
  }
  let s = '';
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (x !== null && typeof x === 'object') s += `${indent}${k}:\n${render(x, indent + '  ')}`;
    else s += `${indent}${k}: ${String(x)}\n`;
  }
  return s;
}

/** A flat object on one line: "k=v k=v"; nested values as JSON. */
function inline(o: Record<string, unknown>): string {
  return Object.entries(o)
    .map(([k, x]) => `${k}=${x !== null && typeof x === 'object' ? JSON.stringify(x) : String(x)}`)
    .join(' ');
}
