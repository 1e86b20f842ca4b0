/** A shared pool with a do-nothing driver, and a way to hold its one connection busy with a second lookup waiting. */
import { SqlPool, sharedPool, type PoolDriver } from '../../src/tables/dbcommon/pool.js';

export function testPool(name: string, label: string, hostLabels: string[] = ['a']): { pool: SqlPool<string, object>; release: () => void } {
  const driver: PoolDriver<string, object> = { connect: async () => ({}), close: () => undefined };
  const hosts = hostLabels.map((l) => ({ label: l, kind: 'inet' as const, target: l }));
  return sharedPool(name, () => new SqlPool(hosts, driver, { maxConnections: 1, retryInterval: 60, idleInterval: 60, connectTimeoutMs: 1000, label }));
}

/** Start two lookups on a one-connection pool: the first holds the connection until finish(), the second waits. */
export async function holdPool(pool: SqlPool<string, object>): Promise<{ first: Promise<unknown>; second: Promise<unknown>; finish: () => void }> {
  let finish!: () => void;
  const held = new Promise<void>((r) => (finish = r));
  const uo = { deadline: Date.now() + 10_000, warn: () => undefined };
  const first = pool.use(async () => (await held, { kind: 'ok' as const, value: 1 }), uo);
  const second = pool.use(() => ({ kind: 'ok' as const, value: 2 }), uo);
  await new Promise((r) => setImmediate(r));
  return { first, second, finish };
}
