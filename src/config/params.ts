/**
 * Parameter access for proxymapd: main.cf values, -o overrides and the
 * built-in defaults of Postfix 3.7.11 (as `postconf -d` reports them on
 * Debian), fully $-expanded on access.
 *
 * Precedence, as in a Postfix daemon: service_name (set by the daemon after
 * option parsing) > -o overrides > main.cf > values set before main.cf is
 * read (config_directory, process_name) > built-in defaults. Names without
 * any value are undefined and expand to the empty string.
 *
 * Postfix stores each registered default after expanding it; here defaults
 * are expanded lazily, like `postconf -x` does. Both give the same value
 * unless a default refers to a parameter the daemon never registers.
 */
import { hostname as osHostname } from 'node:os';
import { log } from '../log.js';
import { ConfigError } from './errors.js';
import { expandValue, MacroError, type MacroLookup } from './expand.js';
import { DEFAULT_CONFIG_DIR, readMainCf } from './maincf.js';
import { splitNameVal } from '../util/nameval.js';

/** Parameters named by the 3.7.11 default proxy_read_maps, in order. */
export const PROXY_READ_MAPS_3_7 = [
  'local_recipient_maps', 'mydestination', 'virtual_alias_maps', 'virtual_alias_domains',
  'virtual_mailbox_maps', 'virtual_mailbox_domains', 'relay_recipient_maps', 'relay_domains',
  'canonical_maps', 'sender_canonical_maps', 'recipient_canonical_maps', 'relocated_maps',
  'transport_maps', 'mynetworks', 'smtpd_sender_login_maps', 'sender_bcc_maps',
  'recipient_bcc_maps', 'smtp_generic_maps', 'lmtp_generic_maps', 'alias_maps',
  'smtpd_client_restrictions', 'smtpd_helo_restrictions', 'smtpd_sender_restrictions',
  'smtpd_relay_restrictions', 'smtpd_recipient_restrictions',
  'address_verify_sender_dependent_default_transport_maps',
  'address_verify_sender_dependent_relayhost_maps', 'address_verify_transport_maps',
  'fallback_transport_maps', 'lmtp_discard_lhlo_keyword_address_maps', 'lmtp_pix_workaround_maps',
  'lmtp_sasl_password_maps', 'lmtp_tls_policy_maps', 'mailbox_command_maps',
  'mailbox_transport_maps', 'postscreen_discard_ehlo_keyword_address_maps', 'rbl_reply_maps',
  'sender_dependent_default_transport_maps', 'sender_dependent_relayhost_maps',
  'smtp_discard_ehlo_keyword_address_maps', 'smtp_pix_workaround_maps', 'smtp_sasl_password_maps',
  'smtp_tls_policy_maps', 'smtpd_discard_ehlo_keyword_address_maps', 'smtpd_milter_maps',
  'virtual_gid_maps', 'virtual_uid_maps', 'local_login_sender_maps',
  'postscreen_reject_footer_maps', 'smtpd_reject_footer_maps', 'tls_server_sni_maps',
  'tlsproxy_client_policy_maps', 'default_delivery_status_filter', 'lmtp_delivery_status_filter',
  'lmtp_dns_reply_filter', 'lmtp_reply_filter', 'local_delivery_status_filter',
  'pipe_delivery_status_filter', 'postscreen_command_filter', 'smtp_delivery_status_filter',
  'smtp_dns_reply_filter', 'smtp_reply_filter', 'smtpd_command_filter', 'smtpd_dns_reply_filter',
  'virtual_delivery_status_filter', 'body_checks', 'header_checks', 'lmtp_body_checks',
  'lmtp_header_checks', 'lmtp_mime_header_checks', 'lmtp_nested_header_checks',
  'milter_header_checks', 'mime_header_checks', 'nested_header_checks', 'smtp_body_checks',
  'smtp_header_checks', 'smtp_mime_header_checks', 'smtp_nested_header_checks',
] as const;

