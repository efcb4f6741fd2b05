/**
 * The small notations inside tandem.yaml values: sizes, durations, host:port addresses, names,
 * database endpoints and table glob patterns. Every parser is pure and returns a `Parsed` result
 * instead of throwing, so the schema can collect every bad value in one pass. A failure's
 * `problem` describes the value only; the caller puts the file and field path in front of it.
 */

import { isIPv4, isIPv6 } from 'node:net';
import { resolve } from 'node:path';
import { type ConnectionOptions, parse as parsePgUrl } from 'pg-connection-string';

/** A parse result. `hint` (optional) says how to fix the value, ahead of the field's example. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string; hint?: string };

export function ok<T>(value: T): Parsed<T> {
  return { ok: true, value };
}

export function bad(problem: string, hint?: string): Parsed<never> {
  return hint === undefined ? { ok: false, problem } : { ok: false, problem, hint };
}

/** A value as a problem message shows it: strings quoted (and cut short), structures by kind. */
export function show(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (value === null || value === undefined) return 'an empty value';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return String(value);
}

// ---------------------------------------------------------------------------------------------
// Sizes and durations

const KiB = 1024;

/** Decimal units are powers of 1000, binary (`i`) units powers of 1024; case does not matter. */
const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: KiB,
  mib: KiB ** 2,
  gib: KiB ** 3,
  tib: KiB ** 4,
};

const SIZE_FORMS = 'a whole number of bytes, or a number with B, KB, MB, GB, TB, KiB, MiB, GiB or TiB';

/**
 * A size in bytes: `256MiB`, `1GiB`, `512KiB` (binary), `10MB`, `1GB` (decimal), `1000` or
 * `1000B` (bytes). A fraction is allowed with a unit (`1.5GiB`) and rounds to whole bytes.
 */
export function parseSize(value: unknown): Parsed<number> {
  if (typeof value === 'number') {
    return Number.isSafeInteger(value) && value >= 0 ? ok(value) : bad(`${value} is not ${SIZE_FORMS}`);
  }
  if (typeof value !== 'string') return bad(`must be a size such as 256MiB, not ${show(value)}`);
  const match = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(value.trim());
  if (!match) return bad(`${show(value)} is not a size: write ${SIZE_FORMS}`);
  const [, digits = '', unit = ''] = match;
  if (unit === '' && digits.includes('.')) return bad(`${show(value)} is not a whole number of bytes`);
  const factor = SIZE_UNITS[unit.toLowerCase() || 'b'];
  if (factor === undefined) {
    return bad(`${show(value)} has an unknown unit "${unit}": use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB`);
  }
  const bytes = Math.round(Number(digits) * factor);
  return Number.isSafeInteger(bytes) ? ok(bytes) : bad(`${show(value)} is too large`);
}

/** Lower case only, so `m` (minutes) can never be read as months. */
const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const DURATION_FORMS =
  'a number with ms, s, m, h or d (500ms, 5s, 2m, 1h, 1d), or a bare number of milliseconds';

/** A duration in milliseconds: `500ms`, `5s`, `2m`, `1h`, `1d` or a bare number of ms; fractions round. */
export function parseDuration(value: unknown): Parsed<number> {
  if (typeof value === 'number') {
    return Number.isFinite(value) && value >= 0
      ? ok(Math.round(value))
      : bad(`${value} is not ${DURATION_FORMS}`);
  }
  if (typeof value !== 'string') return bad(`must be a duration such as 5s, not ${show(value)}`);
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/.exec(value.trim());
  const factor = match ? DURATION_UNITS[match[2] || 'ms'] : undefined;
  if (!match || factor === undefined) return bad(`${show(value)} is not a duration: write ${DURATION_FORMS}`);
  const millis = Math.round(Number(match[1]) * factor);
  return Number.isSafeInteger(millis) ? ok(millis) : bad(`${show(value)} is too long`);
}

// ---------------------------------------------------------------------------------------------
// Addresses

/** A TCP address. `host` is an IPv4 address, a lower-case host name, or an IPv6 address without brackets. */
export interface Address {
  readonly host: string;
  readonly port: number;
}

/** RFC 1123 labels; `_` is tolerated because container and service names often use it. */
const HOSTNAME =
  /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** `host:port` with an IPv4 address or host name, or `[v6-address]:port`; the port is 1-65535. */
