/**
 * Seeding a PostgreSQL backup whose tables already hold rows: identical rows are verified and
 * kept, different rows stop the seed with SEED_FAILED (nothing overwritten), and with
 * `seed.overwrite: true` they are replaced; a refused seed is tried again only after a wait, its
 * refusal shown in status meanwhile. Also: a seed interrupted by stopping the source's node
 * mid-copy resumes with the chunks the backup lacks. Two real PostgreSQL 15 clusters.
 */
import { randomBytes } from 'node:crypto';
import { appendFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readTableSchema } from '../../src/adapters/postgres/schema.js';
import { planTable } from '../../src/adapters/postgres/snapshot.js';
import { loadConfig } from '../../src/config/index.js';
import { TandemNode } from '../../src/node/node.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { Nodes, sleep, until } from '../helpers/cluster.js';
import { type PgCluster, startPg } from '../helpers/pg.js';

describe('seeding a PostgreSQL backup', () => {
  let src: PgCluster;
  let dst: PgCluster;
  const dirs: string[] = [];
  const nodes = new Nodes();

  beforeAll(async () => {
    [src, dst] = await Promise.all([startPg({ settings: { wal_level: 'logical' } }), startPg()]);
    process.env.TANDEM_SECRET = randomBytes(24).toString('hex');
  }, 120_000);

  afterEach(async () => {
    await nodes.stopAll(0);
  });

  afterAll(async () => {
    await Promise.all([src?.stop(), dst?.stop()]);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** A fresh group over fresh databases `db` on both clusters. */
  async function setup(db: string, extra = '') {
    // Slots are per cluster: the previous test's slot has this group's name too.
    await src.sql('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots');
    for (const c of [src, dst]) {
      await c.sql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await c.sql(`CREATE DATABASE ${db}`);
    }
    const cfg = await writeClusterConfig({
      cluster: 'seedtest',
      group: 'shop',
      endpoints: { east: src.url(db), west: dst.url(db) },
      groupExtra: extra,
    });
    dirs.push(cfg.dir);
    return cfg;
  }

  const refusal = (n: TandemNode) => {
    const e = n.status().groups[0]!.links[0]!.lastError;
    return e?.includes('SEED_FAILED') ? e : null;
  };
  const items = (n: number) => `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, doc jsonb);
    INSERT INTO items SELECT i, 'item ' || i, jsonb_build_object('i', i) FROM generate_series(1, ${n}) i`;
  const digest = async (c: PgCluster, db: string) =>
    (await c.sql("SELECT md5(string_agg(t::text, ',' ORDER BY id)) AS d FROM items t", db)).rows[0]!.d;

  /**
   * Starts west, then east, and stops east once the seed's first chunk of items has committed:
   * committing chunk 1 waits on an uncommitted row of the same key until then.
   */
  async function seedStoppedAfterChunk0(file: string, db: string): Promise<void> {
    await nodes.start(file, 'west');
    const blocker = new pg.Client({ connectionString: dst.url(db) });
    await blocker.connect();
    await blocker.query("BEGIN; INSERT INTO tandem.seed_chunks VALUES ('shop', 'items', 1, 0)");
    const east = await nodes.start(file, 'east');
    const committed = async () =>
      Number((await dst.sql('SELECT count(*) AS n FROM tandem.seed_chunks', db)).rows[0]?.n);
    await until('the first chunk committed', async () => (await committed()) === 1);
    await nodes.stop(east, 0);
    await blocker.query('ROLLBACK');
    await blocker.end();
  }

  /**
   * Swaps of two rows' values of table swaps (u unique) through a parking value, one statement
   * per commit, until `stop()`, which resolves with how many swaps were made.
   */
  async function startSwaps(url: string) {
    const writer = new pg.Client({ connectionString: url });
    await writer.connect();
    let stop = false;
    let swaps = 0;
    // RETURNING's subquery sees the row before the update.
    const move = async (id: number, u: number) =>
      (
        await writer.query(
          'UPDATE swaps SET u = $2 WHERE id = $1 RETURNING (SELECT u FROM swaps WHERE id = $1) AS old',
          [id, u],
        )
      ).rows[0].old as number;
    const swapping = (async () => {
      while (!stop) {
        const a = 1 + Math.floor(Math.random() * 20);
        const b = 1 + ((a + Math.floor(Math.random() * 19)) % 20);
        await move(a, await move(b, await move(a, 0)));
        swaps++;
      }
    })();
    let ended: Promise<number> | null = null;
    return {
      stop: () =>
        (ended ??= (async () => {
          stop = true;
          await swapping.finally(() => writer.end());
          return swaps;
        })()),
    };
  }

  it("keeps backup rows equal to the primary's, refuses different ones, replaces them with seed.overwrite", async () => {
    const cfg = await setup('verify');
    await src.sql(items(20_000), 'verify');
    await dst.sql(items(20_000), 'verify');

    // Identical: verified, kept, and the backup streams from there.
    let east = await nodes.start(cfg.file, 'east');
    let west = await nodes.start(cfg.file, 'west');
    await until('seeded', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    await src.sql("UPDATE items SET name = 'changed' WHERE id = 7", 'verify');
    await until('streamed', async () => (await digest(dst, 'verify')) === (await digest(src, 'verify')));
    await nodes.stopAll(0);

    // Different: one changed row and one extra row on a backup Tandem never seeded.
    await dst.sql('DROP SCHEMA tandem CASCADE', 'verify');
    await dst.sql(
      "UPDATE items SET name = 'local edit' WHERE id = 500; INSERT INTO items VALUES (99999, 'x', null)",
      'verify',
    );
    const before = await digest(dst, 'verify');
    east = await nodes.start(cfg.file, 'east');
    west = await nodes.start(cfg.file, 'west');
    const err = await until('refused', () => refusal(east));
    expect(err).toMatch(
      /SEED_FAILED.*table "items".*differ from the primary's: 0 rows missing and 1 rows different/s,
    );
    expect(err).toMatch(/seed\.overwrite: true/);
    expect(await digest(dst, 'verify')).toBe(before);
    expect(west.status().groups[0]!.state).toBe('running');
    await nodes.stopAll(0);

    // seed.overwrite: replaced by the primary's rows.
    appendFileSync(cfg.file, '    seed: { overwrite: true }\n');
    east = await nodes.start(cfg.file, 'east');
    west = await nodes.start(cfg.file, 'west');
    await until('seeded', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    await until('equal', async () => (await digest(dst, 'verify')) === (await digest(src, 'verify')));
  }, 60_000);

  it('counts backup rows the primary does not have as a difference', async () => {
    const cfg = await setup('extra');
    await src.sql(items(1000), 'extra');
    await dst.sql(`${items(1000)}; INSERT INTO items VALUES (5000, 'extra', null)`, 'extra');
    const east = await nodes.start(cfg.file, 'east');
    await nodes.start(cfg.file, 'west');
    const err = await until('refused', () => refusal(east));
    expect(err).toMatch(/SEED_FAILED.*1 rows the primary does not have/s);
  }, 30_000);

  it('waits before seeding again after a refusal, and keeps the refusal in status meanwhile', async () => {
    const cfg = await setup('refused');
    const t = `CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
      INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i`;
    await src.sql(t, 'refused');
    await dst.sql(`${t}; UPDATE t SET v = 'local' WHERE id = 50`, 'refused');
    const rows = async () => (await dst.sql('SELECT id, v FROM t ORDER BY id', 'refused')).rows;
    const before = await rows();
    // east logs into `logs`, to count its seed attempts.
    const logs: { level: number; msg: string; retryInMs?: number }[] = [];
    const east = new TandemNode(
      loadConfig(cfg.file),
      'east',
      pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) }),
    );
    try {
      await nodes.start(cfg.file, 'west');
      await east.start();
      const err = await until('refused', () => refusal(east));
      expect(err).toMatch(/SEED_FAILED.*table "t".*0 rows missing and 1 rows different in chunk 0/s);
      const attempts = () => logs.filter((l) => l.msg === 'seeding backup').length;
      const first = attempts();
      // Polled like `tandem status` for 2.5 s: the refusal shows on every poll, and the link
      // waits (down) rather than claiming a seed; the backup's rows stay as they were.
      const states: string[] = [];
      for (let i = 0; i < 25; i++) {
        await sleep(100);
        const link = east.status().groups[0]!.links[0]!;
        expect(link.lastError, `poll ${i}`).toMatch(/SEED_FAILED.*seed\.overwrite: true/s);
        states.push(link.state);
      }
      // Before: a new seed (a full comparison) every ~125 ms, 20 or so in this window.
      expect(attempts() - first).toBeLessThanOrEqual(2);
      expect(states.filter((s) => s === 'down').length).toBeGreaterThanOrEqual(20);
      const failures = logs.filter((l) => l.msg === 'seeding the backup failed: trying again later');
      expect(failures.every((l) => l.level === 50)).toBe(true);
      expect(failures.map((l) => l.retryInMs).slice(0, 2)).toEqual([1000, 2000]);
      expect(await rows()).toEqual(before);
    } finally {
      await east.stop(0);
    }
  }, 30_000);

  it('seeds while rows trade values under a unique index (nothing is replayed over the copy)', async () => {
    // Each swap of two rows' values goes through a parking value, one statement per commit: a
    // record applied over a copy that already held later commits would meet the unique index
    // (a row moving to the parking value while the copy has another row there).
    const cfg = await setup('swaps');
    await src.sql(
      'CREATE TABLE swaps (id int PRIMARY KEY, u int NOT NULL UNIQUE); INSERT INTO swaps SELECT i, i FROM generate_series(1, 20) i',
      'swaps',
    );
    const swapper = await startSwaps(src.url('swaps'));
    try {
      for (let round = 0; round < 3; round++) {
        const east = await nodes.start(cfg.file, 'east');
        const west = await nodes.start(cfg.file, 'west');
        await until('seeded', () => east.status().groups[0]!.links[0]!.state === 'streaming');
        await sleep(300);
        const { state, error } = west.status().groups[0]!;
        expect({ state, error }, `round ${round}`).toEqual({ state: 'running', error: null });
        await nodes.stopAll(0);
        // The next round seeds again from scratch.
        await dst.sql('DROP SCHEMA tandem CASCADE; DROP TABLE swaps', 'swaps');
        for (const n of ['east', 'west'])
          rmSync(path.join(cfg.dir, 'state', n), { recursive: true, force: true });
      }
      const east = await nodes.start(cfg.file, 'east');
      await nodes.start(cfg.file, 'west');
      await until('seeded', () => east.status().groups[0]!.links[0]!.state === 'streaming');
      const swaps = await swapper.stop();
      const rows = (c: PgCluster) => c.sql('SELECT id, u FROM swaps ORDER BY id', 'swaps');
      await until(
        'equal',
        async () => JSON.stringify((await rows(dst)).rows) === JSON.stringify((await rows(src)).rows),
      );
      expect(swaps).toBeGreaterThan(50);
    } finally {
      await swapper.stop();
    }
  }, 90_000);

  it('resumes a seed while rows trade values under a unique constraint, which waits for the newest snapshot', async () => {
    // The resumed seed copies its later chunks under a new snapshot, and the records between the
    // two are applied again over them: the unique constraint is made only once apply has passed
    // the new snapshot's position.
    const cfg = await setup('resumeswaps', '    seed: { workers: 1 }');
    await src.sql(
      `CREATE TABLE items (id bigint PRIMARY KEY, pad text); INSERT INTO items SELECT i, repeat('x', 100) FROM generate_series(1, 100000) i; ANALYZE items;
       CREATE TABLE swaps (id int PRIMARY KEY, u int NOT NULL UNIQUE); INSERT INTO swaps SELECT i, i FROM generate_series(1, 20) i`,
      'resumeswaps',
    );
    const swapper = await startSwaps(src.url('resumeswaps'));
    try {
      await seedStoppedAfterChunk0(cfg.file, 'resumeswaps');
      await sleep(300); // swaps go on between the two snapshots
      const east = await nodes.start(cfg.file, 'east');
      await until('seeded', () => east.status().groups[0]!.links[0]!.state === 'streaming', 30_000);
      expect(east.status().groups[0]!.links[0]!.lastSeed!.resumed).toBeGreaterThan(0);
      await sleep(500);
      await swapper.stop();
      const rows = (c: PgCluster) => c.sql('SELECT id, u FROM swaps ORDER BY id', 'resumeswaps');
      const west = nodes.find('west');
      await until('equal', async () => {
        const { error } = west.status().groups[0]!;
        if (error) throw new Error(error); // said by the timeout
        return JSON.stringify((await rows(dst)).rows) === JSON.stringify((await rows(src)).rows);
      });
      const { state, error } = west.status().groups[0]!;
      expect({ state, error }).toEqual({ state: 'running', error: null });
      // The constraint came once apply passed the new snapshot.
      const unique = await dst.sql(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'swaps'::regclass AND contype = 'u'",
        'resumeswaps',
      );
      expect(unique.rows).toEqual([{ conname: 'swaps_u_key' }]);
      expect(
        (await dst.sql('SELECT count(*)::int AS n FROM tandem.unique_after', 'resumeswaps')).rows,
      ).toEqual([{ n: 0 }]);
    } finally {
      await swapper.stop();
    }
  }, 90_000);

  it('resumes a seed after the source node stops mid-copy', async () => {
    const cfg = await setup('resume', '    seed: { workers: 1 }');
    // About 13 MB: four chunks of 4 MiB, copied in order by one worker; their bounds come from
    // the key's statistics. A table with a two-column key (no histogram to use) is chunked by a
    // walk of its key.
    await src.sql(
      `CREATE TABLE items (id bigint PRIMARY KEY, pad text); INSERT INTO items SELECT i, repeat('x', 100) FROM generate_series(1, 100000) i; ANALYZE items;
       CREATE TABLE pairs (a int, b int, pad text, PRIMARY KEY (a, b)); INSERT INTO pairs SELECT i % 7, i, repeat('y', 100) FROM generate_series(1, 70000) i; ANALYZE pairs`,
      'resume',
    );
    await seedStoppedAfterChunk0(cfg.file, 'resume');
    await src.sql("INSERT INTO items VALUES (0, 'written while the source node was down')", 'resume');
    const east = await nodes.start(cfg.file, 'east');
    await until('seeded', () => east.status().groups[0]!.links[0]!.state === 'streaming', 30_000);
    await until('equal', async () => (await digest(dst, 'resume')) === (await digest(src, 'resume')));
    const pairs = (c: PgCluster) =>
      c.sql(
        "SELECT count(*)::int AS n, md5(string_agg(t::text, ',' ORDER BY a, b)) AS d FROM pairs t",
        'resume',
      );
    expect((await pairs(dst)).rows).toEqual((await pairs(src)).rows);
    // The chunk bounds: from the statistics for a one-column key, from a walk for two.
    const c = new pg.Client({ connectionString: src.url('resume') });
    await c.connect();
    const items = await planTable(c, await readTableSchema(c, 'items', 'shop', undefined));
    const pairsPlan = await planTable(c, await readTableSchema(c, 'pairs', 'shop', undefined));
    await c.end();
    expect(items.bounds.length).toBe(3);
    expect(pairsPlan.bounds.length).toBeGreaterThanOrEqual(2);
    expect(pairsPlan.bounds.every((b) => (JSON.parse(b) as string[]).length === 2)).toBe(true);
    // The restarted node resumed: it copied only the chunks the backup lacked.
    const last = east.status().groups[0]!.links[0]!.lastSeed!;
    expect(last.resumed).toBeGreaterThan(0);
    expect(last.rows).toBe(170_000); // row 0 came through the journal: chunk 0 was copied before it
  }, 60_000);
});