/** Parameters named by the 3.7.11 default proxy_write_maps, in order. */
export const PROXY_WRITE_MAPS_3_7 = [
  'smtp_sasl_auth_cache_name', 'lmtp_sasl_auth_cache_name', 'address_verify_map',
  'postscreen_cache_map',
] as const;

/** Default used when the host name has no domain part (DEF_MYDOMAIN). */
const DEF_MYDOMAIN = 'localdomain';

/** Built-in defaults with a non-empty or otherwise notable value (3.7.11, Debian build). */
const NOTABLE_DEFAULTS: Record<string, string> = {
  // proxymap's authorization lists
  proxy_read_maps: PROXY_READ_MAPS_3_7.map((n) => '$' + n).join(' '),
  proxy_write_maps: PROXY_WRITE_MAPS_3_7.map((n) => '$' + n).join(' '),

  // tables and lists referenced by the lists above
  address_verify_map: 'btree:$data_directory/verify_cache',
  address_verify_sender_dependent_default_transport_maps: '$sender_dependent_default_transport_maps',
  address_verify_sender_dependent_relayhost_maps: '$sender_dependent_relayhost_maps',
  address_verify_transport_maps: '$transport_maps',
  alias_maps: 'hash:/etc/aliases, nis:mail.aliases',
  local_login_sender_maps: 'static:*',
  local_recipient_maps: 'proxy:unix:passwd.byname $alias_maps',
  mime_header_checks: '$header_checks',
  nested_header_checks: '$header_checks',
  postscreen_cache_map: 'btree:$data_directory/postscreen_cache',
  postscreen_discard_ehlo_keyword_address_maps: '$smtpd_discard_ehlo_keyword_address_maps',
  postscreen_reject_footer_maps: '$smtpd_reject_footer_maps',
  smtpd_relay_restrictions:
    '${{$compatibility_level} <level {1} ? {} : ' +
    '{permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination}}',
  tlsproxy_client_policy_maps: '${tlsproxy_client_policy:$smtp_tls_policy_maps}',
  virtual_alias_domains: '$virtual_alias_maps',
  virtual_alias_maps: '$virtual_maps',
  virtual_mailbox_domains: '$virtual_mailbox_maps',
  lmtp_delivery_status_filter: '$default_delivery_status_filter',
  local_delivery_status_filter: '$default_delivery_status_filter',
  pipe_delivery_status_filter: '$default_delivery_status_filter',
  smtp_delivery_status_filter: '$default_delivery_status_filter',
  virtual_delivery_status_filter: '$default_delivery_status_filter',
  // Referenced by the defaults above.
  virtual_maps: '',
  tlsproxy_client_policy: '',

  // domains and networks
  mydestination: '$myhostname, localhost.$mydomain, localhost',
  relay_domains: '${{$compatibility_level} <level {2} ? {$mydestination} : {}}',
  // Postfix computes mynetworks from mynetworks_style and the local
  // interfaces. It is a list of networks and never names a proxy: table,
  // so an empty default does not change the authorized tables.
  mynetworks: '',
  mynetworks_style: '${{$compatibility_level} <level {2} ? {subnet} : {host}}',
  myorigin: '$myhostname',

  // restrictions and commands (3.12's proxymap scans these too)
  smtpd_restriction_classes: '',
  smtpd_forbidden_commands: 'CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}',
  postscreen_forbidden_commands: '$smtpd_forbidden_commands',

  // compatibility and character set
  compatibility_level: '0',
  smtputf8_enable: '${{$compatibility_level} <level {1} ? {no} : {yes}}',
  enable_idna2003_compatibility: 'no',

  // installation and identity
  config_directory: DEFAULT_CONFIG_DIR,
  queue_directory: '/var/spool/postfix',
  daemon_directory: '/usr/lib/postfix/sbin',
  data_directory: '/var/lib/postfix',
  command_directory: '/usr/sbin',
  meta_directory: '/etc/postfix',
  shlib_directory: '/usr/lib/postfix',
  mail_owner: 'postfix',
  mail_name: 'Postfix',
  mail_version: '3.7.11',
  multi_instance_name: '',
  syslog_name: '${multi_instance_name?{$multi_instance_name}:{postfix}}',
  syslog_facility: 'mail',
  maillog_file: '',
  postlog_service_name: 'postlog',
  import_environment:
    'MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME',
  export_environment: 'TZ MAIL_CONFIG LANG',
  proxymap_service_name: 'proxymap',
  proxywrite_service_name: 'proxywrite',

  // process management and timers
  ipc_timeout: '3600s',
  ipc_idle: '5s',
  ipc_ttl: '1000s',
  max_idle: '100s',
  max_use: '100',
  daemon_timeout: '18000s',
  line_length_limit: '2048',
  default_process_limit: '100',
  service_throttle_time: '60s',

  // table implementation settings
  default_database_type: 'hash',
  lmdb_map_size: '16777216',
  berkeley_db_create_buffer_size: '16777216',
  berkeley_db_read_buffer_size: '131072',
};

