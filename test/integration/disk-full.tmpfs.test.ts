/**
 * A full disk, for real: a node's state folder (its journal) is a small tmpfs (needs root), filled
 * up while an application commits. The node's group stops cleanly (nothing acknowledged is lost,
 * the error says the disk is full), the other node keeps running, and when space returns the
 * group starts again by itself and catches up: data equal, journals identical.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { TandemNode } from '../../src/node/node.js';
import { dump, expectSameRecords, localCluster, sleep, until } from '../helpers/cluster.js';

/** Mounts a tmpfs of `bytes` at `dir`; returns the unmount. */
function tmpfs(dir: string, bytes: number): () => void {
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tandem-test', dir]);
  } catch (err) {
    throw new Error(`cannot mount a tmpfs at ${dir} (needs root): ${(err as Error).message}`);
  }
  return () => execFileSync('umount', ['-l', dir]);
}

/** Fills the file system of `dir` with a file, leaving about `leave` bytes free. */
function fill(dir: string, leave: number): string {
  const out = execFileSync('df', ['--output=avail', '-B1', dir], { encoding: 'utf8' });
  const avail = Number(out.trim().split('\n')[1]);
  const file = path.join(dir, 'filler');
  writeFileSync(file, Buffer.alloc(Math.max(0, avail - leave)));
  return file;
}

describe('a full disk under a node', () => {
  const local = localCluster(500);

  for (const full of ['west', 'east'] as const) {
    it(`${full === 'west' ? "the backup's" : "the primary's"} journal runs out of space: the group stops, then resumes by itself`, async () => {
      const c = await local.make({
        groupExtra: '    retention: { segment_size: 64KiB, keep_bytes: 64KiB, keep_time: 1s }',
      });
      const unmount = tmpfs(path.join(c.dir, 'state', full), 4 << 20);
      let db: Database.Database | null = null;
      try {
        const pair = await local.streaming('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
        db = pair.db;
        const { east, west } = pair;
        const victim: TandemNode = full === 'east' ? east : west;
        const group = () => victim.status().groups[0]!;
        const filler = fill(path.join(c.dir, 'state', full), 256 << 10);
        // Commits go on while the disk fills (async mode: the application never waits).
        let n = 0;
        const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
        // About 200 kB/s: the free 256 KiB go within seconds, faster than retention frees them.
        const writer = setInterval(() => ins.run(`${n++} ${'x'.repeat(1000)}`), 5);
        try {
          await until('the group to stop for want of space', () => group().state === 'failed', 30_000);
          expect(group().error).toMatch(/ENOSPC|no space/i);
          // The other node runs on; commits are still accepted.
          const other = full === 'east' ? west : east;
          expect(other.status().groups[0]!.state).toBe('running');
          const before = n;
          await sleep(1500);
          expect(n).toBeGreaterThan(before);
          // The node keeps trying, and says so.
          await until('a restart attempt', () => (group().restart?.attempts ?? 0) >= 1);
          // The disk is still full: the restarted group stops again, for the same reason.
          await until(
            'the restarted group to stop again',
            () => group().state === 'failed' && /ENOSPC|no space/i.test(group().error ?? ''),
            30_000,
          );
          // Space returns: the group starts again on its own.
          rmSync(filler);
          await until('the group to run again', () => group().state === 'running', 60_000);
        } finally {
          clearInterval(writer);
        }
        await until(
          'caught up',
          () => {
            const g = east.status().groups[0]!;
            return (
              g.state === 'running' &&
              g.positions.captured > 0 &&
              g.links[0]!.applied === g.positions.captured
            );
          },
          60_000,
        );
        const rows = db.prepare('SELECT count(*) AS n FROM t').get() as { n: number };
        expect(rows.n).toBe(n);
        expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
        await local.nodes.stopAll();
        await expectSameRecords(c);
      } finally {
        db?.close();
        await local.nodes.stopAll();
        unmount();
      }
    }, 180_000);
  }
});
