import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import {
  DEFAULTS,
  globToRegExp,
  groupsOfNode,
  loadConfig,
  MIN_SECRET_BYTES,
  parseAddress,
  parseDuration,
  parseSize,
  readPgUrl,
  resolveSecret,
  SecretRef,
  tableMatches,
} from '../../src/config/index.js';
import { TandemError } from '../../src/core/errors.js';

const EXAMPLE = `cluster: demo
security:
  secret: env:TANDEM_SECRET        # shared secret
nodes:
  east: { listen: 127.0.0.1:7401, admin: 127.0.0.1:7501, state: ./state/east }
  west: { listen: 127.0.0.1:7402, admin: 127.0.0.1:7502, state: ./state/west }
groups:
  shop:
    kind: sql
    mode: async                    # async | sync
    primary: east
    endpoints:
      east: sqlite:./data/east.db
      west: sqlite:./data/west.db
    tables: ["*"]                  # glob patterns
`;

/** The example as data, for tests that change one field. */
type Doc = {
  cluster?: unknown;
  security: Record<string, unknown>;
  nodes: Record<string, Record<string, unknown>>;
  groups: Record<string, Record<string, unknown> & { endpoints: Record<string, unknown> }>;
  [key: string]: unknown;
};

function exampleDoc(): Doc {
  return {
    cluster: 'demo',
    security: { secret: 'env:TANDEM_SECRET' },
    nodes: {
      east: { listen: '127.0.0.1:7401', admin: '127.0.0.1:7501', state: './state/east' },
      west: { listen: '127.0.0.1:7402', admin: '127.0.0.1:7502', state: './state/west' },
    },
    groups: {
      shop: {
        kind: 'sql',
        mode: 'async',
        primary: 'east',
        endpoints: { east: 'sqlite:./data/east.db', west: 'sqlite:./data/west.db' },
        tables: ['*'],
      },
    },
  };
}

