import { describe, expect, it } from 'vitest';
import { checkMappable, schemaFor } from '../../src/adapters/typemap.js';
import { TandemError } from '../../src/core/errors.js';
import type { TableSchema } from '../../src/core/record.js';

const table = (name: string, columns: [string, string][]): TableSchema => ({
  name,
  dialect: 'sqlite',
  columns: columns.map(([n, type]) => ({ name: n, type, notNull: false, default: null })),
  primaryKey: [columns[0]![0]],
});

/** The TandemError `f` throws. */
function thrown(f: () => unknown): TandemError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(TandemError);
    return err as TandemError;
  }
  throw new Error('nothing thrown');
}

describe('checkMappable', () => {
  it('names every unmappable column of every table, and the group', () => {
    const schemas = [
      table('api', [
        ['id', 'INTEGER'],
        ['body', 'JSON'],
        ['ref', 'UUID'],
        ['name', 'STRING'],
        ['price', 'MONEY'],
        ['note', 'TEXT'],
      ]),
      table('ok', [['id', 'INTEGER']]),
      table('loose', [
        ['id', 'INTEGER'],
        ['anything', ''],
      ]),
    ];
    const err = thrown(() => checkMappable(schemas, ['sqlite', 'postgres'], 'shop'));
    expect(err.code).toBe('TYPE_UNMAPPABLE');
    expect(err.what).toBe(
      '5 SQLite columns have no PostgreSQL type to be replicated as: column "body" of table "api" (SQLite type "JSON"); column "ref" of table "api" (SQLite type "UUID"); column "name" of table "api" (SQLite type "STRING"); column "price" of table "api" (SQLite type "MONEY"); column "anything" of table "loose" (no declared type: it may hold values of any kind)',
    );
    expect(err.fix).toMatch(/or leave their tables out of groups\.shop\.tables$/);
    // SQLite -> SQLite, and PostgreSQL -> SQLite, need no mapping.
    expect(() => checkMappable(schemas, ['sqlite'], 'shop')).not.toThrow();
  });

  it('speaks of one column in the singular; schemaFor throws the same, naming the group', () => {
    const one = table('t', [
      ['id', 'INTEGER'],
      ['j', 'JSON'],
    ]);
    const err = thrown(() => schemaFor(one, 'postgres', 'shop'));
    expect(err.message).toBe(
      '[TYPE_UNMAPPABLE] 1 SQLite column has no PostgreSQL type to be replicated as: column "j" of table "t" (SQLite type "JSON"). Declare a type on the column in SQLite: INTEGER, TEXT, REAL, BLOB, NUMERIC, BOOLEAN, DATE or DATETIME (JSON, UUID or STRING as TEXT, MONEY as NUMERIC; SQLite changes a column\'s type only by copying the table into a new one), or leave its table out of groups.shop.tables',
    );
    expect(schemaFor(table('t', [['id', 'INTEGER']]), 'postgres', 'shop').columns[0]!.type).toBe('bigint');
  });
});
