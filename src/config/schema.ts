/**
 * What a valid tandem.yaml is: the normalized types the rest of Tandem is written against, the
 * zod schema that checks and normalizes every field, and the rules that relate fields to each
 * other (a group's primary must be a node, addresses must not collide, ...).
 *
 * Validation reports every problem in one pass. Field rules run in zod, which checks each field
 * even when a sibling is wrong. Cross-field rules run on the raw document instead of zod's
 * output (which exists only once every field is right): each rule re-parses the few values it
 * compares and skips the ones that are broken, since those already have their own problem.
 */

import { dirname, resolve } from 'node:path';
// Named imports, not the `z` namespace: the bundle then leaves out what is not used (zod's 40-odd
// locales and its JSON Schema code, most of a megabyte to compile at every start).
import { unknown as anyValue, array, type core, looseObject, NEVER, record, string } from 'zod';
import { TandemError } from '../core/errors.js';
import { SecretRef } from './secret.js';
import {
  type Address,
  bad,
  type Endpoint,
  formatAddress,
  ok,
  type Parsed,
  parseAddress,
  parseDuration,
  parseEndpoint,
  parseGlob,
  parseName,
  parseSize,
  parseTableName,
  pgTarget,
  show,
  tableMatches,
} from './units.js';

export type { Address, Endpoint };

// ---------------------------------------------------------------------------------------------
// The loaded config

export interface NodeConfig {
  readonly name: string;
  /** Where peers reach this node's replication link. */
  readonly listen: Address;
  /** Where the CLI reaches this node's admin API. */
  readonly admin: Address;
  /** Absolute path of the node's state folder (journal, metadata). */
  readonly state: string;
}

export interface GroupConfig {
  readonly name: string;
  readonly kind: 'sql';
  readonly mode: 'async' | 'sync';
  /** The node whose endpoint takes writes; every other endpoint is a backup. */
  readonly primary: string;
  /** Node name to that node's database. Holds the primary and at least one other node. */
  readonly endpoints: Readonly<Record<string, Endpoint>>;
  /** Glob patterns selecting the replicated tables (see tableMatches). */
  readonly tables: readonly string[];
  /** Table name to the columns that identify a row, for tables without a primary key. */
  readonly keys: Readonly<Record<string, readonly string[]>>;
  /** With mode sync: how long a commit waits for a target, and whether it then degrades to async. */
  readonly sync: {
    readonly timeoutMs: number;
    readonly degrade: boolean;
    /**
     * PostgreSQL primary: Tandem adds its capture connection to the server's
     * synchronous_standby_names itself (ALTER SYSTEM, reload) instead of asking the DBA to.
     */
    readonly configureServer: boolean;
  };
  /**
   * Journal history kept after every target has applied it, so a backup that falls behind or
   * rejoins can catch up without a new seed: at least the newest keepBytes, and everything
   * sealed less than keepMillis ago.
   */
  readonly retention: {
    readonly keepBytes: number;
    readonly keepMillis: number;
    /**
     * Upper bound on the journal's size (0: none). Past it the oldest segments are released even
     * if a backup still needs them; that backup is then reseeded. Protects the disk from a
     * backup that stays away.
     */
    readonly maxBytes: number;
    /** Size at which the journal starts a new segment file (the unit retention deletes). */
    readonly segmentBytes: number;
  };
  /** Seeding a backup from a snapshot of the primary. */
  readonly seed: {
    /** Chunks copied at once (source connections reading, target connections writing). */
    readonly workers: number;
    /**
     * A backup table holding rows Tandem did not put there is verified against the primary and
     * seeding stops if they differ; with overwrite it is replaced by the primary's rows instead.
     */
    readonly overwrite: boolean;
  };
  /** Applying on a backup. */
  readonly apply: {
    /**
     * Connections a PostgreSQL backup applies on: source transactions touching different rows
     * run on different connections at once, those sharing a row keep source order (a SQLite
     * backup has one writer).
     */
    readonly workers: number;
  };
  /** Planned switchovers (`tandem switchover`). */
  readonly switchover: {
    /** How long fencing may take: waiting for the write lock (SQLite), ending writers (PostgreSQL). */
    readonly fenceTimeoutMs: number;
    /** How long the new primary may take to apply everything up to the fence. */
    readonly drainTimeoutMs: number;
    /** Compare row counts and checksums of every table before promoting. */
    readonly verify: boolean;
    /** PostgreSQL roles, besides Tandem's, that the fence neither refuses nor ends. */
    readonly exceptRoles: readonly string[];
  };
  /** Failover: who decides the primary is gone (docs/failover.md). */
  readonly failover: {
    /** A node (holding no data of the group) that holds the primary's lease: the quorum's third vote. */
    readonly witness: string | null;
    /** Or an etcd cluster holding the lease (keys under `prefix`). */
    readonly etcd: { readonly endpoints: readonly string[]; readonly prefix: string } | null;
    /** A backup takes over by itself once the witness agrees the primary is gone. */
    readonly auto: boolean;
    /** The lease: how long the primary may be unheard of before it is taken for gone. */
    readonly timeoutMs: number;
  };
  /** How clients learn of a new primary: run after every switchover and failover. */
  readonly reroute: {
    /** A shell command, given the new primary in TANDEM_* variables. */
    readonly command: string | null;
    /** An http(s) URL that receives a POST with the new primary as JSON. */
    readonly webhook: string | null;
    readonly timeoutMs: number;
  };
  /** Limits for one batch of records on the link. */
  readonly batch: { readonly maxRecords: number; readonly maxBytes: number };
  readonly compression: 'deflate' | 'none';
}