const folders: string[] = [];
afterAll(() => {
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-config-'));
  folders.push(dir);
  return dir;
}

/** Writes `text` (or `doc` as YAML) to a fresh folder and returns the file's path. */
function writeConfig(content: string | Doc, dir = tempDir()): string {
  const file = join(dir, 'tandem.yaml');
  writeFileSync(file, typeof content === 'string' ? content : stringify(content));
  return file;
}

function loadError(file: string): TandemError {
  try {
    loadConfig(file);
  } catch (err) {
    expect(err).toBeInstanceOf(TandemError);
    return err as TandemError;
  }
  throw new Error(`expected ${file} to be rejected`);
}

/** Loads a variant of the example and returns the error line about `path` (with its fix). */
function problemAt(change: (doc: Doc) => void, path: string): string {
  const doc = exampleDoc();
  change(doc);
  const file = writeConfig(doc);
  const err = loadError(file);
  expect(err.code).toBe('CONFIG_INVALID');
  const line = err.message.split('\n').find((l) => l.includes(`${file}: ${path}: `));
  if (line === undefined) throw new Error(`no problem reported at ${path}:\n${err.message}`);
  return line;
}

/** A change to the example: set the field at dotted `path` to `value`, or remove it when undefined. */
function set(path: string, value: unknown): (doc: Doc) => void {
  return (doc) => {
    const keys = path.split('.');
    const last = keys.pop() as string;
    let parent = doc as Record<string, unknown>;
    for (const key of keys) parent = parent[key] as Record<string, unknown>;
    if (value === undefined) delete parent[last];
    else parent[last] = structuredClone(value);
  };
}

describe('loadConfig: the contract example', () => {
  it('loads and normalizes every field', () => {
    const file = writeConfig(EXAMPLE);
    const dir = dirname(file);
    const config = loadConfig(file);
    expect(config.file).toBe(file);
    expect(config.dir).toBe(dir);
    expect(config.cluster).toBe('demo');
    expect(config.security.mode).toBe('psk');
    expect(config.security.mode === 'psk' && String(config.security.secret)).toBe('env:TANDEM_SECRET');
    expect(config.nodes.east).toEqual({
      name: 'east',
      listen: { host: '127.0.0.1', port: 7401 },
      admin: { host: '127.0.0.1', port: 7501 },
      state: join(dir, 'state/east'),
    });
    expect(config.groups.shop).toEqual({
      name: 'shop',
      kind: 'sql',
      mode: 'async',
      primary: 'east',
      endpoints: {
        east: { engine: 'sqlite', path: join(dir, 'data/east.db') },
        west: { engine: 'sqlite', path: join(dir, 'data/west.db') },
      },
      tables: ['*'],
      keys: {},
      sync: { timeoutMs: 5_000, degrade: false, configureServer: false },
      retention: {
        keepBytes: 256 * 1024 * 1024,
        keepMillis: 3_600_000,
        maxBytes: 0,
        segmentBytes: 64 * 1024 * 1024,
      },
      seed: { workers: 2, overwrite: false },
      apply: { workers: 4 },
      switchover: { fenceTimeoutMs: 10_000, drainTimeoutMs: 30_000, verify: false, exceptRoles: [] },
      failover: { witness: null, etcd: null, auto: false, timeoutMs: 3000 },
      reroute: { command: null, webhook: null, timeoutMs: 10_000 },
      batch: { maxRecords: 512, maxBytes: 1024 * 1024 },
      compression: 'deflate',
    });
    expect(config.groups.shop?.sync).toEqual(DEFAULTS.sync);
  });

  it('returns a deeply frozen object', () => {
    const config = loadConfig(writeConfig(EXAMPLE));
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.nodes.east?.listen)).toBe(true);
    expect(Object.isFrozen(config.groups.shop?.tables)).toBe(true);
    expect(() => {
      (config.groups.shop as { primary: string }).primary = 'west';
    }).toThrow(TypeError);
  });

  it('normalizes the optional fields', () => {
    const doc = exampleDoc();
    Object.assign(doc.groups.shop as object, {
      mode: 'sync',
      tables: ['orders', 'order_*', 'audit_log'],
      keys: { audit_log: ['id', 'at'] },
      sync: { timeout: '1.5s', degrade: true, configure_server: true },
      retention: { keep_bytes: '1GiB', keep_time: '2d', max_bytes: '20GiB', segment_size: '16MiB' },
      batch: { max_records: 100, max_bytes: '10MB' },
      compression: 'none',
      switchover: { fence_timeout: '2s', drain_timeout: '1m', verify: true, except_roles: ['monitor'] },
      reroute: { command: './move.sh', webhook: 'https://lb.internal/tandem', timeout: '3s' },
    });
    doc.groups.shop!.endpoints.west = 'postgresql://tandem@db-west:5432/shop?sslmode=require';
    doc.nodes.west!.listen = '[::1]:7402';
    doc.nodes.west!.admin = 'Db-West.example.com:7502';
    const config = loadConfig(writeConfig(doc));
    const shop = config.groups.shop!;
    expect(shop.mode).toBe('sync');
    expect(shop.keys).toEqual({ audit_log: ['id', 'at'] });
    expect(shop.sync).toEqual({ timeoutMs: 1500, degrade: true, configureServer: true });
    expect(shop.retention).toEqual({
      keepBytes: 1024 ** 3,
      keepMillis: 2 * 86_400_000,
      maxBytes: 20 * 1024 ** 3,
      segmentBytes: 16 * 1024 ** 2,
    });
    expect(shop.batch).toEqual({ maxRecords: 100, maxBytes: 10_000_000 });
    expect(shop.compression).toBe('none');
    expect(shop.switchover).toEqual({
      fenceTimeoutMs: 2000,
      drainTimeoutMs: 60_000,
      verify: true,
      exceptRoles: ['monitor'],
    });
    expect(shop.reroute).toEqual({
      command: './move.sh',
      webhook: 'https://lb.internal/tandem',
      timeoutMs: 3000,
    });
    expect(shop.endpoints.west).toEqual({
      engine: 'postgres',
      url: 'postgresql://tandem@db-west:5432/shop?sslmode=require',
    });
    expect(config.nodes.west?.listen).toEqual({ host: '::1', port: 7402 });
    expect(config.nodes.west?.admin).toEqual({ host: 'db-west.example.com', port: 7502 });
  });

  it('treats an empty optional section (`sync:` with nothing after it) as all defaults', () => {
    const file = writeConfig(`${EXAMPLE}    sync:\n    keys:\n`);
    const shop = loadConfig(file).groups.shop!;
    expect(shop.sync).toEqual({ timeoutMs: 5_000, degrade: false, configureServer: false });
    expect(shop.keys).toEqual({});
  });

  it('resolves relative paths against the config file folder, not the working directory', () => {
    const dir = join(tempDir(), 'conf');
    mkdirSync(join(dir, 'tls'), { recursive: true });
    for (const name of ['ca.pem', 'node.pem', 'node.key']) writeFileSync(join(dir, 'tls', name), 'pem');
    const doc = exampleDoc();
    doc.security = { tls: { ca: './tls/ca.pem', cert: 'tls/node.pem', key: join(dir, 'tls/node.key') } };
    doc.groups.shop!.endpoints.east = 'sqlite:/var/lib/tandem/east.db';
    const file = writeConfig(doc, dir);
    expect(process.cwd()).not.toBe(dir);
    const config = loadConfig(relative(process.cwd(), file));
    expect(config.file).toBe(file);
    expect(config.security).toEqual({
      mode: 'tls',
      ca: join(dir, 'tls/ca.pem'),
      cert: join(dir, 'tls/node.pem'),
      key: join(dir, 'tls/node.key'),
    });
    expect(config.nodes.east?.state).toBe(join(dir, 'state/east'));
    expect(config.groups.shop?.endpoints.east).toEqual({ engine: 'sqlite', path: '/var/lib/tandem/east.db' });
    expect(config.groups.shop?.endpoints.west).toEqual({ engine: 'sqlite', path: join(dir, 'data/west.db') });
  });

  it('allows the same state folder and SQLite path on nodes of different hosts', () => {
    const doc = exampleDoc();
    doc.nodes.east = { listen: '10.0.0.1:7401', admin: '10.0.0.1:7501', state: '/var/lib/tandem' };
    doc.nodes.west = { listen: '10.0.0.2:7401', admin: '10.0.0.2:7501', state: '/var/lib/tandem' };
    doc.groups.shop!.endpoints = { east: 'sqlite:/srv/shop.db', west: 'sqlite:/srv/shop.db' };
    const config = loadConfig(writeConfig(doc));
    expect(config.nodes.west?.state).toBe('/var/lib/tandem');
    // A Postgres server that is not on a loopback address is the same database for every node.
    doc.groups.shop!.endpoints = {
      east: 'postgres://t@db:5432/shop',
      west: 'postgresql://u@db/shop?application_name=x',
    };
    expect(loadError(writeConfig(doc)).what).toContain(
      'groups.shop.endpoints.west: is the same database as endpoints.east',
    );
  });

  it("reads a Postgres endpoint's Unix socket as libpq does", () => {
    const doc = exampleDoc();
    const sockets = {
      east: 'postgres://tandem@/shop?host=/var/run/postgresql&port=5433',
      west: 'postgresql:///shop?host=/srv/pg-west',
    };
    doc.groups.shop!.endpoints = sockets;
    const config = loadConfig(writeConfig(doc));
    expect(config.groups.shop?.endpoints).toEqual({
      east: { engine: 'postgres', url: sockets.east },
      west: { engine: 'postgres', url: sockets.west },
    });
    // One socket folder and port on one host is one server: the same database for both nodes.
    doc.groups.shop!.endpoints = {
      east: sockets.east,
      west: 'postgres://u@%2Fvar%2Frun%2Fpostgresql:5433/shop',
    };
    expect(loadError(writeConfig(doc)).what).toContain(
      'groups.shop.endpoints.west: is the same database as endpoints.east (both nodes are on one host)',
    );
    // A password in the query is a password too.
    doc.groups.shop!.endpoints = { east: sockets.east, west: 'postgres://u@/shop?host=/tmp&password=pw' };
    expect(loadError(writeConfig(doc)).what).toContain('groups.shop.endpoints.west: contains a password');
  });

  it("accepts each of libpq's sslmode values", () => {
    const doc = exampleDoc();
    // verify-ca needs sslrootcert. Certificate files are the node's: the config is valid where
    // they are missing (a CLI on another machine).
    for (const mode of ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']) {
      const url = `postgres://tandem@db-west:5432/shop?sslmode=${mode}${mode === 'verify-ca' ? '&sslrootcert=/nowhere/ca.pem&sslcert=/nowhere/c.pem&sslkey=/nowhere/c.key' : ''}`;
      doc.groups.shop!.endpoints.west = url;
      expect(loadConfig(writeConfig(doc)).groups.shop?.endpoints.west).toEqual({ engine: 'postgres', url });
    }
    // The driver has no "allow" (it took the unknown value as verify-full): without TLS.
    expect(readPgUrl('postgres://tandem@db-west/shop?sslmode=allow').ssl).toBe(false);
    expect(readPgUrl('postgres://tandem@db-west/shop?sslmode=prefer').ssl).toEqual({
      rejectUnauthorized: false,
    });
  });

  it('accepts plaintext: true as the only link protection', () => {
    const doc = exampleDoc();
    doc.security = { plaintext: true };
    expect(loadConfig(writeConfig(doc)).security).toEqual({ mode: 'plaintext' });
  });
});

