#!/usr/bin/env -S node --max-semi-space-size=2
/**
 * proxymapd command line: serve | status | cache | query | list | build, or, when the first
 * argument is an option, a child of Postfix's master(8) (master.cf command).
 */
import { runServe } from './serve.js';
import { runQuery } from './query.js';
import { runList } from './list.js';
import { runStatus, runCache } from './status.js';
import { runBuild, BUILD_USAGE } from './build.js';
import { runMasterChild, parseMasterArgs, MasterFatal } from '../server/master.js';

const USAGE = `usage: proxymapd serve [-c config_dir] [-o name=value ...] [-v]
       proxymapd status [-c config_dir] [-o name=value ...] [--json]
       proxymapd cache purge [-c config_dir] [-o name=value ...] [--json] [table]
       proxymapd query [-c config_dir] [-f] [-u] [--dialect legacy|new] [-o name=value ...] key|- table ...
       proxymapd list [-c config_dir] [-o name=value ...] [--service proxymap|proxywrite]
       ${BUILD_USAGE}
       proxymapd -n proxymap|proxywrite -t unix [-u] [-v] [-o name=value ...]   (run by master(8) from master.cf)`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'serve':
      return runServe(rest);
    case 'status':
      return runStatus(rest);
    case 'cache':
      return runCache(rest);
    case 'query':
      return runQuery(rest);
    case 'list':
      return runList(rest);
    case 'build':
      return runBuild(rest);
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE + '\n');
      return 0;
    default:
      if (cmd !== undefined && cmd.startsWith('-')) return runMaster(argv);
      process.stderr.write(USAGE + '\n');
      return 2;
  }
}

/** master(8) mode: parse master's command line, serve, and exit when master says so. */
async function runMaster(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseMasterArgs(argv, process.argv[1] ?? 'proxymapd');
  } catch (e) {
    if (!(e instanceof MasterFatal)) throw e;
    process.stderr.write(`proxymapd: fatal: ${e.message}\n`);
    process.exit(1);
  }
  const code = await runMasterChild(args);
  process.exit(code);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined && code >= 0) process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`proxymapd: fatal: ${(e as Error)?.message ?? e}\n`);
    process.exit(1);
  },
);
