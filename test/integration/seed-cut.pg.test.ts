/**
 * A seed's snapshot sits exactly between two journal records (CaptureCut): the copy holds the
 * changes of every record up to the snapshot's position and of none after it, so the backup
 * streams from the next record and nothing is applied over a copy that already holds it (which
 * could meet a unique index in a state the source never had). Checked on the real capture and
 * snapshot of both engines while writers commit without pause: SQLite, and PostgreSQL 15 with
 * three concurrent writers (commits interleave) through the temporary slot's exported snapshot.
 * Also: a slot waiting for a transaction left open on the source names it in the log, a seed
 * without a free replication slot or WAL sender names the setting to raise, and neither a cut
 * nor a barrier waits for the source's WAL writer.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCapture, createSnapshot } from '../../src/adapters/index.js';
import { PgSnapshot } from '../../src/adapters/postgres/snapshot.js';
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

/** Slots are per cluster and named after the group: each test has its own group. */
async function groupOf(east: string, name = 'shop'): Promise<GroupConfig> {
  const cfg = await writeClusterConfig({
    cluster: 'cut',
    group: name,
    endpoints: { east, west: 'sqlite:./data/west.db' },
  });
  dirs.push(cfg.dir);
  return loadConfig(cfg.file).groups[name]!;
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

/** A running capture of `group`'s source into a fresh journal. */
async function startCapture(group: GroupConfig) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-cut-'));
  dirs.push(dir);
  const journal = await Journal.open({ dir });
  const fatal: Error[] = [];
  const capture = await createCapture(group.endpoints.east!, {
    group,
    node: 'east',
    journal,
    hlc: new HybridLogicalClock(),
    epoch: () => 1,
    log,
    onFatal: (err) => fatal.push(err),
  });
  await capture.open(null);
  capture.run();
  return {
    capture,
    journal,
    fatal,
    stop: async () => {
      await capture.stop();
      await journal.close();
    },
  };
}

/**
 * Writers insert rows 1, 2, 3, ... (each its own transaction) while five snapshots are taken;
 * each snapshot's copy must hold exactly the rows of the records up to its position.
 */
