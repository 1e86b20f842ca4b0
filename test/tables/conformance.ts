/**
 * Shared, table-driven conformance suite for table types: per-case
 * expectations (open errors, warnings, lookups, sequence) plus invariants
 * every Table must satisfy.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { DICT_FLAG } from '../../src/protocol/flags.js';
import {
  DICT_ERR,
  TableOpenError,
  openTable,
  type Bytes,
  type DictErr,
  type FoldMode,
  type LookupResult,
  type Table,
  type TableOpenOptions,
  type TableOpener,
} from '../../src/tables/index.js';
import { utf8Active } from '../../src/tables/core/casefold.js';
import { utf8LayerLookup } from '../../src/tables/core/utf8layer.js';

/** Expected lookup outcome: a value, not found, or an error code. */
export type Expect = { value: Bytes } | 'notfound' | { error: DictErr };

export interface LookupCheck {
  key: Bytes;
  expect: Expect;
  /** Request flags passed to lookup (default 0). */
  flags?: number;
}

/** A write and the status it must give (0 done, 1 not done: duplicate or not found, -1 error). */
export type WriteCheck =
  | { op: 'update'; key: Bytes; value: Bytes; flags?: number; expect: 0 | 1 | -1 }
  | { op: 'delete'; key: Bytes; flags?: number; expect: 0 | 1 | -1 };

export interface ConformanceCase {
  title: string;
  /** Table name (after "type:"). With `file`, "{path}" in it stands for the file's path (without `suffix`). */
  name?: Bytes;
  /** File contents written to a temporary file (made when the test runs, if a function); the name defaults to its path. */
  file?: Bytes | (() => Bytes);
  /** The file is written to "{path}{suffix}" (an indexed table's name leaves out its suffix). */
  suffix?: string;
  /** Writes done after the lookups, in order, on a table opened writable; then `afterWrites` are looked up. */
  writes?: WriteCheck[];
  afterWrites?: LookupCheck[];
  fold?: FoldMode;
  openFlags?: number;
  writable?: boolean;
  /** The open must fail with exactly this TableOpenError message. */
  openError?: string;
  /** Exact open-time warnings, in order. */
  warnings?: string[];
  lookups?: LookupCheck[];
  /** Entries in sequence order, 'unsupported' (no sequence method), or the error sequence returns. */
  sequence?: Array<[Bytes, Bytes]> | 'unsupported' | { error: DictErr };
  implFlags?: number;
}

export interface ConformanceOptions {
  /** Open with this opener instead of the registry. */
  opener?: TableOpener;
  /** Runs of the random-key property per case (default 100). */
  randomKeys?: number;
}

const BYTES = /^[\x00-\xff]*$/;
const ERRORS: readonly number[] = [DICT_ERR.NONE, DICT_ERR.RETRY, DICT_ERR.CONFIG];

/** Options as the server would pass them; `warn` collects into `warnings`. */
export function openOptions(
  type: string,
  name: Bytes,
  over: Partial<TableOpenOptions> = {},
  warnings: string[] = [],
): TableOpenOptions {
  return {
    type,
    name,
    openFlags: 0,
    fold: 'utf8',
    writable: false,
    param: () => undefined,
    warn: (t) => warnings.push(t),
    ...over,
  };
}

/**
 * A lookup the way the dictionary layer above a table does it: FIXED tables
 * get keys folded per the fold mode; with the UTF-8 layer active a
 * non-UTF-8 key is not found and a non-UTF-8 value is a CONFIG error.
 */
export async function dictLookup(table: Table, key: Bytes, opts: TableOpenOptions, flags = 0): Promise<LookupResult> {
  return utf8LayerLookup(table, `${opts.type}:${opts.name}`, key, opts.fold, utf8Active(opts.fold, opts.openFlags), flags, () => {});
}

/** Describe a lookup result in Expect terms. */
export function outcome(res: LookupResult): Expect {
  if (res.found) return { value: res.value };
  return res.error === DICT_ERR.NONE ? 'notfound' : { error: res.error };
}

/** All entries by sequence (first, then next until not found); throws on a runaway sequence. */
export async function sequenceAll(table: Table, limit = 1_000_000): Promise<Array<[Bytes, Bytes]> | { error: DictErr }> {
  const out: Array<[Bytes, Bytes]> = [];
  if (!table.sequence) throw new Error('no sequence');
  for (let fn: 0 | 1 = 0; out.length <= limit; fn = 1) {
    const r = await table.sequence(fn, 0);
    if (!r.found) return r.error === DICT_ERR.NONE ? out : { error: r.error };
    assert.match(r.key, BYTES);
    assert.match(r.value, BYTES);
    out.push([r.key, r.value]);
  }
  throw new Error('sequence does not terminate');
}

function assertValidResult(res: LookupResult): void {
  if (res.found) {
    assert.equal(typeof res.value, 'string');
    assert.match(res.value, BYTES);
  } else {
    assert.ok(ERRORS.includes(res.error), `bad error code ${res.error}`);
  }
}

/** Byte strings without NUL, the empty string included. */
const keyArb = fc
  .uint8Array({ maxLength: 40 })
  .map((a) => Buffer.from(a.filter((b) => b !== 0)).toString('latin1'));

async function openCase(typeName: string, name: Bytes, c: ConformanceCase, options: ConformanceOptions) {
  const warnings: string[] = [];
  const opts = openOptions(
    typeName,
    name,
    { fold: c.fold ?? 'utf8', openFlags: c.openFlags ?? 0, writable: c.writable ?? false },
    warnings,
  );
  const table = await (options.opener ? options.opener(opts) : openTable(opts));
  return { table, opts, warnings };
}

