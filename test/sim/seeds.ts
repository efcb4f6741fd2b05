/**
 * The seed loop the simulation tests share: which seeds run (TANDEM_SIM_SEED replays one,
 * TANDEM_SIM_FIRST shifts the range, the tier or TANDEM_SIM_COUNT sets how many), totals for RELIABILITY.md, and a
 * report per failing seed with the command that replays it and, on a replay, its whole log.
 */
import { writeFileSync } from 'node:fs';
import { runs } from '../helpers/tiers.js';

/** What every simulated run reports. */
export interface SeedRun {
  seed: number;
  mode: 'async' | 'sync';
  violations: string[];
  events: number;
  virtualMs: number;
  faults: Record<string, number>;
  log: string[];
}

const only = process.env.TANDEM_SIM_SEED;
const first = Number(process.env.TANDEM_SIM_FIRST ?? 1);
const count = process.env.TANDEM_SIM_COUNT;
const logFile = process.env.TANDEM_SIM_LOG ?? '/tmp/tandem-sim.log';
/** A seed taking longer than this (real time) is named as it ends. */
const SLOW_MS = 10_000;

/** The seeds this run explores: one to replay, or `quick` (npm test) or `long` (npm run test:long) of them. */
export function seedList(quick: number, long: number): number[] {
  const n = count ? Number(count) : runs(quick, long);
  return only ? [Number(only)] : Array.from({ length: n }, (_, i) => first + i);
}

/**
 * Runs every seed and returns one report per failing seed (empty when all hold). `counts`
 * picks the figures to total besides events, virtual time and faults.
 */
export async function runSeeds<R extends SeedRun>(o: {
  label: string;
  testFile: string;
  seeds: number[];
  run: (seed: number, fullLog: boolean) => Promise<R>;
  counts: (r: R) => Record<string, number>;
}): Promise<string[]> {
  const failed: string[] = [];
  const totals: Record<string, number> = {};
  const faults: Record<string, number> = {};
  let events = 0;
  let virtualMs = 0;
  const started = performance.now();
  const seconds = () => ((performance.now() - started) / 1000).toFixed(1);
  for (const [i, seed] of o.seeds.entries()) {
    const t = performance.now();
    const r = await o.run(seed, only !== undefined);
    const ms = performance.now() - t;
    if (only) writeFileSync(logFile, `${r.log.join('\n')}\n`);
    // A long run reports a failing or slow seed as it happens, not only at its end.
    if (r.violations.length > 0 || ms > SLOW_MS)
      console.log(
        `${o.label}: seed ${seed} ${r.violations.length > 0 ? `FAILED (${r.violations[0]})` : 'passed'} in ${(ms / 1000).toFixed(1)} s, ${r.events} events`,
      );
    events += r.events;
    virtualMs += r.virtualMs;
    for (const [k, v] of Object.entries(o.counts(r))) totals[k] = (totals[k] ?? 0) + v;
    for (const [k, v] of Object.entries(r.faults)) faults[k] = (faults[k] ?? 0) + v;
    if (r.violations.length > 0)
      failed.push(
        [
          `seed ${r.seed} (${r.mode}) failed: ${r.violations.length} violation(s)`,
          ...r.violations.map((v) => `  - ${v}`),
          `replay: TANDEM_SIM_SEED=${r.seed} npx vitest run ${o.testFile}`,
          ...(only ? [`log of every node: ${logFile}`] : [`last log lines:`, ...r.log.slice(-40)]),
        ].join('\n'),
      );
    if ((i + 1) % 250 === 0)
      console.log(
        `${o.label}: ${i + 1} of ${o.seeds.length} seeds, ${seconds()} s, ${failed.length} failing`,
      );
  }
  const figures = Object.entries(totals)
    .map(([k, v]) => `${v} ${k}`)
    .join(', ');
  console.log(
    `${o.label}: ${o.seeds.length} seeds in ${seconds()} s, ${(virtualMs / 1000).toFixed(0)} virtual s, ${events} events, ${figures}; faults ${JSON.stringify(faults)}; ${failed.length} failing`,
  );
  return failed;
}
