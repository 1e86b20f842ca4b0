/**
 * Test servers for socketmap: and tcp: tables (node net servers): each
 * request is handed to a responder, which gives the raw reply bytes, or
 * asks to close the connection, to stay silent, or to answer late. The
 * server counts connections and records requests, and can be stopped and
 * started again on the same address.
 */
import { once } from 'node:events';
import net from 'node:net';

/** What the server does with one request. */
export type Action =
  | string // raw reply bytes (latin1), sent as they are
  | { close: true } // close without replying
  | { silent: true } // never reply
  | { delayMs: number; reply: string }
  | { reply: string; thenClose: true };

export type Responder = (request: string) => Action;

export interface TestServer {
  /** tcp port (inet servers) */
  port: number;
  /** socket path (unix servers) */
  path?: string;
  connections: number;
  requests: string[];
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** Split the received bytes into requests: netstrings (socketmap) or lines (tcp). */
type Framer = (buf: string) => { request: string; rest: string } | undefined;

export const netstringFramer: Framer = (buf) => {
  const colon = buf.indexOf(':');
  if (colon < 0) return undefined;
  const len = Number(buf.slice(0, colon));
  if (buf.length < colon + 1 + len + 1) return undefined;
  return { request: buf.slice(colon + 1, colon + 1 + len), rest: buf.slice(colon + 2 + len) };
};

export const lineFramer: Framer = (buf) => {
  const lf = buf.indexOf('\n');
  return lf < 0 ? undefined : { request: buf.slice(0, lf), rest: buf.slice(lf + 1) };
};

/** The netstring of a payload (byte string). */
export function ns(payload: string): string {
  return `${Buffer.byteLength(payload, 'latin1')}:${payload},`;
}

export async function startServer(framer: Framer, responder: Responder, where: { path?: string; port?: number } = {}): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  const state: TestServer = {
    port: where.port ?? 0,
    path: where.path,
    connections: 0,
    requests: [],
    async stop() {
      const s = server;
      server = undefined;
      if (!s) return;
      for (const c of sockets) c.destroy();
      s.close();
      await once(s, 'close');
    },
    async start() {
      const s = net.createServer((sock) => {
        state.connections++;
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        sock.on('error', () => undefined);
        let buf = '';
        sock.on('data', (d: Buffer) => {
          buf += d.toString('latin1');
          for (let f = framer(buf); f; f = framer(buf)) {
            buf = f.rest;
            state.requests.push(f.request);
            const a = responder(f.request);
            if (typeof a === 'string') sock.write(Buffer.from(a, 'latin1'));
            else if ('close' in a) sock.destroy();
            else if ('silent' in a) continue;
            else if ('thenClose' in a) sock.end(Buffer.from(a.reply, 'latin1'));
            else setTimeout(() => sock.writable && sock.write(Buffer.from(a.reply, 'latin1')), a.delayMs);
          }
        });
      });
      if (state.path) s.listen(state.path);
      else s.listen(state.port, '127.0.0.1');
      await once(s, 'listening');
      if (!state.path) state.port = (s.address() as net.AddressInfo).port;
      server = s;
    },
  };
  await state.start();
  return state;
}