describe('loadConfig: each rule names the file, the field path and an example', () => {
  const east = exampleDoc().nodes.east;
  const shop = exampleDoc().groups.shop;
  // [rule, field to change (dotted), its new value (undefined: remove it), path of the problem, what it says]
  const cases: [string, string, unknown, string, string][] = [
    ['cluster name syntax', 'cluster', 'Demo Cluster', 'cluster', 'lower-case letter'],
    ['cluster is required', 'cluster', undefined, 'cluster', 'is missing'],
    ['node name syntax', 'nodes.East', east, 'nodes.East', 'not a valid name'],
    ['group name syntax', 'groups.1shop', shop, 'groups["1shop"]', 'not a valid name'],
    [
      'primary is a node',
      'groups.shop.primary',
      'north',
      'groups.shop.primary',
      '"north" is not a node (nodes: east, west)',
    ],
    [
      'endpoint keys are nodes',
      'groups.shop.endpoints.north',
      'sqlite:n.db',
      'groups.shop.endpoints.north',
      'is not a node',
    ],
    [
      'the primary has an endpoint',
      'groups.shop.endpoints.east',
      undefined,
      'groups.shop.endpoints',
      'no endpoint for the primary',
    ],
    [
      'another node has an endpoint',
      'groups.shop.endpoints.west',
      undefined,
      'groups.shop.endpoints',
      'nowhere to replicate to',
    ],
    [
      'listen addresses differ',
      'nodes.west.listen',
      '127.0.0.1:7401',
      'nodes.west.listen',
      'already used by nodes.east.listen',
    ],
    [
      'admin differs from every listen',
      'nodes.west.admin',
      '127.0.0.1:7401',
      'nodes.west.admin',
      'already used by nodes.east.listen',
    ],
    [
      'state folders differ',
      'nodes.west.state',
      'state/east',
      'nodes.west.state',
      'state folder of node "east"',
    ],
    [
      'port range',
      'nodes.east.listen',
      '127.0.0.1:70000',
      'nodes.east.listen',
      'port 70000 is outside 1-65535',
    ],
    ['port zero', 'nodes.east.listen', 'localhost:0', 'nodes.east.listen', 'outside 1-65535'],
    ['address has a port', 'nodes.east.admin', 'localhost', 'nodes.east.admin', 'has no port'],
    ['IPv6 in brackets', 'nodes.east.admin', '::1:7501', 'nodes.east.admin', 'goes in brackets'],
    ['IPv4 is valid', 'nodes.east.admin', '300.1.1.1:7501', 'nodes.east.admin', 'not an IPv4 address'],
    ['address is text', 'nodes.east.listen', 7401, 'nodes.east.listen', 'must be host:port'],
    ['state is required', 'nodes.east.state', undefined, 'nodes.east.state', 'is missing'],
    [
      'endpoint forms',
      'groups.shop.endpoints.west',
      'mysql://db/shop',
      'groups.shop.endpoints.west',
      'sqlite:PATH',
    ],
    ['sqlite path', 'groups.shop.endpoints.west', 'sqlite:', 'groups.shop.endpoints.west', 'no path'],
    [
      'postgres URL parses',
      'groups.shop.endpoints.west',
      'postgres://[bad/db',
      'groups.shop.endpoints.west',
      'not a valid Postgres URL. Write postgres://USER@HOST:PORT/DB',
    ],
    [
      'postgres URL names a database',
      'groups.shop.endpoints.west',
      'postgres://postgres@127.0.0.1:5432',
      'groups.shop.endpoints.west',
      'names no database. Write postgres://USER@HOST:PORT/DB',
    ],
    [
      'postgres URL names a database after its slash',
      'groups.shop.endpoints.west',
      'postgres://postgres@127.0.0.1:5432/',
      'groups.shop.endpoints.west',
      'names no database. Write postgres://USER@HOST:PORT/DB',
    ],
    [
      'postgres socket URL names a database',
      'groups.shop.endpoints.west',
      'postgres://u@/?host=/var/run/postgresql',
      'groups.shop.endpoints.west',
      'names no database',
    ],
    [
      "postgres sslmode is one of libpq's",
      'groups.shop.endpoints.west',
      'postgres://u@db/shop?sslmode=bogus',
      'groups.shop.endpoints.west',
      'has sslmode "bogus", which is not one of disable, allow, prefer, require, verify-ca, verify-full',
    ],
    [
      'postgres URL parameters are connection parameters',
      'groups.shop.endpoints.west',
      'postgres://u@db/shop?sslmode=require&sslmod=verify-full',
      'groups.shop.endpoints.west',
      'has parameter "sslmod", which is not a PostgreSQL connection parameter. Remove it; the parameters Tandem\'s connections take are host, port, user, sslmode',
    ],
    [
      'postgres URL parameters are ones the driver implements',
      'groups.shop.endpoints.west',
      'postgres://u@db/shop?target_session_attrs=read-write',
      'groups.shop.endpoints.west',
      'has parameter "target_session_attrs", a libpq parameter that Tandem\'s PostgreSQL driver (node-postgres) does not implement. Remove it',
    ],
    [
      'postgres URL leaves timeouts to Tandem',
      'groups.shop.endpoints.west',
      'postgres://u@db/shop?statement_timeout=5',
      'groups.shop.endpoints.west',
      "has parameter \"statement_timeout\", a setting of the PostgreSQL driver's own (not libpq's), which would cut Tandem's long statements short",
    ],
    [
      'postgres URL options leave timeouts to Tandem',
      'groups.shop.endpoints.west',
      'postgres://u@db/shop?options=-c%20statement_timeout%3D5',
      'groups.shop.endpoints.west',
      "sets statement_timeout in options, which would cut Tandem's long statements short",
    ],
    [
      'postgres connect_timeout is whole seconds',
      'groups.shop.endpoints.west',
      'postgres://u@db/shop?connect_timeout=-1',
      'groups.shop.endpoints.west',
      'has connect_timeout "-1", which is not a whole number of seconds',
    ],
    [
      'postgres URL names its database in the path',
      'groups.shop.endpoints.west',
      'postgres://u@db/shop?dbname=other',
      'groups.shop.endpoints.west',
      'has parameter "dbname", which the driver does not read (it takes the database from the path). Write the database after the host',
    ],
    [
      'postgres sslmode is given once',
      'groups.shop.endpoints.west',
      'postgres://u@db/shop?sslmode=require&sslmode=disable',
      'groups.shop.endpoints.west',
      'gives sslmode 2 times. Give it once',
    ],
    [
      'postgres URL has two slashes',
      'groups.shop.endpoints.west',
      'postgres:/db/shop',
      'groups.shop.endpoints.west',
      'begins with "postgres:" without the two slashes of "postgres://". Write postgres://USER@HOST:PORT/DB',
    ],
    [
      'postgres URL scheme is lower case',
      'groups.shop.endpoints.west',
      'PostgreSQL://u@db/shop',
      'groups.shop.endpoints.west',
      'begins with "PostgreSQL://", which is not lower case. Write postgresql://USER@HOST:PORT/DB',
    ],
    [
      'endpoints differ',
      'groups.shop.endpoints.west',
      'sqlite:data/../data/east.db',
      'groups.shop.endpoints.west',
      'same database as endpoints.east',
    ],
    ['tables is a list', 'groups.shop.tables', '*', 'groups.shop.tables', 'must be a list'],
    ['tables is not empty', 'groups.shop.tables', [], 'groups.shop.tables', 'empty list'],
    [
      'table globs are valid',
      'groups.shop.tables',
      ['orders', 'ord[ers'],
      'groups.shop.tables[1]',
      'without a closing',
    ],
    [
      'keys name plain tables',
      'groups.shop.keys',
      { 'ord*': ['id'] },
      'groups.shop.keys["ord*"]',
      'is a pattern',
    ],
    ['keys list columns', 'groups.shop.keys', { orders: [] }, 'groups.shop.keys.orders', 'empty list'],
    ['kind', 'groups.shop.kind', 'kv', 'groups.shop.kind', 'not one of sql'],
    ['mode', 'groups.shop.mode', 'asynch', 'groups.shop.mode', 'not one of async, sync'],
    [
      'sync timeout',
      'groups.shop.sync',
      { timeout: '5 minutes' },
      'groups.shop.sync.timeout',
      'not a duration',
    ],
    ['sync degrade', 'groups.shop.sync', { degrade: 'yes' }, 'groups.shop.sync.degrade', 'true or false'],
    [
      'retention size',
      'groups.shop.retention',
      { keep_bytes: '256M' },
      'groups.shop.retention.keep_bytes',
      'unknown unit "M"',
    ],
    [
      'segment size lower bound',
      'groups.shop.retention',
      { segment_size: '1KiB' },
      'groups.shop.retention.segment_size',
      'at least 4KiB',
    ],
    [
      'retention time',
      'groups.shop.retention',
      { keep_time: -1 },
      'groups.shop.retention.keep_time',
      'not a number with ms',
    ],
    ['batch records', 'groups.shop.batch', { max_records: 0 }, 'groups.shop.batch.max_records', 'at least 1'],
    ['batch bytes', 'groups.shop.batch', { max_bytes: 0 }, 'groups.shop.batch.max_bytes', 'at least 1 byte'],
    [
      'batch frame',
      'groups.shop.batch',
      { max_bytes: '64MiB' },
      'groups.shop.batch.max_bytes',
      'at most 16MiB',
    ],
    ['compression', 'groups.shop.compression', 'gzip', 'groups.shop.compression', 'not one of deflate, none'],
    [
      'webhook is an http(s) URL',
      'groups.shop.reroute',
      { webhook: 'ftp://x/y' },
      'groups.shop.reroute.webhook',
      'not an http:// or https:// URL',
    ],
    [
      'fence timeout',
      'groups.shop.switchover',
      { fence_timeout: '0s' },
      'groups.shop.switchover.fence_timeout',
      'at least 1ms',
    ],
    [
      'witness is a node',
      'groups.shop.failover',
      { witness: 'nowhere' },
      'groups.shop.failover.witness',
      'is not a node',
    ],
    [
      'witness holds no data',
      'groups.shop.failover',
      { witness: 'west' },
      'groups.shop.failover.witness',
      'a witness holds no data',
    ],
    [
      'etcd endpoints are URLs',
      'groups.shop.failover',
      { etcd: { endpoints: ['10.0.0.1:2379'] } },
      'groups.shop.failover.etcd.endpoints[0]',
      'not an http:// or https:// URL',
    ],
    [
      'witness or etcd, not both',
      'groups.shop.failover',
      { witness: 'arbiter', etcd: { endpoints: ['http://10.0.0.1:2379'] } },
      'groups.shop.failover.etcd',
      'both a witness and etcd',
    ],
    [
      'automatic failover needs a witness',
      'groups.shop.failover',
      { auto: true },
      'groups.shop.failover.auto',
      'needs a quorum',
    ],
    [
      'except_roles is a list',
      'groups.shop.switchover',
      { except_roles: 'monitor' },
      'groups.shop.switchover.except_roles',
      'must be a list',
    ],
    ['sections are mappings', 'groups.shop.sync', ['5s'], 'groups.shop.sync', 'must be a mapping'],
    ['nodes are listed', 'nodes', {}, 'nodes', 'lists no nodes'],
    ['groups are listed', 'groups', {}, 'groups', 'lists no groups'],
    ['secret reference syntax', 'security', { secret: 'env:' }, 'security.secret', 'variable name'],
    [
      'tls paths are paths, not PEM text',
      'security',
      { tls: { ca: '-----BEGIN CERTIFICATE-----', cert: 'c.pem', key: 'k.pem' } },
      'security.tls.ca',
      'PEM text',
    ],
    ['tls files are given', 'security', { tls: { ca: 'ca.pem' } }, 'security.tls.cert', 'is missing'],
    ['plaintext is a boolean', 'security', { plaintext: 'true' }, 'security.plaintext', 'true or false'],
  ];

  it.each(cases)('%s', (_rule, field, value, path, says) => {
    const line = problemAt(set(field, value), path);
    expect(line).toContain(says);
    expect(line).toContain('Example: ');
  });

  it('checks that keys name replicated tables', () => {
    const doc = (d: Doc) =>
      Object.assign(d.groups.shop as object, { tables: ['orders'], keys: { ordres: ['id'] } });
    const line = problemAt(doc, 'groups.shop.keys.ordres');
    expect(line).toContain('table "ordres" is not selected by tables (orders). Did you mean `orders`?');
    expect(line).toContain('Example: tables: ["orders","ordres"]');
  });

  it('requires exactly one of secret, tls and plaintext: true', () => {
    expect(problemAt(set('security', {}), 'security')).toMatch(
      /sets none of secret, tls or plaintext: true.*Example: /,
    );
    expect(problemAt(set('security', { plaintext: false }), 'security')).toContain('sets none');
    const several = problemAt(set('security', { secret: 'env:X', plaintext: true }), 'security');
    expect(several).toContain('sets secret and plaintext: true; exactly one');
  });

  it('gives a working example for the field that is wrong', () => {
    expect(problemAt(set('groups.shop.primary', 'north'), 'groups.shop.primary')).toContain(
      'Example: primary: east',
    );
    expect(problemAt(set('groups.shop.primary', 'wset'), 'groups.shop.primary')).toContain(
      'Did you mean `west`? Example: primary: west',
    );
    // 7502 is west's admin address, so the next free port is 7503.
    expect(problemAt(set('nodes.west.listen', '127.0.0.1:7501'), 'nodes.west.listen')).toContain(
      'Example: listen: 127.0.0.1:7503',
    );
  });

  it('rejects unknown keys with a did-you-mean hint', () => {
    expect(problemAt(set('groups.shop.primray', 'east'), 'groups.shop.primray')).toContain(
      'unknown field. Did you mean `primary`? Example: primary: east',
    );
    expect(problemAt(set('security.secert', 'env:X'), 'security.secert')).toContain('Did you mean `secret`?');
    expect(problemAt(set('groups.shop.sync', { timout: '1s' }), 'groups.shop.sync.timout')).toContain(
      'Did you mean `timeout`? Example: timeout: 5s',
    );
    expect(problemAt(set('clustr', 'x'), 'clustr')).toContain('Did you mean `cluster`?');
    expect(problemAt(set('nodes.east.weight', 2), 'nodes.east.weight')).toContain(
      'unknown field. Remove it; the fields allowed here are listen, admin, state',
    );
  });

  it('never echoes a secret-looking value or a password', () => {
    const pasted = 'hunter2-hunter2-hunter2';
    expect(problemAt(set('security.secret', pasted), 'security.secret')).not.toContain(pasted);
    const url = 'postgres://tandem:s3cr3t-pw@db/shop';
    const line = problemAt(set('groups.shop.endpoints.west', url), 'groups.shop.endpoints.west');
    expect(line).toContain('contains a password');
    expect(line).not.toContain('s3cr3t-pw');
  });
});

