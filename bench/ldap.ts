/**
 * LDAP benchmark scenario (`--scenario ldap`), modelled on bench/sql.ts: a
 * throwaway slapd (test/tables/network/slapd.ts) holding N entries
 * `uid=userI,ou=bench,dc=example,dc=com` with mail `userI@example.com` and
 * mailRoutingAddress `userI@mailstoreJ.example.net` (equality index on mail),
 * loaded with slapadd before slapd starts. One .cf file per target that
 * differ only in the bind DN (cn=bench-pmd / cn=bench-pfx), so that the
 * connections each side holds can be counted on slapd's side while it is
 * measured: cn=Connections,cn=Monitor lists every client connection with the
 * DN it is bound as, read over one ldapi:// connection of the bench's own
 * (anonymous, so it counts itself out).
 * Keys: every entry's address, plus 10% addresses that are not in the table.
 */
import fs from 'node:fs';
import path from 'node:path';
import { generatedUsers, startSlapd, SUFFIX, type Slapd } from '../test/tables/network/slapd.js';
import type { BenchTarget, ServerScenario } from './sql.js';

const BINDERS: Record<BenchTarget, string> = { proxymapd: 'bench-pmd', postfix: 'bench-pfx' };
const PASSWORD = 'bench-pw';
const dnOf = (t: BenchTarget) => `cn=${BINDERS[t]},${SUFFIX}`.toLowerCase();

/** Start slapd with the entries, write the .cf files (`copies` per target). */
export async function startLdapScenario(dir: string, entries: number, copies: number): Promise<ServerScenario> {
  const keys: string[] = [];
  for (let i = 0; i < entries; i++) keys.push(`user${i}@example.com`);
  for (let i = 0; i < Math.max(1, Math.floor(entries / 10)); i++) keys.push(`nobody${i}@example.org`);
  const slapd: Slapd = await startSlapd(0, {
    ldif: generatedUsers('bench', entries, 'example.com', (i) => `user${i}@mailstore${i % 17}.example.net`),
    binders: { [BINDERS.proxymapd]: PASSWORD, [BINDERS.postfix]: PASSWORD },
  });
  try {
    const monitor = await slapd.monitor();
    /** every connection number seen bound as each target's DN (by any sample) */
    const seen: Record<BenchTarget, Set<number>> = { proxymapd: new Set(), postfix: new Set() };
    const tables = { proxymapd: [] as string[], postfix: [] as string[] };
    for (const target of ['proxymapd', 'postfix'] as const) {
      for (let i = 0; i < copies; i++) {
        const f = path.join(dir, `${target}-${i}.cf`);
        fs.writeFileSync(
          f,
          `server_host = ${slapd.url}\nsearch_base = ou=bench, ${SUFFIX}\nversion = 3\n` +
            `query_filter = (mail=%s)\nresult_attribute = mailRoutingAddress\n` +
            `bind = yes\nbind_dn = cn=${BINDERS[target]},${SUFFIX}\nbind_pw = ${PASSWORD}\n`,
          { mode: 0o644 },
        );
        // Postfix re-reads a parameter file younger than a second
        fs.utimesSync(f, 1_000_000_000, 1_000_000_000);
        tables[target].push(`ldap:${f}`);
      }
    }
    const connections = async (target: BenchTarget) => {
      const dn = dnOf(target);
      const mine = (await monitor.list()).filter((c) => c.authzDn === dn);
      for (const c of mine) seen[target].add(c.id);
      return mine.length;
    };
    return {
      kind: 'ldap',
      describe: `ldap (OpenLDAP slapd, mdb, on 127.0.0.1), ${entries} entries, (mail=%s) with an equality index, simple bind`,
      keys,
      tables,
      serverPids: () => [slapd.pid],
      connections,
      // what the samples saw: a connection opened and closed between two samples is missed
      async opened(target) {
        await connections(target);
        return seen[target].size;
      },
      stop: async () => {
        monitor.close();
        await slapd.stop();
      },
    };
  } catch (e) {
    await slapd.stop();
    throw e;
  }
}
