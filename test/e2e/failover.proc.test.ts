/**
 * Unplanned failover with real `tandem run` processes (dist/): a witness node holding the
 * primary's lease, the primary SIGKILLed (sync mode: no acknowledged commit lost) or frozen
 * (SIGSTOP: its database stops taking writes by itself), automatic takeover, the old primary
 * fenced for good when it comes back; and manual failover without a witness.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { NodeStatus } from '../../src/node/status.js';
import { TandemSqliteWriter } from '../../src/sync-writer.js';
import { startEtcd } from '../../src/testing/etcd.js';
import {
  dump,
  makeCluster,
  sleep,
  startOnTable,
  type TestCluster,
  tandem,
  until,
} from '../helpers/cluster.js';

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

/** Waits until the database refuses a write because its node's lease ran out. */
async function refusesWithoutQuorum(file: string): Promise<void> {
  await until(
    'the old primary refuses writes by itself',
    () => {
      try {
        insert(file, 2 + Math.floor(Math.random() * 1e6));
        return false;
      } catch (err) {
        return /lost its quorum/.test((err as Error).message);
      }
    },
    3000,
  );
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
    const nodes = await startOnTable(c, 'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)', [
      'east',
      'west',
      'arbiter',
    ]);
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
    // The old primary, back, learns of epoch 2, fences itself and rejoins as west's backup
    // (what it committed locally and never had acknowledged is its divergent tail).
    nodes.east.start();
    await nodes.east.ready();
    await until('east rejoined', async () => (await group(nodes.east))?.role === 'backup', 15_000);
    expect(await group(nodes.east)).toMatchObject({ epoch: 2, primary: 'west' });
    expect(() => insert(c!.db('east'), 3_000_000)).toThrow(/BACKUP_FENCED.*node west/);
    const status = await tandem(['status', '--config', c!.config], c!.env);
    expect(status.out).toMatch(/shop\s+west\s+primary\s+2/);
  }, 60_000);

  it('a frozen primary (SIGSTOP) stops taking writes by itself; the backup takes over; thawed, it rejoins as a backup', async () => {
    const nodes = await witnessCluster('async');
    insert(c!.db('east'), 1);
    nodes.east.child!.kill('SIGSTOP');
    try {
      await refusesWithoutQuorum(c!.db('east'));
      await until('west took over', async () => (await group(nodes.west))?.role === 'primary', 10_000);
    } finally {
      nodes.east.child!.kill('SIGCONT');
    }
    await until('east rejoined', async () => (await group(nodes.east))?.role === 'backup', 15_000);
    expect(() => insert(c!.db('east'), 5_000_000)).toThrow(/BACKUP_FENCED.*node west/);
    expect((await group(nodes.west))?.epoch).toBe(2);
  }, 60_000);

  it('manual failover without a witness: refused while the primary is heard, refused without --force, done with it', async () => {
    // 2 s: the refusal must not depend on how fast a loaded machine starts the CLI.
    c = await makeCluster({ groupExtra: '    failover: { timeout: 2s }' });
    const { east, west } = await startOnTable(c!, 'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
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
    await sleep(2200);
    const noWitness = await tandem(['failover', 'shop', '--config', c.config, '--to', 'west'], c.env);
    expect(noWitness.code).toBe(1);
    expect(noWitness.err).toMatch(/has no quorum \(failover.witness or failover.etcd\).*--force/);
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

  it("two backups, the one promoted behind the other: the other drops the old primary's records beyond the new history, undoes them, and follows", async () => {
    c = await makeCluster({ nodes: ['east', 'west', 'south'], groupExtra: '    failover: { timeout: 1s }' });
    const { east, west, south } = await startOnTable(c, 'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)', [
      'east',
      'west',
      'south',
    ]);
    const appliedBy = async (peer: string) =>
      (await group(east))?.links.find((l) => l.peer === peer)?.applied ?? -1;
    await until('streaming to both', async () => (await group(east))?.links.length === 2);
    for (let id = 1; id <= 10; id++) insert(c.db('east'), id);
    await until('both applied', async () => {
      const captured = (await group(east))?.positions.captured;
      return (await appliedBy('west')) === captured && (await appliedBy('south')) === captured;
    });
    // west goes down; south goes on receiving what west never gets.
    await west!.kill('SIGKILL');
    for (let id = 11; id <= 40; id++) insert(c.db('east'), id);
    await until(
      'south applied everything',
      async () => (await appliedBy('south')) === (await group(east))?.positions.captured,
    );
    await east.kill('SIGKILL');
    west!.start();
    await west!.ready();
    await sleep(1200);
    const forced = await tandem(['failover', 'shop', '--config', c.config, '--to', 'west', '--force'], c.env);
    expect(forced.code, forced.err).toBe(0);
    await until('south follows west', async () => {
      const w = await group(west!);
      return w?.links.find((l) => l.peer === 'south')?.state === 'streaming';
    });
    expect(await group(south!)).toMatchObject({ role: 'backup', epoch: 2 });
    for (let id = 100; id <= 105; id++) insert(c.db('west'), id);
    await until("south has applied west's history", async () => {
      const w = await group(west!);
      return w?.links.find((l) => l.peer === 'south')?.applied === w?.positions.captured;
    });
    const rows = dump(c.db('west'), ['t']);
    expect(rows.t).toHaveLength(16);
    expect(dump(c.db('south'), ['t'])).toEqual(rows);
    expect(readFileSync(path.join(c.dir, 'south.log'), 'utf8')).toMatch(/backup realigned/);
  }, 60_000);

  it('rejoin: the old primary reports its divergent tail, undoes it, follows the new primary; the tail can be re-applied', async () => {
    const nodes = await witnessCluster('async');
    const sql = (node: string, q: string) => {
      const db = new Database(c!.db(node));
      try {
        db.pragma('busy_timeout = 1000');
        db.exec(q);
      } finally {
        db.close();
      }
    };
    sql('east', "INSERT INTO t (id, v) SELECT value, 'v' || value FROM json_each('[1,2,3,4,5]')");
    await until('west has them', () => {
      const db = new Database(c!.db('west'), { readonly: true });
      try {
        return (db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n === 5;
      } finally {
        db.close();
      }
    });
    // Frozen primary: its database still takes writes for the rest of its lease, never shipped.
    nodes.east.child!.kill('SIGSTOP');
    sql('east', "INSERT INTO t VALUES (100, 'east only')");
    sql('east', "UPDATE t SET v = 'east changed' WHERE id = 1");
    sql('east', 'DELETE FROM t WHERE id = 2');
    await until('west took over', async () => (await nodes.west.status())?.lastFailover, 10_000);
    sql('west', "INSERT INTO t VALUES (200, 'west'); UPDATE t SET v = 'west changed' WHERE id = 3");
    nodes.east.child!.kill('SIGCONT');
    await until(
      'east rejoined as a backup',
      async () => (await group(nodes.east))?.role === 'backup',
      20_000,
    );
    const dump = (node: string) => {
      const db = new Database(c!.db(node), { readonly: true });
      try {
        return db.prepare('SELECT id, v FROM t ORDER BY id').all();
      } finally {
        db.close();
      }
    };
    await until(
      'east equals west',
      () => JSON.stringify(dump('east')) === JSON.stringify(dump('west')),
      10_000,
    );
    expect(dump('east')).toEqual([
      { id: 1, v: 'v1' },
      { id: 2, v: 'v2' },
      { id: 3, v: 'west changed' },
      { id: 4, v: 'v4' },
      { id: 5, v: 'v5' },
      { id: 200, v: 'west' },
    ]);
    expect(() => sql('east', "INSERT INTO t VALUES (300, 'x')")).toThrow(/BACKUP_FENCED.*node west/);

    const list = await tandem(['divergence', 'shop', '--config', c!.config, '--node', 'east'], c!.env);
    expect(list.err).toBe('');
    const id = /^ {2}(\S+) {2}\d+ transactions \(3 row changes\) committed at epoch 1/m.exec(list.out)?.[1];
    expect(id, list.out).toBeDefined();
    expect(list.out).toMatch(/never on west \(epoch 2\); OPEN/);
    const shown = await tandem(
      ['divergence', 'shop', '--config', c!.config, '--node', 'east', '--show', id!, '--format', 'sql'],
      c!.env,
    );
    expect(shown.out).toMatch(/INSERT INTO "t" \("id", "v"\) VALUES \(100, 'east only'\)/);
    expect(shown.out).toMatch(/UPDATE "t" SET "id" = 1, "v" = 'east changed' WHERE "id" = 1;/);
    expect(shown.out).toMatch(/DELETE FROM "t" WHERE "id" = 2;/);
    const re = await tandem(
      ['divergence', 'shop', '--config', c!.config, '--node', 'east', '--reapply', id!],
      c!.env,
    );
    expect(re.err).toBe('');
    expect(re.out).toMatch(/reapplied \(\d+ transactions written on west\)/);
    await until('both hold the re-applied tail', () => {
      const e = JSON.stringify(dump('east'));
      return e === JSON.stringify(dump('west')) && e.includes('east only');
    });
    expect(dump('west').map((r) => (r as { id: number }).id)).toEqual([1, 3, 4, 5, 100, 200]);
    const again = await tandem(
      ['divergence', 'shop', '--config', c!.config, '--node', 'east', '--discard', id!],
      c!.env,
    );
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/already reapplied/);
  }, 60_000);

  it('a switchover in a group with a witness moves the lease: both sides take writes in turn', async () => {
    const nodes = await witnessCluster('async');
    insert(c!.db('east'), 1);
    const there = await tandem(['switchover', 'shop', '--config', c!.config, '--json'], c!.env);
    expect(there.err).toBe('');
    expect(there.code).toBe(0);
    // The witness gave west the lease at epoch 2 before west was promoted (quorum.test.ts).
    const steps = (JSON.parse(there.out) as { steps: { step: string; detail: string }[] }).steps;
    expect(steps.map((s) => s.step)).toEqual([
      'prepare',
      'fence',
      'drain',
      'sequences',
      'lease',
      'promote',
      'reverse',
      'reroute',
    ]);
    expect(steps.find((s) => s.step === 'lease')?.detail).toBe(
      'the witness arbiter gives west the lease at epoch 2',
    );
    await until('west holds the lease', async () => (await group(nodes.west))?.lease?.held === true);
    insert(c!.db('west'), 2);
    expect(() => insert(c!.db('east'), 3)).toThrow(/BACKUP_FENCED.*node west/);
    const back = await tandem(['switchover', 'shop', '--config', c!.config], c!.env);
    expect(back.code).toBe(0);
    await until('east holds the lease', async () => (await group(nodes.east))?.lease?.held === true);
    insert(c!.db('east'), 4);
    const witness = (await nodes.arbiter!.status())?.witness as Record<
      string,
      { epoch: number; leader: string }
    >;
    expect(witness.shop).toMatchObject({ epoch: 3, leader: 'east' });
  }, 60_000);

  it('with etcd as the quorum: a frozen primary stops taking writes, the backup takes over, the primary rejoins', async () => {
    const etcd = await startEtcd();
    try {
      c = await makeCluster({
        groupExtra: `    failover: { etcd: { endpoints: [${etcd.url}] }, timeout: 1s }`,
      });
      const { east, west } = await startOnTable(c!, 'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
      await until('streaming and holding the lease', async () => {
        const g = await group(east);
        return g?.links[0]?.state === 'streaming' && g.lease?.held === true && g.lease.witness === 'ok';
      });
      insert(c.db('east'), 1);
      east.child!.kill('SIGSTOP');
      try {
        await refusesWithoutQuorum(c.db('east'));
        await until('west took over', async () => (await west.status())?.lastFailover, 15_000);
        expect((await west.status())?.lastFailover).toMatchObject({
          quorum: 'etcd',
          epoch: { from: 1, to: 2 },
        });
      } finally {
        east.child!.kill('SIGCONT');
      }
      await until('east rejoined', async () => (await group(east))?.role === 'backup', 15_000);
      insert(c.db('west'), 3);
      expect(() => insert(c!.db('east'), 4)).toThrow(/BACKUP_FENCED.*node west/);
    } finally {
      await etcd.stop();
    }
  }, 60_000);
});
