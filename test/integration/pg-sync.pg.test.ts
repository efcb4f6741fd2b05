/**
 * Sync mode on a PostgreSQL primary, against real PostgreSQL 15 clusters: setup of
 * synchronous_standby_names (refused with the fix, or done when asked), commits that return only
 * once the backup's journal holds them, a commit that waits while the backup is away, a backup
 * seeded while commits go on, and degrade to async after the timeout, then back.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { adminAddress, renderStatus } from '../../src/cli/status.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { Nodes, sleep, until } from '../helpers/cluster.js';
import { type PgCluster, startPg } from '../helpers/pg.js';

describe('PostgreSQL sync mode', () => {
  let src: PgCluster;
  let dst: PgCluster;
  let dir: string;
  const nodes = new Nodes();
  let k = 0;

  beforeAll(async () => {
    [src, dst] = await Promise.all([startPg({ settings: { wal_level: 'logical' } }), startPg()]);
    process.env.TANDEM_SECRET = randomBytes(24).toString('hex');
  }, 120_000);
  afterAll(async () => {
    await Promise.all([src?.stop(), dst?.stop()]);
  });
  afterEach(async () => {
    await nodes.stopAll(500);
    await src.sql('ALTER SYSTEM RESET synchronous_standby_names');
    await src.sql('SELECT pg_reload_conf()');
    rmSync(dir, { recursive: true, force: true });
  });

  async function setup(sync: string, extra = ''): Promise<{ file: string; db: string }> {
    const db = `s${k++}`;
    await src.sql(`CREATE DATABASE ${db}`);
    await dst.sql(`CREATE DATABASE ${db}`);
    await src.sql('CREATE TABLE acct (id serial PRIMARY KEY, v int NOT NULL)', db);
    const cfg = await writeClusterConfig({
      cluster: 'sync',
      group: db,
      mode: 'sync',
      endpoints: { east: src.url(db), west: dst.url(db) },
      groupExtra: `    sync: ${sync}${extra}`,
    });
    dir = cfg.dir;
    const file = cfg.file;
    return { file, db };
  }

  const start = (file: string, name: string) => nodes.start(file, name);

  /** Three writers committing one row at a time; `acked` holds the ids whose commit returned. */
  function syncWriters(db: string): { acked: number[]; stop: () => Promise<void> } {
    const acked: number[] = [];
    let stopping = false;
    const writers = [1, 2, 3].map(async (w) => {
      const c = new pg.Client({ connectionString: src.url(db) });
      await c.connect();
      while (!stopping) {
        const r = await c.query<{ id: number }>('INSERT INTO acct (v) VALUES ($1) RETURNING id', [-w]);
        acked.push(r.rows[0]!.id);
      }
      await c.end();
    });
    return {
      acked,
      stop: async () => {
        stopping = true;
        await Promise.all(writers);
      },
    };
  }

  it('refuses to start when synchronous_standby_names does not name it, and says how', async () => {
    const { file } = await setup('{ timeout: 2s }');
    await expect(start(file, 'east')).rejects.toThrow(
      /sync mode, but synchronous_standby_names \(empty\) does not name.*ALTER SYSTEM SET synchronous_standby_names = '"tandem_s0_east"'.*configure_server: true/s,
    );
  }, 60_000);

  it('acknowledges a commit only once the backup journal holds it; waits while the backup is away', async () => {
    const { file, db } = await setup('{ timeout: 2s, configure_server: true }');
    const east = await start(file, 'east');
    const west = await start(file, 'west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    const client = new pg.Client({ connectionString: src.url(db) });
    await client.connect();
    for (let i = 0; i < 30; i++) {
      await client.query('INSERT INTO acct (v) VALUES ($1)', [i]);
      // Returned: the record holding it is durable in the backup's journal now.
      const captured = east.status().groups[0]!.positions.captured;
      expect(west.status().groups[0]!.positions.journalDurable).toBeGreaterThanOrEqual(captured);
    }
    // Backup away, no degrade: the commit waits.
    await nodes.stop(west, 0);
    let done = false;
    const pending = client.query('INSERT INTO acct (v) VALUES (-1)').then(() => {
      done = true;
    });
    await sleep(2500);
    expect(done).toBe(false);
    await start(file, 'west');
    await pending;
    expect(done).toBe(true);
    await client.end();
  }, 60_000);

  it('seeds a new backup while sync commits go on, and loses none of them', async () => {
    // Commits wait while the backup is away; once it is being seeded they do not (it cannot take
    // over before the seed ends), and the seed's snapshot, a new logical slot that waits for the
    // transactions running when it is made, is not held up by them.
    const { file, db } = await setup('{ timeout: 2s, configure_server: true }');
    await src.sql('INSERT INTO acct (v) SELECT i FROM generate_series(1, 50000) i', db);
    const east = await start(file, 'east');
    const { acked, stop } = syncWriters(db);
    await sleep(300);
    expect(acked.length).toBe(0); // waiting for the backup
    await start(file, 'west');
    await until('seeded', () => east.status().groups[0]!.links[0]!.lastSeed !== null, 30_000);
    await until('commits go on', () => acked.length > 200, 30_000);
    await stop();
    // Acknowledged: in the backup's journal; applied to its database after.
    await until('applied', () => {
      const g = east.status().groups[0]!;
      return g.links[0]!.applied >= g.positions.captured;
    });
    const ids = new Set((await dst.sql('SELECT id FROM acct', db)).rows.map((r) => r.id as number));
    expect(acked.filter((id) => !ids.has(id))).toEqual([]);
    expect(ids.size).toBe(50_000 + acked.length);
  }, 60_000);

  it('reseeds a backup whose records were released while sync commits wait for it, and loses none of them', async () => {
    // The backup first gives up its copy (UNSEED, durably): commits stop waiting for it, so the
    // seed's snapshot, which waits for the transactions running, is not held up by them.
    const { file, db } = await setup(
      '{ timeout: 2s, configure_server: true }',
      '\n    retention: { keep_bytes: 0, keep_time: 0s, max_bytes: 64KiB, segment_size: 16KiB }',
    );
    const east = await start(file, 'east');
    const west = await start(file, 'west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    await src.sql('INSERT INTO acct (v) SELECT i FROM generate_series(1, 1000) i', db);
    await until(
      'caught up',
      () => east.status().groups[0]!.links[0]!.applied >= east.status().groups[0]!.positions.captured,
    );
    await nodes.stop(west, 0);
    const heldByWest = east.status().groups[0]!.links[0]!.durable;
    const { acked, stop } = syncWriters(db);
    // Commits that do not wait (synchronous_commit = local) fill the journal past max_bytes.
    const bulk = new pg.Client({ connectionString: src.url(db) });
    await bulk.connect();
    await bulk.query('SET synchronous_commit = local');
    for (let i = 0; i < 1500; i++) await bulk.query('INSERT INTO acct (v) VALUES ($1)', [i]);
    await bulk.end();
    await until(
      'journal released what west needs',
      () => east.status().groups[0]!.journal.first > heldByWest + 1,
      15_000,
    );
    expect(acked.length).toBe(0); // waiting for the backup
    await start(file, 'west');
    await until('reseeded', () => east.status().groups[0]!.links[0]!.seeds === 2, 30_000); // first seed at start
    await until('commits go on', () => acked.length > 200, 30_000);
    await stop();
    // Acknowledged: in the backup's journal; applied to its database after.
    await until('applied', () => {
      const g = east.status().groups[0]!;
      return g.links[0]!.applied >= g.positions.captured;
    });
    const ids = new Set((await dst.sql('SELECT id FROM acct', db)).rows.map((r) => r.id as number));
    expect(acked.filter((id) => !ids.has(id))).toEqual([]);
    const n = (await src.sql('SELECT count(*)::int AS n FROM acct', db)).rows[0].n as number;
    await until(
      'backup complete',
      async () => (await dst.sql('SELECT count(*)::int AS n FROM acct', db)).rows[0].n === n,
    );
  }, 90_000);

  it('leaves out a new table without a key, loudly, without holding commits; refuses to drop a key; restarts under a waiting DDL', async () => {
    const { file, db } = await setup('{ timeout: 2s, configure_server: true }');
    const east = await start(file, 'east');
    await start(file, 'west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    const client = new pg.Client({ connectionString: src.url(db) });
    await client.connect();
    const notices: string[] = [];
    client.on('notice', (n) => notices.push(`${n.message} (${n.hint})`));
    // Nothing here may hang: a hung commit fails the statement instead of the test's timeout.
    await client.query("SET statement_timeout = '15s'");
    await client.query('CREATE TABLE nokey (a int, b text)');
    expect(notices.join('\n')).toMatch(
      /table nokey is not replicated by group s\d+: it has no primary key \(of plain columns[^)]*\) \(Add one/,
    );
    await client.query("INSERT INTO nokey VALUES (1, 'before')");
    await client.query('UPDATE nokey SET b = b'); // not in the publication: updates work
    await client.query('INSERT INTO acct (v) VALUES (7)');
    await until(
      'the backup has the row',
      async () => (await dst.sql('SELECT v FROM acct', db)).rows.length === 1,
    );
    expect(east.status().groups[0]!.capture).toMatch(/NOT replicated for want of a primary key: nokey/);
    // With a key it joins, with the row written before (sent after its definition).
    await client.query('ALTER TABLE nokey ADD PRIMARY KEY (a)');
    await client.query("INSERT INTO nokey VALUES (2, 'after')");
    await until('the new table on the backup', async () => {
      const r = await dst
        .sql("SELECT a FROM nokey WHERE to_regclass('nokey') IS NOT NULL", db)
        .catch(() => null);
      return r?.rows.length === 2;
    });
    expect((await dst.sql('SELECT a, b FROM nokey ORDER BY a', db)).rows).toEqual([
      { a: 1, b: 'before' },
      { a: 2, b: 'after' },
    ]);
    expect(east.status().groups[0]!.capture).not.toMatch(/NOT replicated/);
    // A replicated table cannot lose its key; it can swap it for another in one statement.
    await expect(client.query('ALTER TABLE acct DROP CONSTRAINT acct_pkey')).rejects.toThrow(
      /table acct would lose the primary key group s\d+ matches its rows by/,
    );
    await client.query('ALTER TABLE nokey DROP CONSTRAINT nokey_pkey, ADD PRIMARY KEY (a, b)');
    // A DDL transaction that waits for the stopped capture holds the publication's lock: the
    // capture's restart must not wait for it (each would wait for the other).
    await nodes.stop(east, 0);
    const waiting = client.query('CREATE TABLE later (id int PRIMARY KEY)');
    await sleep(300);
    await start(file, 'east');
    await waiting;
    await client.end();
  }, 90_000);

  it('degrades to async after the timeout, loudly, and returns to sync when the backup is back', async () => {
    const { file, db } = await setup('{ timeout: 1s, degrade: true, configure_server: true }');
    const east = await start(file, 'east');
    const west = await start(file, 'west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    await nodes.stop(west, 0);
    const client = new pg.Client({ connectionString: src.url(db) });
    await client.connect();
    const t = Date.now();
    await client.query('INSERT INTO acct (v) VALUES (1)');
    expect(Date.now() - t).toBeGreaterThanOrEqual(900);
    expect(east.status().groups[0]!.capture).toMatch(/DEGRADED/);
    expect(east.status().groups[0]!.degraded).toBe(true);
    // Said by /metrics and by `tandem status`'s MODE column too.
    const metrics = async () =>
      (await fetch(`http://${adminAddress(east.config.nodes.east!)}/metrics`)).text();
    expect(await metrics()).toMatch(/^tandem_sync_degraded\{group="[^"]+"\} 1$/m);
    const answer = { node: 'east', admin: '', reachable: true, error: null, status: east.status() };
    expect(renderStatus(east.config, [answer])).toMatch(/\bsync DEGRADED\b/);
    await client.query('INSERT INTO acct (v) VALUES (2)'); // async now: no wait
    await start(file, 'west');
    await until('sync restored', () => !east.status().groups[0]!.degraded, 20_000);
    expect(east.status().groups[0]!.capture).not.toMatch(/DEGRADED/);
    expect(await metrics()).toMatch(/^tandem_sync_degraded\{group="[^"]+"\} 0$/m);
    // The primary's node stopped: nothing could degrade the commits waiting for it, so they do
    // not wait (its name leaves synchronous_standby_names until it starts again).
    await nodes.stop(east, 0);
    expect((await src.sql("SELECT current_setting('synchronous_standby_names') AS s")).rows).toEqual([
      { s: '' },
    ]);
    const t2 = Date.now();
    await client.query('INSERT INTO acct (v) VALUES (3)');
    expect(Date.now() - t2).toBeLessThan(900);
    await start(file, 'east');
    expect((await src.sql("SELECT current_setting('synchronous_standby_names') AS s")).rows).toEqual([
      { s: `"tandem_${db}_east"` },
    ]);
    await client.end();
  }, 60_000);
});