/** How links between nodes are protected; exactly one mode is configured. */
export type SecurityConfig =
  | { readonly mode: 'psk'; readonly secret: SecretRef }
  | { readonly mode: 'tls'; readonly ca: string; readonly cert: string; readonly key: string }
  | { readonly mode: 'plaintext' };

export interface Config {
  /** Absolute path of the config file. */
  readonly file: string;
  /** Its folder: relative paths in the file were resolved against it. */
  readonly dir: string;
  readonly cluster: string;
  readonly security: SecurityConfig;
  readonly nodes: Readonly<Record<string, NodeConfig>>;
  readonly groups: Readonly<Record<string, GroupConfig>>;
}

/** Values of the optional group fields when the file leaves them out. */
export const DEFAULTS = Object.freeze({
  sync: Object.freeze({ timeoutMs: 5_000, degrade: false, configureServer: false }),
  retention: Object.freeze({
    keepBytes: 256 * 1024 ** 2,
    keepMillis: 3_600_000,
    maxBytes: 0,
    segmentBytes: 64 * 1024 ** 2,
  }),
  seed: Object.freeze({ workers: 2, overwrite: false }),
  apply: Object.freeze({ workers: 4 }),
  switchover: Object.freeze({ fenceTimeoutMs: 10_000, drainTimeoutMs: 30_000, verify: false }),
  reroute: Object.freeze({ timeoutMs: 10_000 }),
  failover: Object.freeze({ timeoutMs: 3_000 }),
  batch: Object.freeze({ maxRecords: 512, maxBytes: 1024 ** 2 }),
  compression: 'deflate' as const,
});

/** The groups `node` has an endpoint in, in file order. Throws NODE_UNKNOWN for a name not in `nodes`. */
export function groupsOfNode(config: Config, node: string): GroupConfig[] {
  if (!Object.hasOwn(config.nodes, node)) {
    const names = Object.keys(config.nodes);
    throw new TandemError(
      'NODE_UNKNOWN',
      `${config.file}: there is no node "${node}" (nodes: ${names.join(', ')})`,
      `Use one of the nodes in the config, e.g. ${closest(node, names) ?? names[0]}`,
    );
  }
  return Object.values(config.groups).filter((group) => Object.hasOwn(group.endpoints, node));
}

// ---------------------------------------------------------------------------------------------
// Problems

/** One thing wrong with the file: where (a path into the document), what, and how to fix it. */
export interface Problem {
  readonly path: readonly (string | number)[];
  readonly message: string;
  readonly fix: string;
}

/**
 * A right value for every field, keyed by path pattern (`*` stands for a node, group or table
 * name, or a list index). Every problem's fix ends with the example for its field.
 */
