/**
 * DICT_FLAG.SRC_RHS_IS_FILE support (src/util/dict_file.c): a table value
 * names files whose contents become the value, base64-encoded.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { tokenize } from '../../util/braces.js';
import { strerror } from '../../util/strerror.js';
import type { Bytes } from './table.js';

export type RhsFileResult = { value: Bytes } | { error: string };

/**
 * Read the files listed in `list` (separated by ", \t\r\n"), join their
 * contents with one newline between files, and return standard base64.
 * Errors are worded as Postfix words them.
 */
export function filesToBase64(list: Bytes): RhsFileResult {
  const names = tokenize(list, ', \t\r\n');
  if (names.length === 0) return { error: `empty pathname list: >>${list}<<'` };
  const chunks: Buffer[] = [];
  for (const [index, name] of names.entries()) {
    let fd: number;
    let size: number;
    try {
      fd = openSync(Buffer.from(name, 'latin1'), 'r');
    } catch (err) {
      return { error: `open ${name}: ${strerror(err)}` };
    }
    try {
      size = fstatSync(fd).size;
      const buf = Buffer.alloc(size);
      let got = 0;
      while (got < size) {
        const n = readSync(fd, buf, got, size - got, null);
        if (n === 0) break;
        got += n;
      }
      if (got !== size) return { error: `read ${name}: ${strerror(undefined)}` };
      chunks.push(buf);
    } catch (err) {
      return { error: `read ${name}: ${strerror(err)}` };
    } finally {
      closeSync(fd);
    }
    if (index < names.length - 1) chunks.push(Buffer.from('\n'));
  }
  return { value: Buffer.concat(chunks).toString('base64') };
}
