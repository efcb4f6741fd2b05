/**
 * Seeding a SQLite backup: a seed that fails part-way resumes with the chunks the backup lacks
 * (also while rows trade values under a unique index, which waits for the newest snapshot),
 * rows the backup already holds are verified (kept when equal, SEED_FAILED when not; a seed
 * that verifies is started over, not resumed), and `seed.overwrite: true` replaces them; while
 * a new seed is prepared, status shows none of the previous seed's figures.
 */
import { appendFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { statusTable } from '../../src/cli/status.js';
import { realEnv } from '../../src/node/env.js';
import type { TandemNode } from '../../src/node/node.js';
import { dump, localCluster, sleep, type TestCluster, until } from '../helpers/cluster.js';

describe('seeding a SQLite backup', () => {
  const local = localCluster(0);
  const { nodes, start } = local;
  let c: TestCluster;

  /** `rows` rows in table t of `file`. */
  function fill(file: string, rows: number, edit = ''): void {
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, b BLOB);
      WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ${rows})
      INSERT INTO t SELECT i, 'row ' || i, zeroblob(i % 7) FROM s; ${edit}`);
    db.close();
  }

  /**
   * Starts west, then east, with west's commit of chunk 1 failing (a trigger, `block`, on the
   * open `dst`) until the seed has failed once.
   */
  async function seedFailedAtChunk1() {
    await start('west');
    const dst = new Database(c.db('west'));
    dst.exec(`CREATE TRIGGER block BEFORE INSERT ON _tandem_seed_chunks WHEN NEW.chunk = 1
      BEGIN SELECT RAISE(ABORT, 'held by the test'); END`);
    const east = await start('east');
    await until('the seed to fail', () =>
      east.status().groups[0]!.links[0]!.lastError?.includes('held by the test'),
    );
    return { east, dst };
  }

  /** seedFailedAtChunk1, then lets it go; resolves with the seed that brought the link to streaming. */
  async function seedFailingAfterChunk0() {
    const { east, dst } = await seedFailedAtChunk1();
    expect(dst.prepare('SELECT tbl, chunk FROM _tandem_seed_chunks').all()).toEqual([{ tbl: 't', chunk: 0 }]);
    dst.exec('DROP TRIGGER block');
    dst.close();
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    return east.status().groups[0]!.links[0]!.lastSeed!;
  }

  it('resumes a seed that failed part-way with the chunks the backup lacks', async () => {
    c = await local.make();
    fill(c.db('east'), 50_000); // three chunks of 20,000 rows
    const last = await seedFailingAfterChunk0();
    expect(last.resumed).toBe(20_000);
    expect(last.rows).toBe(50_000);
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
  }, 30_000);

  it('resumes a seed while rows trade values under a unique index, which waits for the newest snapshot', async () => {
    c = await local.make();
    fill(c.db('east'), 50_000);
    const src = new Database(c.db('east'));
    src.pragma('busy_timeout = 5000');
    src.exec('CREATE TABLE u_swaps (id INTEGER PRIMARY KEY, u INTEGER NOT NULL UNIQUE)');
    for (let i = 1; i <= 20; i++) src.prepare('INSERT INTO u_swaps VALUES (?, ?)').run(i, i);
    // A swap goes through a parking value, one commit per move (see seeding.pg.test.ts).
    const get = src.prepare('SELECT u FROM u_swaps WHERE id = ?').pluck();
    const set = src.prepare('UPDATE u_swaps SET u = ? WHERE id = ?');
    let stop = false;
    let swaps = 0;
    const swapping = (async () => {
      while (!stop) {
        const a = 1 + Math.floor(Math.random() * 20);
        const b = 1 + ((a + Math.floor(Math.random() * 19)) % 20);
        const ua = get.get(a);
        const ub = get.get(b);
        set.run(0, a);
        set.run(ua, b);
        set.run(ub, a);
        swaps++;
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    try {
      const held = await seedFailedAtChunk1();
      const dst = held.dst;
      let east = held.east;
      // Stopped, so that the backup's lock is free; swaps go on between the two snapshots.
      await nodes.stop(east, 0);
      dst.exec('DROP TRIGGER block');
      dst.close();
      await new Promise((r) => setTimeout(r, 300));
      east = await start('east');
      await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
      expect(east.status().groups[0]!.links[0]!.lastSeed!.resumed).toBe(20_000);
      await new Promise((r) => setTimeout(r, 300));
      stop = true;
      await swapping;
      await until(
        'equal',
        () =>
          JSON.stringify(dump(c.db('west'), ['u_swaps'])) === JSON.stringify(dump(c.db('east'), ['u_swaps'])),
      );
      expect(nodes.find('west').status().groups[0]!.error).toBeNull();
      expect(swaps).toBeGreaterThan(50);
      const west = new Database(c.db('west'), { readonly: true });
      const indexes = west
        .prepare(
          "SELECT sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'u_swaps' AND sql IS NOT NULL",
        )
        .pluck()
        .all();
      const waiting = west.prepare('SELECT count(*) FROM _tandem_unique_after').pluck().get();
      west.close();
      expect(indexes).toEqual(['CREATE UNIQUE INDEX "u_swaps_u_key" ON "u_swaps" ("u")']);
      expect(waiting).toBe(0);
    } finally {
      stop = true;
      await swapping;
      src.close();
    }
  }, 30_000);

  it('keeps equal rows, refuses different ones, and replaces them with seed.overwrite', async () => {
    c = await local.make();
    fill(c.db('east'), 1000);
    fill(c.db('west'), 1000, "UPDATE t SET v = 'local' WHERE id = 10; DELETE FROM t WHERE id = 11");
    let east = await start('east');
    await start('west');
    const err = await until('refused', () => {
      const e = east.status().groups[0]!.links[0]!.lastError;
      return e?.includes('SEED_FAILED') ? e : null;
    });
    expect(err).toMatch(
      /table "t" .*differ from the primary's: 1 rows missing and 1 rows different in chunk 0/,
    );
    expect(err).toMatch(/seed\.overwrite: true/);
    // The refusal stays in status while the next seed waits (docs/link.md, "Seeding").
    for (let i = 0; i < 10; i++) {
      await sleep(100);
      expect(east.status().groups[0]!.links[0]!.lastError).toMatch(/SEED_FAILED/);
    }
    await nodes.stopAll(0);
    const before = dump(c.db('west'), ['t']);
    expect(before.t!.length).toBe(999); // nothing was overwritten

    appendFileSync(c.config, '    seed: { overwrite: true }\n');
    east = await start('east');
    await start('west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
  }, 30_000);

  it('starts over a seed that verifies rows the backup held, instead of resuming it', async () => {
    // Resumed, it would apply records again over rows verified at a later snapshot, against
    // the table's own unique indexes: a seed that verifies tables is never resumed.
    c = await local.make();
    fill(c.db('east'), 50_000); // three chunks of 20,000 rows
    fill(c.db('west'), 50_000); // the same rows: verified, not copied
    const last = await seedFailingAfterChunk0();
    expect(last.resumed).toBe(0);
    expect(last.rows).toBe(50_000);
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
  }, 30_000);

  it("shows no earlier seed's progress while a new seed is being prepared", async () => {
    c = await local.make();
    fill(c.db('east'), 1000);
    // east's seed snapshots wait for `open` while it is false.
    let open = true;
    const env = {
      ...realEnv,
      createSnapshot: async (...args: Parameters<typeof realEnv.createSnapshot>) => {
        await until('the snapshot to be let through', () => open, 60_000);
        return realEnv.createSnapshot(...args);
      },
    };
    const east = await start('east', env);
    let west = await start('west');
    const link = () => east.status().groups[0]!.links[0]!;
    await until('seeded', () => link().state === 'streaming');
    expect(link().lastSeed!.rows).toBe(1000);

    // The backup loses everything; the source gains a table; the next seed's snapshot is held.
    await nodes.stop(west, 0);
    rmSync(c.db('west'), { force: true });
    for (const f of ['-wal', '-shm']) rmSync(`${c.db('west')}${f}`, { force: true });
    rmSync(path.join(c.dir, 'state', 'west'), { recursive: true, force: true });
    const db = new Database(c.db('east'));
    db.exec(`CREATE TABLE n (id INTEGER PRIMARY KEY, v TEXT);
      WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 500) INSERT INTO n SELECT i, 'n' FROM s`);
    db.close();
    open = false;
    west = await start('west');
    await until('a new seed begun', () => link().state === 'seeding');
    const notes = (n: TandemNode) =>
      statusTable([{ node: 'east', admin: '', reachable: true, error: null, status: n.status() }]).notes;
    try {
      for (let i = 0; i < 5; i++) {
        expect(link().state).toBe('seeding');
        expect(link().seed).toBeNull();
        expect(notes(east).join('\n')).toMatch(/east -> west: preparing a seed/);
        expect(notes(east).join('\n')).not.toMatch(/seeding at position/);
        await sleep(50);
      }
    } finally {
      open = true;
    }
    await until('seeded again', () => link().state === 'streaming' && link().seeds === 2);
    expect(link().seed).toBeNull();
    expect(link().lastSeed!.rows).toBe(1500);
    expect(dump(c.db('west'), ['t', 'n'])).toEqual(dump(c.db('east'), ['t', 'n']));
  }, 30_000);

  it("adopts a backup whose rows equal the primary's, then streams", async () => {
    c = await local.make();
    fill(c.db('east'), 1000);
    fill(c.db('west'), 1000);
    const east = await start('east');
    await start('west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    const db = new Database(c.db('east'));
    db.exec("UPDATE t SET v = 'after' WHERE id = 5");
    db.close();
    await until(
      'streamed',
      () => JSON.stringify(dump(c.db('west'), ['t'])) === JSON.stringify(dump(c.db('east'), ['t'])),
    );
  }, 30_000);
});