/** Register node:test tests for each case plus the generic invariants. */
export function runConformance(typeName: string, cases: ConformanceCase[], options: ConformanceOptions = {}): void {
  describe(`${typeName} conformance`, () => {
    let dir = '';
    before(() => {
      dir = mkdtempSync(join(tmpdir(), `conf-${typeName}-`));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    cases.forEach((c, index) => {
      describe(c.title, () => {
        let path = '';
        const subst = (s: string) => s.replaceAll('{path}', path);
        const nameOf = () => {
          if (c.file !== undefined) {
            path = join(dir, `case-${index}`);
            writeFileSync(path + (c.suffix ?? ''), Buffer.from(typeof c.file === 'function' ? c.file() : c.file, 'latin1'));
          }
          return subst(c.name ?? path);
        };

        if (c.openError !== undefined) {
          it('open fails with the Postfix message', async () => {
            const name = nameOf();
            await assert.rejects(
              Promise.resolve().then(() => openCase(typeName, name, c, options)),
              (err: unknown) => err instanceof TableOpenError && err.message === subst(c.openError!),
            );
          });
          return;
        }

        it('expected warnings, flags, lookups and sequence', async () => {
          const { table, opts, warnings } = await openCase(typeName, nameOf(), c, options);
          assert.equal(table.type, typeName);
          assert.equal(table.name, opts.name);
          if (c.implFlags !== undefined) assert.equal(table.implFlags & (DICT_FLAG.FIXED | DICT_FLAG.PATTERN), c.implFlags);
          if (c.warnings) assert.deepEqual(warnings, c.warnings.map(subst));
          for (const l of c.lookups ?? []) {
            const got = outcome(await dictLookup(table, l.key, opts, l.flags));
            assert.deepEqual(got, l.expect, `lookup ${JSON.stringify(l.key)}`);
          }
          if (c.sequence === 'unsupported') assert.equal(table.sequence, undefined);
          else if (c.sequence !== undefined) {
            const want = Array.isArray(c.sequence) ? c.sequence.map(([k, v]) => [subst(k), subst(v)]) : c.sequence;
            assert.deepEqual(await sequenceAll(table), want);
          }
          if (c.writes) {
            assert.ok(c.writable, 'writes need a writable open');
            for (const w of c.writes) {
              const fn = w.op === 'update' ? table.update : table.delete;
              assert.ok(fn, `${w.op} exists on a writable open`);
              const r = w.op === 'update' ? await table.update!(w.key, w.value, w.flags ?? 0) : await table.delete!(w.key, w.flags ?? 0);
              assert.equal(r.status, w.expect, `${w.op} ${JSON.stringify(w.key)}`);
              if (r.status === -1) assert.ok(ERRORS.includes(r.error) && r.error !== DICT_ERR.NONE, 'a failed write has an error code');
              else assert.equal(r.error, DICT_ERR.NONE);
            }
          }
          for (const l of c.afterWrites ?? []) {
            const got = outcome(await dictLookup(table, l.key, opts, l.flags));
            assert.deepEqual(got, l.expect, `after the writes: lookup ${JSON.stringify(l.key)}`);
          }
          await table.close?.();
        });

        it('contract: changed() is false right after open; close() completes; a read-only open has no update or delete', async () => {
          const name = nameOf();
          const { table } = await openCase(typeName, name, c, options);
          if (table.changed) assert.equal(await table.changed(), false, 'changed() right after open');
          if (!(c.writable ?? false)) {
            assert.equal(table.update, undefined, 'update on a read-only open');
            assert.equal(table.delete, undefined, 'delete on a read-only open');
          }
          await table.close?.();
          // the name opens again after a close (nothing the closed table held is left locked or cached)
          const again = await openCase(typeName, name, c, options);
          await again.table.close?.();
        });

        it('invariant: lookup never throws and returns byte strings', async () => {
          const { table, opts } = await openCase(typeName, nameOf(), c, options);
          for (const key of ['', ' ', '\xff', 'a'.repeat(1000)]) assertValidResult(await table.lookup(key, 0));
          await fc.assert(
            fc.asyncProperty(keyArb, async (key) => {
              assertValidResult(await table.lookup(key, 0));
              assertValidResult(await dictLookup(table, key, opts));
            }),
            { numRuns: options.randomKeys ?? 100 },
          );
          await table.close?.();
        });

        it('invariant: sequence terminates; repeated opens are independent', async () => {
          const name = nameOf();
          const a = await openCase(typeName, name, c, options);
          const b = await openCase(typeName, name, c, options);
          assert.notEqual(a.table, b.table);
          if (a.table.sequence && b.table.sequence) {
            const all = await sequenceAll(a.table);
            const first = await a.table.sequence(0, 0);
            await sequenceAll(b.table); // must not move a's cursor
            const second = await a.table.sequence(1, 0);
            if (Array.isArray(all)) {
              assert.deepEqual(first.found ? [first.key, first.value] : undefined, all[0]);
              assert.deepEqual(second.found ? [second.key, second.value] : undefined, all[1]);
              assert.deepEqual(await sequenceAll(b.table), all);
            } else {
              assert.deepEqual(outcomeOfSeq(first), all);
            }
          }
          for (const l of c.lookups ?? []) {
            assert.deepEqual(await dictLookup(a.table, l.key, a.opts), await dictLookup(b.table, l.key, b.opts));
          }
          await a.table.close?.();
          for (const l of c.lookups ?? []) {
            assert.deepEqual(outcome(await dictLookup(b.table, l.key, b.opts)), l.expect);
          }
          await b.table.close?.();
        });
      });
    });
  });
}

function outcomeOfSeq(r: { found: boolean; error?: DictErr }): { error: DictErr } | undefined {
  return r.found ? undefined : { error: r.error ?? DICT_ERR.NONE };
}
