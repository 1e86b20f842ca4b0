/** glibc strerror() texts for the errno codes Node reports, as Postfix's %m prints them. */
const MESSAGES: Record<string, string> = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  ENXIO: 'No such device or address',
  EBADF: 'Bad file descriptor',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied',
  EFAULT: 'Bad address',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  ENODEV: 'No such device',
  ENOTDIR: 'Not a directory',
  EISDIR: 'Is a directory',
  EINVAL: 'Invalid argument',
  ENFILE: 'Too many open files in system',
  EMFILE: 'Too many open files',
  ETXTBSY: 'Text file busy',
  EFBIG: 'File too large',
  ENOSPC: 'No space left on device',
  ESPIPE: 'Illegal seek',
  EROFS: 'Read-only file system',
  ENAMETOOLONG: 'File name too long',
  ELOOP: 'Too many levels of symbolic links',
  EOVERFLOW: 'Value too large for defined data type',
  ESTALE: 'Stale file handle',
  ETIMEDOUT: 'Connection timed out',
  EPIPE: 'Broken pipe',
  EMSGSIZE: 'Message too long',
  ENOTSOCK: 'Socket operation on non-socket',
  EADDRINUSE: 'Address already in use',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  ENETDOWN: 'Network is down',
  ENETUNREACH: 'Network is unreachable',
  ECONNABORTED: 'Software caused connection abort',
  ECONNRESET: 'Connection reset by peer',
  ECONNREFUSED: 'Connection refused',
  EHOSTDOWN: 'Host is down',
  EHOSTUNREACH: 'No route to host',
  EINPROGRESS: 'Operation now in progress',
  EPROTO: 'Protocol error',
};

/**
 * The glibc message for a Node system error or errno code name; undefined
 * means errno 0 ("Success"), errors without a code give their own message.
 */
export function strerror(err: unknown): string {
  if (err === undefined || err === null) return 'Success';
  const code = typeof err === 'string' ? err : (err as NodeJS.ErrnoException).code;
  if (code === undefined) return err instanceof Error ? err.message : String(err);
  return MESSAGES[code] ?? `Unknown error ${code}`;
}
