/**
 * Two nodes in one process: a reader of the backup never sees part of a source transaction
 * (transfers keep the total; a 20,000-row transaction, split over several journal records,
 * appears all at once), and a backup that falls behind the journal's size cap is reseeded.
 */
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { TandemNode } from '../../src/node/node.js';
import { dump, localCluster, sleep, type TestCluster, until } from '../helpers/cluster.js';

describe('atomicity and retention', () => {
  const local = localCluster(500);
  const { nodes, start } = local;
  let c: TestCluster;

  const caughtUp = (east: TandemNode) =>
    until('caught up', () => {
      const g = east.status().groups[0]!;
      return g.positions.captured > 0 && g.links.every((l) => l.applied === g.positions.captured);
    });

  it('never shows a backup reader part of a source transaction', async () => {
    c = await local.make();
    const db = new Database(c.db('east'));
    db.pragma('journal_mode = WAL');
    db.exec(`CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
             CREATE TABLE bulk (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, v TEXT)`);
    const open = db.prepare('INSERT INTO acct (id, balance) VALUES (?, 1000)');
    db.transaction(() => {
      for (let i = 1; i <= 100; i++) open.run(i);
    })();
    const east = await start('east');
    await start('west');
    await caughtUp(east);

    // Reader on the backup: the total is always 100,000; bulk rows come 20,000 at a time.
    const reader = new Database(c.db('west'), { readonly: true });
    const sumQ = reader.prepare('SELECT sum(balance) AS s, (SELECT count(*) FROM bulk) AS n FROM acct');
    const seen = { sums: new Set<number>(), counts: new Set<number>(), reads: 0 };
    const poll = setInterval(() => {
      const r = sumQ.get() as { s: number; n: number };
      seen.sums.add(r.s);
      seen.counts.add(r.n);
      seen.reads++;
    }, 1);

    const move = db.prepare('UPDATE acct SET balance = balance + ? WHERE id = ?');
    const transfer = db.transaction((from: number, to: number, amount: number) => {
      move.run(-amount, from);
      move.run(amount, to);
    });
    const addBulk = db.prepare('INSERT INTO bulk (batch, v) VALUES (?, ?)');
    const bulk = db.transaction((batch: number) => {
      for (let i = 0; i < 20000; i++) addBulk.run(batch, `row ${i} of batch ${batch}`);
    });
    for (let i = 0; i < 1500; i++) {
      transfer(1 + (i % 100), 1 + ((i * 7) % 100), (i % 13) + 1);
      if (i % 500 === 250) bulk(i);
      if (i % 50 === 0) await sleep(1);
    }
    await caughtUp(east);
    await sleep(50);
    clearInterval(poll);
    reader.close();
    db.close();
    expect(seen.reads).toBeGreaterThan(50);
    expect([...seen.sums]).toEqual([100000]);
    for (const n of seen.counts) expect(n % 20000, `saw ${n} bulk rows`).toBe(0);
    expect(east.status().groups[0]!.positions.captured).toBeGreaterThan(3); // bulk spans records
    expect(dump(c.db('west'), ['acct', 'bulk'])).toEqual(dump(c.db('east'), ['acct', 'bulk']));
  }, 60_000);

  it('reseeds a backup whose records were released by retention.max_bytes', async () => {
    c = await local.make({
      groupExtra: '    retention: { keep_bytes: 0, keep_time: 0s, max_bytes: 64KiB, segment_size: 16KiB }',
    });
    const db = new Database(c.db('east'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
    const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
    const east = await start('east');
    const west = await start('west');
    for (let i = 0; i < 50; i++) ins.run(`before ${i}`);
    await caughtUp(east);
    await nodes.stop(west, 0);
    const heldByWest = east.status().groups[0]!.links[0]!.durable;
    for (let i = 0; i < 3000; i++) {
      ins.run(`while west is away ${i} ${'x'.repeat(40)}`);
      if (i % 100 === 0) await sleep(2);
    }
    // The cap holds (give or take the active segment) and west's next record is gone.
    await until(
      'journal released what west needs',
      () => {
        const j = east.status().groups[0]!.journal;
        return j.first > heldByWest + 1 && j.bytes <= 64 * 1024 + 16 * 1024 + 8192;
      },
      15000,
    );
    await start('west');
    await until('reseeded', () => east.status().groups[0]!.links[0]!.seeds === 2); // first seed at start
    await caughtUp(east);
    db.close();
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
  }, 60_000);
});
