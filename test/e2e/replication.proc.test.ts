/**
 * End to end with real `tandem run` processes (built CLI in dist/) and an outside writer: the
 * sqlite3 shell. Needs: `npm run build`, the sqlite3 command.
 */
import net from 'node:net';
import tls from 'node:tls';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import {
  dump,
  expectSameRecords,
  makeCluster,
  sleep,
  startOnTable,
  type TestCluster,
  until,
  waitCaughtUp,
} from '../helpers/cluster.js';
import { sqlite, startWriter } from '../helpers/sqlite-shell.js';
import { runs } from '../helpers/tiers.js';

const SCHEMA = `
  CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, data BLOB);
  CREATE TABLE tags (item_id INTEGER, tag TEXT, PRIMARY KEY (item_id, tag));
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300)
  INSERT INTO items (name, qty, price, data) SELECT 'seed ' || i, i, i * 1.5, randomblob(8) FROM s;
  INSERT INTO tags VALUES (1, 'a'), (1, 'b'), (2, 'a');
`;

/** 100 accounts of 1000: the writer's transfers keep the total at 100,000. */
const ACCOUNTS = `
  CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100)
  INSERT INTO acct SELECT i, 1000 FROM s;
`;

describe('two tandem processes, outside sqlite3 writer', () => {
  let c: TestCluster | null = null;
  afterEach(() => {
    c?.cleanup();
    c = null;
  });

  it('survives SIGKILL of the backup and of the primary mid-stream; the backup ends equal to the source', async () => {
    c = await makeCluster();
    expect(sqlite(c.db('east'), SCHEMA).status).toBe(0);
    const east = c.proc('east');
    const west = c.proc('west');
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);

    const writer = startWriter(c.db('east'), { perBatch: 5, intervalMs: 5 });
    await sleep(1500);
    await west.kill('SIGKILL');
    await sleep(500);
    west.start();
    await west.ready();
    await sleep(1000);
    await east.kill('SIGKILL');
    await sleep(700); // the writer goes on: its changes wait in the change table
    east.start();
    await east.ready();
    await sleep(1000);
    await writer.stop();
    expect(writer.count).toBeGreaterThan(500);

    await waitCaughtUp(east);
    const src = dump(c.db('east'), ['items', 'tags']);
    const dst = dump(c.db('west'), ['items', 'tags']);
    expect(dst.items!.length).toBe(src.items!.length);
    expect(dst).toEqual(src);

    // The change table is drained once the journal holds everything.
    await until(
      'change table drained',
      () => sqlite(c!.db('east'), 'SELECT count(*) FROM _tandem_changes;').stdout.trim() === '0',
    );

    expect(await east.kill('SIGTERM')).toBe(0);
    expect(await west.kill('SIGTERM')).toBe(0);
  }, 120_000);

  const kills = runs(8, 200);
  it(
    `SIGKILL of the primary at random instants under load, ${kills} times: one history, the backup equal`,
    async () => {
      // Records go to the backup before the primary's fsync: a kill in between leaves the backup
      // holding records the primary lost, which it takes back at its start (or the backup cuts).
      c = await makeCluster();
      const { east, west } = await startOnTable(c, `${SCHEMA}${ACCOUNTS}`);
      await waitCaughtUp(east);
      const writer = startWriter(c.db('east'), { perBatch: 2, intervalMs: 2, transfers: 100 });
      // Atomicity: a reader of the backup sees the accounts' total unchanged at every read, across
      // every kill (each transaction moves money between two accounts).
      const reader = new Database(c.db('west'), { readonly: true });
      const total = reader.prepare('SELECT count(*) AS n, sum(balance) AS s FROM acct');
      let reads = 0;
      let stopReading = false;
      const reading = (async () => {
        while (!stopReading) {
          try {
            expect(total.get()).toEqual({ n: 100, s: 100_000 });
            reads++;
          } catch (err) {
            if (!String(err).includes('SQLITE_BUSY')) throw err;
          }
          await sleep(3);
        }
      })();
      try {
        for (let i = 0; i < kills; i++) {
          await sleep(200 + Math.floor(Math.random() * 300));
          await east.kill('SIGKILL');
          east.start();
          await east.ready();
        }
        await sleep(300);
        await writer.stop();
        await waitCaughtUp(east);
      } finally {
        stopReading = true;
        await reading;
        reader.close();
      }
      expect(reads).toBeGreaterThan(kills * 20);
      expect(dump(c.db('west'), ['items', 'tags', 'acct'])).toEqual(
        dump(c.db('east'), ['items', 'tags', 'acct']),
      );
      expect(await east.kill('SIGTERM')).toBe(0);
      expect(await west.kill('SIGTERM')).toBe(0);
      await expectSameRecords(c);
    },
    runs(120_000, 1_800_000),
  );

  it('fences the backup, replicates schema changes, and refuses bad peers while streaming', async () => {
    c = await makeCluster();
    expect(sqlite(c.db('east'), SCHEMA).status).toBe(0);
    const east = c.proc('east');
    const west = c.proc('west');
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);
    await waitCaughtUp(east);

    // The backup refuses application writes and says who the primary is.
    const w = sqlite(c.db('west'), "INSERT INTO items (name) VALUES ('rogue');");
    expect(w.status).not.toBe(0);
    expect(w.stderr).toMatch(/backup in group shop; write to the primary, node east/);

    const writer = startWriter(c.db('east'), { perBatch: 3, intervalMs: 10 });

    // Garbage bytes, and a TLS client with the wrong secret: both refused.
    const garbage = net.connect(c.ports.west!.listen, '127.0.0.1');
    garbage.on('error', () => {});
    garbage.write(Buffer.from('GET / HTTP/1.1\r\n\r\n\xff\xff\xff\xff'));
    const garbageClosed = await new Promise<boolean>((r) => {
      garbage.once('close', () => r(true));
      setTimeout(() => r(false), 8000);
    });
    expect(garbageClosed).toBe(true);
    const wrong = await new Promise<string>((resolve) => {
      const s = tls.connect({
        host: '127.0.0.1',
        port: c!.ports.west!.listen,
        minVersion: 'TLSv1.2',
        maxVersion: 'TLSv1.2',
        ciphers: 'ECDHE-PSK-CHACHA20-POLY1305',
        checkServerIdentity: () => undefined,
        pskCallback: () => ({ psk: Buffer.alloc(32, 1), identity: 'east' }),
      });
      s.on('secureConnect', () => resolve('connected'));
      s.on('error', (e) => resolve(`error: ${e.message}`));
    });
    expect(wrong).toMatch(/^error/);

    // Schema changes mid-stream: a new table, and a new column.
    expect(
      sqlite(
        c.db('east'),
        `CREATE TABLE extra (k TEXT PRIMARY KEY, v INTEGER);
         INSERT INTO extra VALUES ('x', 1), ('y', 2);
         ALTER TABLE items ADD COLUMN note TEXT DEFAULT 'none';
         UPDATE items SET note = 'noted' WHERE id % 10 = 0;`,
      ).status,
    ).toBe(0);
    await sleep(500);
    await writer.stop();
    const s = await waitCaughtUp(east);
    expect(s.groups[0]!.links[0]!.state).toBe('streaming');
    expect(dump(c.db('west'), ['items', 'tags', 'extra'])).toEqual(
      dump(c.db('east'), ['items', 'tags', 'extra']),
    );
    const log = await import('node:fs').then((fs) => fs.readFileSync(`${c!.dir}/west.log`, 'utf8'));
    expect(log).toMatch(/link refused/);

    expect(await east.kill('SIGTERM')).toBe(0);
    expect(await west.kill('SIGTERM')).toBe(0);
  }, 120_000);

  it('detects a frozen backup by heartbeat (SIGSTOP) and resumes after SIGCONT', async () => {
    c = await makeCluster();
    expect(sqlite(c.db('east'), SCHEMA).status).toBe(0);
    const east = c.proc('east');
    const west = c.proc('west');
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);
    await waitCaughtUp(east);
    const writer = startWriter(c.db('east'), { perBatch: 2, intervalMs: 20 });
    west.child!.kill('SIGSTOP');
    const stoppedAt = Date.now();
    // The TCP connection stays open: only the missing heartbeats reveal the dead peer.
    await until(
      'east to notice',
      async () => (await east.status())?.groups[0]?.links[0]?.state !== 'streaming',
      15000,
    );
    const noticedMs = Date.now() - stoppedAt;
    expect(noticedMs).toBeGreaterThan(3000); // not before the 5 s silence limit (give or take a tick)
    const s = await east.status();
    expect(s!.groups[0]!.links[0]!.lastError ?? '').toMatch(/silent|closed|ECONNREFUSED|timed out/);
    west.child!.kill('SIGCONT');
    await until(
      'streaming again',
      async () => (await east.status())?.groups[0]?.links[0]?.state === 'streaming',
      15000,
    );
    await writer.stop();
    await waitCaughtUp(east);
    expect(dump(c.db('west'), ['items', 'tags'])).toEqual(dump(c.db('east'), ['items', 'tags']));
    expect(await east.kill('SIGTERM')).toBe(0);
    expect(await west.kill('SIGTERM')).toBe(0);
  }, 60_000);
});
