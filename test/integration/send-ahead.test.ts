/**
 * Records sent ahead of the source's fsync (docs/link.md): a backup applies nothing beyond what
 * its source's journal holds durably, cuts what the source may have lost at the next
 * connection, and a primary whose journal lost records a backup holds takes them back at start.
 * The lost tails are made by hand in the journals of stopped nodes, as a crash between the
 * send and the source's fsync leaves them.
 */
import { describe, expect, it } from 'vitest';
import { decodeRecord, encodeRecord, type RowChange } from '../../src/core/record.js';
import { dump, expectSameRecords, localCluster, openJournal, sleep, until } from '../helpers/cluster.js';

describe('records sent ahead of the source fsync', () => {
  const local = localCluster(500);
  const { start, nodes } = local;

  async function streamRows(n: number) {
    const { db, east, west } = await local.streaming('CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)');
    const ins = db.prepare('INSERT INTO t (n) VALUES (?)');
    for (let i = 0; i < n; i++) {
      ins.run(i);
      await sleep(3); // about one record per transaction
    }
    await until('caught up', () => {
      const g = east.status().groups[0]!;
      return g.positions.captured > 0 && g.links[0]!.applied === g.positions.captured;
    });
    await nodes.stop(west, 0);
    await nodes.stop(east, 0);
    return db;
  }

  it('a primary whose journal lost records its backup holds takes them back at start', async () => {
    const c = await local.make();
    const db = await streamRows(40);
    // east's journal loses its last 10 records, as when its node dies after sending them and
    // before their fsync (its database's changes were captured once and are gone from the
    // change table: only the backup holds them now).
    const j = await openJournal(c, 'east');
    const last = j.lastPosition;
    await j.truncateAfter(last - 10);
    await j.close();
    await start('west');
    const east = await start('east');
    expect(east.journal('shop').lastPosition).toBe(last);
    const ins = db.prepare('INSERT INTO t (n) VALUES (?)');
    for (let i = 0; i < 20; i++) ins.run(1000 + i);
    await until('caught up', () => {
      const g = east.status().groups[0]!;
      return (
        g.links[0]!.state === 'streaming' &&
        g.positions.captured > last &&
        g.links[0]!.applied === g.positions.captured
      );
    });
    await nodes.stopAll(0);
    db.close();
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
    await expectSameRecords(c);
  }, 60_000);

  it('a backup applies nothing beyond what its source made durable, and cuts it when the source lost it', async () => {
    const c = await local.make();
    const db = await streamRows(20);
    // west's journal holds three records east never made durable (east's crash lost them).
    const j = await openJournal(c, 'west');
    const applied = j.lastPosition;
    const model = decodeRecord(j.read(applied, { maxBytes: 1, maxRecords: 1 })[0]!);
    const insert = model.changes.find((ch) => ch.op === 'insert') as RowChange;
    let last: Promise<void> | null = null;
    for (let k = 1; k <= 3; k++) {
      const after = [...insert.after!];
      after[0] = typeof after[0] === 'bigint' ? BigInt(900_000 + k) : 900_000 + k;
      last = j.append(
        encodeRecord({
          ...model,
          position: applied + k,
          txCount: 1,
          changes: [{ ...insert, after }],
        }),
      );
    }
    await last;
    await j.close();
    // Alone, west holds them and applies none: nothing says east has them.
    let west = await start('west');
    await sleep(500);
    expect(west.status().groups[0]!.positions.applied).toBe(applied);
    await nodes.stop(west, 0);
    // east comes back without them (west is down, so nothing is taken back) and writes on.
    const east = await start('east');
    const ins = db.prepare('INSERT INTO t (n) VALUES (?)');
    for (let i = 0; i < 10; i++) {
      ins.run(2000 + i);
      await sleep(3); // records at the positions west's cut records held
    }
    await until(
      'east captured the new rows',
      () => east.status().groups[0]!.positions.captured > applied + 3,
    );
    west = await start('west');
    await until('caught up', () => {
      const g = east.status().groups[0]!;
      return g.links[0]!.state === 'streaming' && g.links[0]!.applied === g.positions.captured;
    });
    await nodes.stopAll(0);
    db.close();
    const rows = dump(c.db('west'), ['t']);
    expect(rows).toEqual(dump(c.db('east'), ['t']));
    expect(rows.t!.some((r) => String(r).startsWith('[90000'))).toBe(false);
    await expectSameRecords(c);
  }, 60_000);
});
