/**
 * I/O faults at an exact system call, for real: a `tandem run` process runs under strace, which
 * makes its N-th write or fsync of one file fail with EIO, or kills it with SIGKILL right there
 * (`strace -e inject=...`). Hit are the journal of either node, the backup's database (apply and
 * the applied position it stores in the same transaction) and the primary's database (capture's
 * change table and its confirmed position). An outside sqlite3 shell commits all along. A failed
 * write stops the group and the node restarts it by itself; a killed node is started again.
 * Either way every committed row reaches the backup exactly once and the journals end identical.
 * Needs root (ptrace), strace, the sqlite3 command and dist/.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  dump,
  expectSameRecords,
  makeCluster,
  sleep,
  type TestCluster,
  until,
  waitCaughtUp,
} from '../helpers/cluster.js';
import { sqlite, startWriter } from '../helpers/sqlite-shell.js';
import { runs } from '../helpers/tiers.js';

const SCHEMA = `
  CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, data BLOB);
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200)
  INSERT INTO items (name, qty, price, data) SELECT 'seed ' || i, i, i * 1.5, randomblob(8) FROM s;
`;

interface Case {
  node: 'east' | 'west';
  what: string;
  /** System calls to hit. */
  calls: string;
  /** The file they must touch, relative to the cluster folder; a function of the folder for a journal segment. */
  file: (dir: string, node: string) => string;
  fault: 'error=EIO' | 'signal=KILL';
  /** The fault hits call `first` + a random 0..`spread`-1 (fsyncs are rarer than writes). */
  first: number;
  spread: number;
}

/** The journal's active (last) segment of `node`, found once the node has started. */
const segment = (dir: string, node: string) => {
  const d = path.join(dir, 'state', node, 'journal', 'shop');
  const seg = readdirSync(d)
    .filter((f) => f.endsWith('.seg'))
    .sort()
    .at(-1);
  if (!seg) throw new Error(`no journal segment in ${d}`);
  return path.join(d, seg);
};
const wal = (dir: string, node: string) => path.join(dir, 'data', `${node}.db-wal`);

const writes = { first: 20, spread: 60 };
const fsyncs = { first: 2, spread: 8 };
const CASES: Case[] = [];
for (const fault of ['error=EIO', 'signal=KILL'] as const) {
  CASES.push(
    {
      node: 'east',
      what: "the primary's journal write",
      calls: 'pwritev,pwritev2,pwrite64',
      file: segment,
      fault,
      ...writes,
    },
    {
      node: 'west',
      what: "the backup's journal write",
      calls: 'pwritev,pwritev2,pwrite64',
      file: segment,
      fault,
      ...writes,
    },
    {
      node: 'west',
      what: "the backup's database write (apply)",
      calls: 'pwrite64',
      file: wal,
      fault,
      ...writes,
    },
    {
      node: 'west',
      what: "the backup's database fsync (apply)",
      calls: 'fsync,fdatasync',
      file: wal,
      fault,
      ...fsyncs,
    },
    {
      node: 'east',
      what: "the primary's database write (capture)",
      calls: 'pwrite64',
      file: wal,
      fault,
      ...writes,
    },
  );
}

describe('I/O errors and crashes at the N-th write or fsync (strace)', () => {
  let c: TestCluster | null = null;
  afterEach(() => {
    c?.cleanup();
    c = null;
  });

  for (const [k, round] of CASES.flatMap((k) =>
    Array.from({ length: runs(1, 5) }, (_, i) => [k, i] as const),
  )) {
    it(`${k.fault === 'error=EIO' ? 'EIO' : 'SIGKILL'} at ${k.what}${round ? ` (round ${round + 1})` : ''}`, async () => {
      c = await makeCluster();
      const dir = c.dir;
      expect(sqlite(c.db('east'), SCHEMA).status).toBe(0);
      const victim = c.proc(k.node);
      const other = c.proc(k.node === 'east' ? 'west' : 'east');
      // Both run first, so that the files exist and the backup is seeded; then the victim is
      // restarted under strace, aimed at one file.
      victim.start();
      other.start();
      await Promise.all([victim.ready(), other.ready()]);
      await waitCaughtUp(c.proc('east'));
      const writer = startWriter(c.db('east'), { perBatch: 4, intervalMs: 5 });
      await sleep(300);
      await victim.kill('SIGTERM');
      const file = k.file(dir, k.node);
      const nth = k.first + Math.floor(Math.random() * k.spread);
      const traceLog = path.join(dir, `strace-${k.node}.log`);
      const why = `${k.fault} at call ${nth} of ${k.calls} on ${file}`;
      victim.start({}, [
        'strace',
        '-f',
        '-qq',
        '-o',
        traceLog,
        '-P',
        file,
        '-e',
        `trace=${k.calls}`,
        '-e',
        `inject=${k.calls}:${k.fault}:when=${nth}`,
      ]);
      try {
        if (k.fault === 'signal=KILL') {
          const code = await Promise.race([victim.exit, sleep(30_000).then(() => 'running')]);
          expect(code, why).not.toBe('running');
          victim.start();
          await victim.ready();
        } else {
          const log = () => readFileSync(path.join(dir, `${k.node}.log`), 'utf8');
          // A fault while the node starts its groups ends the start with the error (a node
          // refuses to start on a failing disk); it is started again without the fault.
          const failedStart = await victim.ready().then(
            () => false,
            () => true,
          );
          if (failedStart) {
            expect(log(), why).toMatch(/EIO|disk I\/O error/);
            victim.start();
            await victim.ready();
          }
          await until(
            `the fault (${why})`,
            () => readFileSync(traceLog, 'utf8').includes('INJECTED'),
            30_000,
          );
          // A failed fsync of a checkpoint is SQLite's to retry (it reports nothing); every
          // other fault here stops the group, and the node restarts it.
          const stopped = await until(
            'the group to stop',
            () => log().includes('"group stopped"'),
            5000,
          ).catch(() => false);
          if (k.calls.includes('write')) expect(stopped, `the group stops after ${why}`).toBe(true);
          if (stopped && !failedStart)
            await until(
              `the group to restart after ${why}`,
              () => log().includes('group restarted after a failure'),
              30_000,
            );
        }
        await sleep(500);
      } finally {
        await writer.stop();
      }
      const status = await waitCaughtUp(c.proc('east'), 60_000);
      expect(status.groups[0]!.state).toBe('running');
      expect((await c.proc('west').status())!.groups[0]!.state).toBe('running');
      const rows = sqlite(c.db('east'), 'SELECT count(*), max(id) FROM items;').stdout.trim();
      expect(rows, why).not.toBe('');
      expect(dump(c.db('west'), ['items']), why).toEqual(dump(c.db('east'), ['items']));
      // The strace'd node (its pid is strace's child) goes down with SIGKILL, not through strace.
      for (const n of ['east', 'west']) {
        const pid = (await c.proc(n).status())?.pid;
        if (pid) process.kill(pid, 'SIGKILL');
        await c.proc(n).exit;
      }
      await expectSameRecords(c);
    }, 120_000);
  }
});
