/**
 * The async-mode ledger across a failover: an application commits to the primary's database in
 * bursts while the test samples the lag the primary reports (its status, every 20 ms); the
 * primary's node is killed (SIGKILL) and the witness promotes the backup. Every write the backup
 * holds was acknowledged on the primary (no phantom, no duplicate), and every acknowledged write
 * it lacks was committed within the lag the primary last reported before it died, or after it
 * died while the database's lease still ran (at most its margin): async mode loses no more than
 * it said it might. Then the old primary is started again and rejoins: its divergence report
 * holds exactly the lost writes, no more, no fewer. Needs dist/.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { NodeProcess } from '../../src/demo/procs.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { sleep, until } from '../helpers/cluster.js';
import { runs } from '../helpers/tiers.js';
import { dbFile, divergentIds, startWitnessGroup, WITNESS_FAILOVER } from '../helpers/witness-group.js';

/** How much earlier than the oldest unapplied record's timestamp a row in it may have committed. */
const CAPTURE_SLACK_MS = 50;

describe('async mode: what a failover loses', () => {
  for (let round = 0; round < runs(1, 20); round++) {
    it(`is no more than the lag the primary reported${round ? ` (round ${round + 1})` : ''}`, async () => {
      const cfg = await writeClusterConfig({
        cluster: 'loss',
        group: 'shop',
        endpoints: { east: 'sqlite:./data/east.db', west: 'sqlite:./data/west.db' },
        extraNodes: ['arbiter'],
        groupExtra: WITNESS_FAILOVER,
        prefix: 'tandem-test-',
      });
      const procs: NodeProcess[] = [];
      try {
        const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex') };
        const { east, west } = await startWitnessGroup(
          cfg,
          'CREATE TABLE t (id INTEGER PRIMARY KEY, at REAL NOT NULL, pad TEXT)',
          procs,
          () => env,
        );

        // Bursts of commits; each row carries its commit time (this machine's wall clock, as HLC).
        const db = new Database(dbFile(cfg, 'east'));
        db.pragma('busy_timeout = 100');
        const ins = db.prepare('INSERT INTO t (id, at, pad) VALUES (?, ?, ?)');
        const burst = db.transaction((from: number, n: number) => {
          for (let i = 0; i < n; i++) ins.run(from + i, Date.now(), 'x'.repeat(200));
        });
        const acked = new Map<number, number>();
        let id = 0;
        let writing = true;
        const writer = (async () => {
          while (writing) {
            const n = 1 + Math.floor(Math.random() * 40);
            // The burst's start: its rows commit after it.
            const at = Date.now();
            try {
              burst(id + 1, n);
              for (let i = 1; i <= n; i++) acked.set(id + i, at);
              id += n;
            } catch {
              // refused once the lease lapsed: not acknowledged
            }
            await sleep(Math.random() < 0.1 ? 20 : 1);
          }
        })();
        // The lag the primary reports, sampled until it dies.
        const samples: { at: number; lagMs: number }[] = [];
        let sampling = true;
        const sampler = (async () => {
          while (sampling) {
            const s = await east.status(200);
            const l = s?.groups[0]?.links[0];
            if (l) samples.push({ at: Date.now(), lagMs: l.lag.ms });
            await sleep(20);
          }
        })();
        await sleep(1500 + Math.random() * 1500);
        const killedAt = Date.now();
        await east.kill('SIGKILL');
        sampling = false;
        await sampler;
        await until('west took over', async () => (await west.status())?.lastFailover, 20_000);
        writing = false;
        await writer;
        db.close();
        await until('west applied what it holds', async () => {
          const g = (await west.status())?.groups[0];
          return g?.role === 'primary' && g.state === 'running';
        });

        const w = new Database(dbFile(cfg, 'west'), { readonly: true });
        const held = (w.prepare('SELECT id FROM t').all() as { id: number }[]).map((r) => r.id);
        w.close();
        // Nothing the primary did not acknowledge, nothing twice.
        for (const x of held) expect(acked.has(x), `row ${x} on west was never acknowledged`).toBe(true);
        expect(new Set(held).size).toBe(held.length);
        // What is lost was committed within the last reported lag.
        const last = samples.at(-1)!;
        const horizon = last.at - last.lagMs - CAPTURE_SLACK_MS;
        const have = new Set(held);
        const lost = [...acked].filter(([x]) => !have.has(x));
        const oldest = Math.min(...lost.map(([, at]) => at));
        expect(
          lost.every(([, at]) => at >= horizon),
          `${lost.length} of ${acked.size} acknowledged rows lost; the oldest committed ${last.at - oldest} ms before the last sample, which reported a lag of ${last.lagMs} ms`,
        ).toBe(true);
        expect(acked.size).toBeGreaterThan(500);
        // With its node dead, the database takes writes only while the lease runs: at most its
        // margin (0.75 x failover.timeout) after the last extension. Those are lost too.
        const afterDeath = [...acked.values()].filter((at) => at > killedAt).length;
        expect(Math.max(...acked.values()), 'writes accepted after the lease ran out').toBeLessThan(
          killedAt + 750 + 100,
        );
        // A figure for RELIABILITY.md.
        console.log(
          `async failover: ${lost.length} of ${acked.size} acknowledged rows lost (${afterDeath} written after the node died), reported lag ${last.lagMs} ms, oldest lost ${lost.length ? last.at - oldest : 0} ms before the last sample`,
        );

        // The old primary rejoins: what it reports as divergent is exactly what was lost.
        east.start();
        await east.ready();
        await until(
          'east rejoined as a backup',
          async () => {
            const g = (await east.status())?.groups[0];
            return g?.role === 'backup' && g.state === 'running';
          },
          30_000,
        );
        const reported = await divergentIds(cfg, 'east');
        expect(reported.length, 'a divergent row reported twice').toBe(new Set(reported).size);
        expect(reported.sort((a, b) => a - b)).toEqual(lost.map(([x]) => x).sort((a, b) => a - b));
      } finally {
        for (const p of procs) if (p.running) p.child?.kill('SIGKILL');
        await Promise.all(procs.map((p) => p.exit));
        if (!process.env.KEEP) rmSync(cfg.dir, { recursive: true, force: true });
      }
    }, 90_000);
  }
});
