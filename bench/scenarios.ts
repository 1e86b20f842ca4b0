/**
 * Benchmark scenarios: deterministic tables and key sets for `npm run bench`.
 *
 *   texthash  N keys `userI@example.com -> userI@mailstoreJ.example.net`, every key found
 *   regexp    R rules (header_checks/access-style POSIX EREs: anchors,
 *             alternation, brackets, some $n substitutions); keys: 90% real-
 *             looking addresses/headers that match nothing (full scan), 10%
 *             made to match one of the last 10% of the rules
 *   pcre      the same rules in PCRE syntax (\d, \s, (?:...), lazy quantifiers)
 *   cidr      R lines (IPv4 and ~10% IPv6 prefixes of varied lengths);
 *             keys: 90% random addresses (mostly in no listed network),
 *             10% inside one of the last 10% of the rules
 *   cdb, lmdb, hash
 *             indexed files built by the real `postmap TYPE:FILE` from N
 *             keys (default 1,000,000) `userI@domainJ.example -> ...`;
 *             keys: a random sample spread over the whole table, 90% present
 *             and 10% absent (so lookups touch pages all over the file)
 *   proxywrite  not a lookup scenario: updates/s through proxywrite into an
 *             lmdb and a btree table (see bench/updates.ts)
 *
 * What a key should answer is not decided here: the benchmark asks the real
 * `postmap -q -` (see postmapOracle() in load.ts), so a generator that
 * happens to make a "miss" key match some rule only shifts the hit ratio.
 */

export type ScenarioName = 'texthash' | 'regexp' | 'pcre' | 'cidr' | 'cdb' | 'lmdb' | 'hash' | 'proxywrite';
export const SCENARIOS: readonly ScenarioName[] = ['texthash', 'regexp', 'pcre', 'cidr', 'cdb', 'lmdb', 'hash', 'proxywrite'];
/** Scenarios whose table is built by postmap from `text` (the file then holds the source). */
export const INDEXED_SCENARIOS: readonly ScenarioName[] = ['cdb', 'lmdb', 'hash'];
export const PATTERN_SCENARIOS: readonly ScenarioName[] = ['regexp', 'pcre', 'cidr'];

export interface ScenarioData {
  name: ScenarioName;
  /** table type (the `TYPE` of `TYPE:FILE`) */
  type: string;
  /** file contents of the table */
  text: string;
  /** what the table is, for the report: "1000 rules regexp" */
  describe: string;
  /** rules / entries in the table */
  entries: number;
  /** the key set the load generator cycles through (no duplicates) */
  keys: string[];
  /** `text` is a postmap source: the table is `postmap TYPE:FILE` of it */
  indexed?: boolean;
}

export interface ScenarioSizes {
  /** texthash: keys (= entries) */
  texthashKeys: number;
  /** regexp, pcre: rules */
  regexpRules: number;
  /** cidr: lines */
  cidrRules: number;
  /** regexp, pcre, cidr: keys in the key set */
  patternKeys: number;
  /** cdb, lmdb, hash: entries in the table */
  indexedEntries?: number;
  /** cdb, lmdb, hash: keys in the key set */
  indexedKeys?: number;
}

/** mulberry32: small, deterministic. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  private readonly r: () => number;
  constructor(seed: number) {
    this.r = prng(seed);
  }
  /** 0 <= n < max */
  int(max: number): number {
    return Math.floor(this.r() * max);
  }
  /** lo <= n <= hi */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  chance(p: number): boolean {
    return this.r() < p;
  }
  word(min: number, max: number, alphabet = 'abcdefghijklmnopqrstuvwxyz'): string {
    let s = '';
    for (let n = this.range(min, max); n > 0; n--) s += alphabet[this.int(alphabet.length)];
    return s;
  }
  hex(n: number): string {
    return this.word(n, n, '0123456789abcdef');
  }
}

export function buildScenario(name: ScenarioName, sizes: ScenarioSizes): ScenarioData {
  switch (name) {
    case 'texthash':
      return texthash(sizes.texthashKeys);
    case 'regexp':
    case 'pcre':
      return patternTable(name, sizes.regexpRules, sizes.patternKeys);
    case 'cidr':
      return cidr(sizes.cidrRules, sizes.patternKeys);
    case 'cdb':
    case 'lmdb':
    case 'hash':
      return indexed(name, sizes.indexedEntries ?? 1_000_000, sizes.indexedKeys ?? 50_000);
    case 'proxywrite':
      throw new Error('proxywrite is an update scenario (bench/updates.ts)');
  }
}

