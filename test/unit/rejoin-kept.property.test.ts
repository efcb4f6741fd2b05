import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { JournalRecord, RowChange } from '../../src/core/record.js';
import { transactionsOf, withoutReported } from '../../src/node/divergence.js';
import { withoutKept } from '../../src/node/rejoin.js';

/**
 * withoutKept: a node that lost records sent ahead of its fsync captured the same database
 * changes again, cut into records differently; the new primary holds the originals of a prefix.
 * The report must hold exactly the changes after that prefix.
 */
const change = (i: number): RowChange => ({
  op: 'insert',
  table: 'ledger',
  columns: ['id'],
  before: null,
  after: [i],
});

/** `changes` cut into records at `cuts` (each cut ends a record), positions from `first`. */
function records(changes: RowChange[], cuts: number[], first: number, origin = 'west'): JournalRecord[] {
  const ends = [...new Set(cuts.filter((c) => c > 0 && c < changes.length)), changes.length].sort(
    (a, b) => a - b,
  );
  let from = 0;
  return ends.map((end, i) => {
    const rec: JournalRecord = {
      position: first + i,
      epoch: 1,
      origin,
      hlc: 0n,
      source: String(end),
      txCount: 1,
      changes: changes.slice(from, end),
    };
    from = end;
    return rec;
  });
}

const rowsOf = (rs: JournalRecord[]) => rs.flatMap((r) => r.changes);

describe('withoutKept', () => {
  const run = fc.record({
    n: fc.integer({ min: 1, max: 40 }),
    kept: fc.integer({ min: 0, max: 40 }),
    mine: fc.array(fc.integer({ min: 1, max: 39 }), { maxLength: 10 }),
    theirs: fc.array(fc.integer({ min: 1, max: 39 }), { maxLength: 10 }),
  });

  it('leaves out exactly the changes the new primary holds, however both were cut into records', () => {
    fc.assert(
      fc.property(run, ({ n, kept, mine, theirs }) => {
        // The primary may hold more than this node captured again (k > n).
        const all = Array.from({ length: n + 10 }, (_, i) => change(i));
        const k = Math.min(kept, n + 10);
        const tail = records(all.slice(0, n), mine, 10);
        const held = k > 0 ? records(all.slice(0, k), theirs, 10) : [];
        expect(rowsOf(withoutKept(tail, held, 'west', 1))).toEqual(all.slice(Math.min(k, n), n));
      }),
    );
  });

  it("keeps the whole tail when the primary's records are not this node's prefix", () => {
    fc.assert(
      fc.property(run, ({ n, kept, mine, theirs }) => {
        const all = Array.from({ length: n }, (_, i) => change(i));
        const k = Math.max(1, Math.min(kept, n));
        const tail = records(all, mine, 10);
        const other = records(
          all.slice(0, k).map((c, i) => (i === k - 1 ? change(1000) : c)),
          theirs,
          10,
        );
        expect(rowsOf(withoutKept(tail, other, 'west', 1))).toEqual(all);
        // Records of another origin or epoch are not this node's.
        const foreign = records(all.slice(0, k), theirs, 10, 'east');
        expect(rowsOf(withoutKept(tail, foreign, 'west', 1))).toEqual(all);
        expect(rowsOf(withoutKept(tail, records(all.slice(0, k), theirs, 10), 'west', 2))).toEqual(all);
      }),
    );
  });
});

describe('withoutReported', () => {
  it("leaves out exactly the transactions another node's report names (origin, epoch, positions)", () => {
    // West's epoch-3 transactions at 10-11 and 12, east's own at 13: east reports after west did.
    const tail = [
      ...records([change(1), change(2)], [1], 10, 'west').map((r, i) => ({ ...r, epoch: 3, txCount: i })),
      ...records([change(3)], [], 12, 'west').map((r) => ({ ...r, epoch: 3 })),
      ...records([change(4)], [], 13, 'east').map((r) => ({ ...r, epoch: 4 })),
    ];
    const all = transactionsOf(tail);
    expect(all.map((t) => [t.origin, t.epoch, t.first, t.last])).toEqual([
      ['west', 3, 10, 11],
      ['west', 3, 12, 12],
      ['east', 4, 13, 13],
    ]);
    const west = [
      { origin: 'west', epoch: 3, first: 10, last: 11 },
      { origin: 'west', epoch: 3, first: 12, last: 12 },
    ];
    expect(withoutReported(all, west).map((t) => t.first)).toEqual([13]);
    // Anything short of an exact match stays: a report too long, never one too short.
    expect(withoutReported(all, [{ origin: 'west', epoch: 3, first: 10, last: 10 }])).toEqual(all);
    expect(withoutReported(all, [{ origin: 'west', epoch: 2, first: 12, last: 12 }])).toEqual(all);
    expect(withoutReported(all, [{ origin: 'south', epoch: 3, first: 12, last: 12 }])).toEqual(all);
  });
});