/**
 * All built-in (unexpanded) defaults: every parameter the default proxy maps
 * lists refer to (empty unless noted) plus the notable ones. myhostname and
 * mydomain are computed (see Config) and not listed here.
 */
export const BUILTIN_DEFAULTS: ReadonlyMap<string, string> = new Map<string, string>([
  ...[...PROXY_READ_MAPS_3_7, ...PROXY_WRITE_MAPS_3_7].map((n): [string, string] => [n, '']),
  ...Object.entries(NOTABLE_DEFAULTS),
]);

/** Parameters whose default is computed at run time (see defaultValue). */
const COMPUTED = new Set(['myhostname', 'mydomain']);

/** Text of the fatal error Postfix reports when main.cf expansion fails. */
export const MACRO_PROCESSING_ERROR = 'dictionary mail_dict: macro processing error';

export interface ConfigOptions {
  /** Configuration directory; also the value of config_directory. Default /etc/postfix. */
  configDir?: string;
  /** -o overrides: "name=value" option arguments or name/value pairs. */
  overrides?: Iterable<string> | ReadonlyMap<string, string>;
  /** process_name, set before main.cf is read (main.cf may override it). */
  processName?: string;
  /** service_name, set after option processing (overrides everything). */
  serviceName?: string;
  /** System host name used for the myhostname default. Default os.hostname(). */
  hostname?: string;
  /** Warning sink for expansion errors and main.cf warnings. Default log.warn. */
  warn?: (msg: string) => void;
}

/** Parse "-o name=value" option arguments (multi_server.c). */
function parseOverrides(
  overrides: Iterable<string> | ReadonlyMap<string, string> | undefined,
): Map<string, string> {
  const out = new Map<string, string>();
  if (overrides === undefined) return out;
  if (overrides instanceof Map) {
    for (const [k, v] of overrides as ReadonlyMap<string, string>) out.set(k, v);
    return out;
  }
  for (const arg of overrides as Iterable<string>) {
    const nv = splitNameVal(arg);
    if ('error' in nv) throw new ConfigError(`invalid "-o ${arg}" option value: ${nv.error}`);
    out.set(nv.name, nv.value);
  }
  return out;
}

/** strtol(3) base 10 over a whole JS string: value and index where parsing stopped. */
function strtol(s: string): { value: number; end: number } {
  const m = /^[ \t\n\v\f\r]*([+-]?[0-9]+)/.exec(s);
  if (!m) return { value: 0, end: 0 };
  return { value: Number(m[1]), end: m[0].length };
}