export function parseAddress(value: unknown): Parsed<Address> {
  if (typeof value !== 'string') return bad(`must be host:port (such as 127.0.0.1:7401), not ${show(value)}`);
  const text = value.trim();
  const bracketed = /^\[([^\]]*)\]:(.*)$/.exec(text);
  let host: string;
  let portText: string;
  if (bracketed) {
    host = (bracketed[1] ?? '').toLowerCase();
    portText = bracketed[2] ?? '';
    if (!isIPv6(host)) return bad(`${show(value)}: "${host}" is not an IPv6 address`);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0)
      return bad(`${show(value)} has no port: write host:port, such as ${text || '127.0.0.1'}:7401`);
    host = text.slice(0, colon).toLowerCase();
    portText = text.slice(colon + 1);
    if (host.includes(':'))
      return bad(`${show(value)}: an IPv6 address goes in brackets, such as [::1]:7401`);
    if (/^[\d.]+$/.test(host) && !isIPv4(host))
      return bad(`${show(value)}: "${host}" is not an IPv4 address`);
    if (!isIPv4(host) && !HOSTNAME.test(host)) return bad(`${show(value)}: "${host}" is not a host name`);
  }
  if (!/^\d{1,5}$/.test(portText)) return bad(`${show(value)}: the port must be a number from 1 to 65535`);
  const port = Number(portText);
  if (port < 1 || port > 65_535) return bad(`${show(value)}: port ${port} is outside 1-65535`);
  return ok({ host, port });
}

