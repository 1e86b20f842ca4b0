/**
 * The table API, with the built-in types registered (src/tables/types.ts).
 * Import this module once (for its side effect) before calling openTable().
 */
import './types.js';

export * from './core/table.js';
export {
  defaultRegistry,
  openTable,
  registerTableType,
  splitAtColon,
  splitTableSpec,
  tableTypeInfo,
  tableTypes,
  TableRegistry,
  type TableType,
  type TableTypeInfo,
  type TypeContext,
} from './core/registry.js';
export { TABLE_TYPES } from './types.js';
export { foldKey, foldUtf8, isValidUtf8, lowercaseAscii, passesUtf8Check, utf8Active } from './core/casefold.js';
export { readLogicalLines, type LogicalLine } from '../util/lines.js';
export { environOpener, type Environment } from './builtin/environ.js';
export { unixOpener, type UnixTableOptions } from './builtin/unix.js';
export { inetNtop, inetPton, inetPton4, inetPton6 } from './pattern/inet.js';
export { CidrRules, parseCidrPattern, parseCidrRule, parseCidrText, type CidrRule } from './pattern/cidr-parse.js';
export { CidrMatcher } from './pattern/cidr-match.js';
export { splitCompositeName } from './composite/composite.js';
export { parseRandmapName } from './composite/randmap.js';
