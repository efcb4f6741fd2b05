/**
 * Deterministic simulation of the link and journal (docs/simulation.md): many seeds, each one
 * run of a primary and a backup under a seeded schedule of faults on a virtual clock, network
 * and disk. A failing seed is printed with the command that replays exactly that run.
 */
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runs } from '../helpers/tiers.js';
import { runSim, type SimResult } from './link-sim.js';

const only = process.env.TANDEM_SIM_SEED;
const first = Number(process.env.TANDEM_SIM_FIRST ?? 1);
const logFile = process.env.TANDEM_SIM_LOG ?? '/tmp/tandem-sim.log';
const seeds = only ? [Number(only)] : Array.from({ length: runs(40, 2000) }, (_, i) => first + i);

function report(r: SimResult): string {
  return [
    `seed ${r.seed} (${r.mode}) failed: ${r.violations.length} violation(s)`,
    ...r.violations.map((v) => `  - ${v}`),
    `replay: TANDEM_SIM_SEED=${r.seed} npx vitest run test/sim/link.sim.test.ts`,
    ...(only ? [`log of both nodes: ${logFile}`] : []),
  ].join('\n');
}

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
    const failed: string[] = [];
    const totals = {
      committed: 0,
      acknowledged: 0,
      events: 0,
      virtualMs: 0,
      faults: {} as Record<string, number>,
    };
    const started = performance.now();
    for (const seed of seeds) {
      const r = await runSim({ seed, fullLog: only !== undefined });
      if (only) writeFileSync(logFile, `${r.log.join('\n')}\n`);
      totals.committed += r.committed;
      totals.acknowledged += r.acknowledged;
      totals.events += r.events;
      totals.virtualMs += r.virtualMs;
      for (const [k, v] of Object.entries(r.faults)) totals.faults[k] = (totals.faults[k] ?? 0) + v;
      if (r.violations.length > 0) failed.push(report(r));
      const done = seeds.indexOf(seed) + 1;
      if (done % 250 === 0)
        console.log(
          `simulation: ${done} of ${seeds.length} seeds, ${((performance.now() - started) / 1000).toFixed(0)} s, ${failed.length} failing`,
        );
    }
    console.log(
      `simulation: ${seeds.length} seeds in ${((performance.now() - started) / 1000).toFixed(1)} s, ${(totals.virtualMs / 1000).toFixed(0)} virtual s, ${totals.events} events, ${totals.committed} transactions committed, ${totals.acknowledged} acknowledged; faults ${JSON.stringify(totals.faults)}; ${failed.length} failing`,
    );
    expect(failed, failed.join('\n\n')).toEqual([]);
  });
});
