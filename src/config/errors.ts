/**
 * Error types of the configuration layer.
 *
 * Postfix treats both kinds as fatal (msg_fatal); we throw instead so that the
 * caller decides how to die. The message text follows Postfix's wording.
 */

/** A main.cf syntax error, an unreadable main.cf, or a bad parameter value. */
export class ConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ConfigError';
  }
}

/**
 * A $name expansion error (mac_expand/mac_parse warnings that set
 * MAC_PARSE_ERROR). The message is the text Postfix logs as a warning.
 */
export class MacroError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MacroError';
  }
}

/** strerror(3) text for the errno codes that file access commonly reports (glibc wording). */
const STRERROR: Record<string, string> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  ELOOP: 'Too many levels of symbolic links',
  EMFILE: 'Too many open files',
  ENFILE: 'Too many open files in system',
  ENAMETOOLONG: 'File name too long',
  EIO: 'Input/output error',
  ENXIO: 'No such device or address',
};

/** Render a Node.js file-system error the way Postfix's %m would. */
export function strerror(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code && STRERROR[code]) return STRERROR[code];
  return err instanceof Error ? err.message : String(err);
}
