/**
 * The tcp_table front-end against test-double tables: `get` requests with
 * %XX-quoted keys, 200/500/400 replies with quoted values, folding as a
 * direct lookup folds, failures as 400, malformed and oversized requests,
 * the allow-list, and the proxymapd_tcp_maps syntax.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SocketmapServer } from '../../src/server/socketmap-server.js';
import { parseTcpMaps } from '../../src/server/socketmap-settings.js';
import { LineDecoder } from '../../src/server/tcp-frontend.js';
import { FramingError } from '../../src/protocol/netstring.js';
import { startTestServer, type TestServer } from './helpers.js';
import { connectOptions, settings } from './socketmap-helpers.js';

const TABLE = 'mem:alice=alice@example.com,a b=with space,key=caf\xc3\xa9 x%y';
const inet = { kind: 'inet' as const, host: '127.0.0.1', port: 0 };

/** A line client: requests out, reply lines in order; `closed` resolves when the server closes. */
class LineClient {
  private buf = '';
  private readonly lines: string[] = [];
  private readonly waiters: Array<{ resolve: (s: string) => void; reject: (e: Error) => void }> = [];
  private done = false;
  readonly closed: Promise<void>;

  constructor(readonly sock: net.Socket) {
    sock.on('data', (b: Buffer) => {
      this.buf += b.toString('latin1');
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiters.shift();
        if (w) w.resolve(line);
        else this.lines.push(line);
      }
    });
    sock.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      sock.once('close', () => {
        this.done = true;
        for (const w of this.waiters.splice(0)) w.reject(new Error('connection closed'));
        resolve();
      }),
    );
  }

  static connect(where: string): Promise<LineClient> {
    const sock = net.createConnection(connectOptions(where));
    return new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.once('connect', () => resolve(new LineClient(sock)));
    });
  }

  next(): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.done) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  ask(line: string): Promise<string> {
    this.sock.write(line + '\n', 'latin1');
    return this.next();
  }
}

let ts: TestServer;
let sm: SocketmapServer;
const where: Record<string, string> = {};
before(async () => {
  ts = await startTestServer([TABLE, 'pat:Mixed=yes', 'broken:x', 'big:5000', 'big:4091', 'slow:20']);
  const tables = { mem: TABLE, pat: 'pat:Mixed=yes', broken: 'broken:x', big: 'big:5000', fits: 'big:4091', slow: 'slow:20', unapproved: 'mem:secret=1' };
  sm = new SocketmapServer(ts.server, settings({}, { listen: [], maxRequest: 1000, tcpMaps: Object.values(tables).map((spec) => ({ listen: inet, spec })) }));
  const addrs = await sm.listen();
  Object.keys(tables).forEach((name, i) => (where[name] = addrs[i]!));
});
after(async () => {
  await sm.close();
  await ts.close();
});

