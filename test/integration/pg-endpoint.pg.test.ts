/**
 * PostgreSQL endpoint checks against real throwaway clusters: what a source and a target need,
 * each refusal naming the field and the exact fix, and connection failures that never show a
 * password. Three clusters, started together and shared by the cases: a good one (logical
 * decoding, 20 slots), one with wal_level=replica and one with a single slot and WAL sender.
 * What capture creates at start (publication, schema tandem, slot) is checked by starting a node
 * in this process: refused with every fix, then started once they are made.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  checkPostgres,
  inspectPostgres,
  type PgPrereqOptions,
  pgClientConfig,
} from '../../src/adapters/postgres/endpoint.js';
import { setFence } from '../../src/adapters/postgres/fence.js';
import { TandemError } from '../../src/core/errors.js';
import { freePort } from '../../src/demo/procs.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { Nodes } from '../helpers/cluster.js';
import { type PgCluster, startPg } from '../helpers/pg.js';

const FIELD = 'groups.shop.endpoints.east';

const source = (url: string, extra: Partial<PgPrereqOptions> = {}): PgPrereqOptions => ({
  url,
  field: FIELD,
  role: 'source',
  tables: ['*'],
  keys: {},
  group: 'shop',
  ...extra,
});

const target = (url: string): PgPrereqOptions => ({ ...source(url), role: 'target' });

/** The TandemError a check throws (fails the test if it resolves or throws something else). */
async function refusal(check: Promise<unknown>): Promise<TandemError> {
  const err = await check.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TandemError);
  expect((err as TandemError).code).toBe('ENDPOINT_UNAVAILABLE');
  return err as TandemError;
}

describe('pgClientConfig', () => {
  it('reads sslmode with libpq meaning, connect_timeout in seconds, and names the application', () => {
    expect(
      pgClientConfig('postgres://app@db.example:6543/shop?sslmode=require&connect_timeout=3'),
    ).toMatchObject({
      host: 'db.example',
      port: 6543,
      user: 'app',
      database: 'shop',
      ssl: { rejectUnauthorized: false },
      connectionTimeoutMillis: 3000,
      fallback_application_name: 'tandem',
    });
    expect(pgClientConfig('postgresql://app@db/shop?sslmode=disable')).toMatchObject({
      ssl: false,
      connectionTimeoutMillis: 10_000,
    });
    expect(pgClientConfig('postgres://app@db/shop?sslmode=verify-full').ssl).toEqual({});
    expect(pgClientConfig('postgres://app@db/shop?application_name=east').application_name).toBe('east');
    // Names relative to schema public alone, whatever the URL's options say.
    expect(pgClientConfig('postgres://app@db/shop').options).toBe('-c search_path=public');
    expect(
      pgClientConfig('postgres://app@db/shop?options=-c%20search_path%3Dmine%20-c%20work_mem%3D8MB').options,
    ).toBe('-c search_path=mine -c work_mem=8MB -c search_path=public');
  });
});