const EXAMPLES: Readonly<Record<string, string>> = {
  cluster: 'cluster: demo',
  security: 'security: { secret: env:TANDEM_SECRET }',
  'security.secret': 'secret: env:TANDEM_SECRET',
  'security.tls': 'tls: { ca: ./tls/ca.pem, cert: ./tls/node.pem, key: ./tls/node.key }',
  'security.tls.ca': 'ca: ./tls/ca.pem',
  'security.tls.cert': 'cert: ./tls/node.pem',
  'security.tls.key': 'key: ./tls/node.key',
  'security.plaintext': 'plaintext: true',
  nodes: 'nodes: { east: { listen: 127.0.0.1:7401, admin: 127.0.0.1:7501, state: ./state/east } }',
  'nodes.*': 'east: { listen: 127.0.0.1:7401, admin: 127.0.0.1:7501, state: ./state/east }',
  'nodes.*.listen': 'listen: 127.0.0.1:7401',
  'nodes.*.admin': 'admin: 127.0.0.1:7501',
  'nodes.*.state': 'state: ./state/east',
  groups: 'groups: { shop: { kind: sql, mode: async, primary: east, endpoints: { ... }, tables: ["*"] } }',
  'groups.*':
    'shop: { kind: sql, mode: async, primary: east, endpoints: { east: sqlite:./data/east.db, west: sqlite:./data/west.db }, tables: ["*"] }',
  'groups.*.kind': 'kind: sql',
  'groups.*.mode': 'mode: async',
  'groups.*.primary': 'primary: east',
  'groups.*.endpoints':
    'endpoints: { east: sqlite:./data/east.db, west: postgres://tandem@db-west:5432/shop }',
  'groups.*.endpoints.*': 'west: sqlite:./data/west.db, or west: postgres://tandem@db-west:5432/shop',
  'groups.*.tables': 'tables: ["*"]',
  'groups.*.tables.*': 'tables: ["orders", "order_*"]',
  'groups.*.keys': 'keys: { audit_log: [id, at] }',
  'groups.*.keys.*': 'audit_log: [id, at]',
  'groups.*.keys.*.*': 'audit_log: [id, at]',
  'groups.*.sync': 'sync: { timeout: 5s, degrade: false }',
  'groups.*.sync.timeout': 'timeout: 5s',
  'groups.*.sync.degrade': 'degrade: false',
  'groups.*.sync.configure_server': 'configure_server: true',
  'groups.*.retention': 'retention: { keep_bytes: 256MiB, keep_time: 1h }',
  'groups.*.retention.keep_bytes': 'keep_bytes: 256MiB',
  'groups.*.retention.keep_time': 'keep_time: 1h',
  'groups.*.retention.max_bytes': 'max_bytes: 20GiB',
  'groups.*.retention.segment_size': 'segment_size: 64MiB',
  'groups.*.seed': 'seed: { workers: 2, overwrite: false }',
  'groups.*.seed.workers': 'workers: 2',
  'groups.*.seed.overwrite': 'overwrite: false',
  'groups.*.apply': 'apply: { workers: 4 }',
  'groups.*.apply.workers': 'workers: 4',
  'groups.*.switchover': 'switchover: { fence_timeout: 10s, drain_timeout: 30s, verify: false }',
  'groups.*.switchover.fence_timeout': 'fence_timeout: 10s',
  'groups.*.switchover.drain_timeout': 'drain_timeout: 30s',
  'groups.*.switchover.verify': 'verify: true',
  'groups.*.switchover.except_roles': 'except_roles: [monitoring]',
  'groups.*.switchover.except_roles.*': 'except_roles: [monitoring]',
  'groups.*.failover': 'failover: { witness: arbiter, auto: true, timeout: 3s }',
  'groups.*.failover.witness': 'witness: arbiter',
  'groups.*.failover.auto': 'auto: true',
  'groups.*.failover.etcd': 'etcd: { endpoints: [http://10.0.1.20:2379], prefix: /tandem }',
  'groups.*.failover.etcd.endpoints': 'endpoints: [http://10.0.1.20:2379]',
  'groups.*.failover.etcd.endpoints.*': 'endpoints: [http://10.0.1.20:2379]',
  'groups.*.failover.etcd.prefix': 'prefix: /tandem',
  'groups.*.failover.timeout': 'timeout: 3s',
  'groups.*.reroute': 'reroute: { command: ./move-clients.sh, webhook: https://lb.internal/tandem }',
  'groups.*.reroute.command': 'command: ./move-clients.sh',
  'groups.*.reroute.webhook': 'webhook: https://lb.internal/tandem',
  'groups.*.reroute.timeout': 'timeout: 10s',
  'groups.*.batch': 'batch: { max_records: 512, max_bytes: 1MiB }',
  'groups.*.batch.max_records': 'max_records: 512',
  'groups.*.batch.max_bytes': 'max_bytes: 1MiB',
  'groups.*.compression': 'compression: deflate',
};

/** `Example: ...` for the field at `path`, or for its nearest ancestor that has one. */
function exampleFor(path: readonly (string | number)[]): string {
  for (let length = path.length; length > 0; length--) {
    const segments = path.slice(0, length).map(String);
    const pattern = Object.keys(EXAMPLES).find((candidate) => {
      const parts = candidate.split('.');
      return (
        parts.length === segments.length && parts.every((part, i) => part === '*' || part === segments[i])
      );
    });
    if (pattern !== undefined) return `Example: ${EXAMPLES[pattern]}`;
  }
  return 'docs/config.md has a complete example file';
}

function problem(path: readonly (string | number)[], message: string, hint?: string): Problem {
  return { path, message, fix: hint ? sentences(hint, exampleFor(path)) : exampleFor(path) };
}

/** Two sentences in a row; the first may already end with its own stop (`Did you mean \`x\`?`). */
export function sentences(first: string, second: string): string {
  return /[.?!]$/.test(first) ? `${first} ${second}` : `${first}. ${second}`;
}

/** `groups.shop.tables[0]`; a key that is not a plain word is quoted: `nodes["East Coast"]`. */
export function formatPath(path: readonly (string | number)[]): string {
  return path
    .map((segment, i) => {
      if (typeof segment === 'number') return `[${segment}]`;
      if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(segment)) return `[${JSON.stringify(segment)}]`;
      return i === 0 ? segment : `.${segment}`;
    })
    .join('');
}

/**
 * The candidate nearest to `word` (ignoring case) within 2 edits, counting a swap of two
 * neighbouring letters as one edit; none when the nearest is further or the word is too short
 * for the suggestion to mean anything.
 */
function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance && distance < Math.max(word.length, 2)) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
function editDistance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number): number => rows[i]?.[j] ?? 0;
  for (let i = 1; i <= a.length; i++) {
    const row = rows[i] as number[];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(at(i, j), at(i - 2, j - 2) + 1);
      }
    }
  }
  return at(a.length, b.length);
}

// ---------------------------------------------------------------------------------------------
// Field rules (zod)

