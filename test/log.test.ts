import test from 'node:test';
import assert from 'node:assert/strict';
import { log, logBytes, setLogName, setLogSink } from '../src/log.js';

test('log lines look like Postfix: name[pid]: level: text, unprintable bytes as ?', () => {
  const lines: string[] = [];
  const old = setLogSink((l) => lines.push(l));
  try {
    setLogName('postfix/proxymap');
    log.warn(logBytes('key "\xc3\xa4\xff\x01"'));
    log.info('plain');
  } finally {
    setLogSink(old);
  }
  assert.deepEqual(lines, [`postfix/proxymap[${process.pid}]: warning: key "ä??"`, `postfix/proxymap[${process.pid}]: plain`]);
});