/** The inverse of parseAddress: `host:port`, with brackets around an IPv6 host. */
export function formatAddress(address: Address): string {
  return isIPv6(address.host) ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

// ---------------------------------------------------------------------------------------------
// Names

/** Cluster, node and group names: they appear in file names, metrics labels and URLs. */
const NAME_PATTERN = /^[a-z][a-z0-9_-]{0,62}$/;

const NAME_RULE =
  'a name is 1-63 characters: a lower-case letter, then lower-case letters, digits, "_" or "-"';

export function parseName(value: unknown): Parsed<string> {
  if (typeof value !== 'string') return bad(`must be a name such as east, not ${show(value)}`);
  if (NAME_PATTERN.test(value)) return ok(value);
  const lower = value.toLowerCase();
  return bad(
    `${show(value)} is not a valid name (${NAME_RULE})`,
    NAME_PATTERN.test(lower) ? `Write it in lower case: ${lower}` : undefined,
  );
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/** Where a group's data lives on one node. SQLite paths are absolute; Postgres URLs are kept as written. */
export type Endpoint =
  | { readonly engine: 'sqlite'; readonly path: string }
  | { readonly engine: 'postgres'; readonly url: string };

const ENDPOINT_FORMS =
  'sqlite:PATH (relative to the config file folder, or absolute), postgres://USER@HOST:PORT/DB or postgresql://USER@HOST:PORT/DB';

/** The database a Postgres URL names, as the driver reads it: `host` is a socket folder when it starts with `/`. */
export interface PgTarget {
  readonly host: string;
  readonly port: string;
  readonly database: string;
}

/**
 * A Postgres URL as the driver reads it (pg-connection-string), with libpq's meaning of
 * sslmode unless the URL chooses itself (the parser refuses the option then), so a URL means
 * here what it means to psql. libpq's forms are read too: a Unix socket as
 * `postgres://USER@/DB?host=/var/run/postgresql` or with the folder percent-encoded as the host.
 * Throws when the driver cannot read it.
 */
export function readPgUrl(url: string): ConnectionOptions {
  // libpq's sslmode=allow tries without TLS first; the driver has no such mode (it would take
  // the unknown value as verify-full), and does not fall back: without TLS.
  const read = url.replace(/([?&]sslmode=)allow(?=&|#|$)/, '$1disable');
  return parsePgUrl(read, /[?&]uselibpqcompat=/i.test(url) ? {} : { useLibpqCompat: true });
}

/** The database a Postgres URL names, or null when the driver cannot read the URL. */
export function pgTarget(url: string): (PgTarget & { readonly password: boolean }) | null {
  try {
    // Without the ssl settings (sslmode is checked on its own): the driver's parser reads the
    // certificate and key files they name, which exist on the node, not necessarily where the
    // config is checked (a CLI on another machine), and refuses verify-ca without them.
    const p = readPgUrl(url.replace(/([?&])ssl[a-z]*=[^&#]*/gi, '$1'));
    return {
      host: p.host ?? '',
      port: p.port ?? '',
      database: p.database ?? '',
      password: (p.password ?? '') !== '',
    };
  } catch {
    return null;
  }
}

/**
 * `sqlite:PATH` or a `postgres://` / `postgresql://` URL. Endpoint values are never echoed in
 * problems: a mistyped URL may hold a password. A Postgres URL must not carry one either, since
 * tandem.yaml is meant to be shareable; the driver reads PGPASSWORD or ~/.pgpass instead. It
 * must name its database (the driver would otherwise use the one named after the user), and an
 * sslmode must be libpq's, given once.
 */
export function parseEndpoint(value: unknown, baseDir: string): Parsed<Endpoint> {
  if (typeof value !== 'string') return bad(`must be an endpoint (${ENDPOINT_FORMS}), not ${show(value)}`);
  if (value.startsWith('sqlite:')) {
    const path = value.slice('sqlite:'.length);
    if (path === '') return bad('has no path after "sqlite:"');
    if (path === ':memory:') return bad('is an in-memory SQLite database, which cannot be replicated');
    if (path.startsWith('~')) return bad('starts with "~", which is not expanded', 'Write the full path');
    if (path.startsWith('//'))
      return bad(
        'is written as a URL; SQLite endpoints take a plain path',
        `Write sqlite:/absolute/path.db or sqlite:./relative.db`,
      );
    return ok({ engine: 'sqlite', path: resolve(baseDir, path) });
  }
  if (value.startsWith('postgres://') || value.startsWith('postgresql://')) {
    const target = pgTarget(value);
    if (target === null) {
      return bad(
        'is not a valid Postgres URL',
        'Write postgres://USER@HOST:PORT/DB (a port from 1 to 65535; percent-encode reserved characters), or postgres://USER@/DB?host=/var/run/postgresql for a Unix socket',
      );
    }
    if (target.password) {
      return bad(
        'contains a password',
        'Remove it and give the password through PGPASSWORD or ~/.pgpass on that node',
      );
    }
    if (target.database === '') {
      // The driver would connect to the database named after the user.
      return bad(
        'names no database',
        'Write postgres://USER@HOST:PORT/DB, or postgres://USER@/DB?host=/var/run/postgresql for a Unix socket',
      );
    }
    const params = queryParams(value);
    for (const [name] of params) {
      const why = UNSUPPORTED_PARAMS[name];
      if (why !== undefined || !URL_PARAMS.includes(name)) {
        return bad(
          why !== undefined
            ? `has parameter ${show(name)}, ${why}`
            : `has parameter ${show(name)}, which is not a PostgreSQL connection parameter`,
          why !== undefined && name === 'dbname'
            ? 'Write the database after the host: postgres://USER@HOST:PORT/DB'
            : `Remove it; the parameters Tandem's connections take are ${URL_PARAMS.join(', ')}`,
        );
      }
    }
    for (const [name, v] of params) {
      if (name === 'connect_timeout' && !/^\d+$/.test(v)) {
        return bad(
          `has connect_timeout ${show(v)}, which is not a whole number of seconds`,
          'Write connect_timeout=SECONDS (0 waits for ever), or leave it out (10 s)',
        );
      }
      const setting =
        name === 'options' ? DRIVER_SETTINGS.find((x) => new RegExp(`\\b${x}\\s*=`).test(v)) : undefined;
      if (setting) {
        return bad(
          `sets ${setting} in options, which would cut Tandem's long statements short (a seed's COPY, a large transaction's apply)`,
          'Remove it: Tandem sets its own timeouts',
        );
      }
    }
    const sslmode = params.filter(([name]) => name === 'sslmode').map(([, v]) => v);
    if (sslmode.length > 1) {
      return bad(`gives sslmode ${sslmode.length} times`, 'Give it once');
    }
    if (sslmode.length === 1 && !SSL_MODES.includes(sslmode[0]!)) {
      return bad(
        `has sslmode ${show(sslmode[0])}, which is not one of ${SSL_MODES.join(', ')}`,
        'Write one of them, in lower case, as libpq does',
      );
    }
    return ok({ engine: 'postgres', url: value });
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(value)?.[1];
  if (scheme && /^postgres(ql)?$/i.test(scheme)) {
    const lower = scheme.toLowerCase();
    return bad(
      value.startsWith(`${scheme}://`)
        ? `begins with "${scheme}://", which is not lower case`
        : `begins with "${scheme}:" without the two slashes of "${lower}://"`,
      `Write ${lower}://USER@HOST:PORT/DB, or ${lower}://USER@/DB?host=/var/run/postgresql for a Unix socket`,
    );
  }
  return bad(
    `${scheme ? `uses the unsupported engine "${scheme}"` : 'is not an endpoint'}; the accepted forms are ${ENDPOINT_FORMS}`,
  );
}

/** libpq's sslmode values (case-sensitive, as libpq compares them). */
const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

/**
 * The query parameters of a Postgres URL that the driver honours (libpq's names, and the
 * driver's `uselibpqcompat`). The driver passes others on as settings of its own (a
 * `statement_timeout` would cut a seed's COPY short) or drops them silently.
 */
const URL_PARAMS = [
  'host',
  'port',
  'user',
  'sslmode',
  'sslrootcert',
  'sslcert',
  'sslkey',
  'sslnegotiation',
  'connect_timeout',
  'application_name',
  'fallback_application_name',
  'options',
  'client_encoding',
  'uselibpqcompat',
];

/** Server settings that would cut Tandem's long statements short. */
const DRIVER_SETTINGS = [
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'transaction_timeout',
];

/**
 * libpq's other connection parameters, which libpq would honour and the driver does not, and
 * the driver's own settings, which are not libpq's.
 */
const UNSUPPORTED_PARAMS: Record<string, string> = Object.fromEntries([
  ['dbname', 'which the driver does not read (it takes the database from the path)'],
  ...[...DRIVER_SETTINGS, 'query_timeout'].map((name) => [
    name,
    "a setting of the PostgreSQL driver's own (not libpq's), which would cut Tandem's long statements short (a seed's COPY, a large transaction's apply)",
  ]),
  [
    'binary',
    "a setting of the PostgreSQL driver's own (not libpq's), which Tandem's value conversion does not expect",
  ],
  ...[
    'hostaddr',
    'passfile',
    'service',
    'require_auth',
    'channel_binding',
    'keepalives',
    'keepalives_idle',
    'keepalives_interval',
    'keepalives_count',
    'tcp_user_timeout',
    'replication',
    'gssencmode',
    'gsslib',
    'gssdelegation',
    'krbsrvname',
    'sslpassword',
    'sslcertmode',
    'sslcompression',
    'sslcrl',
    'sslcrldir',
    'sslsni',
    'ssl_min_protocol_version',
    'ssl_max_protocol_version',
    'min_protocol_version',
    'max_protocol_version',
    'requirepeer',
    'target_session_attrs',
    'load_balance_hosts',
  ].map((name) => [
    name,
    "a libpq parameter that Tandem's PostgreSQL driver (node-postgres) does not implement",
  ]),
]);

/** The URL's query parameters in order, read as the driver reads the query (URLSearchParams). */
function queryParams(url: string): [string, string][] {
  const q = url.indexOf('?');
  if (q < 0) return [];
  const end = url.indexOf('#', q);
  return [...new URLSearchParams(url.slice(q + 1, end < 0 ? undefined : end)).entries()];
}

// ---------------------------------------------------------------------------------------------
// Table patterns

/**
 * Glob patterns over SQL table names: `*` matches any run of characters (including none and
 * dots, so `*` also matches `schema.table`), `?` exactly one character, `[abc]` / `[a-z]` one
 * character from a set and `[!a-z]` / `[^a-z]` one character outside it. Everything else is
 * literal (`[*]` matches a literal star). A pattern must match the whole name, case-sensitively.
 */
function compileGlob(pattern: string): Parsed<RegExp> {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i] as string;
    if (char === '*') source += '.*';
    else if (char === '?') source += '.';
    else if (char === '[') {
      const close = pattern.indexOf(']', i + 2);
      if (close < 0) return bad(`${show(pattern)} has a "[" without a closing "]"`);
      let body = pattern.slice(i + 1, close);
      const negate = body.startsWith('!') || body.startsWith('^');
      if (negate) body = body.slice(1);
      if (body === '') return bad(`${show(pattern)} has an empty "[]" set`);
      // Inside a set only "-" between two characters is special; escape every other syntax character.
      source += `[${negate ? '^' : ''}${body.replace(/[\\\]^[]/g, '\\$&')}]`;
      i = close;
    } else source += char.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  try {
    return ok(new RegExp(`^${source}$`, 'su'));
  } catch {
    return bad(`${show(pattern)} has an invalid "[...]" set (a range such as z-a runs backwards)`);
  }
}

/** Validates a `tables` entry; the pattern itself is kept as text. */
export function parseGlob(value: unknown): Parsed<string> {
  if (typeof value !== 'string' || value.trim() === '') {
    return bad(`must be a table name or glob pattern such as "orders_*", not ${show(value)}`);
  }
  const compiled = compileGlob(value);
  return compiled.ok ? ok(value) : compiled;
}

/** The RegExp for a table pattern. Throws for a pattern parseGlob rejects (a loaded config has none). */
export function globToRegExp(pattern: string): RegExp {
  const compiled = compileGlob(pattern);
  if (!compiled.ok) throw new Error(`invalid table pattern: ${compiled.problem}`);
  return compiled.value;
}

/** Whether table `name` is selected by any of `patterns` (a group's `tables`). */
export function tableMatches(patterns: readonly string[], name: string): boolean {
  return patterns.some((pattern) => globToRegExp(pattern).test(name));
}

/** A plain table name (a `keys` entry): no glob characters and no surrounding spaces. */
export function parseTableName(value: string): Parsed<string> {
  if (value.trim() === '' || value.trim() !== value) return bad(`${show(value)} is not a table name`);
  if (/[*?[\]]/.test(value))
    return bad(`${show(value)} is a pattern; keys are given per table, by its plain name`);
  return ok(value);
}
