/**
 * The start-up warm-up of the regexp and pcre types: one for both, since
 * their parsers share code that must be optimized for every dialect in use
 * at once (see warmUpPatterns).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNative } from '../../addon/index.js';
import { type TableOpenOptions } from '../core/table.js';
import type { PatternKind } from './syntax.js';
import type { PatternDialect } from './rules.js';
import { openPatternTable } from './table.js';
import { pcreDialect } from './pcre.js';
import { regexpDialect } from './regexp.js';

/** A table that has a line of every kind the parser knows (plain, $n, IF/ENDIF, negated, continued, warned about). */
function warmUpText(kind: PatternKind): string {
  const lines: string[] = [];
  for (let i = 0; i < 300; i++) {
    lines.push(
      `/^user${i}@(sub\\.)?example${i}\\.com$/ OK ${i}`,
      `!/^x${i}/i value with $$ and text`,
      `/^([^@]+)@old${i}\\.example$/ $1@new${i}.example`,
      `/^(\\d+)\\.(\\d+)\\.${i}$/ REJECT client $1.$2.${i} blocked`,
      `/^(a)(b)${i}/ \${1}-$(2) $$`,
      `if /^[a-z]+${i}/`,
      `/b${i}/ x`,
      'endif',
      kind === 'regexp' ? `/^c${i}/!/^c${i}d/ two patterns` : `/^c${i}/X obsolete flag`,
      `/^d${i}/`,
      '  continued value',
    );
  }
  return lines.join('\n') + '\n';
}

/**
 * JIT warm-up for long-running processes (the daemon calls this once when
 * idle after startup, like the cidr warm-up): loads the native addon and
 * opens and queries synthetic tables in both dialects, written to a
 * temporary file and opened the way the server opens a table, so that the
 * first real table is opened by optimized code and nothing that code was
 * optimized for changes afterwards. Lookups run on this thread (one per
 * event-loop turn). Never rejects: resolves false when the addon cannot be
 * loaded or the temporary table cannot be written (the first open then
 * reports what fails).
 */
export async function warmUpPatterns(dialects: PatternDialect[]): Promise<boolean> {
  let dir: string | undefined;
  try {
    loadNative();
    const made = mkdtempSync(join(tmpdir(), 'proxymapd-warm-up-'));
    dir = made;
    const files = dialects.map((dialect) => {
      const file = join(made, `table.${dialect.kind}`);
      writeFileSync(file, warmUpText(dialect.kind), { mode: 0o600 });
      return file;
    });
    // Rounds over all dialects (so that the code is optimized for all of them, not first for one and then thrown
    // away for the other), several tables each (optimized as a whole, not only by on-stack replacement), and a pause
    // after each round: V8 compiles optimized code on a background thread and installs it at the next call, and that
    // must happen here, not while the first real table is being opened (the compile would take a CPU from it).
    for (let round = 0; round < 4; round++) {
      for (let d = 0; d < dialects.length; d++) {
        for (let k = 0; k < 2; k++) {
          const opts: TableOpenOptions = { type: dialects[d].kind, name: files[d], openFlags: 0, fold: 'none', writable: false, param: () => undefined, warn: () => {} };
          const t = await openPatternTable(opts, dialects[d]);
          for (let i = 0; i < 25; i++) {
            await new Promise<void>((resolve) => setImmediate(resolve));
            await t.lookup(i % 2 ? `alice@old${i}.example` : `user${i}@example${i}.com`, 0);
          }
          await t.close?.();
        }
      }
      await new Promise<void>((resolve) => setTimeout(resolve, 100));
    }
  } catch {
    // no addon, no writable temporary directory: the first real opens warm up instead (and report what fails)
    return false;
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
  return true;
}


export async function warmUpPatternTypes(approved: ReadonlySet<string>): Promise<void> {
  const dialects = [regexpDialect, pcreDialect].filter((d) => approved.has(d.kind));
  if (dialects.length > 0) await warmUpPatterns(dialects);
}
