/**
 * Listening on a UNIX socket path, as the service sockets, the control
 * socket and the metrics listener do: a stale socket file (nothing answers
 * on it) is replaced, a live one is an error (another server runs there);
 * once listening the socket gets its mode and, when given, its owner.
 */
import fs from 'node:fs';
import net from 'node:net';

/** Whether a server answers on a UNIX socket path (a stale socket file refuses the connection). */
export function isLive(sockPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(sockPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Make `srv` listen on `sockPath` (see above); rejects when it cannot. */
export async function listenOnPath(srv: net.Server, sockPath: string, mode: number, owner?: { uid: number; gid: number }): Promise<void> {
  if (fs.existsSync(sockPath)) {
    if (await isLive(sockPath)) throw new Error(`${sockPath}: another server is listening there`);
    fs.unlinkSync(sockPath);
  }
  await listenOn(srv, (done) => srv.listen(sockPath, done));
  fs.chmodSync(sockPath, mode);
  if (owner) fs.chownSync(sockPath, owner.uid, owner.gid);
}

/** Start listening through `listen` (which calls back once listening); rejects with the listen error. */
export function listenOn(srv: net.Server, listen: (done: () => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    listen(() => {
      srv.off('error', reject);
      resolve();
    });
  });
}

/** Stop `srv` listening and remove its socket path, if any; resolves once the server has closed. */
export function closeListener(srv: net.Server, sockPath?: string): Promise<void> {
  const closed = new Promise<void>((resolve) => srv.close(() => resolve()));
  if (sockPath) {
    try {
      fs.unlinkSync(sockPath);
    } catch {
      /* already gone */
    }
  }
  return closed;
}