type Parse<T> = (value: unknown) => Parsed<T>;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A scalar field parsed by `parse`. Leaving it out, or leaving it empty (`field:` with nothing
 * after it), gives `whenAbsent()`; without `whenAbsent` the field is required.
 */
function field<T>(parse: Parse<T>, whenAbsent?: () => T) {
  return anyValue()
    .optional()
    .transform((value, ctx): T => {
      if (value === undefined || value === null) {
        if (whenAbsent) return whenAbsent();
        ctx.addIssue({ code: 'custom', message: value === null ? 'is empty' : 'is missing' });
        return NEVER;
      }
      const parsed = parse(value);
      if (parsed.ok) return parsed.value;
      ctx.addIssue({ code: 'custom', message: parsed.problem, params: { hint: parsed.hint } });
      return NEVER;
    });
}

/** A mapping with fixed fields. An unknown field is a problem (with a did-you-mean hint). */
function section<Shape extends core.$ZodLooseShape>(shape: Shape) {
  const known = Object.keys(shape);
  return looseObject(shape).superRefine(
    (value, ctx) => {
      for (const key of Object.keys(value)) {
        if (!known.includes(key)) {
          ctx.addIssue({ code: 'custom', path: [key], message: 'unknown field', params: { known } });
        }
      }
    },
    // Run even when a known field is wrong, so misspelled keys are reported in the same pass.
    { when: (payload) => isRecord(payload.value) },
  );
}

/** An optional mapping: leaving it out or empty is the same as `{}` (so its fields take their defaults). */
function orEmpty<Schema extends core.$ZodType<unknown, unknown>>(schema: Schema) {
  return anyValue()
    .optional()
    .transform((value): unknown => value ?? {})
    .pipe(schema);
}

/**
 * A mapping from names (checked by `parse`) to values. A bad name is its own problem: the value
 * under it is still checked, so its problems are reported in the same pass.
 */
function namedMap<Value extends core.$ZodType>(parse: (key: string) => Parsed<string>, value: Value) {
  return record(string(), value).superRefine(
    (record, ctx) => {
      for (const key of Object.keys(record)) {
        const parsed = parse(key);
        if (!parsed.ok) {
          ctx.addIssue({
            code: 'custom',
            path: [key],
            message: parsed.problem,
            params: { hint: parsed.hint },
          });
        }
      }
    },
    { when: (payload) => isRecord(payload.value) },
  );
}

function mapValues<T, U>(record: Record<string, T>, fn: (key: string, value: T) => U): Record<string, U> {
  return Object.fromEntries(Object.entries(record).map(([key, value]) => [key, fn(key, value)]));
}

function choice<const C extends string>(choices: readonly C[]): Parse<C> {
  return (value) => {
    const found = choices.find((c) => c === value);
    if (found !== undefined) return ok(found);
    const near = typeof value === 'string' ? closest(value, choices) : undefined;
    return bad(`${show(value)} is not one of ${choices.join(', ')}`, near && `Did you mean \`${near}\`?`);
  };
}

function parseBoolean(value: unknown): Parsed<boolean> {
  return typeof value === 'boolean' ? ok(value) : bad(`must be true or false, not ${show(value)}`);
}

/** A non-empty string without surrounding spaces: a node name reference or a column name. */
function parseText(value: unknown): Parsed<string> {
  if (typeof value !== 'string') return bad(`must be text, not ${show(value)}`);
  return value.trim() !== '' && value.trim() === value
    ? ok(value)
    : bad(`${show(value)} is blank or has surrounding spaces`);
}

function parseCount(value: unknown): Parsed<number> {
  const number = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value;
  if (typeof number === 'number' && Number.isSafeInteger(number) && number >= 1) return ok(number);
  return bad(`${show(value)} is not a whole number of at least 1`);
}

function atLeast(parse: Parse<number>, least: number, shown: string): Parse<number> {
  return (value) => {
    const parsed = parse(value);
    return !parsed.ok || parsed.value >= least
      ? parsed
      : bad(`must be at least ${shown}, not ${show(value)}`);
  };
}

function atMost(parse: Parse<number>, most: number, shown: string, why: string): Parse<number> {
  return (value) => {
    const parsed = parse(value);
    return !parsed.ok || parsed.value <= most
      ? parsed
      : bad(`must be at most ${shown} (${why}), not ${show(value)}`);
  };
}

function parseWebhook(value: unknown): Parsed<string> {
  const text = parseText(value);
  if (!text.ok) return text;
  try {
    const url = new URL(text.value);
    if (url.protocol === 'http:' || url.protocol === 'https:') return ok(text.value);
  } catch {
    // reported below
  }
  return bad(`${show(value)} is not an http:// or https:// URL`);
}

/** A path, made absolute against the config folder. */
function pathIn(dir: string): Parse<string> {
  return (value) => {
    const text = parseText(value);
    if (!text.ok) return text;
    if (text.value.startsWith('~'))
      return bad(`${show(value)} starts with "~", which is not expanded`, 'Write the full path');
    return ok(resolve(dir, text.value));
  };
}