describe('loadConfig: reporting', () => {
  it('reports several problems at once, one per line, in file order', () => {
    const doc = exampleDoc();
    doc.cluster = 'Demo';
    doc.nodes.west!.listen = '127.0.0.1:99999';
    doc.groups.shop!.primary = 'north';
    doc.groups.shop!.compresion = 'none';
    const file = writeConfig(doc);
    const err = loadError(file);
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.exitCode).toBe(2);
    const lines = err.what.split('\n');
    expect(lines[0]).toBe(`${file} has 4 problems:`);
    expect(lines.slice(1).map((l) => l.slice(l.indexOf(': ') + 2).split(':')[0])).toEqual([
      'cluster',
      'nodes.west.listen',
      'groups.shop.primary',
      'groups.shop.compresion',
    ]);
    for (const line of lines.slice(1)) expect(line).toMatch(/Example: |Did you mean/);
  });

  it('reports field and cross-field problems in the same pass', () => {
    const doc = exampleDoc();
    doc.nodes.west!.listen = 7402; // a field problem
    doc.groups.shop!.primary = 'north'; // a cross-field problem
    const err = loadError(writeConfig(doc));
    expect(err.what).toContain('nodes.west.listen: must be host:port');
    expect(err.what).toContain('groups.shop.primary: "north" is not a node');
  });

  it('names the file, line and column of a YAML syntax error', () => {
    const file = writeConfig('cluster: demo\nnodes:\n  east: { listen: 127.0.0.1:7401\n  west: {}\n');
    const err = loadError(file);
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.what).toMatch(new RegExp(`^${file}: line \\d+, column \\d+: `));
  });

  it('points at an unquoted * (a YAML alias) and says to quote it', () => {
    const file = writeConfig(EXAMPLE.replace('tables: ["*"]', 'tables: [*]'));
    const err = loadError(file);
    expect(err.what).toContain(`${file}: line 15, column 14: `);
    expect(err.fix).toContain('tables: ["*"]');
  });

  it('rejects a duplicated key with its line', () => {
    const file = writeConfig(`${EXAMPLE}cluster: again\n`);
    expect(loadError(file).what).toContain(`${file}: line 16, column 1: Map keys must be unique`);
  });

  it('rejects an empty file and a file that is not a mapping', () => {
    const empty = writeConfig('');
    expect(loadError(empty).what).toBe(`${empty}: the file is empty`);
    const list = writeConfig('- a\n- b\n');
    expect(loadError(list).what).toBe(
      `${list}: the file must be a mapping (indented key: value lines), not a list`,
    );
  });

  it('reports a missing or unreadable file as CONFIG_NOT_FOUND with the OS reason', () => {
    const missing = join(tempDir(), 'nope.yaml');
    const err = loadError(missing);
    expect(err.code).toBe('CONFIG_NOT_FOUND');
    expect(err.what).toBe(`cannot read config file ${missing}: no such file (ENOENT)`);
    const folder = loadError(tempDir());
    expect(folder.code).toBe('CONFIG_NOT_FOUND');
    expect(folder.what).toContain('(EISDIR)');
  });
});

