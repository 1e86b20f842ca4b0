/**
 * A client network allow-list: addresses and CIDR networks in the notation
 * of Postfix's mynetworks (`127.0.0.0/8`, `[::1]/128`, `192.0.2.1`,
 * `[2001:db8::1]`; the brackets are optional), separated by blanks or commas. Unlike mynetworks it
 * takes no `/file/name` or `type:table` entries, and a malformed entry is
 * skipped with a warning instead of stopping the program. IPv4-mapped IPv6
 * peers (`::ffff:192.0.2.1`, from a dual-stack listener) match the IPv4
 * entries.
 */
import net from 'node:net';

export class AllowList {
  private readonly list = new net.BlockList();
  /** the entries accepted, normalized (for logs and status) */
  readonly entries: string[] = [];

  /** Parse a list; each malformed entry is reported through `warn` and left out. */
  constructor(text: string, warn: (reason: string) => void) {
    for (const token of text.split(/[\s,]+/).filter(Boolean)) {
      const entry = parseEntry(token);
      if (typeof entry === 'string') {
        warn(`ignoring "${token}": ${entry}`);
        continue;
      }
      this.list.addSubnet(entry.address, entry.prefix, entry.family);
      this.entries.push(entry.family === 'ipv6' ? `[${entry.address}]/${entry.prefix}` : `${entry.address}/${entry.prefix}`);
    }
  }

  /** Whether a peer address (as net.Socket.remoteAddress gives it) is allowed; an unknown address is not. */
  allows(address: string | undefined): boolean {
    if (!address) return false;
    const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : null;
    return family !== null && this.list.check(address, family);
  }
}

interface Entry {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

/** One entry, or the reason it is malformed. */
function parseEntry(token: string): Entry | string {
  const slash = token.lastIndexOf('/');
  let addr = slash < 0 ? token : token.slice(0, slash);
  const bracketed = addr.startsWith('[') && addr.endsWith(']');
  if (bracketed) addr = addr.slice(1, -1);
  const family = net.isIPv4(addr) ? 'ipv4' : net.isIPv6(addr) ? 'ipv6' : null;
  if (family === null) return 'not an IP address or network';
  const max = family === 'ipv4' ? 32 : 128;
  if (slash < 0) return { address: addr, prefix: max, family };
  const p = token.slice(slash + 1);
  if (!/^\d{1,3}$/.test(p) || Number(p) > max) return `bad network prefix length "${p}"`;
  return { address: addr, prefix: Number(p), family };
}
