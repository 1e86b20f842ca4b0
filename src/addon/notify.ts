/**
 * sd_notify(3) datagrams through the addon (native/notify.c): Node has no
 * AF_UNIX datagram sockets. Used by src/server/notify.ts; null without the
 * addon (readiness is then not reported).
 */
import { nativeWith } from './load.js';

export interface NativeNotify {
  /** Send one datagram to a socket path or an "@abstract" name: 0 or an errno value. */
  notifySend(address: string, bytes: Buffer): number;
}

/** The addon's notify sender, or null when it cannot be loaded. */
export function loadNotify(): NativeNotify | null {
  return nativeWith<NativeNotify>('notifySend');
}