/**
 * A path to TLS material. Its contents are read when a node starts (so that `tandem certs` can
 * make the files a config already names); `{node}` stands for that node's name.
 */
function pemPathIn(dir: string): Parse<string> {
  const toPath = pathIn(dir);
  return (value) => {
    // Do not echo pasted key material: ask for a path instead.
    if (typeof value === 'string' && value.includes('-----BEGIN'))
      return bad('holds PEM text; it must be the path of a PEM file');
    return toPath(value);
  };
}

function configSchema(file: string, dir: string) {
  const security = section({
    secret: field<SecretRef | undefined>(
      (value) => SecretRef.parse(value, dir),
      () => undefined,
    ),
    tls: section({
      ca: field(pemPathIn(dir)),
      cert: field(pemPathIn(dir)),
      key: field(pemPathIn(dir)),
    }).optional(),
    plaintext: field(parseBoolean, () => false),
  })
    .superRefine(
      (value, ctx) => {
        const chosen = [
          value.secret !== undefined && 'secret',
          value.tls !== undefined && 'tls',
          value.plaintext === true && 'plaintext: true',
        ].filter((name) => name !== false);
        if (chosen.length === 1) return;
        ctx.addIssue({
          code: 'custom',
          message:
            chosen.length === 0
              ? 'sets none of secret, tls or plaintext: true; exactly one is required'
              : `sets ${chosen.join(' and ')}; exactly one of secret, tls or plaintext: true is allowed`,
          params: {
            hint: 'Choose one: secret (a shared secret), tls (certificates) or plaintext: true (no authentication or encryption, for trusted networks only)',
          },
        });
      },
      { when: (payload) => isRecord(payload.value) },
    )
    // Reached only when exactly one mode is set: the refinement above stops every other case.
    .transform((value): SecurityConfig => {
      if (value.secret) return { mode: 'psk', secret: value.secret };
      if (value.tls) return { mode: 'tls', ca: value.tls.ca, cert: value.tls.cert, key: value.tls.key };
      return { mode: 'plaintext' };
    });

  const node = section({
    listen: field(parseAddress),
    admin: field(parseAddress),
    state: field(pathIn(dir)),
  });

  const group = section({
    kind: field(choice(['sql'])),
    mode: field(choice(['async', 'sync'])),
    // Any text here; the cross-field rules check that it names a node.
    primary: field(parseText),
    endpoints: record(
      string(),
      field((value) => parseEndpoint(value, dir)),
    ),
    tables: array(field(parseGlob)).min(1),
    keys: orEmpty(namedMap(parseTableName, array(field(parseText)).min(1))),
    sync: orEmpty(
      section({
        timeout: field(atLeast(parseDuration, 1, '1ms'), () => DEFAULTS.sync.timeoutMs),
        degrade: field(parseBoolean, () => DEFAULTS.sync.degrade),
        configure_server: field(parseBoolean, () => DEFAULTS.sync.configureServer),
      }),
    ),
    retention: orEmpty(
      section({
        keep_bytes: field(parseSize, () => DEFAULTS.retention.keepBytes),
        keep_time: field(parseDuration, () => DEFAULTS.retention.keepMillis),
        max_bytes: field(parseSize, () => DEFAULTS.retention.maxBytes),
        segment_size: field(
          atMost(atLeast(parseSize, 4096, '4KiB'), 1024 ** 3, '1GiB', 'segments are the unit of retention'),
          () => DEFAULTS.retention.segmentBytes,
        ),
      }),
    ),
    seed: orEmpty(
      section({
        workers: field(
          atMost(parseCount, 16, '16', 'each worker holds a database connection'),
          () => DEFAULTS.seed.workers,
        ),
        overwrite: field(parseBoolean, () => DEFAULTS.seed.overwrite),
      }),
    ),
    apply: orEmpty(
      section({
        workers: field(
          atMost(parseCount, 32, '32', 'each worker holds a database connection'),
          () => DEFAULTS.apply.workers,
        ),
      }),
    ),
    switchover: orEmpty(
      section({
        fence_timeout: field(atLeast(parseDuration, 1, '1ms'), () => DEFAULTS.switchover.fenceTimeoutMs),
        drain_timeout: field(atLeast(parseDuration, 1, '1ms'), () => DEFAULTS.switchover.drainTimeoutMs),
        verify: field(parseBoolean, () => DEFAULTS.switchover.verify),
        except_roles: anyValue()
          .optional()
          .transform((value): unknown => value ?? [])
          .pipe(array(field(parseText))),
      }),
    ),
    failover: orEmpty(
      section({
        witness: field(parseText, () => null),
        etcd: section({
          endpoints: array(field(parseWebhook)).min(1),
          prefix: field(parseText, () => '/tandem'),
        }).optional(),
        auto: field(parseBoolean, () => null),
        timeout: field(atLeast(parseDuration, 100, '100ms'), () => DEFAULTS.failover.timeoutMs),
      }),
    ),
    reroute: orEmpty(
      section({
        command: field(parseText, () => null),
        webhook: field(parseWebhook, () => null),
        timeout: field(atLeast(parseDuration, 1, '1ms'), () => DEFAULTS.reroute.timeoutMs),
      }),
    ),
    batch: orEmpty(
      section({
        max_records: field(parseCount, () => DEFAULTS.batch.maxRecords),
        max_bytes: field(
          atMost(
            atLeast(parseSize, 1, '1 byte'),
            16 * 1024 ** 2,
            '16MiB',
            'a link frame holds at most 32 MiB',
          ),
          () => DEFAULTS.batch.maxBytes,
        ),
      }),
    ),
    compression: field(choice(['deflate', 'none']), () => DEFAULTS.compression),
  });

  return section({
    cluster: field(parseName),
    security,
    nodes: namedMap(parseName, node).transform((nodes) =>
      mapValues(nodes, (name, n): NodeConfig => ({ name, listen: n.listen, admin: n.admin, state: n.state })),
    ),
    groups: namedMap(parseName, group).transform((groups) =>
      mapValues(
        groups,
        (name, g): GroupConfig => ({
          name,
          kind: g.kind,
          mode: g.mode,
          primary: g.primary,
          endpoints: g.endpoints,
          tables: g.tables,
          keys: g.keys,
          sync: {
            timeoutMs: g.sync.timeout,
            degrade: g.sync.degrade,
            configureServer: g.sync.configure_server,
          },
          retention: {
            keepBytes: g.retention.keep_bytes,
            keepMillis: g.retention.keep_time,
            maxBytes: g.retention.max_bytes,
            segmentBytes: g.retention.segment_size,
          },
          seed: { workers: g.seed.workers, overwrite: g.seed.overwrite },
          apply: { workers: g.apply.workers },
          switchover: {
            fenceTimeoutMs: g.switchover.fence_timeout,
            drainTimeoutMs: g.switchover.drain_timeout,
            verify: g.switchover.verify,
            exceptRoles: g.switchover.except_roles,
          },
          failover: {
            witness: g.failover.witness,
            etcd: g.failover.etcd
              ? { endpoints: g.failover.etcd.endpoints, prefix: g.failover.etcd.prefix }
              : null,
            auto: g.failover.auto ?? (g.failover.witness !== null || g.failover.etcd !== undefined),
            timeoutMs: g.failover.timeout,
          },
          reroute: {
            command: g.reroute.command,
            webhook: g.reroute.webhook,
            timeoutMs: g.reroute.timeout,
          },
          batch: { maxRecords: g.batch.max_records, maxBytes: g.batch.max_bytes },
          compression: g.compression,
        }),
      ),
    ),
  }).transform(
    (c): Config => ({
      file,
      dir,
      cluster: c.cluster,
      security: c.security,
      nodes: c.nodes,
      groups: c.groups,
    }),
  );
}

