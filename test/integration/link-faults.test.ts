/**
 * The link between two nodes (in this process, SQLite) through the test tree's TCP fault proxy:
 * the primary dials the backup through it while an application writes, and the proxy delays,
 * slices, throttles, drops bytes, blackholes, resets and refuses. Ledger check afterwards: every
 * committed row is on the backup exactly once, the tables are equal, and both journals hold the
 * same records.
 */
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { dump, eastConfigVia, expectSameRecords, localCluster, sleep, until } from '../helpers/cluster.js';
import { FaultProxy } from '../helpers/fault-proxy.js';

describe('link through a fault proxy', () => {
  const local = localCluster(500);

  it('delays, slices, throttling, dropped bytes, a blackhole, resets and refusals lose and repeat nothing', async () => {
    const c = await local.make();
    const proxy = await FaultProxy.start({ host: '127.0.0.1', port: c.ports.west!.listen });
    try {
      // East's copy of the config sends it to west through the proxy; west listens where it did.
      const eastConfig = eastConfigVia(c, proxy.port);
      const db = new Database(c.db('east'));
      db.pragma('journal_mode = WAL');
      db.exec(
        'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL); CREATE TABLE n (k INTEGER PRIMARY KEY, c INTEGER)',
      );
      db.exec('INSERT INTO n VALUES (1, 0)');
      process.env.TANDEM_SECRET = c.secret;
      const east = await local.nodes.start(eastConfig, 'east');
      await local.start('west');
      const link = () => east.status().groups[0]!.links[0]!;
      await until('streaming', () => link().state === 'streaming');

      // The ledger: ids whose transaction committed on the primary.
      const committed: number[] = [];
      let stop = false;
      const ins = db.prepare('INSERT INTO t (id, v) VALUES (?, ?)');
      const bump = db.prepare('UPDATE n SET c = c + 1 WHERE k = 1');
      const writer = (async () => {
        for (let i = 1; !stop; i++) {
          db.transaction(() => {
            ins.run(i, `row ${i} ${'x'.repeat(i % 300)}`);
            bump.run();
          })();
          committed.push(i);
          await sleep(2);
        }
      })();
      const applied = () => link().applied;
      /** Runs with a fault set for `ms`, then heals; returns how far apply moved meanwhile. */
      const during = async (fault: () => void, ms: number) => {
        const before = applied();
        fault();
        await sleep(ms);
        const moved = applied() - before;
        proxy.heal();
        return moved;
      };

      // Slow or chopped links still carry the stream.
      expect(await during(() => proxy.delay(30, 20), 1500)).toBeGreaterThan(0);
      expect(await during(() => proxy.slice(7, 1), 1500)).toBeGreaterThan(0);
      expect(await during(() => proxy.throttle(40_000), 1500)).toBeGreaterThan(0);

      // Bytes lost mid-stream: TLS and the framing notice, the link reconnects.
      let accepted = proxy.accepted;
      await during(() => proxy.drop(0.3), 1500);
      await until('a new connection after dropped bytes', () => proxy.accepted > accepted, 15_000);
      await until('streaming after dropped bytes', () => link().state === 'streaming', 15_000);

      // Silence: heartbeats find the link dead, and it comes back after the heal.
      accepted = proxy.accepted;
      const discarded = proxy.discarded;
      proxy.blackhole();
      await until('the link to notice the silence', () => link().state !== 'streaming', 15_000);
      expect(proxy.discarded).toBeGreaterThan(discarded);
      proxy.heal();
      await until('a new connection after the blackhole', () => proxy.accepted > accepted, 15_000);
      await until('streaming after the blackhole', () => link().state === 'streaming', 15_000);

      // Resets, one after another, then a spell of refused connections.
      accepted = proxy.accepted;
      for (let i = 0; i < 3; i++) {
        proxy.reset();
        await until('reconnected', () => proxy.accepted > accepted + i, 15_000);
        await sleep(200);
      }
      accepted = proxy.accepted;
      proxy.refuse();
      proxy.reset();
      await until('refused connections', () => proxy.accepted >= accepted + 2, 15_000);
      expect(link().state).not.toBe('streaming');
      proxy.heal();
      await until('streaming after refusals', () => link().state === 'streaming', 15_000);

      stop = true;
      await writer;
      await until(
        'the backup to apply everything',
        () => {
          const g = east.status().groups[0]!;
          return g.positions.captured > 0 && g.links[0]!.applied >= g.positions.captured;
        },
        30_000,
      );
      db.close();

      // Exactly once: each committed id once, nothing else.
      const west = new Database(c.db('west'), { readonly: true });
      const ids = west.prepare('SELECT id FROM t ORDER BY id').pluck().all() as number[];
      const counter = west.prepare('SELECT c FROM n WHERE k = 1').pluck().get() as number;
      west.close();
      expect(ids).toEqual(committed);
      expect(counter).toBe(committed.length);
      expect(dump(c.db('west'), ['t', 'n'])).toEqual(dump(c.db('east'), ['t', 'n']));
      await local.nodes.stopAll();
      await expectSameRecords(c);
    } finally {
      await proxy.close();
    }
  }, 120_000);
});
