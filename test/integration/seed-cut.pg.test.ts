/**
 * A seed's snapshot sits exactly between two journal records (CaptureCut): the copy holds the
 * changes of every record up to the snapshot's position and of none after it, so the backup
 * streams from the next record and nothing is applied over a copy that already holds it (which
 * could meet a unique index in a state the source never had). Checked on the real capture and
 * snapshot of both engines while writers commit without pause: SQLite, and PostgreSQL 15 with
 * three concurrent writers (commits interleave) through the temporary slot's exported snapshot.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCapture, createSnapshot } from '../../src/adapters/index.js';
import type { GroupConfig } from '../../src/config/index.js';
import { loadConfig } from '../../src/config/index.js';
import { HybridLogicalClock } from '../../src/core/hlc.js';
import { decodeRecord } from '../../src/core/record.js';
import { Journal } from '../../src/journal/index.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { sleep, until } from '../helpers/cluster.js';
import { type PgCluster, startPg } from '../helpers/pg.js';

const log = pino({ level: process.env.TEST_LOG ?? 'silent' });
const dirs: string[] = [];

async function groupOf(east: string): Promise<GroupConfig> {
  const cfg = await writeClusterConfig({
    cluster: 'cut',
    group: 'shop',
    endpoints: { east, west: 'sqlite:./data/west.db' },
  });
  dirs.push(cfg.dir);
  return loadConfig(cfg.file).groups.shop!;
}

/** The ids inserted by each record, by position. */
function journaledIds(j: Journal): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const buf of j.read(j.firstPosition, { maxBytes: 1 << 30, maxRecords: 1 << 30 })) {
    const rec = decodeRecord(buf);
    out.set(
      rec.position,
      rec.changes.flatMap((c) => (c.op === 'insert' ? [Number(c.after![c.columns.indexOf('id')])] : [])),
    );
  }
  return out;
}

/**
 * Writers insert rows 1, 2, 3, ... (each its own transaction) while five snapshots are taken;
 * each snapshot's copy must hold exactly the rows of the records up to its position.
 */
async function checkCuts(group: GroupConfig, writers: ((id: number) => Promise<void>)[]): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-cut-'));
  dirs.push(dir);
  const journal = await Journal.open({ dir });
  let fatal: Error | null = null;
  const capture = createCapture(group.endpoints.east!, {
    group,
    node: 'east',
    journal,
    hlc: new HybridLogicalClock(),
    epoch: () => 1,
    log,
    onFatal: (err) => {
      fatal = err;
    },
  });
  await capture.open(null);
  capture.run();
  let next = 0;
  let stop = false;
  const running = writers.map(async (write) => {
    while (!stop) await write(++next);
  });
  try {
    for (let round = 0; round < 5; round++) {
      await sleep(150);
      const cut = capture.openCut();
      const snap = await createSnapshot(group.endpoints.east!, group, cut).finally(() => cut.close());
      const copied = new Set<number>();
      try {
        const [plan] = await snap.plan();
        for (let i = 0; i <= plan!.bounds.length; i++) {
          for await (const part of snap.readChunk(plan!, i, 'values')) {
            if (part.format !== 'values') throw new Error('values asked for');
            for (const row of part.rows) copied.add(Number(row[part.columns.indexOf('id')]));
          }
        }
      } finally {
        await snap.close();
      }
      const p = snap.position;
      await until(`the journal passes ${p}`, () => journal.lastPosition > p + 2);
      const byPosition = journaledIds(journal);
      const upTo = [...byPosition].filter(([q]) => q <= p).flatMap(([, ids]) => ids);
      const after = [...byPosition].filter(([q]) => q > p).flatMap(([, ids]) => ids);
      expect(copied.size, `round ${round}: rows copied`).toBeGreaterThan(0);
      expect(
        [...copied].sort((a, b) => a - b),
        `round ${round}: the copy is the records up to ${p}`,
      ).toEqual(upTo.sort((a, b) => a - b));
      expect(
        after.filter((id) => copied.has(id)),
        `round ${round}: records after ${p} already in the copy`,
      ).toEqual([]);
    }
    expect(fatal).toBeNull();
  } finally {
    stop = true;
    await Promise.all(running);
    await capture.stop();
    await journal.close();
  }
}

describe('a seed snapshot falls exactly between two journal records', () => {
  let src: PgCluster;

  beforeAll(async () => {
    src = await startPg({ settings: { wal_level: 'logical' } });
  }, 120_000);

  afterAll(async () => {
    await src?.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('SQLite: the change table seq read in the snapshot ends a record', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-cut-db-'));
    dirs.push(dir);
    const file = path.join(dir, 'east.db');
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE ledger (id INTEGER PRIMARY KEY, note TEXT NOT NULL)');
    const insert = db.prepare('INSERT INTO ledger (id, note) VALUES (?, ?)');
    try {
      await checkCuts(await groupOf(`sqlite:${file}`), [
        async (id) => {
          insert.run(id, `row ${id}`);
          // Let the capture and the snapshot run between commits.
          if (id % 4 === 0) await new Promise((r) => setImmediate(r));
        },
      ]);
    } finally {
      db.close();
    }
  });

  it("PostgreSQL: the temporary slot's consistent point ends a record", async () => {
    await src.sql('CREATE DATABASE cut');
    await src.sql('CREATE TABLE ledger (id bigint PRIMARY KEY, note text NOT NULL)', 'cut');
    const clients = await Promise.all(
      [1, 2, 3].map(async () => {
        const c = new pg.Client({ connectionString: src.url('cut') });
        await c.connect();
        return c;
      }),
    );
    try {
      await checkCuts(
        await groupOf(src.url('cut')),
        clients.map((c) => async (id) => {
          await c.query('INSERT INTO ledger (id, note) VALUES ($1, $2)', [id, `row ${id}`]);
        }),
      );
      const slots = await src.sql(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'tandem_seed_%'",
      );
      expect(slots.rows, 'temporary seed slots left behind').toEqual([]);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  }, 60_000);
});