const EXPECTED: Readonly<Record<string, string>> = {
  object: 'a mapping (indented key: value lines)',
  record: 'a mapping (indented name: value lines)',
  array: 'a list (such as [a, b], or lines starting with "- ")',
};

/** A zod issue in Tandem's words, with a fix ending in the field's example. */
function toProblem(issue: core.$ZodIssue): Problem {
  const path = issue.path.map((segment) => (typeof segment === 'symbol' ? String(segment) : segment));
  switch (issue.code) {
    case 'custom': {
      const known = issue.params?.known as string[] | undefined;
      if (known === undefined) return problem(path, issue.message, issue.params?.hint as string | undefined);
      // An unknown field: suggest the nearest known one, with that field's example.
      const key = String(path[path.length - 1]);
      const near = closest(key, known);
      return near === undefined
        ? {
            path,
            message: 'unknown field',
            fix: `Remove it; the fields allowed here are ${known.join(', ')}`,
          }
        : {
            path,
            message: 'unknown field',
            fix: `Did you mean \`${near}\`? ${exampleFor([...path.slice(0, -1), near])}`,
          };
    }
    case 'invalid_type': {
      const input = (issue as { input?: unknown }).input;
      if (path.length === 0) {
        const message =
          input == null ? 'the file is empty' : `the file must be ${EXPECTED.object}, not ${show(input)}`;
        return { path, message, fix: 'Start from the complete example in docs/config.md' };
      }
      if (input === undefined) return problem(path, 'is missing');
      if (input === null) return problem(path, 'is empty');
      return problem(path, `must be ${EXPECTED[issue.expected] ?? issue.expected}, not ${show(input)}`);
    }
    case 'too_small':
      return problem(path, 'is an empty list');
    default:
      return problem(path, issue.message);
  }
}

// ---------------------------------------------------------------------------------------------
// Cross-field rules (on the raw document)

function ownKeys(value: unknown): string[] {
  return isRecord(value) ? Object.keys(value) : [];
}

