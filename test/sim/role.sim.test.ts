/**
 * Deterministic simulation of the role protocols (docs/simulation.md): real TandemNodes with a
 * witness, automatic failover, switchover, rejoin and backup realignment on a virtual clock,
 * network and disk, under kills, power losses, partitions, clock jumps and I/O errors, with
 * applications writing to every node's database. A failing seed is printed with the command
 * that replays exactly that run.
 */
import { describe, expect, it } from 'vitest';
import { runRoleSim } from './role-sim.js';
import { runSeeds, seedList } from './seeds.js';

const seeds = seedList(40, 2000);

describe('deterministic simulation: failover, switchover and rejoin under faults', () => {
  it('one seed replays exactly (same events, same digest)', async () => {
    const a = await runRoleSim({ seed: 4242, durationMs: 8000 });
    const b = await runRoleSim({ seed: 4242, durationMs: 8000 });
    expect(b.digest).toBe(a.digest);
    expect(b.events).toBe(a.events);
    expect(b.accepted).toBe(a.accepted);
    expect(a.events).toBeGreaterThan(1000);
  });

  it(`${seeds.length} seeds: one primary at a time, no acknowledged loss, exact divergence reports, nodes identical`, {
    timeout: 7_200_000,
  }, async () => {
    const failed = await runSeeds({
      label: 'role simulation',
      testFile: 'test/sim/role.sim.test.ts',
      seeds,
      run: (seed, fullLog) => runRoleSim({ seed, fullLog }),
      counts: (r) => ({
        'writes accepted': r.accepted,
        acknowledged: r.acknowledged,
        'reported divergent': r.divergent,
        epochs: r.epochs,
      }),
    });
    expect(failed, failed.join('\n\n')).toEqual([]);
  });
});
