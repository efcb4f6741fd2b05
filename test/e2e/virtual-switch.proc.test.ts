/**
 * `tandem virtual-switch` with real processes (dist/), SQLite: the backup takes test writes while
 * the primary goes on; ending it reverts every test write, applies what was held, and leaves the
 * backup identical to the primary. A switchover is refused meanwhile.
 */
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { makeCluster, sleep, startOnTable, type TestCluster, tandem, until } from '../helpers/cluster.js';

describe('virtual switch (processes)', () => {
  let c: TestCluster | null = null;
  afterEach(() => {
    c?.cleanup();
    c = null;
  });

  it('makes the backup writable for a test, then reverts the test and catches up', async () => {
    c = await makeCluster();
    const exec = (node: string, q: string) => {
      const db = new Database(c!.db(node));
      try {
        db.pragma('busy_timeout = 2000');
        db.exec(q);
      } finally {
        db.close();
      }
    };
    const dump = (node: string) => {
      const db = new Database(c!.db(node), { readonly: true });
      try {
        return JSON.stringify(db.prepare('SELECT * FROM t ORDER BY id').all());
      } finally {
        db.close();
      }
    };
    const { east, west } = await startOnTable(
      c,
      "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    );
    await until('caught up', async () => {
      const g = (await east.status())?.groups[0];
      return g && g.positions.captured > 0 && g.links[0]!.applied >= g.positions.captured;
    });
    let stop = false;
    let n = 100;
    const writing = (async () => {
      while (!stop) {
        exec('east', `INSERT INTO t VALUES (${n++}, 'prod'); UPDATE t SET v = 'prod ${n}' WHERE id = 3`);
        await sleep(5);
      }
    })();

    const start = await tandem(
      ['virtual-switch', 'start', 'shop', '--config', c.config, '--on', 'west'],
      c.env,
    );
    expect(start.err).toBe('');
    expect(start.out).toMatch(/on west: it takes test writes now \(apply holds at position \d+/);
    // Test writes on the backup: insert, update, delete, and a row production updates too.
    exec(
      'west',
      "INSERT INTO t VALUES (1000, 'test'); UPDATE t SET v = 'test' WHERE id = 1; DELETE FROM t WHERE id = 2",
    );
    exec('west', "UPDATE t SET v = 'test 3' WHERE id = 3");
    expect((await west.status())?.groups[0]).toMatchObject({ role: 'backup', fenced: false });
    const sw = await tandem(['switchover', 'shop', '--config', c.config], c.env);
    expect(sw.code).toBe(1);
    expect(sw.out).toMatch(/a virtual switch is on at west/);
    await sleep(300); // production goes on meanwhile, held in west's journal
    const end = await tandem(['virtual-switch', 'end', 'shop', '--config', c.config], c.env);
    expect(end.err).toBe('');
    expect(end.out).toMatch(/on west ended in \d+ ms: 4 test row changes reverted, \d+ held records applied/);
    stop = true;
    await writing;
    await until('west equals east', () => dump('west') === dump('east'));
    expect(dump('west')).not.toMatch(/test/);
    expect(() => exec('west', "INSERT INTO t VALUES (2000, 'x')")).toThrow(/BACKUP_FENCED/);
    expect((await west.status())?.groups[0]).toMatchObject({ fenced: true, virtual: null });
  }, 60_000);
});
