import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DecodeError } from '../../src/core/bytes.js';
import {
  type Change,
  decodeRecord,
  encodeRecord,
  type JournalRecord,
  peekEpoch,
  peekPosition,
  type Value,
} from '../../src/core/record.js';

const value: fc.Arbitrary<Value> = fc.oneof(
  fc.constant(null),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  // Around the codec's switch from doubles to BigInts (2^51, 7-byte varints at 2^49).
  fc
    .tuple(
      fc.constantFrom(0n, 2n ** 48n, 2n ** 49n, 2n ** 51n, 2n ** 53n),
      fc.bigInt({ min: -4n, max: 4n }),
      fc.boolean(),
    )
    .map(([base, d, neg]) => (neg ? -(base + d) : base + d)),
  fc.double(),
  fc.string({ unit: 'grapheme' }),
  fc.string({ unit: 'binary' }),
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  fc.boolean(),
);

// Names often repeat (as tables and columns do), so records share string tables: the decoder
// reuses a recent one with the same bytes.
const name = fc.oneof(fc.constantFrom('t', 'u', 'id', 'v', 'é'), fc.string({ minLength: 1, maxLength: 12 }));

const rowChange: fc.Arbitrary<Change> = fc
  .tuple(
    fc.constantFrom('insert', 'update', 'delete'),
    name,
    fc.uniqueArray(name, { minLength: 1, maxLength: 6 }),
  )
  .chain(([op, table, columns]) =>
    fc.record({
      op: fc.constant(op as 'insert' | 'update' | 'delete'),
      table: fc.constant(table),
      columns: fc.constant(columns),
      before:
        op === 'insert'
          ? fc.constant(null)
          : fc.array(value, { minLength: columns.length, maxLength: columns.length }),
      after:
        op === 'delete'
          ? fc.constant(null)
          : fc.array(value, { minLength: columns.length, maxLength: columns.length }),
    }),
  );

const int64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });

const change: fc.Arbitrary<Change> = fc.oneof(
  rowChange,
  name.map((t) => ({ op: 'drop' as const, table: t })),
  name.map((t) => ({ op: 'truncate' as const, table: t })),
  fc.record({
    op: fc.constant('sequence' as const),
    table: name,
    value: int64,
  }),
  fc.record({
    op: fc.constant('sequence' as const),
    table: name,
    value: int64,
    called: fc.constant(false),
  }),
  fc.record(
    {
      op: fc.constant('sequence' as const),
      table: name,
      value: int64,
      called: fc.constant(false),
      options: fc.record({
        type: fc.constantFrom('smallint', 'integer', 'bigint'),
        increment: int64,
        min: int64,
        max: int64,
        start: int64,
        cache: int64,
        cycle: fc.boolean(),
      }),
    },
    { requiredKeys: ['op', 'table', 'value', 'options'] },
  ),
  name.map((t) => ({
    op: 'schema' as const,
    table: t,
    schema: {
      name: t,
      columns: [{ name: 'id', type: 'INTEGER', notNull: true, default: null }],
      primaryKey: ['id'],
    },
  })),
);

const record: fc.Arbitrary<JournalRecord> = fc.record({
  position: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  epoch: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
  origin: name,
  hlc: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  source: fc.string(),
  txCount: fc.nat(1000),
  changes: fc.array(change, { maxLength: 8 }),
});

describe('record codec', () => {
  it('round-trips every record exactly', () => {
    fc.assert(
      fc.property(record, (r) => {
        const buf = encodeRecord(r);
        expect(peekPosition(buf)).toBe(r.position);
        expect(peekEpoch(buf)).toBe(r.epoch);
        expect(decodeRecord(buf)).toEqual(r);
      }),
      { numRuns: 300 },
    );
  });

  it('decodes records that share string tables, in any order, each exactly', () => {
    fc.assert(
      fc.property(fc.array(record, { minLength: 2, maxLength: 30 }), (rs) => {
        const bufs = rs.map(encodeRecord);
        for (let i = 0; i < rs.length; i++) expect(decodeRecord(bufs[i]!)).toEqual(rs[i]);
        for (let i = rs.length - 1; i >= 0; i--) expect(decodeRecord(bufs[i]!)).toEqual(rs[i]);
      }),
      { numRuns: 100 },
    );
  });

  it('rejects every truncation with a DecodeError', () => {
    fc.assert(
      fc.property(record, fc.nat(), (r, cut) => {
        const buf = encodeRecord(r);
        const n = cut % buf.length;
        expect(() => decodeRecord(buf.subarray(0, n))).toThrow(DecodeError);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws anything but DecodeError on random bytes, and never hangs', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const b = Buffer.from([1, ...bytes]);
        try {
          decodeRecord(b);
        } catch (e) {
          expect(e).toBeInstanceOf(DecodeError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
