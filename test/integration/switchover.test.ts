/**
 * Planned switchover of a SQLite group, nodes in this process: under a live writer, there and
 * back, with verification; an abort after the fence leaves the old primary serving.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { switchover } from '../../src/node/switchover.js';
import { dump, localCluster, sleep, type TestCluster, until } from '../helpers/cluster.js';

/**
 * Inserts rows one transaction at a time into whichever database takes writes, moving to the
 * other when refused by a fence; keeps the id of every acknowledged insert.
 */
function writer(files: Record<string, string>, first: string) {
  const dbs = Object.fromEntries(
    Object.entries(files).map(([n, f]) => {
      const db = new Database(f);
      db.pragma('busy_timeout = 2000');
      return [n, db];
    }),
  );
  const acked: bigint[] = [];
  const refused: string[] = [];
  let at = first;
  let stop = false;
  let longestGapMs = 0;
  const done = (async () => {
    let lastOk = performance.now();
    let i = 0;
    while (!stop) {
      try {
        const r = dbs[at]!.prepare('INSERT INTO t (v, n) VALUES (?, ?)').run(`w${i}`, i);
        acked.push(BigInt(r.lastInsertRowid));
        const now = performance.now();
        longestGapMs = Math.max(longestGapMs, now - lastOk);
        lastOk = now;
        i++;
      } catch (err) {
        const m = (err as Error).message;
        if (!/FENCED/.test(m)) throw err;
        refused.push(m);
        at = Object.keys(dbs).find((n) => n !== at)!;
      }
      await sleep(1);
    }
  })();
  return {
    acked,
    refused,
    get longestGapMs() {
      return longestGapMs;
    },
    async stop() {
      stop = true;
      await done;
      for (const db of Object.values(dbs)) db.close();
    },
  };
}

function roles(c: TestCluster, node: string): Record<string, { epoch: number; primary: string }> {
  return JSON.parse(readFileSync(path.join(c.dir, 'state', node, 'roles.json'), 'utf8'));
}

describe('switchover (SQLite)', () => {
  const local = localCluster(1000);
  const { start } = local;

  it('switches under a live writer with nothing lost, reverses the direction, and switches back', async () => {
    const c = await local.make();
    const db = new Database(c.db('east'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT, n INTEGER)');
    db.exec('CREATE TABLE notes (k TEXT PRIMARY KEY, body TEXT)');
    db.prepare("INSERT INTO notes VALUES ('a', 'first')").run();
    db.close();
    const east = await start('east');
    const west = await start('west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    const w = writer({ east: c.db('east'), west: c.db('west') }, 'east');
    await sleep(500);

    const there = await switchover(east, 'shop', { verify: true });
    expect(there.error).toBeNull();
    expect(there.ok).toBe(true);
    expect(there.steps.map((s) => s.step)).toEqual([
      'prepare',
      'fence',
      'drain',
      'verify',
      'sequences',
      'promote',
      'reverse',
      'reroute',
    ]);
    expect(there.steps.find((s) => s.step === 'sequences')!.detail).toMatch(/^1 sequence value handed over/);
    expect(there.unavailableMs).toBeGreaterThanOrEqual(0);
    expect(there.epoch).toEqual({ from: 1, to: 2 });
    expect(east.status().groups[0]).toMatchObject({ role: 'backup', epoch: 2, primary: 'west' });
    expect(west.status().groups[0]).toMatchObject({ role: 'primary', epoch: 2, primary: 'west' });
    await until('west streams to east', () => west.status().groups[0]!.links[0]!.state === 'streaming');
    await until('the writer moved to west', () => w.refused.length > 0 && w.acked.length > 0);
    const before = w.acked.length;
    await until('writes go on at west', () => w.acked.length > before + 50);

    const back = await switchover(west, 'shop', {});
    expect(back.error).toBeNull();
    expect(back.epoch).toEqual({ from: 2, to: 3 });
    const after = w.acked.length;
    await until('writes go on at east again', () => w.acked.length > after + 50);
    await w.stop();
    await east.sources.get('shop')!.capture.barrier(); // the writer's last commits are journaled
    await until('caught up', () => {
      const g = east.status().groups[0]!;
      return g.positions.captured > 0 && g.links[0]!.applied === g.positions.captured;
    });
    expect(dump(c.db('west'), ['t', 'notes'])).toEqual(dump(c.db('east'), ['t', 'notes']));
    // Every acknowledged insert is there, once, whichever node took it.
    const check = new Database(c.db('east'), { readonly: true });
    check.defaultSafeIntegers(true);
    const ids = new Set((check.prepare('SELECT id FROM t').pluck().all() as bigint[]).map(String));
    check.close();
    expect(w.acked.filter((id) => !ids.has(String(id)))).toEqual([]);
    expect(new Set(w.acked.map(String)).size).toBe(w.acked.length);
    expect(roles(c, 'east').shop).toMatchObject({ epoch: 3, primary: 'east' });
    expect(roles(c, 'west').shop).toMatchObject({ epoch: 3, primary: 'east' });
    // The backup is fenced again, naming its primary.
    const wdb = new Database(c.db('west'));
    expect(() => wdb.prepare("INSERT INTO notes VALUES ('b', 'x')").run()).toThrow(
      /BACKUP_FENCED.*node east/,
    );
    wdb.close();
  }, 60_000);

  it('a switchover that fails after the fence (verification finds a difference) leaves the old primary serving', async () => {
    const c = await local.make();
    const db = new Database(c.db('east'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT, n INTEGER)');
    db.prepare("INSERT INTO t (v, n) VALUES ('x', 1)").run();
    const east = await start('east');
    await start('west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    await until('applied', () => east.status().groups[0]!.links[0]!.applied >= 1);
    // Someone writes on the backup behind the fence's back.
    const wdb = new Database(c.db('west'));
    wdb.exec(
      "BEGIN; UPDATE _tandem_fence SET open = 1; UPDATE t SET v = 'tampered'; UPDATE _tandem_fence SET open = 0; COMMIT",
    );
    wdb.close();
    const r = await switchover(east, 'shop', { verify: true });
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(
      /SWITCH_FAILED.*verify failed.*t: same row count, different contents.*serves as primary again/,
    );
    expect(r.steps.map((s) => s.step)).toEqual(['prepare', 'fence', 'drain']);
    expect(east.status().groups[0]).toMatchObject({ role: 'primary', epoch: 1, fenced: false });
    // Writes work on east again and reach west.
    db.prepare("INSERT INTO t (v, n) VALUES ('after', 2)").run();
    await until('west has it', () => {
      const x = new Database(c.db('west'), { readonly: true });
      try {
        return x.prepare("SELECT 1 FROM t WHERE v = 'after'").get();
      } finally {
        x.close();
      }
    });
    db.close();
  }, 30_000);
});
