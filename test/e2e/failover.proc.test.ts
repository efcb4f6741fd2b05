/**
 * Unplanned failover with real `tandem run` processes (dist/): a witness node holding the
 * primary's lease, the primary SIGKILLed (sync mode: no acknowledged commit lost) or frozen
 * (SIGSTOP: its database stops taking writes by itself), automatic takeover, the old primary
 * fenced for good when it comes back; and manual failover without a witness.
 */
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { NodeStatus } from '../../src/node/status.js';
import { TandemSqliteWriter } from '../../src/sync-writer.js';
import { makeCluster, sleep, type TestCluster, tandem, until } from '../helpers/cluster.js';

const group = async (p: { status: () => Promise<NodeStatus | null> }) => (await p.status())?.groups[0];

function insert(file: string, id: number): void {
  const db = new Database(file);
  try {
    db.pragma('busy_timeout = 1000');
    db.prepare('INSERT INTO t (id, v) VALUES (?, ?)').run(id, 'x');
  } finally {
    db.close();
  }
}

describe('failover (processes)', () => {
  let c: TestCluster | null = null;
  afterEach(() => {
    c?.cleanup();
    c = null;
  });

  async function witnessCluster(mode: 'async' | 'sync') {
    c = await makeCluster({
      mode,
      extraNodes: ['arbiter'],
      groupExtra: '    failover: { witness: arbiter, timeout: 1s }\n    sync: { timeout: 2s }',
    });
    const db = new Database(c.db('east'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
    db.close();
    const nodes = { east: c.proc('east'), west: c.proc('west'), arbiter: c.proc('arbiter') };
    for (const n of Object.values(nodes)) n.start();
    await Promise.all(Object.values(nodes).map((n) => n.ready()));
    await until('streaming and holding the lease', async () => {
      const g = await group(nodes.east);
      return g?.links[0]?.state === 'streaming' && g.lease?.held === true;
    });
    return nodes;
  }

  it('SIGKILL of the primary in sync mode: the witness agrees, the backup takes over with every acknowledged commit; the old primary stays fenced', async () => {
    const nodes = await witnessCluster('sync');
    const w = TandemSqliteWriter.open({ config: c!.config, node: 'east', group: 'shop' });
    const acked: number[] = [];
    let stop = false;
    const writing = (async () => {
      for (let id = 1; !stop; id++) {
        try {
          await w.transaction((db) => db.prepare('INSERT INTO t (id, v) VALUES (?, ?)').run(id, 'sync'));
          acked.push(id);
        } catch {
          // not acknowledged: the node is gone (or the database refuses now)
        }
        await sleep(2);
      }
    })();
    await until('acknowledged commits', () => acked.length > 100);
    const killedAt = Date.now();
    await nodes.east.kill('SIGKILL');
    // The old primary's database fences itself when its lease runs out (3/4 of the timeout).
    await until(
      'east refuses writes by itself',
      () => {
        try {
          insert(c!.db('east'), 1_000_000 + Math.floor(Math.random() * 1e6));
          return false;
        } catch (err) {
          return /lost its quorum/.test((err as Error).message);
        }
      },
      3000,
    );
    stop = true;
    await writing;
    w.db.close();
    await until('west took over', async () => (await nodes.west.status())?.lastFailover, 10_000);
    const writableAfter = Date.now() - killedAt;
    expect(writableAfter).toBeLessThan(5000);
    const s = await nodes.west.status();
    expect(s?.lastFailover).toMatchObject({
      from: 'east',
      to: 'west',
      how: 'automatic',
      quorum: 'witness arbiter',
    });
    expect(s?.lastFailover?.epoch).toEqual({ from: 1, to: 2 });
    // Every acknowledged commit is on the new primary.
    const west = new Database(c!.db('west'), { readonly: true });
    const ids = new Set(west.prepare('SELECT id FROM t').pluck().all() as number[]);
    west.close();
    expect(acked.filter((id) => !ids.has(id))).toEqual([]);
    // The new primary takes writes (its own lease, from the witness).
    await until('west takes writes', () => {
      try {
        insert(c!.db('west'), 2_000_000);
        return true;
      } catch {
        return false;
      }
    });
    // The old primary, back, learns of epoch 2 and stays fenced.
    nodes.east.start();
    await nodes.east.ready();
    await until('east fenced for the newer epoch', async () => (await group(nodes.east))?.state === 'fenced');
    expect((await group(nodes.east))?.error).toMatch(/node west is primary of group shop at epoch 2/);
    expect(() => insert(c!.db('east'), 3_000_000)).toThrow(/FENCED/);
    const status = await tandem(['status', '--config', c!.config], c!.env);
    expect(status.out).toMatch(/shop\s+west\s+primary\s+2/);
  }, 60_000);

  it('a frozen primary (SIGSTOP) stops taking writes by itself; the backup takes over; thawed, it fences itself', async () => {
    const nodes = await witnessCluster('async');
    insert(c!.db('east'), 1);
    nodes.east.child!.kill('SIGSTOP');
    try {
      await until(
        'east refuses writes though its node still runs',
        () => {
          try {
            insert(c!.db('east'), 2 + Math.floor(Math.random() * 1e6));
            return false;
          } catch (err) {
            return /lost its quorum/.test((err as Error).message);
          }
        },
        3000,
      );
      await until('west took over', async () => (await group(nodes.west))?.role === 'primary', 10_000);
    } finally {
      nodes.east.child!.kill('SIGCONT');
    }
    await until('east fenced for the newer epoch', async () => (await group(nodes.east))?.state === 'fenced');
    expect(() => insert(c!.db('east'), 5_000_000)).toThrow(/FENCED/);
    expect((await group(nodes.west))?.epoch).toBe(2);
  }, 60_000);

  it('manual failover without a witness: refused while the primary is heard, refused without --force, done with it', async () => {
    c = await makeCluster({ groupExtra: '    failover: { timeout: 1s }' });
    const db = new Database(c.db('east'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
    db.close();
    const east = c.proc('east');
    const west = c.proc('west');
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);
    await until('streaming', async () => (await group(east))?.links[0]?.state === 'streaming');
    insert(c.db('east'), 1);
    await until(
      'applied',
      async () => (await group(east))?.links[0]?.applied === (await group(east))?.positions.captured,
    );

    const alive = await tandem(['failover', 'shop', '--config', c.config, '--to', 'west'], c.env);
    expect(alive.code).toBe(1);
    expect(alive.err).toMatch(
      /FAILOVER_REFUSED.*west: east was heard \d+ ms ago.*use tandem switchover shop/,
    );
    await east.kill('SIGKILL');
    await sleep(1200);
    const noWitness = await tandem(['failover', 'shop', '--config', c.config, '--to', 'west'], c.env);
    expect(noWitness.code).toBe(1);
    expect(noWitness.err).toMatch(/has no witness.*--force/);
    const forced = await tandem(['failover', 'shop', '--config', c.config, '--to', 'west', '--force'], c.env);
    expect(forced.err).toBe('');
    expect(forced.code).toBe(0);
    expect(forced.out).toMatch(
      /^failover of group shop: east -> west \(epoch 1 -> 2\), manual, allowed by forced/,
    );
    expect(forced.out).toMatch(/writes unavailable: about \d+ ms/);
    expect(await group(west)).toMatchObject({ role: 'primary', epoch: 2 });
    insert(c.db('west'), 2);
  }, 60_000);
});
