import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { foldChanges, keyText } from '../../src/adapters/coalesce.js';
import type { RowChange, Value } from '../../src/core/record.js';

/**
 * Source histories on tables with columns k (key), a, b: inserts of new keys, updates that
 * leave out unchanged columns (as pgoutput does with unchanged TOAST values), updates that move
 * a row to a free key (with all columns or not), deletes. Table "w" is one the caller says is
 * not independent (it must pass through in order).
 */
type Row = Map<string, Value>;
type Table = Map<string, Row>;
const COLS = ['k', 'a', 'b'];
const TABLES = ['t', 'u', 'w'];

/** Keys of several types, some spelling the same digits (1, 1n, '1'): each is a row of its own. */
const keyValue = fc.oneof(
  fc.integer({ min: 0, max: 5 }),
  fc.bigInt({ min: 0n, max: 2n }),
  fc.constantFrom('1', '2'),
);

const step = fc.record({
  table: fc.constantFrom(...TABLES),
  kind: fc.constantFrom('insert', 'update', 'move', 'delete'),
  key: keyValue,
  to: keyValue,
  a: fc.option(fc.integer({ min: 0, max: 3 })),
  b: fc.oneof(fc.string({ maxLength: 2 }), fc.constant(null)),
  full: fc.boolean(),
});

type Step = typeof step extends fc.Arbitrary<infer T> ? T : never;

function history(steps: Step[], initial: Map<string, Table>) {
  const src = clone(initial);
  const changes: RowChange[] = [];
  for (const s of steps) {
    const t = src.get(s.table)!;
    const id = keyText(s.key);
    const row = t.get(id);
    const after = new Map<string, Value>([
      ['k', s.key],
      ['a', s.a],
      ['b', s.b],
    ]);
    if (s.kind === 'insert' && !row) {
      t.set(id, after);
      changes.push({
        op: 'insert',
        table: s.table,
        columns: COLS,
        before: null,
        after: COLS.map((c) => after.get(c)!),
      });
    } else if (s.kind === 'update' && row) {
      // Unchanged columns may be left out, as unchanged TOAST values are.
      const cols = COLS.filter((c) => c === 'k' || s.full || after.get(c) !== row.get(c));
      t.set(id, after);
      changes.push({
        op: 'update',
        table: s.table,
        columns: cols,
        before: null,
        after: cols.map((c) => after.get(c)!),
      });
    } else if (s.kind === 'move' && row && !t.has(keyText(s.to)) && s.to !== s.key) {
      const moved = new Map(row);
      moved.set('k', s.to);
      const cols = s.full ? COLS : ['k', 'a'];
      t.delete(id);
      t.set(keyText(s.to), moved);
      changes.push({
        op: 'update',
        table: s.table,
        columns: cols,
        before: cols.map((c) => (c === 'k' ? s.key : null)),
        after: cols.map((c) => moved.get(c)!),
      });
    } else if (s.kind === 'delete' && row) {
      t.delete(id);
      changes.push({ op: 'delete', table: s.table, columns: ['k'], before: [s.key], after: null });
    }
  }
  return { src, changes };
}

function clone(db: Map<string, Table>): Map<string, Table> {
  return new Map([...db].map(([n, t]) => [n, new Map([...t].map(([k, r]) => [k, new Map(r)]))]));
}

/** The apply's rules for one change (what the prepared statements do). */
function applyOne(db: Map<string, Table>, c: RowChange): void {
  const t = db.get(c.table)!;
  const k = c.columns.indexOf('k');
  const from = keyText((c.before ?? c.after!)[k]!);
  if (c.op === 'delete') {
    t.delete(from);
    return;
  }
  const to = keyText(c.after![k]!);
  const row = t.get(from);
  if (c.op === 'update' && row) {
    c.columns.forEach((col, i) => {
      row.set(col, c.after![i]!);
    });
    t.delete(from);
    t.set(to, row);
    return;
  }
  const existing = t.get(to);
  if (c.op === 'update' && existing) return; // ON CONFLICT DO NOTHING
  const next = existing ?? new Map<string, Value>();
  c.columns.forEach((col, i) => {
    next.set(col, c.after![i]!);
  });
  t.set(to, next);
}

const initialRows = fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 3 })), {
  maxLength: 4,
});

describe('folding a transaction into final row states', () => {
  it('leaves every table as applying the changes one by one does (and as the source is)', () => {
    fc.assert(
      fc.property(initialRows, fc.array(step, { maxLength: 40 }), (init, steps) => {
        const initial = new Map<string, Table>(TABLES.map((n) => [n, new Map()]));
        for (const [k, a] of init)
          for (const n of TABLES)
            initial.get(n)!.set(
              keyText(k),
              new Map<string, Value>([
                ['k', k],
                ['a', a],
                ['b', 'x'],
              ]),
            );
        const { src, changes } = history(steps, initial);

        const one = clone(initial);
        for (const c of changes) applyOne(one, c);
        expect(one).toEqual(src);

        const folded = foldChanges(changes, (t) => (t === 'w' ? null : { key: ['k'], columns: COLS }));
        // Tables that cannot be folded keep their changes, in order.
        expect(folded.sequential.filter((c) => c.table === 'w')).toEqual(
          changes.filter((c) => c.table === 'w'),
        );
        const db = clone(initial);
        for (const c of folded.sequential) applyOne(db, c);
        for (const f of folded.tables) {
          const t = db.get(f.table)!;
          const ids = f.deletes.map((k) => keyText(k[0]!));
          expect(new Set(ids).size).toBe(ids.length);
          for (const id of ids) t.delete(id);
          const seen = new Set<string>();
          for (const g of f.upserts) {
            expect(g.columns).toEqual(COLS.filter((c) => g.columns.includes(c)));
            for (const r of g.rows) {
              const id = keyText(r[g.columns.indexOf('k')]!);
              expect(seen.has(id)).toBe(false);
              seen.add(id);
              const row = t.get(id) ?? new Map<string, Value>();
              g.columns.forEach((col, i) => {
                row.set(col, r[i]!);
              });
              t.set(id, row);
            }
          }
        }
        expect(db).toEqual(src);
      }),
      { numRuns: 2000 },
    );
  });

  it('leaves a table unfolded when an update moves a row without all of its columns', () => {
    const move: RowChange = {
      op: 'update',
      table: 't',
      columns: ['k', 'a'],
      before: [1, null],
      after: [2, 5],
    };
    const f = foldChanges([move], () => ({ key: ['k'], columns: COLS }));
    expect(f.sequential).toEqual([move]);
    expect(f.tables).toEqual([]);
  });

  it('names a column the target table lacks', () => {
    const ins: RowChange = { op: 'insert', table: 't', columns: ['k', 'z'], before: null, after: [1, 2] };
    expect(() => foldChanges([ins], () => ({ key: ['k'], columns: COLS }))).toThrow(
      /target table t has no column "z"/,
    );
  });
});
