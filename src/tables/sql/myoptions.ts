/**
 * MySQL/MariaDB client option files, as the C client library reads them for
 * Postfix's `option_file` and `option_group` settings (MYSQL_READ_DEFAULT_FILE
 * / MYSQL_READ_DEFAULT_GROUP).
 *
 * Postfix sets MYSQL_READ_DEFAULT_GROUP whenever `option_group` is non-empty
 * (default `client`), and MYSQL_READ_DEFAULT_FILE when `option_file` is set.
 * The library then reads either that one file or the default files
 * (/etc/my.cnf, /etc/mysql/my.cnf, $MARIADB_HOME or $MYSQL_HOME/my.cnf,
 * ~/.my.cnf), in the groups [client], [client-server], [client-mariadb] and
 * the configured group. With neither setting nothing is read.
 *
 * Syntax: `[group]` headers, `name = value` or a bare `name`, `#` and `;`
 * comments, optional single or double quotes around a value, `-` and `_`
 * alike in names, `!include FILE` and `!includedir DIR` (files ending in
 * .cnf). Later settings override earlier ones.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export type MyOptions = Map<string, string>;

const DEFAULT_GROUPS = ['client', 'client-server', 'client-mariadb'];

function defaultFiles(): string[] {
  const files = ['/etc/my.cnf', '/etc/mysql/my.cnf'];
  const home = process.env.MARIADB_HOME ?? process.env.MYSQL_HOME;
  if (home) files.push(path.join(home, 'my.cnf'));
  files.push(path.join(os.homedir(), '.my.cnf'));
  return files;
}

function unquote(v: string): string {
  if (v.length >= 2 && (v[0] === '"' || v[0] === "'")) {
    const q = v[0];
    const end = v.indexOf(q, 1);
    if (end > 0) return v.slice(1, end);
  }
  // an unquoted value ends at a comment
  const hash = v.search(/\s[#;]|^[#;]/);
  const s = hash >= 0 ? v.slice(0, hash) : v;
  return s.trim().replace(/\\(.)/g, (_, c: string) => ({ n: '\n', t: '\t', r: '\r', b: '\b', s: ' ', '\\': '\\' })[c] ?? `\\${c}`);
}

function readFile(file: string, groups: Set<string>, out: MyOptions, depth: number): void {
  if (depth > 10) return;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return;
  }
  let inGroup = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line[0] === '#' || line[0] === ';') continue;
    if (line.startsWith('!includedir')) {
      const dir = line.slice('!includedir'.length).trim();
      let names: string[] = [];
      try {
        names = fs.readdirSync(dir).filter((n) => n.endsWith('.cnf')).sort();
      } catch {
        /* missing directory: ignored */
      }
      for (const n of names) readFile(path.join(dir, n), groups, out, depth + 1);
      continue;
    }
    if (line.startsWith('!include')) {
      readFile(line.slice('!include'.length).trim(), groups, out, depth + 1);
      continue;
    }
    if (line[0] === '[') {
      const end = line.indexOf(']');
      const name = (end > 0 ? line.slice(1, end) : line.slice(1)).trim().toLowerCase();
      inGroup = groups.has(name);
      continue;
    }
    if (!inGroup) continue;
    const eq = line.indexOf('=');
    const name = (eq >= 0 ? line.slice(0, eq) : line).trim().toLowerCase().replace(/_/g, '-');
    const value = eq >= 0 ? unquote(line.slice(eq + 1).trim()) : '';
    out.set(name.replace(/^(loose-)/, ''), value);
  }
}

/**
 * The options the client library would read for these settings.
 * `optionFile` undefined: the default files; `optionGroup` '' and no file:
 * nothing.
 */
export function readMyOptions(optionFile: string | undefined, optionGroup: string): MyOptions {
  const out: MyOptions = new Map();
  if (optionFile === undefined && optionGroup === '') return out;
  const groups = new Set(DEFAULT_GROUPS);
  if (optionGroup !== '') groups.add(optionGroup.toLowerCase());
  const files = optionFile !== undefined && optionFile !== '' ? [optionFile] : defaultFiles();
  for (const f of files) readFile(f, groups, out, 0);
  return out;
}

/** Seconds from an option value (e.g. connect-timeout = 5); undefined when absent or invalid. */
export function optSeconds(opts: MyOptions, ...names: string[]): number | undefined {
  for (const n of names) {
    const v = opts.get(n);
    if (v !== undefined && /^\d+$/.test(v.trim())) return Number(v.trim());
  }
  return undefined;
}
