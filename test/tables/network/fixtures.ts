/** The replies of the socketmap and tcp test servers, by key, shared by the unit and interop tests. */
import { hexUnquote } from '../../../src/tables/network/tcp.js';
import { ns, type Responder } from './servers.js';

/** The replies by key (requests are "mapname key"). */
export const SOCKMAP_REPLIES: Record<string, string> = {
  ok: ns('OK value with spaces'),
  'a b%c': ns('OK spaced'),
  'caf\xc3\xa9': ns('OK caf\xc3\xa9-value'),
  empty: ns('OK '),
  bare: ns('OK'),
  nf: ns('NOTFOUND '),
  nf2: ns('NOTFOUND'),
  temp: ns('TEMP db down'),
  timeout: ns('TIMEOUT  slow backend'),
  perm: ns('PERM broken'),
  what: ns('WHAT ever'),
  lower: ns('ok lowercase status'),
  nul: ns('OK a\0b'),
  exact: ns('OK ' + 'x'.repeat(99_997)),
  big: ns('OK ' + 'x'.repeat(100_001)),
  malformed: '5:OK ab;',
  badlen: 'x5:OK ab,',
  ctl: ns('TEMP \x01bad\xffbytes'),
};

export const sockmapResponder: Responder = (req) => {
  const key = req.slice(req.indexOf(' ') + 1);
  return SOCKMAP_REPLIES[key] ?? ns('NOTFOUND');
};

/** Replies by (unquoted) key; requests are "get QUOTED". */
export const TCP_REPLIES: Record<string, string> = {
  ok: '200 value%20with%20space\n',
  'a b%c': '200 spaced\n',
  'caf\xc3\xa9': '200 caf%C3%A9-value\n',
  tab: '200\tval\n',
  crlf: '200 val\r\n',
  empty: '200 \n',
  comma: '200 a b%2Cc\n',
  lowerhex: '200 %c3%a9\n',
  nf: '500 not found\n',
  temp: '400 try later\n',
  bad: '300 what\n',
  short: '200\n',
  mal: '200 %zz\n',
  ctl: '300 \x01x\xff\n',
  nul: '200 a%00b\n',
};

export const tcpResponder: Responder = (req) => {
  const key = hexUnquote(req.slice(4)) ?? '';
  return TCP_REPLIES[key] ?? '500 no\n';
};

