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

export { strerror } from '../util/strerror.js';
