/**
 * Deterministic simulation of the link and journal (docs/simulation.md): many seeds, each one
 * run of a primary and a backup under a seeded schedule of faults on a virtual clock, network
 * and disk. A failing seed is printed with the command that replays exactly that run.
 */
import { describe, expect, it } from 'vitest';
import { runSim } from './link-sim.js';
import { runSeeds, seedList } from './seeds.js';

const seeds = seedList(40, 2000);

describe('deterministic simulation: primary and backup under faults', () => {
  it('one seed replays exactly (same events, same digest)', async () => {
    const a = await runSim({ seed: 424242, durationMs: 5000 });
    const b = await runSim({ seed: 424242, durationMs: 5000 });
    expect(b.digest).toBe(a.digest);
    expect(b.events).toBe(a.events);
    expect(b.committed).toBe(a.committed);
    expect(a.events).toBeGreaterThan(1000);
  });

  it(`${seeds.length} seeds: no acknowledged loss, no gap, no duplicate, no partial transaction, journals identical`, {
    timeout: 7_200_000,
  }, async () => {
    const failed = await runSeeds({
      label: 'link simulation',
      testFile: 'test/sim/link.sim.test.ts',
      seeds,
      run: (seed, fullLog) => runSim({ seed, fullLog }),
      counts: (r) => ({ 'transactions committed': r.committed, acknowledged: r.acknowledged }),
    });
    expect(failed, failed.join('\n\n')).toEqual([]);
  });
});
