/**
 * Helpers for differential tests against the real postconf(1).
 *
 * postconf prints values with whitespace normalized (one blank between
 * words), so comparisons normalize our values the same way. Test main.cf
 * files get an old mtime: Postfix re-reads a main.cf modified within the last
 * second ("hot" file), which would repeat warnings and slow the tests down.
 */
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { skipUnlessPresent } from '../support/skip.js';

export const HAVE_POSTCONF = spawnSync('postconf', ['-d', 'mail_version'], { encoding: 'utf8' }).status === 0;

/**
 * `skip` option for differential tests: they run whenever postconf exists
 * (in CI a missing postconf fails, test/support/skip.ts).
 */
export const skipNoPostconf: string | false = skipUnlessPresent(!HAVE_POSTCONF && 'postconf(1) is not installed');

const dirs: string[] = [];

/** Create a temporary config directory with the given main.cf and an empty master.cf. */
export function makeConfDir(mainCf: string | Buffer): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pmd-conf-'));
  dirs.push(dir);
  writeOld(path.join(dir, 'main.cf'), mainCf);
  writeOld(path.join(dir, 'master.cf'), '');
  return dir;
}

/** Write a file and date it an hour back. */
export function writeOld(file: string, data: string | Buffer): void {
  fs.writeFileSync(file, data);
  const past = new Date(Date.now() - 3600_000);
  fs.utimesSync(file, past, past);
}

/** Remove all directories made by makeConfDir. */
export function cleanupConfDirs(): void {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

export interface PostconfResult {
  status: number | null;
  stdout: string;
  stderr: string;
  /** stdout split into lines (the trailing newline removed) */
  lines: string[];
}

/** Run postconf with MAIL_CONFIG unset; output decoded as latin1 (byte strings). */
export function postconf(args: string[]): PostconfResult {
  const env = { ...process.env };
  delete env.MAIL_CONFIG;
  const r = spawnSync('postconf', args, { encoding: 'latin1', env });
  if (r.error) throw r.error;
  const stdout = r.stdout;
  const lines = stdout.length === 0 ? [] : stdout.replace(/\n$/, '').split('\n');
  return { status: r.status, stdout, stderr: r.stderr, lines };
}

/**
 * Run postconf without blocking (postconf sleeps a second after a fatal
 * error, so error cases are best run concurrently).
 */
export function postconfAsync(args: string[]): Promise<PostconfResult> {
  const env = { ...process.env };
  delete env.MAIL_CONFIG;
  return new Promise((resolve, reject) => {
    execFile('postconf', args, { encoding: 'latin1', env }, (err, stdout, stderr) => {
      const code = (err as { code?: unknown } | null)?.code;
      if (err && typeof code !== 'number') return reject(err);
      const lines = stdout.length === 0 ? [] : stdout.replace(/\n$/, '').split('\n');
      resolve({ status: err ? (code as number) : 0, stdout, stderr, lines });
    });
  });
}

/** postconf -c DIR -xh NAME... : expanded values, one per name. */
export function postconfExpanded(dir: string, names: string[], extra: string[] = []): string[] {
  const r = postconf(['-c', dir, ...extra, '-xh', ...names]);
  if (r.status !== 0) throw new Error(`postconf failed (${r.status}): ${r.stderr}`);
  if (r.lines.length !== names.length) {
    throw new Error(`postconf printed ${r.lines.length} lines for ${names.length} names: ${r.stderr}`);
  }
  return r.lines;
}

/** Whitespace normalization as postconf's output does it (pcf_print_line). */
export function normalizeWs(s: string): string {
  return s.split(/[ \t\r\n]+/).filter((w) => w.length > 0).join(' ');
}

/** The "postconf: warning: ..." messages in stderr, without the prefix. */
export function warnings(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('postconf: warning: '))
    .map((l) => l.slice('postconf: warning: '.length));
}
