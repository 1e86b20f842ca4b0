/**
 * TLS on the socketmap front-end's inet listeners, with certificates made
 * by openssl for the test: a TLS client is served; with
 * require_client_cert only clients with a certificate from the CA file
 * are; a plain-text client and a client with a foreign certificate get
 * nothing and the server goes on; UNIX listeners stay plain; unusable TLS
 * files keep the inet listeners closed.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { SocketmapServer } from '../../src/server/socketmap-server.js';
import type { SocketmapSettings } from '../../src/server/socketmap-settings.js';
import { skipUnlessPresent } from '../support/skip.js';
import { startTestServer, type TestServer } from './helpers.js';
import { SmClient, connectOptions, settings } from './socketmap-helpers.js';

const skip = skipUnlessPresent(!fs.existsSync('/usr/bin/openssl') && 'openssl is not installed');
const MAPS = { virtual: 'mem:alice=a' };

let ts: TestServer;
let certs: string;
const f = (name: string) => path.join(certs, name);

function openssl(...args: string[]): void {
  execFileSync('/usr/bin/openssl', args, { cwd: certs, stdio: 'pipe' });
}

/** A key and a certificate signed by `ca` (or self-signed when ca is null). */
function makeCert(name: string, ca: string | null, san?: string): void {
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`];
  if (ca === null) {
    openssl('req', '-x509', ...key, '-out', `${name}.crt`, '-subj', `/CN=${name}`, '-days', '2');
    return;
  }
  openssl('req', ...key, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
  const ext = `${name}.ext`;
  fs.writeFileSync(f(ext), san ? `subjectAltName=${san}\n` : 'basicConstraints=CA:FALSE\n');
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', ext);
}

before(async () => {
  ts = await startTestServer(Object.values(MAPS));
  if (skip) return;
  certs = path.join(ts.dir, 'certs');
  fs.mkdirSync(certs);
  makeCert('ca', null);
  makeCert('server', 'ca', 'IP:127.0.0.1');
  makeCert('client', 'ca');
  makeCert('stranger', null);
});
after(async () => ts.close());

async function start(tlsOver: Partial<NonNullable<SocketmapSettings['tls']>>, listen?: SocketmapSettings['listen']): Promise<{ sm: SocketmapServer; where: string[] }> {
  const s = settings(MAPS, {
    tls: { certFile: f('server.crt'), keyFile: f('server.key'), caFile: f('ca.crt'), requireClientCert: false, ...tlsOver },
    ...(listen ? { listen } : {}),
  });
  const sm = new SocketmapServer(ts.server, s);
  return { sm, where: await sm.listen() };
}

function tlsClient(where: string, opts: tls.ConnectionOptions = {}): Promise<SmClient> {
  const { host, port } = connectOptions(where) as { host: string; port: number };
  return SmClient.connect(tls.connect({ host, port, ca: fs.readFileSync(f('ca.crt')), ...opts }));
}

/** Whether a TLS client gets an answer: the reply, or null when the connection fails or closes first. */
async function tryAsk(where: string, opts: tls.ConnectionOptions = {}): Promise<string | null> {
  try {
    const c = await tlsClient(where, opts);
    try {
      return await c.ask('virtual alice');
    } finally {
      c.close();
    }
  } catch {
    return null;
  }
}

describe('socketmap front-end over TLS', { skip }, () => {
  it('a TLS client is served; a plain-text client on the TLS port gets nothing, and the server goes on', async () => {
    const { sm, where } = await start({});
    assert.equal(await tryAsk(where[0]!), 'OK a');
    const plain = await SmClient.connect(where[0]!);
    plain.send('13:virtual alice,');
    await assert.rejects(plain.next());
    await plain.closed;
    assert.equal(await tryAsk(where[0]!), 'OK a');
    await sm.close();
  });

  it('require_client_cert: only clients with a certificate from the CA file are served', async () => {
    const { sm, where } = await start({ requireClientCert: true });
    const w = where[0]!;
    try {
      assert.equal(await tryAsk(w), null, 'no client certificate');
      assert.equal(await tryAsk(w, { cert: fs.readFileSync(f('stranger.crt')), key: fs.readFileSync(f('stranger.key')) }), null, 'a foreign certificate');
      assert.equal(await tryAsk(w, { cert: fs.readFileSync(f('client.crt')), key: fs.readFileSync(f('client.key')) }), 'OK a', ts.logs.join('\n'));
      assert.ok(ts.logs.some((l) => /socketmap: TLS with 127\.0\.0\.1: /.test(l)), 'the failed handshake is logged');
    } finally {
      await sm.close();
    }
  });

  it('UNIX-socket listeners stay plain', async () => {
    const p = path.join(ts.dir, 'tls-unix', 'socketmap');
    const { sm, where } = await start({}, [{ kind: 'unix', path: p }]);
    const c = await SmClient.connect(where[0]!);
    assert.equal(await c.ask('virtual alice'), 'OK a');
    c.close();
    await sm.close();
  });

  it('unusable TLS files: a warning, and no inet listener', async () => {
    const before = ts.logs.length;
    const { sm, where } = await start({ certFile: f('missing.crt') });
    assert.deepEqual(where, []);
    assert.ok(ts.logs.slice(before).some((l) => /socketmap: TLS settings unusable: .*missing\.crt.*not listening on inet addresses/.test(l)));
    await sm.close();
  });
});
