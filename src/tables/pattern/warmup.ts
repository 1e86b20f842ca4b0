/**
 * The start-up warm-up of the regexp and pcre types: one for both, since
 * their parsers share code that must be optimized for every dialect in use
 * at once (see warmUpPatterns).
 */
import { warmUpPatterns } from './pattern.js';
import { pcreDialect } from './pcre.js';
import { regexpDialect } from './regexp.js';

export async function warmUpPatternTypes(approved: ReadonlySet<string>): Promise<void> {
  const dialects = [regexpDialect, pcreDialect].filter((d) => approved.has(d.kind));
  if (dialects.length > 0) await warmUpPatterns(dialects);
}
