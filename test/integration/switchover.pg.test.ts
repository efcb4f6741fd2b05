/**
 * Planned switchover of a PostgreSQL group, against real PostgreSQL 15 clusters: in sync mode,
 * under a writer that follows the primary, there and back; sequences continue exactly; the old
 * primary's slot is gone; writers on the fenced primary are refused.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { switchover } from '../../src/node/switchover.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { Nodes, sleep, until } from '../helpers/cluster.js';
import { type PgCluster, startPg } from '../helpers/pg.js';

/** Inserts into whichever server takes writes; moves to the other when fenced or cut off. */
function writer(urls: Record<string, string>, first: string) {
  const acked: number[] = [];
  const refused: string[] = [];
  let stop = false;
  let at = first;
  const done = (async () => {
    let client: pg.Client | null = null;
    let i = 0;
    while (!stop) {
      try {
        if (!client) {
          client = new pg.Client({ connectionString: urls[at] });
          client.on('error', () => {});
          await client.connect();
        }
        const r = await client.query<{ id: number }>('INSERT INTO acct (v) VALUES ($1) RETURNING id', [i++]);
        acked.push(r.rows[0]!.id);
      } catch (err) {
        const e = err as { code?: string; message: string };
        refused.push(`${at}: ${e.code ?? ''} ${e.message}`);
        await client?.end().catch(() => {});
        client = null;
        if (e.code === '25006' || e.code === '57P01' || /terminat|ECONNRESET|closed/i.test(e.message)) {
          at = Object.keys(urls).find((n) => n !== at)!;
        } else throw err;
      }
      await sleep(2);
    }
    await client?.end().catch(() => {});
  })();
  return {
    acked,
    refused,
    async stop() {
      stop = true;
      await done;
    },
  };
}

