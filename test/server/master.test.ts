/** master(8) child mode: command line, status messages, generation, log records (pure parts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import os from 'node:os';
import { Config } from '../../src/config/params.js';
import {
  MasterFatal,
  maillogTarget,
  parseGeneration,
  parseMasterArgs,
  serviceOf,
  statusMessage,
} from '../../src/server/master.js';
import { postlogRecord, SYSLOG_FACILITIES } from '../../src/addon/maillog.js';

describe('master child command line', () => {
  it('parses what master passes (observed argv forms)', () => {
    const a = parseMasterArgs(['-n', 'proxymap', '-t', 'unix', '-u'], '/usr/lib/postfix/sbin/proxymapd');
    assert.equal(a.serviceName, 'proxymap');
    assert.equal(a.transport, 'unix');
    assert.equal(a.unprivileged, true);
    assert.equal(a.socketCount, 1);
    const b = parseMasterArgs(['-l', '-n', 'proxywrite', '-t', 'unix', '-d', '-u', '-v', '-v'], 'proxymapd');
    assert.equal(b.serviceName, 'proxywrite');
    assert.equal(b.solitary, true);
    assert.equal(b.verbose, 2);
  });
  it('takes bundled options and attached values, as getopt does', () => {
    const a = parseMasterArgs(['-uvv', '-tunix', '-nproxymap', '-i', '7', '-m5', '-s', '2', '-o', 'max_idle=3s', '-oa = b'], 'x');
    assert.deepEqual(
      [a.unprivileged, a.verbose, a.transport, a.serviceName, a.maxIdle, a.maxUse, a.socketCount, a.overrides],
      [true, 2, 'unix', 'proxymap', 7, 5, 2, ['max_idle=3s', 'a = b']],
    );
  });
  it('the service name defaults to the program name', () => {
    assert.equal(parseMasterArgs(['-t', 'unix'], '/usr/lib/postfix/sbin/proxymap').serviceName, 'proxymap');
  });
  it('rejects what Postfix rejects, with its messages', () => {
    const fatal = (args: string[]) => {
      try {
        parseMasterArgs(args, 'proxymapd');
      } catch (e) {
        assert.ok(e instanceof MasterFatal);
        return e.message;
      }
      return 'no error';
    };
    assert.equal(fatal(['-t', 'unix', 'extra']), 'unexpected command-line argument: extra');
    assert.equal(fatal(['-x']), 'invalid option: x');
    assert.equal(fatal(['-s', '0']), 'invalid socket_count: 0');
    assert.equal(fatal(['-t']), 'invalid option: t');
    assert.match(fatal(['-o', 'novalue']), /^invalid "-o novalue" option value/);
    assert.throws(() => serviceOf('proxymapd'), /invalid service name: "proxymapd" - service name must be "proxywrite" or "proxymap"/);
    assert.equal(serviceOf('proxywrite'), 'proxywrite');
  });
});

describe('master status channel', () => {
  it('GENERATION is octal', () => {
    assert.equal(parseGeneration('0123'), 0o123);
    assert.equal(parseGeneration(undefined), 0);
    assert.equal(parseGeneration('0'), 0);
    assert.throws(() => parseGeneration('12x'), /bad generation: 12x/);
  });
  it('a status message is {int pid; unsigned gen; int avail} in native byte order', () => {
    const m = statusMessage(4242, 0o7654321, 1);
    assert.equal(m.length, 12);
    const le = os.endianness() === 'LE';
    assert.equal(le ? m.readInt32LE(0) : m.readInt32BE(0), 4242);
    assert.equal(le ? m.readUInt32LE(4) : m.readUInt32BE(4), 0o7654321);
    assert.equal(le ? m.readInt32LE(8) : m.readInt32BE(8), 1);
  });
});

describe('maillog target', () => {
  it('postlog when maillog_file is set, else syslog with syslog_facility', () => {
    const pl = maillogTarget(Config.fromEntries({ maillog_file: '/var/log/postfix.log', queue_directory: '/q', myhostname: 'mx.example.com' }), 'postfix/proxymap');
    assert.deepEqual(pl, { kind: 'postlog', tag: 'postfix/proxymap', path: '/q/public/postlog', hostname: 'mx.example.com' });
    const sl = maillogTarget(Config.fromEntries({ syslog_facility: 'local3' }), 'postfix/proxymap');
    assert.deepEqual(sl, { kind: 'syslog', tag: 'postfix/proxymap', facility: SYSLOG_FACILITIES.local3 });
  });
  it('formats postlog records as msg_logger does', () => {
    const d = new Date(2026, 0, 5, 3, 4, 5);
    assert.equal(postlogRecord('postfix/proxymap', 'mx.example.com', 'warning: x', 77, d), 'Jan 05 03:04:05 mx postfix/proxymap[77]: warning: x');
  });
});