// ---- cdb / lmdb / hash ----------------------------------------------------

function indexed(type: 'cdb' | 'lmdb' | 'hash', n: number, nkeys: number): ScenarioData {
  const g = new Rng(0x5eed_0003);
  const parts: string[] = [];
  const entry = (i: number) => `user${i}@d${i % 997}.example`;
  for (let i = 0; i < n; i++) parts.push(`${entry(i)} user${i}@mailstore${i % 16}.example.net\n`);
  const keys = new Set<string>();
  while (keys.size < Math.min(nkeys, n + Math.ceil(nkeys / 10))) {
    keys.add(g.chance(0.1) ? `nobody${g.int(1 << 30)}@d${g.int(997)}.example` : entry(g.int(n)));
  }
  return { name: type, type, text: parts.join(''), describe: `${n} keys ${type} (built by postmap)`, entries: n, keys: [...keys], indexed: true };
}

// ---- texthash -------------------------------------------------------------

function texthash(n: number): ScenarioData {
  const keys: string[] = [];
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    keys.push(`user${i}@example.com`);
    lines.push(`user${i}@example.com user${i}@mailstore${i % 16}.example.net`);
  }
  return { name: 'texthash', type: 'texthash', text: lines.join('\n') + '\n', describe: `${n} keys texthash`, entries: n, keys };
}

// ---- regexp / pcre --------------------------------------------------------

/**
 * One rule template: the rule text for number `n` in either dialect, and a
 * key that the rule matches. `n` is unique per rule, so a key made for one
 * rule rarely matches another.
 */
interface Template {
  regexp(n: number): string;
  pcre(n: number): string;
  hit(n: number, g: Rng): string;
}

const TLDS = ['com', 'net', 'org', 'de', 'fr', 'io', 'co.uk', 'info'];
const FIRST = ['john', 'mary', 'alice', 'bob', 'info', 'sales', 'support', 'newsletter', 'noreply', 'admin', 'j.smith', 'k.mueller'];
const SUBJECT_WORDS = ['meeting', 'invoice', 'report', 'lunch', 'update', 'quarterly', 'notes', 'review', 'draft', 'agenda'];