describe('PostgreSQL endpoint checks', () => {
  let good: PgCluster;
  let replica: PgCluster;
  let oneSlot: PgCluster;

  beforeAll(async () => {
    [good, replica, oneSlot] = await Promise.all([
      // The role "secretive" logs in with a password; every other role is trusted.
      startPg({ hba: ['host all secretive 127.0.0.1/32 scram-sha-256'] }),
      startPg({ settings: { wal_level: 'replica' } }),
      startPg({ settings: { max_replication_slots: '1', max_wal_senders: '1' } }),
    ]);
    await good.sql('CREATE DATABASE shop');
    await good.sql(
      `CREATE TABLE orders (id bigint PRIMARY KEY, total numeric);
       CREATE TABLE audit (at timestamptz NOT NULL, msg text);
       ALTER TABLE audit REPLICA IDENTITY FULL;
       CREATE TABLE codes (code text NOT NULL);
       CREATE UNIQUE INDEX codes_code ON codes (code);
       ALTER TABLE codes REPLICA IDENTITY USING INDEX codes_code;
       CREATE SCHEMA billing;
       CREATE TABLE billing.invoices (id int PRIMARY KEY);
       CREATE TABLE scratch (x int);`,
      'shop',
    );
  });

  afterAll(async () => {
    await Promise.all([good, replica, oneSlot].map((c) => c?.stop()));
  });

  const nodes = new Nodes();
  const dirs: string[] = [];
  let groups = 0;

  afterEach(async () => {
    vi.unstubAllEnvs();
    await nodes.stopAll(0);
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  /** A cluster config whose primary east replicates from `url` to a SQLite west (never started). */
  async function nodeConfig(url: string): Promise<{ file: string; group: string }> {
    const group = `g${groups++}`;
    process.env.TANDEM_SECRET ??= randomBytes(24).toString('hex');
    const cfg = await writeClusterConfig({
      cluster: `ep${group}`,
      group,
      endpoints: { east: url, west: 'sqlite:./data/west.db' },
    });
    dirs.push(cfg.dir);
    return { file: cfg.file, group };
  }

  const setUrl = (file: string, from: string, to: string) =>
    writeFileSync(file, readFileSync(file, 'utf8').replace(`"${from}"`, `"${to}"`));

  /** The TandemError east's start fails with (its node is stopped again). */
  async function startRefused(file: string): Promise<TandemError> {
    const err = await nodes.start(file, 'east').then(
      () => null,
      (e: unknown) => e,
    );
    await nodes.stopAll(0);
    expect(err).toBeInstanceOf(TandemError);
    return err as TandemError;
  }

  /** The statements of each `Run ... as a superuser` fix in `err`. */
  const fixStatements = (err: TandemError) =>
    [...err.fix.matchAll(/(?:Run|run) (.*?;) as a superuser/g)].map((m) => m[1]!);

  it('passes a good source, listing the matching tables, with a warning for unlimited slot WAL', async () => {
    const result = await checkPostgres(
      source(good.url('shop'), {
        tables: ['orders', 'audit', 'codes', 'billing.*'],
        keys: { audit: ['at', 'msg'] },
      }),
    );
    expect(result.problems).toEqual([]);
    expect(result.tables).toEqual(['billing.invoices', 'audit', 'codes', 'orders']);
    expect(result.serverVersion).toBeGreaterThanOrEqual(150_000);
    expect(result.warnings).toEqual([
      expect.objectContaining({
        what: expect.stringMatching(/max_slot_wal_keep_size is -1/),
        fix: expect.stringContaining(
          "ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'; SELECT pg_reload_conf();",
        ),
      }),
    ]);
    // A target needs none of the source's settings: wal_level=replica is fine there.
    expect((await checkPostgres(target(replica.url()))).problems).toEqual([]);
  });

  it('refuses wal_level=replica with the ALTER SYSTEM fix', async () => {
    const err = await refusal(checkPostgres(source(replica.url())));
    expect(err.message).toContain(`${FIELD}: this PostgreSQL database cannot be a source yet (1 problem)`);
    expect(err.message).toContain(
      `\n${FIELD}: wal_level is replica, and logical decoding needs logical. Run ALTER SYSTEM SET wal_level = logical; as a superuser, then restart PostgreSQL`,
    );
  });

  it('refuses a role without REPLICATION, and one that cannot read a table, all in one error', async () => {
    await good.sql('CREATE ROLE reader LOGIN');
    const opts = source(good.url('shop', 'reader'), { tables: ['orders'] });
    const err = await refusal(checkPostgres(opts));
    expect(err.message).toContain('(4 problems)');
    expect(err.message).toContain(
      `\n${FIELD}: the role reader may not replicate (it has neither REPLICATION nor SUPERUSER). Run ALTER ROLE reader REPLICATION; as a superuser`,
    );
    expect(err.message).toContain(`\n${FIELD}: the role reader cannot read table orders`);
    expect(err.message).toContain('Run GRANT SELECT ON orders TO reader;');

    // REPLICATION and SELECT are not enough: what capture creates at start needs more (next test).
    await good.sql('ALTER ROLE reader REPLICATION');
    await good.sql('GRANT SELECT ON orders TO reader', 'shop');
    expect((await inspectPostgres(opts)).problems.map((p) => p.fix)).toEqual([
      "Run GRANT CREATE ON DATABASE shop TO reader; as a superuser or the database's owner",
      `Run ALTER TABLE orders OWNER TO reader; as a superuser, or use a superuser in ${FIELD}`,
    ]);
  });

  it('refuses tables without a key, naming each and only those the patterns select', async () => {
    await good.sql('CREATE DATABASE nokey');
    await good.sql(
      `CREATE TABLE log (at int, msg text);
       CREATE SCHEMA app;
       CREATE TABLE app."Events" (id int);
       CREATE TABLE pinned (id int PRIMARY KEY);
       ALTER TABLE pinned REPLICA IDENTITY NOTHING;
       CREATE TABLE ignored (x int);`,
      'nokey',
    );
    const tables = ['log', 'app.*', 'pinned'];
    const result = await inspectPostgres(source(good.url('nokey'), { tables }));
    expect(result.tables).toEqual(['app.Events', 'log', 'pinned']);
    expect(result.problems).toEqual([
      {
        what: 'table app."Events" has no primary key and no replica identity, so its rows cannot be matched on the target',
        fix: 'No unique index on NOT NULL columns identifies its rows: give it a key column (this rewrites the table): ALTER TABLE app."Events" ADD COLUMN row_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY; or leave it out of groups.shop.tables',
      },
      {
        what: 'table log has no primary key and no replica identity, so its rows cannot be matched on the target',
        fix: 'No unique index on NOT NULL columns identifies its rows: give it a key column (this rewrites the table): ALTER TABLE log ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY; or leave it out of groups.shop.tables',
      },
      {
        what: 'table pinned has REPLICA IDENTITY NOTHING, so its updates and deletes cannot be replicated',
        fix: 'Run ALTER TABLE pinned REPLICA IDENTITY DEFAULT; (its primary key identifies rows)',
      },
    ]);
    const err = await refusal(checkPostgres(source(good.url('nokey'), { tables })));
    expect(err.message).toContain(`\n${FIELD}: table log has no primary key`);
    expect(err.message).not.toContain('ignored');
  });

  it('suggests a primary key only on columns that are unique and NOT NULL, and each suggestion runs', async () => {
    await good.sql('CREATE DATABASE keyhint');
    await good.sql(
      `-- pgbench_history: no column is unique (the audit was told ADD PRIMARY KEY (tid)).
       CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
       INSERT INTO pgbench_history (tid, delta) VALUES (1, 5), (1, 6);
       CREATE TABLE ukey (n int, code text NOT NULL);
       CREATE UNIQUE INDEX ukey_n ON ukey (n);
       CREATE UNIQUE INDEX ukey_code ON ukey (code);
       CREATE TABLE udesc (k int NOT NULL, v text);
       CREATE UNIQUE INDEX udesc_k ON udesc (k DESC);
       CREATE TABLE ucon (c int, a int NOT NULL, b int NOT NULL, UNIQUE (a, b));
       CREATE TABLE unull (x int UNIQUE, y int);
       CREATE TABLE parted (region text NOT NULL, v int) PARTITION BY LIST (region);`,
      'keyhint',
    );
    const opts = source(good.url('keyhint'));
    const fixes = async () => (await inspectPostgres(opts)).problems.map((p) => p.fix);
    const column = (t: string, c: string) =>
      `No unique index on NOT NULL columns identifies its rows: give it a key column (this rewrites the table): ALTER TABLE ${t} ADD COLUMN ${c} bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY; or leave it out of groups.shop.tables`;
    expect(await fixes()).toEqual([
      'No unique index on NOT NULL columns identifies its rows: give it a primary key of columns that identify a row, including its partition key: ALTER TABLE parted ADD PRIMARY KEY (region, ...); or leave it out of groups.shop.tables',
      column('pgbench_history', 'id'),
      'Give it a primary key on its unique NOT NULL columns a, b (ALTER TABLE ucon ADD PRIMARY KEY (a, b);), or name them in the config (groups.shop.keys: { ucon: [a, b] }) and run ALTER TABLE ucon REPLICA IDENTITY FULL;',
      // A DESC index is unique, but ADD PRIMARY KEY USING INDEX refuses it.
      'Give it a primary key on its unique NOT NULL column k (ALTER TABLE udesc ADD PRIMARY KEY (k);), or name it in the config (groups.shop.keys: { udesc: [k] }) and run ALTER TABLE udesc REPLICA IDENTITY FULL;',
      'Give it a primary key on its unique NOT NULL column code (ALTER TABLE ukey ADD PRIMARY KEY USING INDEX ukey_code;), or name it in the config (groups.shop.keys: { ukey: [code] }) and run ALTER TABLE ukey REPLICA IDENTITY FULL;',
      column('unull', 'id'),
    ]);
    // Every statement suggested (but the partitioned table's, which needs the user's columns) runs.
    for (const fix of await fixes()) {
      const statement = /ALTER TABLE [^;]*;/.exec(fix)![0];
      if (!statement.includes('...')) await good.sql(statement, 'keyhint');
    }
    expect(await fixes()).toEqual([
      expect.stringContaining('ALTER TABLE parted ADD PRIMARY KEY (region, ...);'),
    ]);
  });

  it('asks for REPLICA IDENTITY FULL on a table keyed by the config, and checks the key columns exist', async () => {
    await good.sql('CREATE DATABASE keyed');
    await good.sql(
      'CREATE TABLE audit (id int, at int, msg text); CREATE TABLE other (id int PRIMARY KEY, v text);',
      'keyed',
    );
    const opts = source(good.url('keyed'), { keys: { audit: ['id', 'at'], other: ['nope'] } });
    const err = await refusal(checkPostgres(opts));
    expect(err.message).toContain(
      `\n${FIELD}: table audit is keyed by groups.shop.keys (id, at), but its updates and deletes do not carry the old values of those columns. Run ALTER TABLE audit REPLICA IDENTITY FULL;`,
    );
    expect(err.message).toContain(
      `\n${FIELD}: groups.shop.keys names column(s) nope that table other does not have (it has id, v)`,
    );

    await good.sql('ALTER TABLE audit REPLICA IDENTITY FULL', 'keyed');
    // A configured key inside the primary key needs nothing more: the old key travels anyway.
    const fixed = await checkPostgres({ ...opts, keys: { audit: ['id', 'at'], other: ['id'] } });
    expect(fixed.problems).toEqual([]);
  });

  it('refuses a table keyed by a generated column, whose values logical decoding does not send', async () => {
    await good.sql('CREATE DATABASE genkey');
    await good.sql(
      `CREATE TABLE gpk (a int NOT NULL, b int NOT NULL, k int GENERATED ALWAYS AS (a * 1000 + b) STORED PRIMARY KEY, UNIQUE (a, b));
       CREATE TABLE gri (id int, k int GENERATED ALWAYS AS (id * 2) STORED NOT NULL);
       CREATE UNIQUE INDEX gri_k ON gri (k); ALTER TABLE gri REPLICA IDENTITY USING INDEX gri_k;`,
      'genkey',
    );
    const keyedBy = (t: string, by: string) =>
      `table ${t} is keyed by generated column(s) k (${by}), whose values logical decoding does not send, so its rows cannot be matched on the target`;
    expect((await inspectPostgres(source(good.url('genkey')))).problems).toEqual([
      {
        what: keyedBy('gpk', 'its primary key'),
        fix: 'Key it by plain columns that identify a row: a primary key of them, or groups.shop.keys: { gpk: [a, b] } and ALTER TABLE gpk REPLICA IDENTITY FULL; or leave it out of groups.shop.tables',
      },
      {
        what: keyedBy('gri', 'its replica identity index'),
        fix: 'Key it by plain columns that identify a row: a primary key of them, or groups.shop.keys: { gri: [...] } and ALTER TABLE gri REPLICA IDENTITY FULL; or leave it out of groups.shop.tables',
      },
    ]);
    const keys = { gpk: ['k'] };
    expect((await inspectPostgres(source(good.url('genkey'), { keys, tables: ['gpk'] }))).problems).toEqual([
      expect.objectContaining({ what: keyedBy('gpk', 'groups.shop.keys') }),
    ]);
    // Keyed by the plain columns it is computed from, with the whole old row sent: no problem.
    await good.sql('ALTER TABLE gpk REPLICA IDENTITY FULL', 'genkey');
    const plain = source(good.url('genkey'), { keys: { gpk: ['a', 'b'] }, tables: ['gpk'] });
    expect((await inspectPostgres(plain)).problems).toEqual([]);
  });

  it('refuses a source with no free replication slot or WAL sender, unless the slot is its own', async () => {
    expect((await checkPostgres(source(oneSlot.url()))).problems).toEqual([]);
    await oneSlot.sql("SELECT pg_create_logical_replication_slot('x', 'pgoutput')");
    const err = await refusal(checkPostgres(source(oneSlot.url())));
    expect(err.message).toContain(
      `\n${FIELD}: no replication slot is free (max_replication_slots = 1, used by x). Run ALTER SYSTEM SET max_replication_slots = 2; as a superuser, then restart PostgreSQL`,
    );
    // A restart finds its own slot there: no new one is needed.
    expect((await checkPostgres(source(oneSlot.url(), { slot: 'x' }))).problems).toEqual([]);

    // A replication connection holds a WAL sender from its start.
    const walsender = new pg.Client(pgClientConfig(`${oneSlot.url()}?replication=database`));
    await walsender.connect();
    try {
      const busy = await refusal(checkPostgres(source(oneSlot.url(), { slot: 'x' })));
      expect(busy.message).toContain(
        `\n${FIELD}: no WAL sender is free (max_wal_senders = 1, 1 in use). Run ALTER SYSTEM SET max_wal_senders = 2; as a superuser, then restart PostgreSQL`,
      );
    } finally {
      await walsender.end();
    }
  });

  it('reports a wrong port clearly, without any password', async () => {
    vi.stubEnv('PGPASSWORD', 'env-secret-4711');
    const port = await freePort();
    const err = await refusal(
      checkPostgres(source(`postgres://postgres:url-secret-4712@127.0.0.1:${port}/shop`)),
    );
    expect(err.message).toBe(
      `[ENDPOINT_UNAVAILABLE] ${FIELD}: cannot connect to PostgreSQL at 127.0.0.1:${port}/shop as postgres: the connection was refused (ECONNREFUSED): no server listens there. Start PostgreSQL, or correct the host and port in ${FIELD}; the server must listen on that address (listen_addresses and port in postgresql.conf)`,
    );
    expect(err.message).not.toMatch(/secret/);
  });

  it("connects through the server's Unix socket, and names a socket no server listens on", async () => {
    await checkPostgres(source(`postgres://postgres@/postgres?host=${good.dir}&port=${good.port}`));
    const port = await freePort();
    const err = await refusal(
      checkPostgres(source(`postgres://postgres@/shop?host=${good.dir}&port=${port}`)),
    );
    expect(err.message).toBe(
      `[ENDPOINT_UNAVAILABLE] ${FIELD}: cannot connect to PostgreSQL at ${good.dir}:${port}/shop as postgres: no server listens on the Unix socket ${good.dir}/.s.PGSQL.${port} (ENOENT). Start PostgreSQL, or correct the socket folder (host) and port in ${FIELD}; the server makes its socket in each folder of unix_socket_directories in postgresql.conf`,
    );
  });

  it('gives up on a server that never answers after connect_timeout', async () => {
    const silent = net.createServer(() => {}); // accepts connections, never says a word
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    try {
      const started = Date.now();
      const err = await refusal(
        checkPostgres(source(`postgres://postgres@127.0.0.1:${port}/shop?connect_timeout=1`)),
      );
      expect(err.message).toContain(
        `${FIELD}: cannot connect to PostgreSQL at 127.0.0.1:${port}/shop as postgres: the server did not answer in time`,
      );
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      silent.close();
    }
  });

  it('reports a missing database with the CREATE DATABASE fix', async () => {
    vi.stubEnv('PGPASSWORD', 'env-secret-4711');
    const err = await refusal(checkPostgres(source(good.url('nope'))));
    expect(err.message).toBe(
      `[ENDPOINT_UNAVAILABLE] ${FIELD}: cannot connect to PostgreSQL at 127.0.0.1:${good.port}/nope as postgres: the database nope does not exist. Run CREATE DATABASE nope; or correct the database in ${FIELD}`,
    );
    expect(err.message).not.toMatch(/secret/);
  });

  it('reads the password from PGPASSWORD or the pgpass file, and never shows it', async () => {
    await good.sql("CREATE ROLE secretive LOGIN REPLICATION PASSWORD 'right-secret-1'");
    await good.sql('GRANT CREATE ON DATABASE postgres TO secretive');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-pgpass-'));
    try {
      vi.stubEnv('PGPASSFILE', path.join(dir, 'none'));
      const opts = source(good.url('postgres', 'secretive'));
      const none = await refusal(checkPostgres(opts));
      expect(none.message).toContain("the server asks for secretive's password and none is given");

      vi.stubEnv('PGPASSWORD', 'wrong-secret-2');
      const wrong = await refusal(checkPostgres(opts));
      expect(wrong.message).toContain('password authentication failed for user "secretive"');
      expect(wrong.message).toContain("Give secretive's password in PGPASSWORD or ~/.pgpass on this node");
      expect(wrong.message).not.toMatch(/secret-/);

      vi.stubEnv('PGPASSWORD', 'right-secret-1');
      expect((await checkPostgres(opts)).problems).toEqual([]);

      vi.stubEnv('PGPASSWORD', undefined);
      const pgpass = path.join(dir, 'pgpass');
      writeFileSync(pgpass, `127.0.0.1:${good.port}:*:secretive:right-secret-1\n`);
      chmodSync(pgpass, 0o600);
      vi.stubEnv('PGPASSFILE', pgpass);
      expect((await checkPostgres(opts)).problems).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses at start a source role that may not create schema tandem and the publication, naming each fix; with them made it starts', async () => {
    await good.sql('CREATE DATABASE bad');
    await good.sql('CREATE ROLE app; CREATE ROLE tr LOGIN REPLICATION');
    await good.sql(
      `CREATE TABLE t1 (id int PRIMARY KEY);
       CREATE TABLE t2 (id int PRIMARY KEY, v text);
       CREATE TABLE t3 (id int PRIMARY KEY);
       ALTER TABLE t3 OWNER TO app;
       GRANT SELECT ON t1, t2, t3 TO tr;`,
      'bad',
    );
    const { file, group } = await nodeConfig(good.url('bad', 'tr'));
    const field = `groups.${group}.endpoints.east`;
    // Before: "permission denied for database bad" and a stack through PgCapture.open.
    const err = await startRefused(file);
    expect(err.code).toBe('ENDPOINT_UNAVAILABLE');
    expect(err.what).toBe(`${field}: this PostgreSQL database cannot be a source yet (3 problems)`);
    expect(err.fix.split('\n').slice(1)).toEqual([
      `${field}: the role tr lacks CREATE on database bad, which Tandem needs to create its schema tandem and the publication tandem_${group} there. Run GRANT CREATE ON DATABASE bad TO tr; as a superuser or the database's owner`,
      `${field}: the role tr does not own tables t1, t2 (owner postgres), and only a table's owner may add it to the publication tandem_${group}. Run ALTER TABLE t1 OWNER TO tr; ALTER TABLE t2 OWNER TO tr; as a superuser, or use a superuser in ${field}`,
      `${field}: the role tr does not own table t3 (owner app), and only a table's owner may add it to the publication tandem_${group}. Run GRANT app TO tr; as a superuser (a member of the owning role counts as its owner), or ALTER TABLE t3 OWNER TO tr;`,
    ]);
    for (const sql of fixStatements(err)) await good.sql(sql, 'bad');
    await nodes.start(file, 'east');
    const pub = await good.sql(
      `SELECT pubowner::regrole::text AS owner, ARRAY(SELECT tablename::text FROM pg_publication_tables t
          WHERE t.pubname = p.pubname ORDER BY 1) AS tables FROM pg_publication p`,
      'bad',
    );
    expect(pub.rows).toEqual([{ owner: 'tr', tables: ['t1', 't2', 't3'] }]);
    await nodes.stopAll(0);
    await good.sql(`SELECT pg_drop_replication_slot('tandem_${group}_east')`);
  }, 60_000);

  it('refuses at start a role that does not own what an earlier start as another role made, naming each fix', async () => {
    await good.sql('CREATE DATABASE bad2');
    await good.sql('CREATE ROLE tr2 LOGIN REPLICATION; GRANT CREATE ON DATABASE bad2 TO tr2');
    await good.sql('CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO tr2', 'bad2');
    // The first start as the superuser makes schema tandem, the fence function and the publication.
    const { file, group } = await nodeConfig(good.url('bad2'));
    await nodes.start(file, 'east');
    await nodes.stopAll(0);
    // A table made since, not in the publication yet (the DDL trigger of the superuser's start
    // would have added it): the next start runs ALTER PUBLICATION.
    await good.sql(
      `CREATE TABLE later (id int PRIMARY KEY); ALTER TABLE later OWNER TO tr2;
       ALTER PUBLICATION tandem_${group} DROP TABLE later;
       CREATE TABLE tandem.lease (grp text PRIMARY KEY, until timestamptz NOT NULL);`,
      'bad2',
    );
    setUrl(file, good.url('bad2'), good.url('bad2', 'tr2'));
    const field = `groups.${group}.endpoints.east`;
    const err = await startRefused(file);
    expect(err.fix.split('\n').slice(1)).toEqual([
      `${field}: the role tr2 may not create in schema tandem (another role made it), where Tandem keeps the group's fence function. Connected to bad2, run GRANT USAGE, CREATE ON SCHEMA tandem TO tr2;`,
      `${field}: the fence function tandem."fence_${group}"() belongs to postgres, and Tandem replaces it at every start. Connected to bad2, run ALTER FUNCTION tandem."fence_${group}"() OWNER TO tr2; as a superuser`,
      `${field}: Tandem's table tandem.lease (owner postgres) belongs to another role (an earlier start as that role made it), and Tandem writes its tables and brings them up to date at start. Connected to bad2, run ALTER TABLE tandem.lease OWNER TO tr2; as a superuser`,
      `${field}: the publication tandem_${group} (made at an earlier start) belongs to postgres, and only its owner may change its tables. Connected to bad2, run ALTER PUBLICATION tandem_${group} OWNER TO tr2; as a superuser`,
    ]);
    await good.sql(`GRANT USAGE, CREATE ON SCHEMA tandem TO tr2; ${fixStatements(err).join(' ')}`, 'bad2');
    // The new table joins the publication: ALTER PUBLICATION as its new owner.
    await nodes.start(file, 'east');
    const pub = await good.sql(
      `SELECT tablename::text AS t FROM pg_publication_tables WHERE pubname = 'tandem_${group}' ORDER BY 1`,
      'bad2',
    );
    expect(pub.rows).toEqual([{ t: 'later' }, { t: 't' }]);
    await nodes.stopAll(0);
    await good.sql(`SELECT pg_drop_replication_slot('tandem_${group}_east')`);
  }, 60_000);

  it('keeps its event trigger off while a role that is not a superuser owns schema tandem, and says so', async () => {
    await good.sql('CREATE DATABASE owned');
    await good.sql('CREATE ROLE tr3 LOGIN');
    await good.sql('CREATE TABLE t (id int PRIMARY KEY)', 'owned');
    const { file, group } = await nodeConfig(good.url('owned'));
    const triggers = async () =>
      (await good.sql('SELECT evtenabled AS e FROM pg_event_trigger ORDER BY evtname', 'owned')).rows;
    await nodes.start(file, 'east');
    await nodes.stopAll(0);
    expect((await triggers()).map((r) => r.e)).toEqual(['O', 'O', 'O']);
    // tr3 could drop a function there and put its own in its place, for the trigger to run as
    // the superuser.
    await good.sql('ALTER SCHEMA tandem OWNER TO tr3', 'owned');
    let east = await nodes.start(file, 'east');
    expect(east.status().groups[0]!.capture).toMatch(
      /schema changes NOT followed \(schema tandem belongs to a role that is not a superuser\)/,
    );
    expect((await triggers()).map((r) => r.e)).toEqual(['D', 'D', 'D']);
    await nodes.stopAll(0);
    await good.sql('ALTER SCHEMA tandem OWNER TO postgres', 'owned');
    east = await nodes.start(file, 'east');
    expect(east.status().groups[0]!.capture).not.toMatch(/NOT followed/);
    expect((await triggers()).map((r) => r.e)).toEqual(['O', 'O', 'O']);
    await nodes.stopAll(0);
    await good.sql(`SELECT pg_drop_replication_slot('tandem_${group}_east')`);
  }, 60_000);

  it("lets the event trigger skip only a fenced database's apply, whatever a session says it is", async () => {
    await good.sql('CREATE DATABASE fenced');
    await good.sql('CREATE ROLE tr4 LOGIN');
    await good.sql('CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO tr4', 'fenced');
    const { file, group } = await nodeConfig(good.url('fenced'));
    await nodes.start(file, 'east');
    await nodes.stopAll(0);
    await good.sql(`SELECT pg_drop_replication_slot('tandem_${group}_east')`);
    // The trigger refuses to take a replicated table's key away, for a session that says it is
    // Tandem's apply too, while the database is a primary's.
    const dropKey = async () => {
      const c = new pg.Client({ connectionString: good.url('fenced', 'tr4') });
      await c.connect();
      try {
        await c.query('BEGIN; SET LOCAL tandem.apply = on; ALTER TABLE t DROP CONSTRAINT t_pkey; ROLLBACK');
      } finally {
        await c.end();
      }
    };
    await expect(dropKey()).rejects.toThrow(/would lose the primary key/);
    // Fenced (a backup whose role may not disable the triggers): the apply's session is left alone.
    const c = new pg.Client({ connectionString: good.url('fenced') });
    await c.connect();
    try {
      await setFence(c, group, { kind: 'fenced', message: 'a backup', user: 'tr4' });
    } finally {
      await c.end();
    }
    await dropKey();
  }, 60_000);

  it("refuses at start the node's slot made in another database, naming it and how to drop it", async () => {
    await good.sql('CREATE DATABASE sa');
    await good.sql('CREATE DATABASE sb');
    for (const db of ['sa', 'sb']) await good.sql('CREATE TABLE t (id int PRIMARY KEY)', db);
    const { file, group } = await nodeConfig(good.url('sa'));
    await nodes.start(file, 'east');
    await nodes.stopAll(0);
    setUrl(file, good.url('sa'), good.url('sb'));
    // Before: started, then restarted forever (`replication slot ... was not created in this database`).
    const err = await startRefused(file);
    const slot = `tandem_${group}_east`;
    const field = `groups.${group}.endpoints.east`;
    expect(err.code).toBe('ENDPOINT_UNAVAILABLE');
    expect(err.fix.split('\n').slice(1)).toEqual([
      `${field}: replication slot ${slot} (this node's) was made in database sa, and ${field} now names database sb: a logical slot reads only the database it was made in. Connected to database sa, run SELECT pg_drop_replication_slot('${slot}'); (or point ${field} back at sa). This node's journal holds sa's changes, so the backups must then be reseeded: stop the nodes, delete the state folders of this node and its backups, and start them again`,
    ]);
    // Back at sa it starts again.
    setUrl(file, good.url('sb'), good.url('sa'));
    await nodes.start(file, 'east');
    await nodes.stopAll(0);
    await good.sql(`SELECT pg_drop_replication_slot('${slot}')`, 'sa');

    // A physical slot of the same name is named as such.
    await good.sql(`SELECT pg_create_physical_replication_slot('${slot}')`);
    const physical = await refusal(checkPostgres(source(good.url('sb'), { slot })));
    expect(physical.fix).toContain(
      `\n${FIELD}: a physical replication slot named ${slot} exists, and this node's logical slot needs that name. If no standby uses it, run SELECT pg_drop_replication_slot('${slot}');`,
    );
    await good.sql(`SELECT pg_drop_replication_slot('${slot}')`);
  }, 60_000);

  it('refuses a target role without what a backup needs, naming each fix; with them it replicates', async () => {
    await good.sql('CREATE ROLE writer LOGIN');
    const err = await refusal(checkPostgres(target(good.url('shop', 'writer'))));
    expect(err.message).toContain(
      `\n${FIELD}: the role writer cannot create tables in schema public of database shop. Connected to shop, run GRANT CREATE ON SCHEMA public TO writer;`,
    );

    // A backup as a role that is not a superuser, in a database with a table of another role's.
    await good.sql('CREATE DATABASE tsrc');
    await good.sql('CREATE DATABASE tdst');
    await good.sql('CREATE ROLE other');
    await good.sql('CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 42)', 'tsrc');
    await good.sql(
      `GRANT CREATE ON SCHEMA public TO writer; CREATE TYPE tkind AS ENUM ('a');
       CREATE TABLE t (id int PRIMARY KEY, v text, k tkind); ALTER TABLE t OWNER TO other`,
      'tdst',
    );
    // Before: no problem found, then apply failed on "permission denied for database tdst".
    const refused = await refusal(checkPostgres(target(good.url('tdst', 'writer'))));
    expect(refused.fix.split('\n').slice(1)).toEqual([
      `${FIELD}: the role writer lacks CREATE on database tdst, which Tandem needs to create its schema tandem there (the backup's applied position and fence). Run GRANT CREATE ON DATABASE tdst TO writer; as a superuser or the database's owner, or create the schema for it: CREATE SCHEMA tandem AUTHORIZATION writer;`,
      `${FIELD}: the role writer does not own table t (owner other), and the backup fences its tables with a trigger, changes them as the source's change, and replaces them at a seed. Run GRANT other TO writer; as a superuser (a member of the owning role counts as its owner), or ALTER TABLE t OWNER TO writer;`,
      `${FIELD}: the role writer does not own type tkind (owner postgres), which the group's tables use and the backup changes as the source's change (ALTER TYPE ... ADD VALUE, ALTER DOMAIN). Run ALTER TYPE tkind OWNER TO writer; as a superuser`,
    ]);
    for (const sql of fixStatements(refused)) await good.sql(sql, 'tdst');
    const group = `g${groups++}`;
    const cfg = await writeClusterConfig({
      cluster: `ep${group}`,
      group,
      endpoints: { east: good.url('tsrc'), west: good.url('tdst', 'writer') },
    });
    dirs.push(cfg.dir);
    process.env.TANDEM_SECRET ??= randomBytes(24).toString('hex');
    await nodes.start(cfg.file, 'east');
    await nodes.start(cfg.file, 'west');
    await good.sql("INSERT INTO t VALUES (2, 'streamed')", 'tsrc');
    const rows = async () =>
      (await good.sql('SELECT id, v FROM t ORDER BY id', 'tdst').catch(() => ({ rows: [] }))).rows;
    for (let i = 0; i < 200 && (await rows()).length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await rows()).toEqual([
      { id: 1, v: '42' },
      { id: 2, v: 'streamed' },
    ]);
    await nodes.stopAll(0);
    await good.sql(`SELECT pg_drop_replication_slot('tandem_${group}_east')`, 'tsrc');
  }, 60_000);
});
