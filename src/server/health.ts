/**
 * Health and readiness of a running server, for /healthz and /readyz
 * (Postfix's proxymap has neither).
 *
 * Healthy: the process answers and every listener of this process (the
 * proxymap and proxywrite sockets, or master(8)'s descriptor) still accepts
 * connections.
 *
 * Ready: healthy, every table approved for a service this process serves
 * opens (an instance in service; one not opened yet is opened as a client's
 * first request would open it, and then serves the clients), and every SQL
 * and LDAP pool can reach its backend: a connection in service, or one
 * opened now (SqlPool.probe: each host tried once, with host states of the
 * probe's own, so a failed check never takes a host out of service for a
 * table). Tables of other types with a backend (socketmap, tcp, memcache)
 * are ready once open. A check that has not finished within the time limit
 * counts as not ready, and goes on in the background.
 */
import { logBytes } from '../log.js';
import { livePools, type LivePool } from '../tables/dbcommon/pool.js';
import type { Service } from './handler.js';
import type { ProxyServer } from './server.js';

export interface HealthReport {
  ok: boolean;
  /** what is not healthy or not ready, one line each */
  problems: string[];
}

/** How long /readyz waits for tables to open and pools to connect (ms). */
export const READY_TIMEOUT_MS = 5000;

export function health(server: ProxyServer): HealthReport {
  const states = server.listenerStates();
  const problems = states.filter((l) => !l.listening).map((l) => `${l.service} listener is closed`);
  if (states.length === 0) problems.push('no listener is open');
  return { ok: problems.length === 0, problems };
}

export interface ReadyOptions {
  timeoutMs?: number;
  /** the pools to check (default: every live pool of this process) */
  pools?: () => readonly LivePool[];
}

export async function readiness(server: ProxyServer, o: ReadyOptions = {}): Promise<HealthReport> {
  const h = health(server);
  if (!h.ok) return h;
  const deadline = Date.now() + (o.timeoutMs ?? READY_TIMEOUT_MS);
  const services = [...new Set(server.listenerStates().map((l) => l.service))] as Service[];
  const fold = server.smtputf8 ? 'utf8' : 'ascii';
  const checks = new Map<string, Promise<string | null>>();
  for (const service of services) {
    const writable = service === 'proxywrite';
    for (const spec of server.handler.approvedFor(service)) {
      checks.set(
        `table ${logBytes(spec)}${writable ? ' (proxywrite)' : ''}`,
        server.instances.probe(spec, writable, fold).then((i) => (i.ok ? null : logBytes(i.reason))),
      );
    }
  }
  const problems = await settle(checks, deadline, 'still opening');
  // the pools exist once their tables are open
  const pools = new Map<string, Promise<string | null>>();
  for (const p of (o.pools ?? livePools)()) pools.set(`pool ${p.label}`, p.probe(deadline));
  problems.push(...(await settle(pools, deadline, 'still connecting')));
  return { ok: problems.length === 0, problems };
}

/** The failures among named checks; those still running at the deadline are reported as `pending`. */
async function settle(checks: Map<string, Promise<string | null>>, deadline: number, pending: string): Promise<string[]> {
  const results = new Map<string, string | null>();
  const all = Promise.all(
    [...checks].map(([name, p]) =>
      p.then(
        (r) => void results.set(name, r),
        (e: unknown) => void results.set(name, (e as Error)?.message ?? String(e)),
      ),
    ),
  );
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now()))));
  await Promise.race([all, timeout]);
  clearTimeout(timer);
  const out: string[] = [];
  for (const name of checks.keys()) {
    const r = results.get(name);
    if (r === undefined) out.push(`${name}: ${pending}`);
    else if (r !== null) out.push(`${name}: ${r}`);
  }
  return out;
}