const TEMPLATES: Template[] = [
  {
    regexp: (n) => `/^user${n}@(sub\\.)?example${n % 97}[0-9]*\\.com$/ OK`,
    pcre: (n) => `/^user${n}@(?:sub\\.)?example${n % 97}\\d*\\.com$/ OK`,
    hit: (n, g) => `user${n}@${g.chance(0.5) ? 'sub.' : ''}example${n % 97}${g.int(10)}.com`,
  },
  {
    regexp: (n) => `/^(postmaster|abuse|hostmaster|webmaster)@domain${n}\\.(org|net)$/ REJECT role account at domain${n}`,
    pcre: (n) => `/^(?:postmaster|abuse|hostmaster|webmaster)@domain${n}\\.(?:org|net)$/ REJECT role account at domain${n}`,
    hit: (n, g) => `${g.pick(['postmaster', 'abuse', 'hostmaster', 'webmaster'])}@domain${n}.${g.pick(['org', 'net'])}`,
  },
  {
    regexp: (n) => `/^[^@]+@spam${n}\\.(net|info|biz|xyz)$/ REJECT spam source ${n}`,
    pcre: (n) => `/^[^@]+?@spam${n}\\.(?:net|info|biz|xyz)$/ REJECT spam source ${n}`,
    hit: (n, g) => `${g.word(3, 10)}@spam${n}.${g.pick(['net', 'info', 'biz', 'xyz'])}`,
  },
  {
    regexp: (n) => `/^([^@]+)@old${n}\\.example\\.net$/ $1@new${n}.example.net`,
    pcre: (n) => `/^(.+?)@old${n}\\.example\\.net$/ $1@new${n}.example.net`,
    hit: (n, g) => `${g.word(3, 8)}.${g.word(3, 8)}@old${n}.example.net`,
  },
  {
    regexp: (n) => `/^[a-z]+[0-9]{2,4}@host${n}\\.[a-z]{2,3}$/ DISCARD`,
    pcre: (n) => `/^[a-z]+\\d{2,4}@host${n}\\.[a-z]{2,3}$/ DISCARD`,
    hit: (n, g) => `${g.word(3, 8)}${g.range(10, 9999)}@host${n}.${g.pick(['de', 'com', 'net'])}`,
  },
  {
    regexp: (n) => `/^Subject:.*(cheap|free|winner)[[:space:]]*offer[[:space:]]+${n}([^0-9]|$)/ REJECT spam subject ${n}`,
    pcre: (n) => `/^Subject:.*?\\b(?:cheap|free|winner)\\s*offer\\s+${n}\\b/ REJECT spam subject ${n}`,
    hit: (n, g) => `Subject: ${g.pick(['Cheap', 'FREE', 'winner'])} offer ${n} ${g.word(3, 8)}`,
  },
  {
    regexp: (n) => `/^From:.*@(mail|smtp)${n}\\.bulk-sender\\.(com|net)>?$/ HOLD bulk sender ${n}`,
    pcre: (n) => `/^From:.*?@(?:mail|smtp)${n}\\.bulk-sender\\.(?:com|net)>?$/ HOLD bulk sender ${n}`,
    hit: (n, g) => `From: ${g.word(3, 8)} <${g.word(3, 8)}@${g.pick(['mail', 'smtp'])}${n}.bulk-sender.${g.pick(['com', 'net'])}>`,
  },
  {
    regexp: (n) => `/^([0-9]{1,3})\\.([0-9]{1,3})\\.${n}\\.[0-9]+$/ REJECT client $1.$2.${n} blocked`,
    pcre: (n) => `/^(\\d{1,3})\\.(\\d{1,3})\\.${n}\\.\\d+$/ REJECT client $1.$2.${n} blocked`,
    hit: (n, g) => `${g.range(1, 223)}.${g.int(256)}.${n}.${g.int(256)}`,
  },
  {
    regexp: (n) => `/\\.dyn${n}\\.(isp|cable|dsl)\\.example$/ REJECT dynamic address space`,
    pcre: (n) => `/\\.dyn${n}\\.(?:isp|cable|dsl)\\.example$/ REJECT dynamic address space`,
    hit: (n, g) => `${g.word(2, 4)}-${g.int(256)}-${g.int(256)}.dyn${n}.${g.pick(['isp', 'cable', 'dsl'])}.example`,
  },
  {
    regexp: (n) => `/^<?bounce-[0-9a-f]{8}-${n}@lists\\.example\\.org>?$/ OK`,
    pcre: (n) => `/^<?bounce-[[:xdigit:]]{8}-${n}@lists\\.example\\.org>?$/ OK`,
    hit: (n, g) => `bounce-${g.hex(8)}-${n}@lists.example.org`,
  },
];

/** A key that looks like ordinary traffic: an address, a host name, an IP address or a header line. */
function missKey(g: Rng): string {
  switch (g.int(6)) {
    case 0:
    case 1:
      return `${g.pick(FIRST)}${g.chance(0.5) ? g.int(1000) : ''}@${g.pick(['mail', 'smtp', 'mx', 'shop', 'news'])}${g.int(500)}.${g.word(4, 9)}.${g.pick(TLDS)}`;
    case 2:
      return `${g.word(3, 10)}@${g.word(4, 12)}.${g.pick(TLDS)}`;
    case 3:
      return `Subject: ${g.pick(SUBJECT_WORDS)} ${g.pick(SUBJECT_WORDS)} ${g.int(100_000)}`;
    case 4:
      return `From: ${g.word(3, 8)} <${g.word(3, 8)}@${g.word(4, 10)}.${g.pick(TLDS)}>`;
    default:
      return g.chance(0.5)
        ? `${g.range(1, 223)}.${g.int(256)}.${g.int(256)}.${g.int(256)}`
        : `${g.word(2, 4)}${g.int(256)}.${g.word(4, 10)}.${g.pick(TLDS)}`;
  }
}

/** Rule numbers: unique, not consecutive, so that rules look different. */
const ruleNumber = (i: number) => 1000 + ((i * 7919) % 1_000_003);

function patternTable(dialect: 'regexp' | 'pcre', rules: number, nkeys: number): ScenarioData {
  const lines = [`# ${rules} ${dialect} rules generated by bench/scenarios.ts`];
  for (let i = 0; i < rules; i++) {
    const t = TEMPLATES[i % TEMPLATES.length]!;
    lines.push(dialect === 'regexp' ? t.regexp(ruleNumber(i)) : t.pcre(ruleNumber(i)));
  }
  // Same keys for both dialects: one seed.
  const g = new Rng(0x5eed_0001);
  const lateFrom = Math.floor(rules * 0.9);
  const keys = uniqueKeys(nkeys, () => {
    if (g.chance(0.1)) {
      const i = g.range(lateFrom, rules - 1);
      return TEMPLATES[i % TEMPLATES.length]!.hit(ruleNumber(i), g);
    }
    return missKey(g);
  });
  return { name: dialect, type: dialect, text: lines.join('\n') + '\n', describe: `${rules} rules ${dialect}`, entries: rules, keys };
}