describe('secrets', () => {
  const VALUE = 'correct-horse-battery-staple';

  function secretOf(reference: string, dir = tempDir()): SecretRef {
    const doc = exampleDoc();
    doc.security = { secret: reference };
    const { security } = loadConfig(writeConfig(doc, dir));
    if (security.mode !== 'psk') throw new Error('expected a psk config');
    return security.secret;
  }

  function resolveError(ref: SecretRef, env: NodeJS.ProcessEnv = {}): TandemError {
    try {
      resolveSecret(ref, env);
    } catch (err) {
      expect(err).toBeInstanceOf(TandemError);
      return err as TandemError;
    }
    throw new Error(`expected ${ref} not to resolve`);
  }

  it('loads without resolving, and resolves from the environment at use time', () => {
    const ref = secretOf('env:TANDEM_TEST_SECRET');
    expect(ref.toString()).toBe('env:TANDEM_TEST_SECRET');
    expect(resolveSecret(ref, { TANDEM_TEST_SECRET: VALUE })).toBe(VALUE);
    expect(ref.resolve({ TANDEM_TEST_SECRET: VALUE })).toBe(VALUE);
  });

  it('resolves from a file relative to the config folder, without its trailing newline', () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'secrets'));
    writeFileSync(join(dir, 'secrets', 'link'), `${VALUE}\n`);
    const ref = secretOf('file:secrets/link', dir);
    expect(ref.toString()).toBe(`file:${join(dir, 'secrets/link')}`);
    expect(resolveSecret(ref)).toBe(VALUE);
  });

  it('fails on an unset, empty or short variable without printing the value', () => {
    const ref = secretOf('env:TANDEM_TEST_SECRET');
    const unset = resolveError(ref);
    expect(unset.code).toBe('SECRET_UNRESOLVED');
    expect(unset.what).toContain('secret env:TANDEM_TEST_SECRET');
    expect(unset.what).toContain('is not set');
    expect(unset.fix).toContain('export TANDEM_TEST_SECRET=');
    expect(resolveError(ref, { TANDEM_TEST_SECRET: '' }).what).toContain('is empty');
    const short = resolveError(ref, { TANDEM_TEST_SECRET: 'tiny-secret' });
    expect(short.what).toContain(`shorter than ${MIN_SECRET_BYTES} bytes`);
    expect(short.message).not.toContain('tiny-secret');
  });

  it('fails on a missing or empty file', () => {
    const dir = tempDir();
    const ref = secretOf('file:link.secret', dir);
    const missing = resolveError(ref);
    expect(missing.what).toContain(`file:${join(dir, 'link.secret')}`);
    expect(missing.what).toContain('does not exist');
    expect(missing.fix).toContain('Create it');
    writeFileSync(join(dir, 'link.secret'), '\n');
    expect(resolveError(ref).what).toContain('is empty');
    writeFileSync(join(dir, 'link.secret'), 'short\n');
    const short = resolveError(ref);
    expect(short.what).toContain('shorter than');
    expect(short.message).not.toContain('short\n');
  });

  it('never puts the value in JSON.stringify(config) or String(ref)', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'link.secret'), VALUE);
    const doc = exampleDoc();
    doc.security = { secret: 'file:link.secret' };
    const config = loadConfig(writeConfig(doc, dir));
    if (config.security.mode !== 'psk') throw new Error('expected a psk config');
    expect(config.security.secret.resolve()).toBe(VALUE);
    expect(JSON.stringify(config)).not.toContain(VALUE);
    expect(JSON.stringify(config)).toContain(`"secret":"file:${join(dir, 'link.secret')}"`);
    expect(`${config.security.secret}`).not.toContain(VALUE);
  });

  it('parses only env:NAME and file:PATH', () => {
    expect(SecretRef.parse('env:MY_SECRET_1', '/etc').ok).toBe(true);
    expect(SecretRef.parse('file:/run/secrets/tandem', '/etc').ok).toBe(true);
    for (const bad of ['env:', 'env:1X', 'env:A-B', 'file:', 'vault:x', 42, 'plain-secret-value']) {
      const parsed = SecretRef.parse(bad, '/etc');
      expect(parsed.ok).toBe(false);
      if (!parsed.ok && typeof bad === 'string' && bad.length > 6) expect(parsed.problem).not.toContain(bad);
    }
  });
});