const INT_MAX = 2 ** 31 - 1;
const INT_MIN = -(2 ** 31);
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/**
 * Convert a time value to seconds (conv_time): a non-negative number with an
 * optional unit letter s, m, h, d or w; defUnit applies when there is none.
 * Undefined when invalid or out of range.
 */
export function convTime(str: string, defUnit = 's'): number | undefined {
  const { value, end } = strtol(str);
  if (str.length === 0 || value < 0 || value > INT_MAX) return undefined;
  // Only the first character after the number is the unit (as in Postfix).
  const unit = end < str.length ? str[end] : defUnit;
  const mult = UNIT_SECONDS[unit];
  if (mult === undefined) return undefined;
  if (mult > 1 && value >= Math.floor(INT_MAX / mult)) return undefined;
  return value * mult;
}

/** Main configuration of one proxymapd process. Immutable after construction. */
export class Config {
  /** Directory main.cf was read from (or the configured one for in-memory configs). */
  readonly configDir: string;
  private readonly mainCf: ReadonlyMap<string, string>;
  private readonly overrides: ReadonlyMap<string, string>;
  private readonly early: ReadonlyMap<string, string>;
  private readonly serviceName: string | undefined;
  private readonly hostname: string;
  private readonly warn: (msg: string) => void;
  private readonly cache = new Map<string, string>();
  /** computed defaults under evaluation (guards against self-reference) */
  private readonly computing = new Set<string>();

  /** Build from already-parsed main.cf entries (tests, or a caller that read main.cf itself). */
  constructor(mainCf: ReadonlyMap<string, string>, opts: ConfigOptions = {}) {
    this.configDir = opts.configDir ?? DEFAULT_CONFIG_DIR;
    this.mainCf = new Map(mainCf);
    this.overrides = parseOverrides(opts.overrides);
    const early = new Map<string, string>([['config_directory', this.configDir]]);
    if (opts.processName !== undefined) early.set('process_name', opts.processName);
    this.early = early;
    this.serviceName = opts.serviceName;
    this.hostname = opts.hostname ?? osHostname();
    this.warn = opts.warn ?? log.warn;
  }

  /** Read DIR/main.cf and build a Config. Throws ConfigError when main.cf is missing or bad. */
  static load(configDir: string, opts: Omit<ConfigOptions, 'configDir'> = {}): Config {
    const warn = opts.warn ?? log.warn;
    return new Config(readMainCf(configDir, warn), { ...opts, configDir, warn });
  }

  /** Build from name/value pairs (convenience for tests). */
  static fromEntries(
    entries: Record<string, string> | Iterable<[string, string]>,
    opts: ConfigOptions = {},
  ): Config {
    const map = new Map<string, string>(
      Symbol.iterator in Object(entries)
        ? (entries as Iterable<[string, string]>)
        : Object.entries(entries as Record<string, string>),
    );
    return new Config(map, opts);
  }

  /** Whether the parameter has a value (explicit or built-in default). */
  has(name: string): boolean {
    return this.raw(name) !== undefined;
  }

  /** The unexpanded value, or undefined when the parameter is not defined. */
  raw(name: string): string | undefined {
    return this.explicit(name) ?? this.defaultValue(name);
  }

  /** The fully expanded value; "" for undefined parameters. Throws ConfigError on expansion errors. */
  get(name: string): string {
    const cached = this.cache.get(name);
    if (cached !== undefined) return cached;
    const raw = this.raw(name);
    const value = raw === undefined ? '' : this.expand(raw);
    // Values computed while a self-referencing default is being resolved are partial.
    if (this.computing.size === 0) this.cache.set(name, value);
    return value;
  }

  /** The expanded value, or undefined when not defined (for table code). */
  lookup(name: string): string | undefined {
    return this.has(name) ? this.get(name) : undefined;
  }

  /** Expand $name references in text against this configuration. */
  expand(text: string, lookup: MacroLookup = (n) => this.raw(n)): string {
    try {
      return expandValue(text, lookup);
    } catch (err) {
      if (!(err instanceof MacroError)) throw err;
      this.warn(err.message);
      throw new ConfigError(MACRO_PROCESSING_ERROR, { cause: err });
    }
  }