async function checkCuts(group: GroupConfig, writers: ((id: number) => Promise<void>)[]): Promise<void> {
  const { capture, journal, fatal, stop: stopCapture } = await startCapture(group);
  let next = 0;
  let stop = false;
  const running = writers.map(async (write) => {
    while (!stop) await write(++next);
  });
  try {
    for (let round = 0; round < 5; round++) {
      await sleep(150);
      const cut = capture.openCut();
      const snap = await createSnapshot(group.endpoints.east!, group, cut, log).finally(() => cut.close());
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
      // Durable, not only appended: the journal is read from disk below.
      await until(`the journal passes ${p}`, () => journal.durablePosition > p + 2);
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
    expect(fatal).toEqual([]);
  } finally {
    stop = true;
    await Promise.all(running);
    await stopCapture();
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

  it('PostgreSQL: a seed without a free replication slot or WAL sender names the setting to raise', async () => {
    const [noSlot, noSender] = await Promise.all([
      startPg({ settings: { wal_level: 'logical', max_replication_slots: '1', max_wal_senders: '4' } }),
      startPg({ settings: { wal_level: 'logical', max_replication_slots: '4', max_wal_senders: '1' } }),
    ]);
    try {
      for (const [c, expected] of [
        [noSlot, /SEED_FAILED.*creating a temporary replication slot failed.*max_replication_slots/s],
        [noSender, /ENDPOINT_UNAVAILABLE.*no WAL sender is free.*max_wal_senders/s],
      ] as const) {
        await c.sql('CREATE TABLE ledger (id bigint PRIMARY KEY)');
        const group = await groupOf(c.url());
        const { capture, stop } = await startCapture(group);
        try {
          // The capture's own stream holds the one slot or WAL sender there is.
          await until(
            'the capture streams',
            async () => (await c.sql('SELECT 1 FROM pg_stat_replication')).rowCount === 1,
          );
          const cut = capture.openCut();
          const err = await PgSnapshot.take(c.url(), group, cut, log)
            .finally(() => cut.close())
            .then(
              () => null,
              (e: Error) => e,
            );
          expect(String(err)).toMatch(expected);
        } finally {
          await stop();
        }
      }
    } finally {
      await Promise.all([noSlot.stop(), noSender.stop()]);
    }
  }, 60_000);

  it("PostgreSQL: a seed's cut and a switchover's barrier do not wait for the WAL writer", async () => {
    // Their logical messages reach the capture only once flushed; on a database with no commits
    // only the WAL writer would flush them, here every 10 s (wal_writer_delay's maximum), so
    // waiting for it would take 0-10 s each time: three in a row within 2 s each would happen
    // by chance less than once in a hundred.
    const idle = await startPg({ settings: { wal_level: 'logical', wal_writer_delay: '10s' } });
    try {
      await idle.sql('CREATE TABLE ledger (id bigint PRIMARY KEY)');
      const group = await groupOf(idle.url(), 'idle');
      const { capture, stop } = await startCapture(group);
      try {
        await until(
          'the capture streams',
          async () => (await idle.sql('SELECT 1 FROM pg_stat_replication')).rowCount === 1,
        );
        const within = <T>(what: string, p: Promise<T>) =>
          Promise.race([
            p,
            sleep(2000).then(() => {
              throw new Error(`${what} waited 2 s`);
            }),
          ]);
        for (let i = 0; i < 3; i++) {
          const cut = capture.openCut();
          const snap = await within(
            `snapshot ${i}`,
            PgSnapshot.take(idle.url(), group, cut, log).finally(() => cut.close()),
          );
          await snap.close();
          await within(`barrier ${i}`, capture.barrier());
        }
      } finally {
        await stop();
      }
    } finally {
      await idle.stop();
    }
  }, 60_000);

  it('PostgreSQL: names the transactions the snapshot waits for, and takes it once they end', async () => {
    await src.sql('CREATE DATABASE held');
    await src.sql('CREATE TABLE ledger (id bigint PRIMARY KEY, note text NOT NULL)', 'held');
    const group = await groupOf(src.url('held'), 'held');
    const { capture, journal, stop } = await startCapture(group);
    const blocker = new pg.Client({ connectionString: src.url('held') });
    await blocker.connect();
    try {
      const pid = (await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await blocker.query("BEGIN; INSERT INTO ledger VALUES (1, 'held open')");
      const lines: string[] = [];
      const warnings = pino({ level: 'warn' }, { write: (s: string) => lines.push(s) });
      const cut = capture.openCut();
      const taking = PgSnapshot.take(src.url('held'), group, cut, warnings, { reportAfterMs: 200 }).finally(
        () => cut.close(),
      );
      const line = await until('the blocker named', () => lines.find((l) => l.includes('held open')));
      expect(JSON.parse(line)).toMatchObject({
        msg: expect.stringMatching(/snapshot waits for transactions running on the source to end/),
        transactions: [expect.objectContaining({ pid, state: 'idle in transaction' })],
      });
      await blocker.query('COMMIT');
      const snap = await taking;
      // The slot's consistent point came after the blocker ended: its row is in the copy, and its
      // record at or before the snapshot's position.
      const [plan] = await snap.plan();
      const rows: unknown[] = [];
      for await (const part of snap.readChunk(plan!, 0, 'values'))
        if (part.format === 'values') rows.push(...part.rows);
      await snap.close();
      expect(rows).toEqual([[1n, 'held open']]);
      expect(snap.position).toBeGreaterThan(0);
      await journal.whenDurable(snap.position);
      expect(
        [...journaledIds(journal)].filter(([p]) => p <= snap.position).flatMap(([, ids]) => ids),
      ).toEqual([1]);
    } finally {
      await blocker.end();
      await stop();
    }
  }, 60_000);
});
