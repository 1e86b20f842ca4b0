/**
 * Start-up warm-up of a client table type's open path (when such tables
 * are approved): the first opens of a table run the parameter-file parser,
 * the template compiler and the pool set-up in the interpreter, 1-3 ms each
 * against Postfix's 0.2-0.3 ms. A synthetic parameter file is opened and
 * closed a few times; nothing connects (connections are made by the first
 * lookup), and no pool or file is left behind.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TableOpener } from '../core/table.js';

const ROUNDS = 30;

/** Open and close `type:FILE` ROUNDS times, FILE holding `cf` (a configuration whose hosts are never reached). */
export async function warmUpOpens(type: string, open: TableOpener, cf: string): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxymapd-warm-'));
  try {
    const file = path.join(dir, `${type}.cf`);
    fs.writeFileSync(file, cf, { mode: 0o600 });
    // Postfix (and the parameter-file reader) treat a file younger than a second as possibly still being written
    fs.utimesSync(file, 1_000_000_000, 1_000_000_000);
    for (let i = 0; i < ROUNDS; i++) {
      const t = await open({ type, name: file, openFlags: 0, fold: 'ascii', writable: false, param: () => undefined, warn: () => undefined });
      await t.close?.();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
