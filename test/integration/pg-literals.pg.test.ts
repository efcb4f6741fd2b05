/**
 * The SQL text apply writes values in (src/adapters/postgres/apply-session.ts), against a real
 * PostgreSQL 15: whatever a value holds, `literal` and `arrayLiteral` give it back exactly, as a
 * column of its type and as the elements of an unnested array (the multi-row upsert's form).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { arrayLiteral, literal } from '../../src/adapters/postgres/apply-session.js';
import type { Value } from '../../src/core/record.js';
import { usePgClient } from '../helpers/pg.js';

describe('apply literals', () => {
  const client = usePgClient();

  /** What the server makes of `values` written both ways, read back as text (NULL as null). */
  async function roundTrip(values: Value[], type: string): Promise<{ one: unknown[]; array: unknown[] }> {
    const one = values.map((v) => `(${literal(v)}::${type})::text`).join(', ');
    const r = await client().query({
      text: `SELECT ARRAY[${one}] AS one, ARRAY(SELECT unnest(${arrayLiteral(values)}::${type}[])::text) AS array`,
      rowMode: 'array',
    });
    return { one: r.rows[0]![0], array: r.rows[0]![1] };
  }

  // Any text but NUL, which PostgreSQL's text cannot hold: quotes, backslashes, braces, commas,
  // blanks at either end, the word NULL, non-ASCII.
  const text = fc.oneof(
    fc.string({
      unit: fc.constantFrom('"', "'", '\\', '{', '}', ',', ' ', '\t', '\n', 'N', 'U', 'L', 'a', 'é', '€'),
    }),
    fc.string({ unit: 'grapheme' }).filter((s) => !s.includes('\0')),
    fc.constantFrom('NULL', 'null', '', ' ', '{}', '""'),
  );

  it('gives back any text, and NULL as NULL', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.option(text, { nil: null }), { minLength: 1, maxLength: 20 }),
        async (values) => {
          const { one, array } = await roundTrip(values, 'text');
          expect(one).toEqual(values);
          expect(array).toEqual(values);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('gives back integers, floats, booleans and bytes', async () => {
    const cases: [Value[], string, string[]][] = [
      [
        [0n, -1n, 9223372036854775807n, -9223372036854775808n],
        'int8',
        ['0', '-1', '9223372036854775807', '-9223372036854775808'],
      ],
      [
        [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, 1e300, 0.1],
        'float8',
        ['NaN', 'Infinity', '-Infinity', '-0', '1e+300', '0.1'],
      ],
      [[true, false, null], 'boolean', ['true', 'false', null] as unknown as string[]],
      [[Buffer.from([0, 0x5c, 0x22, 0x27, 0xff]), new Uint8Array(0)], 'bytea', ['\\x005c2227ff', '\\x']],
    ];
    for (const [values, type, want] of cases) {
      const { one, array } = await roundTrip(values, type);
      expect(one).toEqual(want);
      expect(array).toEqual(want);
    }
  });
});
