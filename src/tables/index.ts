/**
 * Registers the built-in table types and re-exports the table API.
 * Import this module once (for its side effect) before calling openTable().
 */
import { DICT_FLAG } from '../protocol/flags.js';
import { openCdb } from './indexed/cdb.js';
import { openCidr } from './pattern/cidr.js';
import { openBtree, openHash } from './indexed/db.js';
import { openLmdb } from './indexed/lmdb.js';
import { openPipemap, openUnionmap } from './composite/composite.js';
import { openEnviron } from './builtin/environ.js';
import { openFail } from './builtin/fail.js';
import { openInline } from './builtin/inline.js';
import { openMysql } from './sql/mysql.js';
import { openPcre } from './pattern/pcre.js';
import { openPgsql } from './sql/pgsql.js';
import { openRandmap } from './composite/randmap.js';
import { openRegexp } from './pattern/regexp.js';
import { registerTableType } from './core/registry.js';
import { openSqlite } from './sql/sqlite.js';
import { openStatic } from './builtin/static.js';
import { openTextHash } from './file/texthash.js';
import { openUnix } from './builtin/unix.js';

const { FIXED, PATTERN } = DICT_FLAG;
registerTableType('texthash', openTextHash, { implFlags: FIXED, writable: false, loadsSource: true });
registerTableType('inline', openInline, { implFlags: FIXED, writable: false, loadsSource: true });
registerTableType('static', openStatic, { implFlags: FIXED, writable: false });
registerTableType('fail', openFail, { implFlags: PATTERN, writable: true });
registerTableType('environ', openEnviron, { implFlags: FIXED, writable: true });
registerTableType('unix', openUnix, { implFlags: FIXED, writable: false });
registerTableType('regexp', openRegexp, { implFlags: PATTERN, writable: false });
registerTableType('pcre', openPcre, { implFlags: PATTERN, writable: false });
registerTableType('cidr', openCidr, { implFlags: PATTERN, writable: false });
registerTableType('randmap', openRandmap, { implFlags: PATTERN, writable: false });
registerTableType('mysql', openMysql, { implFlags: FIXED, writable: false });
registerTableType('pgsql', openPgsql, { implFlags: FIXED, writable: false });
registerTableType('sqlite', openSqlite, { implFlags: FIXED, writable: false });
registerTableType('cdb', openCdb, { implFlags: FIXED, writable: false });
// Indexed files through the system liblmdb / libdb (native/kv.c): read-write for proxywrite.
registerTableType('lmdb', openLmdb, { implFlags: FIXED | DICT_FLAG.MULTI_WRITER, writable: true });
registerTableType('hash', openHash, { implFlags: FIXED, writable: true });
registerTableType('btree', openBtree, { implFlags: FIXED, writable: true });
// FIXED/PATTERN come from the first component (0 here: known only once opened, see Table.implFlags);
// components may fold keys while loading, so composites get one instance per fold mode.
registerTableType('pipemap', openPipemap, { implFlags: 0, writable: false, loadsSource: true });
registerTableType('unionmap', openUnionmap, { implFlags: 0, writable: false, loadsSource: true });

export * from './core/table.js';
export { openTable, registerTableType, splitTableSpec, tableTypeInfo, tableTypes, type TableTypeInfo } from './core/registry.js';
export { foldKey, foldUtf8, isValidUtf8, lowercaseAscii, passesUtf8Check, utf8Active } from './core/casefold.js';
export { readLogicalLines, type LogicalLine } from './core/lines.js';
export { environOpener, type Environment } from './builtin/environ.js';
export { unixOpener, type UnixTableOptions } from './builtin/unix.js';
export { inetNtop, inetPton, inetPton4, inetPton6 } from './pattern/inet.js';
export { CidrMatcher, CidrRules, parseCidrPattern, parseCidrRule, parseCidrText, type CidrRule } from './pattern/cidr.js';
export { splitCompositeName } from './composite/composite.js';
export { parseRandmapName } from './composite/randmap.js';