/** Every listen and admin address is distinct: two nodes on one address cannot both bind it. */
function addressClashes(nodes: Record<string, unknown>): Problem[] {
  const all: { path: (string | number)[]; role: string; address: Address }[] = [];
  for (const [name, node] of Object.entries(nodes)) {
    for (const role of ['listen', 'admin']) {
      const parsed = parseAddress(isRecord(node) ? node[role] : undefined);
      if (parsed.ok) all.push({ path: ['nodes', name, role], role, address: parsed.value });
    }
  }
  const taken = new Set(all.map((entry) => formatAddress(entry.address)));
  const firstUser = new Map<string, string>();
  const problems: Problem[] = [];
  for (const { path, role, address } of all) {
    const text = formatAddress(address);
    const first = firstUser.get(text);
    if (first === undefined) {
      firstUser.set(text, formatPath(path));
      continue;
    }
    // Suggest the next port on the same host that nothing in the file uses.
    let port = address.port;
    do port = port >= 65_535 ? 1 : port + 1;
    while (taken.has(formatAddress({ host: address.host, port })) && port !== address.port);
    problems.push({
      path,
      message: `${text} is already used by ${first}; every listen and admin address must be different`,
      fix: `Example: ${role}: ${formatAddress({ host: address.host, port })}`,
    });
  }
  return problems;
}

/**
 * The machine a node runs on, as far as the file tells: the host of its listen address, with all
 * loopback addresses counted as one machine; undefined when that address is broken. Rules about
 * local resources (state folders, SQLite files) only compare nodes on one machine, since the same
 * path on two machines names two different folders.
 */
function machineOf(nodes: Record<string, unknown>, name: string): string | undefined {
  const node = Object.hasOwn(nodes, name) ? nodes[name] : undefined;
  const listen = parseAddress(isRecord(node) ? node.listen : undefined);
  if (!listen.ok) return undefined;
  return isLoopback(listen.value.host) ? 'loopback' : listen.value.host;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || host.startsWith('127.');
}

/** Nodes on one machine need their own state folders: sharing one would corrupt both journals. */
function stateClashes(nodes: Record<string, unknown>, dir: string): Problem[] {
  const firstUser = new Map<string, string>();
  const problems: Problem[] = [];
  for (const [name, node] of Object.entries(nodes)) {
    const state = pathIn(dir)(isRecord(node) ? node.state : undefined);
    const machine = machineOf(nodes, name);
    if (!state.ok || machine === undefined) continue;
    const where = `${machine}\n${state.value}`;
    const first = firstUser.get(where);
    if (first === undefined) firstUser.set(where, name);
    else {
      problems.push({
        path: ['nodes', name, 'state'],
        message: `${state.value} is also the state folder of node "${first}" on the same host; each node needs its own`,
        fix: `Example: state: ./state/${name}`,
      });
    }
  }
  return problems;
}

