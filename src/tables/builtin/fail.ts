/** fail:name (src/util/dict_fail.c): every operation fails with a temporary error. */
import { DICT_FLAG } from '../../protocol/flags.js';
import { DICT_ERR, RETRY, type SequenceResult, type Table, type TableOpenOptions, type WriteResult } from '../core/table.js';
import { BuildError, type TableBuilder } from '../build/buildtypes.js';
import type { TableType } from '../core/registry.js';

const SEQ_RETRY: SequenceResult = Object.freeze({ found: false, error: DICT_ERR.RETRY }) as SequenceResult;
const WRITE_RETRY: WriteResult = Object.freeze({ status: -1, error: DICT_ERR.RETRY }) as WriteResult;

/** Opener for fail:name; update/delete exist only when opened for writing. */
export function openFail(opts: TableOpenOptions): Table {
  const table: Table = {
    type: 'fail',
    name: opts.name,
    implFlags: DICT_FLAG.PATTERN,
    lookup: () => RETRY,
    sequence: () => SEQ_RETRY,
  };
  if (opts.writable) {
    table.update = () => WRITE_RETRY;
    table.delete = () => WRITE_RETRY;
  }
  return table;
}

/** mkmap_fail_open(): the table opens, but every update fails. */
const buildFail: TableBuilder = (path, entries) => {
  for (const _ of entries) throw new BuildError(`table fail:${path}: write error: Application error`);
};

export const failType: TableType = { name: 'fail', open: openFail, implFlags: DICT_FLAG.PATTERN, writable: true, build: buildFail };