function uniqueKeys(n: number, make: () => string): string[] {
  const seen = new Set<string>();
  for (let tries = 0; seen.size < n && tries < n * 20; tries++) seen.add(make());
  return [...seen];
}

// ---- cidr -----------------------------------------------------------------

const v4text = (a: number) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;

/** RFC 5952 text of 8 16-bit words: lower case, longest run (>= 2) of zero words as "::". */
function v6text(w: number[]): string {
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  if (bestAt < 0) return hex(w);
  return `${hex(w.slice(0, bestAt))}::${hex(w.slice(bestAt + bestLen))}`;
}

/** Keep the first `len` bits of 8 words (the rest zero). */
function maskWords(w: number[], len: number): number[] {
  return w.map((x, i) => {
    const bits = Math.max(0, Math.min(16, len - 16 * i));
    return bits === 0 ? 0 : (x & (0xffff << (16 - bits))) & 0xffff;
  });
}

interface CidrNet {
  v6: boolean;
  /** IPv4: the address; IPv6: 8 words */
  addr: number | number[];
  len: number;
}

function randomV4Len(g: Rng): number {
  // Few short prefixes, so that random addresses are mostly in no listed network.
  const r = g.int(10_000);
  if (r < 3000) return 32;
  if (r < 7000) return 24;
  if (r < 8300) return g.range(25, 31);
  if (r < 9845) return g.range(20, 23);
  if (r < 9995) return g.range(16, 19);
  return g.range(12, 15);
}

function randomV6Words(g: Rng): number[] {
  // global unicast 2000::/3, mostly under a few big registries' /12s
  const w = Array.from({ length: 8 }, () => g.int(0x10000));
  w[0] = g.pick([0x2001, 0x2a00, 0x2a01, 0x2a02, 0x2600, 0x2400, 0x2c0f]) | (g.chance(0.3) ? g.int(16) : 0);
  return w;
}

function cidr(rules: number, nkeys: number): ScenarioData {
  const g = new Rng(0x5eed_0002);
  const nets: CidrNet[] = [];
  const lines = [`# ${rules} cidr rules generated by bench/scenarios.ts`];
  const actions = ['REJECT listed in local blocklist', '554 5.7.1 access denied', 'OK', 'DUNNO', 'PREPEND X-Listed: yes', '450 4.7.1 try later'];
  for (let i = 0; i < rules; i++) {
    let net: CidrNet;
    let text: string;
    if (g.chance(0.1)) {
      const len = g.pick([32, 36, 40, 44, 48, 48, 56, 64, 64, 128]);
      const w = maskWords(randomV6Words(g), len);
      net = { v6: true, addr: w, len };
      text = `${v6text(w)}/${len}`;
    } else {
      const len = randomV4Len(g);
      const a = ((g.range(1, 223) << 24) | g.int(1 << 24)) >>> 0;
      const m = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
      const base = (a & m) >>> 0;
      net = { v6: false, addr: base, len };
      text = len === 32 && g.chance(0.5) ? v4text(base) : `${v4text(base)}/${len}`; // bare address = /32
    }
    nets.push(net);
    lines.push(`${text}\t${g.pick(actions)} ${i}`);
  }
  const lateFrom = Math.floor(rules * 0.9);
  const keys = uniqueKeys(nkeys, () => {
    if (g.chance(0.1)) {
      const n = nets[g.range(lateFrom, rules - 1)]!;
      if (n.v6) {
        const w = (n.addr as number[]).map((x, i) => {
          const fixed = Math.max(0, Math.min(16, n.len - 16 * i));
          const keep = fixed === 0 ? 0 : (0xffff << (16 - fixed)) & 0xffff;
          return (x & keep) | (g.int(0x10000) & ~keep & 0xffff);
        });
        return v6text(w);
      }
      const host = n.len === 32 ? 0 : g.int(2 ** (32 - n.len));
      return v4text(((n.addr as number) + host) >>> 0);
    }
    if (g.chance(0.1)) return v6text(randomV6Words(g));
    return v4text(((g.range(1, 223) << 24) | g.int(1 << 24)) >>> 0);
  });
  return { name: 'cidr', type: 'cidr', text: lines.join('\n') + '\n', describe: `${rules} lines cidr`, entries: rules, keys };
}
