/**
 * The built-in table types, in one list: adding a type is its module (which
 * exports a TableType) and one entry here. The order is the order of the
 * start-up warm-ups (cidr after regexp and pcre).
 */
import { environType } from './builtin/environ.js';
import { failType } from './builtin/fail.js';
import { inlineType } from './builtin/inline.js';
import { staticType } from './builtin/static.js';
import { unixType } from './builtin/unix.js';
import { pipemapType, unionmapType } from './composite/composite.js';
import { randmapType } from './composite/randmap.js';
import { defaultRegistry, type TableType } from './core/registry.js';
import { texthashType } from './file/texthash.js';
import { cdbType } from './indexed/cdb.js';
import { btreeType, hashType } from './indexed/db.js';
import { lmdbType } from './indexed/lmdb.js';
import { socketmapType } from './network/socketmap.js';
import { tcpType } from './network/tcp.js';
import { cidrType } from './pattern/cidr.js';
import { pcreType } from './pattern/pcre.js';
import { regexpType } from './pattern/regexp.js';
import { ldapType } from './network/ldap.js';
import { memcacheType } from './network/memcache.js';
import { redisType } from './network/redis.js';
import { mysqlType } from './sql/mysql.js';
import { pgsqlType } from './sql/pgsql.js';
import { sqliteType } from './sql/sqlite.js';

export const TABLE_TYPES: readonly TableType[] = [
  texthashType,
  inlineType,
  staticType,
  failType,
  environType,
  unixType,
  regexpType,
  pcreType,
  cidrType,
  randmapType,
  mysqlType,
  pgsqlType,
  sqliteType,
  socketmapType,
  tcpType,
  ldapType,
  memcacheType,
  redisType,
  cdbType,
  lmdbType,
  hashType,
  btreeType,
  pipemapType,
  unionmapType,
];

for (const t of TABLE_TYPES) defaultRegistry.add(t);

export { defaultRegistry };
