/**
 * Dependency-aware scheduling for parallel apply: splits a run of source transactions over
 * several target connections so that transactions touching a common key stay on one
 * connection, in source order, and unrelated ones spread out.
 *
 * Invariants (property-tested in test/unit/apply-scheduler.property.test.ts)
 * - every unit lands in exactly one lane, and there are at most `lanes` lanes;
 * - two units that share a key are in the same lane;
 * - within a lane, units keep their source order.
 */

export interface Schedulable {
  /** What the unit touches (rows by table and key, or a whole table); equal strings conflict. */
  readonly keys: readonly string[];
  /** Cost, to balance lanes (row changes). */
  readonly weight: number;
}

/**
 * Row changes a round needs for each connection it uses. A lane costs a round trip, a commit and
 * its bookkeeping row whatever it carries; spread thin (a few transactions of a steady stream
 * over four connections) that costs more CPU than it saves, and on a busy machine latency with
 * it (docs/postgres.md, "Apply into PostgreSQL").
 */
export const LANE_MIN_WEIGHT = 64;

/** How many of `lanes` connections a round of units weighing `weight` in all is worth. */
export function lanesFor(weight: number, lanes: number): number {
  return Math.max(1, Math.min(lanes, Math.floor(weight / LANE_MIN_WEIGHT)));
}

/**
 * A round whose transactions all hang together by shared keys (a row that every transaction
 * writes, as pgbench's branches) comes out as one lane, and so, most likely, do the rounds of
 * the same workload after it: that many of them go on one connection without working out their
 * keys (5% of the backup's CPU in a pgbench catch-up) before a round is analysed again.
 */
export const ONE_LANE_ROUNDS = 16;

/** Whether a round's keys are worth working out, from how the rounds before it came out. */
export class LanePlanner {
  #unanalysed = 0;

  /** The lanes to schedule a round over that `lanesFor` gives `n`: n, or 1 after one-lane rounds. */
  plan(n: number): number {
    if (n <= 1) return n;
    if (this.#unanalysed === 0) return n;
    this.#unanalysed--;
    return 1;
  }

  /** A round planned with `planned` lanes came out as `used` non-empty ones. */
  observe(planned: number, used: number): void {
    if (planned > 1 && used === 1) this.#unanalysed = ONE_LANE_ROUNDS;
  }
}

/** Units in source order -> at most `lanes` non-empty lanes, each in source order. */
export function scheduleUnits<T extends Schedulable>(units: readonly T[], lanes: number): T[][] {
  if (lanes <= 1) return units.length > 0 ? [[...units]] : [];
  // Union-find over unit indexes: units sharing a key form one component.
  const parent = units.map((_, i) => i);
  const find = (i: number): number => {
    while (parent[i] !== i) {
      parent[i] = parent[parent[i]!]!;
      i = parent[i]!;
    }
    return i;
  };
  const owner = new Map<string, number>();
  units.forEach((u, i) => {
    for (const k of u.keys) {
      const o = owner.get(k);
      if (o === undefined) owner.set(k, i);
      else {
        const a = find(o);
        const b = find(i);
        if (a !== b) parent[Math.max(a, b)] = Math.min(a, b);
      }
    }
  });
  const components = new Map<number, { members: number[]; weight: number }>();
  units.forEach((u, i) => {
    const root = find(i);
    let c = components.get(root);
    if (!c) {
      c = { members: [], weight: 0 };
      components.set(root, c);
    }
    c.members.push(i);
    c.weight += Math.max(1, u.weight);
  });
  // Largest component first, each to the least loaded lane.
  const load = new Array<number>(Math.max(1, lanes)).fill(0);
  const picked: number[][] = load.map(() => []);
  for (const c of [...components.values()].sort((a, b) => b.weight - a.weight)) {
    const lane = load.indexOf(Math.min(...load));
    load[lane]! += c.weight;
    picked[lane]!.push(...c.members);
  }
  return picked.filter((p) => p.length > 0).map((p) => p.sort((a, b) => a - b).map((i) => units[i]!));
}
