/**
 * Seeding a SQLite backup: a seed that fails part-way resumes with the chunks the backup lacks,
 * rows the backup already holds are verified (kept when equal, SEED_FAILED when not), and
 * `seed.overwrite: true` replaces them.
 */
import { appendFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { dump, localCluster, type TestCluster, until } from '../helpers/cluster.js';

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

  it('resumes a seed that failed part-way with the chunks the backup lacks', async () => {
    c = await local.make();
    fill(c.db('east'), 50_000); // three chunks of 20,000 rows
    await start('west');
    // Committing chunk 1 fails until the trigger is dropped: the seed stops after chunk 0.
    const dst = new Database(c.db('west'));
    dst.exec(`CREATE TRIGGER block BEFORE INSERT ON _tandem_seed_chunks WHEN NEW.chunk = 1
      BEGIN SELECT RAISE(ABORT, 'held by the test'); END`);
    const east = await start('east');
    await until('the seed to fail', () =>
      east.status().groups[0]!.links[0]!.lastError?.includes('held by the test'),
    );
    expect(dst.prepare('SELECT tbl, chunk FROM _tandem_seed_chunks').all()).toEqual([{ tbl: 't', chunk: 0 }]);
    dst.exec('DROP TRIGGER block');
    dst.close();
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    const last = east.status().groups[0]!.links[0]!.lastSeed!;
    expect(last.resumed).toBe(20_000);
    expect(last.rows).toBe(50_000);
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
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
    await nodes.stopAll(0);
    const before = dump(c.db('west'), ['t']);
    expect(before.t!.length).toBe(999); // nothing was overwritten

    appendFileSync(c.config, '    seed: { overwrite: true }\n');
    east = await start('east');
    await start('west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
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
