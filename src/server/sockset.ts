/**
 * The connections of one server thread in a native socket set
 * (native/sockset.c): one epoll descriptor and one libuv handle for all of
 * them, the bytes of every ready socket delivered in one call, each reply
 * written with one write(2) from the call that produces it. Used for every
 * accepted connection when the addon is available; net.Socket otherwise.
 */
import { loadSockSet, type NativeSockSet } from '../addon/sockset.js';
import type { Connection, Transport } from './connection.js';

const EV_DATA = 0;
const EV_END = 1;
const EV_ERROR = 2;
const EV_DRAIN = 3;
const EV_CLOSED = 4;

let native: NativeSockSet | null | undefined;

function nativeSockSet(): NativeSockSet | null {
  return native === undefined ? (native = loadSockSet()) : native;
}

/**
 * Busy-wait up to `usec` microseconds until the event loop has an event
 * ready, without running it (native/sockset.c): 1 ready, 0 time is up.
 * null when the addon is not loaded (the caller then polls with a turn of
 * the loop per check).
 */
export function loopSpin(usec: number): number | null {
  const n = nativeSockSet();
  return n ? n.loopSpin(usec) : null;
}

/** One connection's slot in the set. */
class Slot implements Transport {
  /** the native side closed it (or we did): its id may already serve another connection */
  dead = false;
  readableEnded = false;
  conn!: Connection;

  constructor(
    private readonly set: SockSet,
    readonly id: number,
  ) {}

  write(bytes: string): boolean {
    if (this.dead) return true;
    const r = this.set.n.sockSetWrite(this.set.handle, this.id, bytes);
    if (r < 0) {
      // As a socket reports a write error: asynchronously, the connection is then destroyed.
      this.kill();
      queueMicrotask(() => this.conn.destroy());
      return true;
    }
    return r === 1;
  }

  pause(): void {
    if (!this.dead) this.set.n.sockSetPause(this.set.handle, this.id, true);
  }

  resume(): void {
    if (!this.dead) this.set.n.sockSetPause(this.set.handle, this.id, false);
  }

  end(): void {
    if (this.dead) return;
    // 1: closed at once (nothing queued); else EV_CLOSED follows once the output is written
    if (this.set.n.sockSetEnd(this.set.handle, this.id) !== 0) this.kill();
  }

  destroy(): void {
    if (this.dead) return;
    this.set.n.sockSetClose(this.set.handle, this.id);
    this.kill();
  }

  kill(): void {
    if (this.dead) return;
    this.dead = true;
    this.set.release(this);
  }
}

export class SockSet {
  readonly handle: object;
  private readonly slots: (Slot | undefined)[] = [];

  private constructor(readonly n: NativeSockSet) {
    this.handle = n.sockSetCreate((events) => this.dispatch(events));
  }

  /** A set, or null when the addon cannot be loaded (the caller uses net.Socket). */
  static create(): SockSet | null {
    const n = nativeSockSet();
    return n ? new SockSet(n) : null;
  }

  /** Take over a connected descriptor; the connection is made by `make` with the slot as its transport. null when the set refused it. */
  adopt(fd: number, make: (t: (conn: Connection) => Transport) => Connection): Connection | null {
    const id = this.n.sockSetAdd(this.handle, fd);
    if (id < 0) return null;
    const slot = new Slot(this, id);
    this.slots[id] = slot;
    return make((conn) => {
      slot.conn = conn;
      return slot;
    });
  }

  release(slot: Slot): void {
    if (this.slots[slot.id] === slot) this.slots[slot.id] = undefined;
  }

  private dispatch(ev: unknown[]): void {
    for (let i = 0; i < ev.length; i += 3) {
      const slot = this.slots[ev[i] as number];
      if (!slot || slot.dead) continue;
      switch (ev[i + 1] as number) {
        case EV_DATA:
          slot.conn.feed(ev[i + 2] as string);
          break;
        case EV_END:
          slot.readableEnded = true;
          slot.conn.ended();
          break;
        case EV_ERROR:
        case EV_CLOSED:
          slot.kill();
          slot.conn.destroy();
          break;
        case EV_DRAIN:
          slot.conn.drained();
          break;
      }
    }
  }

  /** Close every connection and the set. */
  destroy(): void {
    this.n.sockSetDestroy(this.handle);
    for (const s of this.slots) s?.kill();
  }
}