describe('units', () => {
  it('parses sizes', () => {
    const good: [unknown, number][] = [
      ['256MiB', 256 * 1024 ** 2],
      ['1GiB', 1024 ** 3],
      ['512KiB', 512 * 1024],
      ['1000', 1000],
      [1000, 1000],
      ['10MB', 10_000_000],
      ['2GB', 2_000_000_000],
      ['1.5KiB', 1536],
      ['64 kb', 64_000],
      ['0', 0],
    ];
    for (const [text, bytes] of good) expect(parseSize(text)).toEqual({ ok: true, value: bytes });
    for (const text of ['', '1.5', '-1', '10M', 'MiB', '1e3', 1.5, true])
      expect(parseSize(text).ok).toBe(false);
  });

  it('parses durations', () => {
    const good: [unknown, number][] = [
      ['500ms', 500],
      ['5s', 5000],
      ['2m', 120_000],
      ['1h', 3_600_000],
      ['1d', 86_400_000],
      ['250', 250],
      [250, 250],
      ['1.5s', 1500],
    ];
    for (const [text, millis] of good) expect(parseDuration(text)).toEqual({ ok: true, value: millis });
    for (const text of ['', '5S', '5 minutes', '1h30m', '-1s', 'soon', -5])
      expect(parseDuration(text).ok).toBe(false);
  });

  it('parses addresses', () => {
    expect(parseAddress('127.0.0.1:7401')).toEqual({ ok: true, value: { host: '127.0.0.1', port: 7401 } });
    expect(parseAddress('[::1]:1')).toEqual({ ok: true, value: { host: '::1', port: 1 } });
    expect(parseAddress('Node-1.example.com:65535')).toEqual({
      ok: true,
      value: { host: 'node-1.example.com', port: 65535 },
    });
    for (const text of [
      '127.0.0.1',
      ':7401',
      'host:',
      'host:65536',
      'host:0',
      '[::g]:1',
      '1.2.3:80',
      'a b:1',
      'h:1x',
    ]) {
      expect(parseAddress(text).ok).toBe(false);
    }
  });

  it('matches whole table names with globs, case-sensitively', () => {
    expect(globToRegExp('order_*').test('order_items')).toBe(true);
    expect(globToRegExp('order_*').test('my_order_items')).toBe(false);
    expect(globToRegExp('t?').test('t1')).toBe(true);
    expect(globToRegExp('t?').test('t12')).toBe(false);
    expect(globToRegExp('[a-c]x').test('bx')).toBe(true);
    expect(globToRegExp('[!a-c]x').test('bx')).toBe(false);
    expect(globToRegExp('[^a-c]x').test('dx')).toBe(true);
    expect(globToRegExp('a.b').test('axb')).toBe(false);
    expect(globToRegExp('a+(b)').test('a+(b)')).toBe(true);
    expect(globToRegExp('[*]').test('*')).toBe(true);
    expect(tableMatches(['*'], 'public.orders')).toBe(true);
    expect(tableMatches(['Orders'], 'orders')).toBe(false);
    expect(tableMatches(['users', 'order_*'], 'order_items')).toBe(true);
    expect(tableMatches([], 'users')).toBe(false);
    expect(() => globToRegExp('ord[ers')).toThrow('invalid table pattern');
  });
});

describe('groupsOfNode', () => {
  it('lists the groups a node has an endpoint in, and rejects an unknown node', () => {
    const doc = exampleDoc();
    doc.nodes.south = { listen: '127.0.0.1:7403', admin: '127.0.0.1:7503', state: './state/south' };
    doc.groups.audit = {
      kind: 'sql',
      mode: 'sync',
      primary: 'west',
      endpoints: { west: 'sqlite:./data/audit-west.db', south: 'sqlite:./data/audit-south.db' },
      tables: ['audit_*'],
    };
    const config = loadConfig(writeConfig(doc));
    expect(groupsOfNode(config, 'east').map((g) => g.name)).toEqual(['shop']);
    expect(groupsOfNode(config, 'west').map((g) => g.name)).toEqual(['shop', 'audit']);
    expect(groupsOfNode(config, 'south').map((g) => g.name)).toEqual(['audit']);
    expect(() => groupsOfNode(config, 'esat')).toThrow(/NODE_UNKNOWN.*no node "esat".*e\.g\. east/);
  });
});
