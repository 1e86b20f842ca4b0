/**
 * The source text of a pattern table (dict_stream_open in Postfix 3.7+):
 * a file, or, when the name starts with '{', inline rules
 * `{ {rule1}, {rule2} }` that become the lines of an in-memory file.
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { extpar, tokenizeQ } from '../../util/braces.js';
import { strerror } from '../../util/strerror.js';
import { TableOpenError, type Bytes } from './table.js';

export interface TableSource {
  /** the whole text, as bytes */
  text: Bytes;
  /** file status at open (undefined for inline text), for change detection */
  stat?: Stats;
}

/** Convert inline rules to multi-line text; an error text as Postfix words it, or the text. */
export function inlineToMultiline(mapname: Bytes): { text: Bytes } | { error: string } {
  const outer = extpar(mapname, false);
  if (outer.error) return { error: outer.error };
  let text = '';
  for (const tok of tokenizeQ(outer.text, ', \t\r\n')) {
    const r = extpar(tok, true);
    if (r.error) return { error: r.error };
    text += r.text + '\n';
  }
  return { text };
}

/**
 * Read a pattern table's source. `kind` names the type in errors
 * (`regexp map: ...`); a missing file is `open NAME: strerror`.
 */
export async function readTableSource(kind: string, mapname: Bytes): Promise<TableSource> {
  if (mapname.startsWith('{')) {
    const r = inlineToMultiline(mapname);
    if ('error' in r) throw new TableOpenError(`${kind} map: ${r.error}`);
    return { text: r.text };
  }
  const path = Buffer.from(mapname, 'latin1');
  // A regular file is read at once, without round trips through the thread pool (the table is
  // parsed synchronously right after anyway). O_NONBLOCK: a FIFO must not block the server in
  // open(); anything but a regular file is read asynchronously.
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (e) {
    throw new TableOpenError(`open ${mapname}: ${strerror(e)}`);
  }
  try {
    const stat = fstatSync(fd);
    if (stat.isFile()) return { text: readFileSync(fd).toString('latin1'), stat };
  } finally {
    closeSync(fd);
  }
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new TableOpenError(`open ${mapname}: ${strerror(e)}`);
  }
  try {
    const stat = await fh.stat();
    const buf = await fh.readFile();
    return { text: buf.toString('latin1'), stat };
  } finally {
    await fh.close();
  }
}
