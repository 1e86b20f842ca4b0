/**
 * Connected sockets served in batches (native/sockset.c): one epoll
 * descriptor and one libuv handle for all the connections of a server
 * thread. Used by src/server/sockset.ts; null without the addon (net.Socket
 * is used then).
 */
import { nativeWith } from './load.js';

export interface NativeSockSet {
  sockSetCreate(onEvents: (events: unknown[]) => void): object;
  sockSetAdd(set: object, fd: number): number;
  sockSetWrite(set: object, id: number, bytes: string): number;
  sockSetPause(set: object, id: number, paused: boolean): number;
  sockSetEnd(set: object, id: number): number;
  sockSetClose(set: object, id: number): number;
  sockSetDestroy(set: object): void;
  loopSpin(usec: number): number;
}

/** The addon's socket-set functions, or null when it cannot be loaded. */
export function loadSockSet(): NativeSockSet | null {
  return nativeWith<NativeSockSet>('sockSetCreate');
}