describe('switchover (PostgreSQL)', () => {
  let east: PgCluster;
  let west: PgCluster;
  let dir: string;
  const nodes = new Nodes();

  beforeAll(async () => {
    [east, west] = await Promise.all([
      startPg({ settings: { wal_level: 'logical' } }),
      startPg({ settings: { wal_level: 'logical' } }),
    ]);
    process.env.TANDEM_SECRET = randomBytes(24).toString('hex');
  }, 120_000);
  afterAll(async () => {
    await Promise.all([east?.stop(), west?.stop()]);
  });
  afterEach(async () => {
    await nodes.stopAll(500);
    // A sync-mode test leaves its capture named in synchronous_standby_names.
    for (const c of [east, west]) {
      await c.sql('ALTER SYSTEM RESET synchronous_standby_names');
      await c.sql('SELECT pg_reload_conf()');
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('switches a sync group under a writer and back: nothing lost, sequences exact, slot moved', async () => {
    const db = 'sw1';
    await east.sql(`CREATE DATABASE ${db}`);
    await west.sql(`CREATE DATABASE ${db}`);
    await east.sql('CREATE TABLE acct (id serial PRIMARY KEY, v int NOT NULL)', db);
    await east.sql('CREATE TABLE notes (k text PRIMARY KEY, body text)', db);
    await east.sql("INSERT INTO notes VALUES ('a', 'first')", db);
    const cfg = await writeClusterConfig({
      cluster: 'sw',
      group: db,
      mode: 'sync',
      endpoints: { east: east.url(db), west: west.url(db) },
      groupExtra: '    sync: { timeout: 5s, configure_server: true }',
    });
    dir = cfg.dir;
    const e = await nodes.start(cfg.file, 'east');
    const w = await nodes.start(cfg.file, 'west');
    await until('streaming', () => e.status().groups[0]!.links[0]!.state === 'streaming', 30_000);
    const load = writer({ east: east.url(db), west: west.url(db) }, 'east');
    await until('writes', () => load.acked.length > 100, 20_000);

    const there = await switchover(e, db, { verify: true });
    expect(there.error).toBeNull();
    expect(there.steps.find((s) => s.step === 'verify')!.detail).toMatch(
      /2 tables, \d+ rows equal \(counts and checksums\)/,
    );
    expect(there.steps.find((s) => s.step === 'sequences')!.detail).toMatch(/^1 sequence value handed over/);
    expect(w.status().groups[0]).toMatchObject({ role: 'primary', epoch: 2 });
    expect(e.status().groups[0]).toMatchObject({ role: 'backup', epoch: 2, primary: 'west' });
    // The old primary's slot is gone, the new one's exists; sync mode set up on the new side.
    const rowsOf = async (c: PgCluster, q: string) => (await c.sql(q)).rows;
    expect(await rowsOf(east, 'SELECT slot_name FROM pg_replication_slots')).toEqual([]);
    expect(await rowsOf(west, 'SELECT slot_name FROM pg_replication_slots')).toEqual([
      { slot_name: 'tandem_sw1_west' },
    ]);
    expect(await rowsOf(west, "SELECT current_setting('synchronous_standby_names') AS s")).toEqual([
      { s: '"tandem_sw1_west"' },
    ]);
    // Writers moved; the fenced side refuses with the new primary's name.
    const n = load.acked.length;
    await until('writes at west', () => load.acked.length > n + 50, 20_000);
    expect(load.refused.join('\n')).toMatch(/east: (25006|57P01)/);
    await expect(east.sql("INSERT INTO notes VALUES ('x', 'y')", db)).rejects.toThrow(
      /BACKUP_FENCED.*node west/,
    );

    const back = await switchover(w, db, {});
    expect(back.error).toBeNull();
    const m = load.acked.length;
    await until('writes at east again', () => load.acked.length > m + 50, 20_000);
    await load.stop();
    await e.sources.get(db)!.capture.barrier(); // the writers' last commits are journaled
    const ep = e.status().groups[0]!.positions.captured;
    await until('west applied everything', () => w.status().groups[0]!.positions.applied >= ep, 20_000);
    const rows = async (c: PgCluster) => (await c.sql('SELECT id, v FROM acct ORDER BY id', db)).rows;
    const mine = await rows(east);
    expect(await rows(west)).toEqual(mine);
    const ids = new Set(mine.map((r) => (r as { id: number }).id));
    expect(load.acked.filter((id) => !ids.has(id))).toEqual([]);
    expect(new Set(load.acked).size).toBe(load.acked.length);
  }, 120_000);

  it('virtual switch: the backup takes test writes while the primary goes on; the end reverts them', async () => {
    const db = 'vs1';
    await east.sql(`CREATE DATABASE ${db}`);
    await west.sql(`CREATE DATABASE ${db}`);
    await east.sql(
      "CREATE TABLE acct (id serial PRIMARY KEY, v text NOT NULL, doc jsonb, at timestamptz DEFAULT now()); INSERT INTO acct (v, doc) VALUES ('a', '{\"k\": 1}'), ('b', NULL), ('c', '[1, 2]')",
      db,
    );
    const cfg = await writeClusterConfig({
      cluster: 'vs',
      group: db,
      endpoints: { east: east.url(db), west: west.url(db) },
    });
    dir = cfg.dir;
    const e = await nodes.start(cfg.file, 'east');
    const w = await nodes.start(cfg.file, 'west');
    await until('streaming', () => e.status().groups[0]!.links[0]!.state === 'streaming', 30_000);
    await e.sources.get(db)!.capture.barrier();
    await until(
      'applied',
      () => e.status().groups[0]!.links[0]!.applied >= e.status().groups[0]!.positions.captured,
    );
    const started = await w.virtualSwitch(db, 'start');
    expect(started).toMatchObject({ op: 'start' });
    await west.sql(
      "INSERT INTO acct (id, v) VALUES (1000, 'test'); UPDATE acct SET v = 'test', doc = '{\"x\": true}' WHERE id = 1; DELETE FROM acct WHERE id = 2",
      db,
    );
    await expect(west.sql('TRUNCATE acct', db)).rejects.toThrow(
      /TRUNCATE is refused during a virtual switch/,
    );
    await east.sql("INSERT INTO acct (v) VALUES ('prod'); UPDATE acct SET v = 'prod' WHERE id = 3", db);
    await e.sources.get(db)!.capture.barrier();
    const ended = await w.virtualSwitch(db, 'end');
    expect(ended).toMatchObject({ op: 'end', reverted: 3 });
    await e.sources.get(db)!.capture.barrier();
    const rows = async (c: PgCluster) =>
      (await c.sql('SELECT id, v, doc, at FROM acct ORDER BY id', db)).rows;
    await until(
      'west equals east',
      async () => JSON.stringify(await rows(west)) === JSON.stringify(await rows(east)),
    );
    await expect(west.sql("INSERT INTO acct (v) VALUES ('x')", db)).rejects.toThrow(/BACKUP_FENCED/);
  }, 120_000);
});
