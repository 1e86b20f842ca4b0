/**
 * dup(2) through the addon (native/fd.c): the server re-opens each accepted
 * connection on a duplicate of its descriptor, as a socket that reads into a
 * reusable buffer (net.Socket's `onread`) instead of allocating a Buffer and
 * going through the stream machinery for every request.
 */
import { nativeWith } from './load.js';

interface NativeFd {
  dupFd(fd: number): number;
}

let native: NativeFd | null | undefined;

/** A close-on-exec duplicate of fd, or -1 (with the addon unavailable: -1 too, and the caller keeps fd). */
export function dupFd(fd: number): number {
  if (native === undefined) native = nativeWith<NativeFd>('dupFd');
  if (native === null) return -1;
  const r = native.dupFd(fd);
  return r < 0 ? -1 : r;
}
