import Database from 'better-sqlite3';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseImage, toParam } from '../../src/adapters/sqlite/literal.js';

// The capture triggers write `quote(a) || ',' || quote(b) ...`; the parser must give back the
// exact values SQLite holds, whatever they are.
describe('SQLite image literals', () => {
  const db = new Database(':memory:');
  db.defaultSafeIntegers(true);

  const value = fc.oneof(
    fc.constant(null),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    fc.double({ noNaN: true }),
    fc.string({ unit: 'binary' }).filter((s) => !s.includes('\0')),
    fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
  );

  it('round-trips values through quote()', () => {
    fc.assert(
      fc.property(fc.array(value, { minLength: 1, maxLength: 8 }), (vals) => {
        const sql = `SELECT ${vals.map(() => 'quote(?)').join(" || ',' || ")} AS img`;
        const { img } = db.prepare(sql).get(...vals) as { img: string };
        const back = parseImage(img);
        const expected = vals.map((v) => (typeof v === 'number' && Object.is(v, -0) ? 0 : v));
        expect(back).toEqual(expected);
      }),
      { numRuns: 500 },
    );
  });

  it('stores a float NaN as the TEXT NaN, which quote() gives back (SQLite turns a NaN REAL into NULL)', () => {
    const t = new Database(':memory:');
    t.exec('CREATE TABLE f (id INTEGER PRIMARY KEY, x REAL NOT NULL)');
    const ins = t.prepare('INSERT INTO f VALUES (?, ?)');
    for (const [id, x] of [
      [1n, Number.NaN],
      [2n, Number.POSITIVE_INFINITY],
      [3n, Number.NEGATIVE_INFINITY],
    ] as const) {
      ins.run(toParam(id), toParam(x));
    }
    const rows = t.prepare('SELECT typeof(x) AS t, quote(x) AS q FROM f ORDER BY id').all() as {
      t: string;
      q: string;
    }[];
    expect(rows.map((r) => r.t)).toEqual(['text', 'real', 'real']);
    expect(rows.flatMap((r) => parseImage(r.q))).toEqual([
      'NaN',
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
    ]);
    t.close();
  });

  it('refuses malformed images', () => {
    for (const bad of ["'abc", "X'00", 'abc', '1,,2', "'a''", '1 2']) {
      expect(() => parseImage(bad), bad).toThrow();
    }
  });
});