  /**
   * A time value in seconds. Units s, m, h, d, w; a bare number uses
   * defUnit. `fallback` applies when the parameter is not defined.
   */
  getTime(name: string, defUnit = 's', fallback?: number): number {
    if (fallback !== undefined && !this.has(name)) return fallback;
    const v = this.get(name);
    const t = convTime(v, defUnit);
    if (t === undefined) throw new ConfigError(`parameter ${name}: bad time value or unit: ${v}`);
    return t;
  }

  /** An integer value (C int range). `fallback` applies when the parameter is not defined. */
  getInt(name: string, fallback?: number): number {
    if (fallback !== undefined && !this.has(name)) return fallback;
    const v = this.get(name);
    const { value, end } = strtol(v);
    if (v.length === 0 || end !== v.length || value > INT_MAX || value < INT_MIN) {
      throw new ConfigError(`bad numerical configuration: ${name} = ${v}`);
    }
    return value;
  }

  /** A yes/no value (case-insensitive). `fallback` applies when the parameter is not defined. */
  getBool(name: string, fallback?: boolean): boolean {
    if (fallback !== undefined && !this.has(name)) return fallback;
    const v = this.get(name);
    const lower = v.replace(/[A-Z]/g, (c) => c.toLowerCase());
    if (lower === 'yes') return true;
    if (lower === 'no') return false;
    throw new ConfigError(`bad boolean configuration: ${name} = ${v}`);
  }

  /** Whether SMTPUTF8 support (UTF-8 keys, UTF-8 case folding) is enabled. */
  smtputf8(): boolean {
    return this.getBool('smtputf8_enable');
  }

  /** Names with an explicit value (main.cf, -o, early settings), sorted. */
  explicitNames(): string[] {
    const names = new Set<string>([...this.early.keys(), ...this.mainCf.keys(), ...this.overrides.keys()]);
    if (this.serviceName !== undefined) names.add('service_name');
    return [...names].sort();
  }

  /** Value from service_name, -o, main.cf or the settings made before main.cf. */
  private explicit(name: string): string | undefined {
    if (name === 'service_name' && this.serviceName !== undefined) return this.serviceName;
    return this.overrides.get(name) ?? this.mainCf.get(name) ?? this.early.get(name);
  }

  /** Built-in default, computing myhostname and mydomain as mail_params.c does. */
  private defaultValue(name: string): string | undefined {
    if (!COMPUTED.has(name)) return BUILTIN_DEFAULTS.get(name);
    if (this.computing.has(name)) return undefined;
    this.computing.add(name);
    try {
      return name === 'myhostname' ? this.defaultHostname() : this.defaultDomain();
    } finally {
      this.computing.delete(name);
    }
  }

  /**
   * myhostname: the system host name; without a dot, ".$mydomain" is
   * appended, where mydomain counts only when set explicitly (its own
   * default derives from myhostname) and "localdomain" otherwise.
   */
  private defaultHostname(): string {
    if (this.hostname.includes('.')) return this.hostname;
    const explicitDomain = this.explicit('mydomain');
    if (explicitDomain === undefined) return `${this.hostname}.${DEF_MYDOMAIN}`;
    // At this point in Postfix neither myhostname nor mydomain has a default yet.
    const domain = this.expand(explicitDomain, (n) =>
      COMPUTED.has(n) ? this.explicit(n) : this.raw(n),
    );
    return `${this.hostname}.${domain}`;
  }

  /** mydomain: what follows the first dot of $myhostname, else "localdomain". */
  private defaultDomain(): string {
    const host = this.get('myhostname');
    const dot = host.indexOf('.');
    return dot < 0 ? DEF_MYDOMAIN : host.slice(dot + 1);
  }
}
