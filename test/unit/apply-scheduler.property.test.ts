import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  LANE_MIN_WEIGHT,
  LanePlanner,
  lanesFor,
  ONE_LANE_ROUNDS,
  scheduleUnits,
} from '../../src/adapters/apply-scheduler.js';

const units = fc.array(
  fc.record({
    keys: fc.uniqueArray(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l'), {
      maxLength: 3,
    }),
    weight: fc.integer({ min: 0, max: 50 }),
  }),
  { maxLength: 60 },
);

describe('apply scheduler', () => {
  it('keeps units sharing a key in one lane, in source order, using at most the lanes given', () => {
    fc.assert(
      fc.property(units, fc.integer({ min: 1, max: 6 }), (list, n) => {
        const tagged = list.map((u, i) => ({ ...u, i }));
        const lanes = scheduleUnits(tagged, n);
        expect(lanes.length).toBeLessThanOrEqual(n);
        // Every unit exactly once.
        expect(
          lanes
            .flat()
            .map((u) => u.i)
            .sort((a, b) => a - b),
        ).toEqual(tagged.map((u) => u.i));
        const laneOf = new Map<number, number>();
        lanes.forEach((lane, l) => {
          for (const u of lane) laneOf.set(u.i, l);
          // Source order within a lane.
          expect(lane.map((u) => u.i)).toEqual([...lane.map((u) => u.i)].sort((a, b) => a - b));
        });
        // A key belongs to one lane.
        const keyLane = new Map<string, number>();
        for (const u of tagged) {
          for (const k of u.keys) {
            const l = keyLane.get(k);
            if (l === undefined) keyLane.set(k, laneOf.get(u.i)!);
            else expect(laneOf.get(u.i)).toBe(l);
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('uses a connection per LANE_MIN_WEIGHT row changes of a round, at least one, at most the lanes given', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 100_000 }), fc.integer({ min: 1, max: 16 }), (weight, lanes) => {
        const n = lanesFor(weight, lanes);
        expect(n).toBeGreaterThanOrEqual(1);
        expect(n).toBeLessThanOrEqual(lanes);
        if (n < lanes) expect(weight).toBeLessThan((n + 1) * LANE_MIN_WEIGHT);
        if (n > 1) expect(weight).toBeGreaterThanOrEqual(n * LANE_MIN_WEIGHT);
      }),
    );
    expect(lanesFor(20, 4)).toBe(1); // a few small transactions
    expect(lanesFor(5_000, 4)).toBe(4); // a backlog's round
  });

  it('spreads unrelated units over the lanes', () => {
    const list = Array.from({ length: 8 }, (_, i) => ({ keys: [`k${i}`], weight: 1 }));
    expect(scheduleUnits(list, 4).map((l) => l.length)).toEqual([2, 2, 2, 2]);
    expect(scheduleUnits(list, 1)).toEqual([list]);
  });

  it('after a round that came out as one lane, sends the next rounds on one without analysis, then analyses again', () => {
    const p = new LanePlanner();
    expect(p.plan(1)).toBe(1);
    expect(p.plan(4)).toBe(4);
    p.observe(4, 3); // spread: the next round is analysed too
    expect(p.plan(4)).toBe(4);
    p.observe(4, 1); // one component (a hot row)
    for (let i = 0; i < ONE_LANE_ROUNDS; i++) {
      expect(p.plan(1)).toBe(1); // small rounds do not use up the unanalysed ones
      expect(p.plan(4)).toBe(1);
      p.observe(1, 1);
    }
    expect(p.plan(4)).toBe(4); // analysed again: a workload that turned parallel gets its lanes
    p.observe(4, 4);
    expect(p.plan(3)).toBe(3);
  });
});