function notANode(
  path: (string | number)[],
  value: string,
  nodes: string[],
  example: (node: string) => string,
  fallback = nodes[0] ?? 'east',
): Problem {
  const near = closest(value, nodes);
  const known = nodes.length > 0 ? nodes.join(', ') : 'none defined';
  return {
    path,
    message: `${show(value)} is not a node (nodes: ${known})`,
    fix: `${near ? `Did you mean \`${near}\`? ` : ''}Example: ${example(near ?? fallback)}`,
  };
}

/** A group's primary and endpoint names are nodes, and it replicates from the primary to another node. */
function groupMembers(name: string, group: Record<string, unknown>, nodes: string[]): Problem[] {
  const at = (...rest: (string | number)[]) => ['groups', name, ...rest];
  const endpointExample = (node: string) => `${node}: sqlite:./data/${node}.db`;
  const problems: Problem[] = [];
  const primary = parseText(group.primary);
  if (primary.ok && !nodes.includes(primary.value)) {
    problems.push(notANode(at('primary'), primary.value, nodes, (node) => `primary: ${node}`));
  }
  const endpoints = ownKeys(group.endpoints);
  // For a stray endpoint, suggest a node that has none yet.
  const spare = nodes.find((node) => !endpoints.includes(node));
  for (const endpoint of endpoints) {
    if (!nodes.includes(endpoint)) {
      problems.push(notANode(at('endpoints', endpoint), endpoint, nodes, endpointExample, spare));
    }
  }
  const failover = isRecord(group.failover) ? group.failover : {};
  const witness = parseText(failover.witness);
  if (witness.ok) {
    if (!nodes.includes(witness.value)) {
      problems.push(notANode(at('failover', 'witness'), witness.value, nodes, (node) => `witness: ${node}`));
    } else if (endpoints.includes(witness.value)) {
      problems.push({
        path: at('failover', 'witness'),
        message: `"${witness.value}" has an endpoint in this group; a witness holds no data of the group it watches`,
        fix: 'Add a third node for it under nodes (it needs only listen, admin and state). Example: witness: arbiter',
      });
    }
  }
  if (witness.ok && failover.etcd !== undefined) {
    problems.push({
      path: at('failover', 'etcd'),
      message: 'sets both a witness and etcd; the quorum is one or the other',
      fix: 'Keep one. Example: failover: { witness: arbiter }',
    });
  }
  if (failover.auto === true && !witness.ok && failover.etcd === undefined) {
    problems.push({
      path: at('failover', 'auto'),
      message: 'automatic failover needs a quorum, and neither a witness nor etcd is named',
      fix: 'Name a witness node or etcd. Example: failover: { witness: arbiter, auto: true }',
    });
  }
  if (!isRecord(group.endpoints) || !primary.ok || !nodes.includes(primary.value)) return problems;
  if (!endpoints.includes(primary.value)) {
    problems.push({
      path: at('endpoints'),
      message: `has no endpoint for the primary node "${primary.value}"`,
      fix: `Example: ${endpointExample(primary.value)}`,
    });
  }
  if (!endpoints.some((endpoint) => endpoint !== primary.value && nodes.includes(endpoint))) {
    const other = nodes.find((node) => node !== primary.value);
    problems.push({
      path: at('endpoints'),
      message: `has no endpoint on a node other than the primary "${primary.value}", so there is nowhere to replicate to`,
      fix: other
        ? `Add one. Example: ${endpointExample(other)}`
        : 'Add a second node under nodes, and an endpoint for it',
    });
  }
  return problems;
}

/**
 * Two endpoints of one group naming the same database would replicate a database onto itself.
 * A SQLite file, or a Postgres server on a loopback address, is the same database only for two
 * nodes on one machine (see machineOf); any other Postgres server is the same for every node.
 */
function sameDatabase(
  name: string,
  group: Record<string, unknown>,
  nodes: Record<string, unknown>,
  dir: string,
): Problem[] {
  const firstUser = new Map<string, string>();
  const problems: Problem[] = [];
  for (const node of ownKeys(group.endpoints)) {
    const parsed = parseEndpoint((group.endpoints as Record<string, unknown>)[node], dir);
    if (!parsed.ok) continue;
    const endpoint = parsed.value;
    let database: string;
    let local: boolean;
    if (endpoint.engine === 'sqlite') {
      database = endpoint.path;
      local = true;
    } else {
      // Parsed once already: the endpoint is valid.
      const { host, port, database: db } = pgTarget(endpoint.url)!;
      database = `${host}:${port || '5432'}/${db}`;
      // A socket folder, or no host at all (libpq's default: the local socket), is this machine.
      local = host === '' || host.startsWith('/') || isLoopback(host);
    }
    const machine = local ? machineOf(nodes, node) : 'any';
    if (machine === undefined) continue;
    const where = `${machine}\n${endpoint.engine}:${database}`;
    const first = firstUser.get(where);
    if (first === undefined) firstUser.set(where, node);
    else {
      problems.push({
        path: ['groups', name, 'endpoints', node],
        message: `is the same database as endpoints.${first}${local ? ' (both nodes are on one host)' : ''}; a group replicates between different databases`,
        fix: `Example: ${node}: sqlite:./data/${node}.db`,
      });
    }
  }
  return problems;
}

/** A `keys` entry for a table that `tables` does not select is almost always a misspelt name. */
function keysOutsideTables(name: string, group: Record<string, unknown>): Problem[] {
  const tables = group.tables;
  if (!Array.isArray(tables) || tables.length === 0 || !tables.every((t) => parseGlob(t).ok)) return [];
  const patterns = tables as string[];
  return ownKeys(group.keys)
    .filter((table) => parseTableName(table).ok && !tableMatches(patterns, table))
    .map((table) => {
      const near = closest(table, patterns);
      return {
        path: ['groups', name, 'keys', table],
        message: `table ${show(table)} is not selected by tables (${patterns.join(', ')})`,
        fix: `${near ? `Did you mean \`${near}\`? If not, add` : 'Correct the name, or add'} the table to tables. Example: tables: ${JSON.stringify([...patterns, table])}`,
      };
    });
}

function crossFieldProblems(root: Record<string, unknown>, dir: string): Problem[] {
  const problems: Problem[] = [];
  const nodes = isRecord(root.nodes) ? root.nodes : undefined;
  const groups = isRecord(root.groups) ? root.groups : undefined;
  if (nodes) {
    if (Object.keys(nodes).length === 0) problems.push(problem(['nodes'], 'lists no nodes'));
    problems.push(...addressClashes(nodes), ...stateClashes(nodes, dir));
  }
  if (groups) {
    if (Object.keys(groups).length === 0)
      problems.push(problem(['groups'], 'lists no groups, so nothing is replicated'));
    for (const [name, group] of Object.entries(groups)) {
      if (!isRecord(group)) continue;
      if (nodes) {
        problems.push(
          ...groupMembers(name, group, Object.keys(nodes)),
          ...sameDatabase(name, group, nodes, dir),
        );
      }
      problems.push(...keysOutsideTables(name, group));
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------

export type Validation = { ok: true; config: Config } | { ok: false; problems: Problem[] };

/**
 * Checks a parsed tandem.yaml document (`input`, as YAML gave it) loaded from `file` (an absolute
 * path; relative paths in the document are resolved against its folder) and normalizes it.
 */
export function validateConfig(input: unknown, file: string): Validation {
  const dir = dirname(file);
  const result = configSchema(file, dir).safeParse(input, { reportInput: true });
  const problems = result.success ? [] : result.error.issues.map(toProblem);
  if (isRecord(input)) problems.push(...crossFieldProblems(input, dir));
  if (result.success && problems.length === 0) return { ok: true, config: result.data };
  return { ok: false, problems };
}
