#!/usr/bin/env node
/**
 * proxymapd command line: serve | query | list | build
 */
import { runServe } from './serve.js';
import { runQuery } from './query.js';
import { runList } from './list.js';
import { runBuild, BUILD_USAGE } from './build.js';

const USAGE = `usage: proxymapd serve [-c config_dir] [-o name=value ...] [-v]
       proxymapd query [-c config_dir] [-f] [-u] [--dialect legacy|new] [-o name=value ...] key|- table ...
       proxymapd list [-c config_dir] [-o name=value ...] [--service proxymap|proxywrite]
       ${BUILD_USAGE}`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'serve':
      return runServe(rest);
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
      process.stderr.write(USAGE + '\n');
      return 2;
  }
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