describe('tcp_table front-end', () => {
  it('found (value %XX-quoted), not found, quoted keys, folding of FIXED tables only', async () => {
    const c = await LineClient.connect(where.mem!);
    assert.equal(await c.ask('get alice'), '200 alice@example.com');
    assert.equal(await c.ask('get ALICE'), '200 alice@example.com');
    assert.equal(await c.ask('get a%20b'), '200 with%20space');
    assert.equal(await c.ask('get KEY'), '200 caf%C3%A9%20x%25y');
    assert.equal(await c.ask('get nobody'), '500 not found');
    assert.equal(await c.ask('get ali%63e\r'), '200 alice@example.com', 'lower-case hex, a CR before the LF');
    c.sock.destroy();
    const p = await LineClient.connect(where.pat!);
    assert.equal(await p.ask('get Mixed'), '200 yes');
    assert.equal(await p.ask('get mixed'), '500 not found');
    p.sock.destroy();
  });

  it('failures, unapproved tables, malformed and unsupported requests get 400; the connection stays', async () => {
    const b = await LineClient.connect(where.broken!);
    assert.equal(await b.ask('get x'), '400 temporary lookup failure');
    b.sock.destroy();
    const u = await LineClient.connect(where.unapproved!);
    assert.equal(await u.ask('get secret'), '400 table not approved');
    assert.ok(ts.logs.some((l) => /proxymapd_tcp_maps: table "mem:secret=1" of inet:127\.0\.0\.1:0 is not listed in proxy_read_maps/.test(l)));
    u.sock.destroy();
    const c = await LineClient.connect(where.mem!);
    assert.equal(await c.ask('get bad%zz'), '400 malformed request');
    assert.equal(await c.ask('put alice x'), '400 unsupported request');
    assert.equal(await c.ask(''), '400 unsupported request');
    assert.equal(await c.ask('get alice'), '200 alice@example.com');
    c.sock.destroy();
  });

  it("a value longer than Postfix's client reads gets 400; one that just fits is sent", async () => {
    const c = await LineClient.connect(where.big!);
    assert.equal(await c.ask('get k'), '400 value too long for the tcp_table protocol');
    c.sock.destroy();
    const f = await LineClient.connect(where.fits!);
    const r = await f.ask('get k');
    assert.equal(r.length + 1, 4096);
    assert.ok(r.startsWith('200 k'));
    f.sock.destroy();
  });

  it('pipelined requests are answered in order', async () => {
    const c = await LineClient.connect(where.slow!);
    c.sock.write('get 1\nget 2\nget 3\n');
    assert.deepEqual([await c.next(), await c.next(), await c.next()], ['200 slow:1', '200 slow:2', '200 slow:3']);
    c.sock.destroy();
  });

  it('a line over the size limit gets 400 and the connection closes', async () => {
    const c = await LineClient.connect(where.mem!);
    c.sock.write('get ' + 'x'.repeat(2000));
    assert.equal(await c.next(), '400 request line longer than 1000 bytes');
    await c.closed;
  });

  it('the allow-list applies to tcp_table listeners too', async () => {
    const s = new SocketmapServer(ts.server, settings({}, { listen: [], clients: '192.0.2.0/24', tcpMaps: [{ listen: inet, spec: TABLE }] }));
    const [w] = await s.listen();
    const c = await LineClient.connect(w!);
    c.sock.write('get alice\n');
    await c.closed;
    await assert.rejects(c.next());
    await s.close();
  });
});

describe('tcp_table settings and framing', () => {
  it('proxymapd_tcp_maps: inet:host:port=type:table, proxy: stripped; bad entries warned about', () => {
    const warnings: string[] = [];
    const m = parseTcpMaps('inet:127.0.0.1:9001=proxy:texthash:/etc/postfix/virtual, inet:[::1]:9002=inline:{ a=1, b=2 } unix:/x=texthash:/y inet:1.2.3.4:5 inet:1.2.3.4:6=nope', (w) => warnings.push(w));
    assert.deepEqual(m, [
      { listen: { kind: 'inet', host: '127.0.0.1', port: 9001 }, spec: 'texthash:/etc/postfix/virtual' },
      { listen: { kind: 'inet', host: '::1', port: 9002 }, spec: 'inline:{ a=1, b=2 }' },
    ]);
    assert.equal(warnings.length, 3, warnings.join('\n'));
  });

  it('LineDecoder: split input, CRLF, the size limit with and without a LF', () => {
    const d = new LineDecoder(10);
    d.push('get a');
    assert.equal(d.next(), null);
    d.push('\r\nget b\nget');
    assert.equal(d.next(), 'get a');
    assert.equal(d.next(), 'get b');
    assert.equal(d.next(), null);
    assert.equal(d.pendingBytes, 3);
    d.push(' 12345678');
    assert.throws(() => d.next(), FramingError);
    const e = new LineDecoder(10);
    e.push('get 1234567\n');
    assert.throws(() => e.next(), /longer than 10 bytes/);
  });
});
