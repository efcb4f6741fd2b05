/**
 * Column types across engines, for heterogeneous groups (SQLite <-> PostgreSQL). The mapping is
 * documented in docs/postgres.md; a type without one fails before streaming, never mid-stream.
 *
 * SQLite -> PostgreSQL follows SQLite's own affinity rules (section 3.1 of "Datatypes In
 * SQLite"): INT -> bigint (SQLite integers are 64-bit); CHAR/CLOB/TEXT -> text; BLOB -> bytea;
 * REAL/FLOA/DOUB -> double precision; then BOOL -> boolean, DATETIME/TIMESTAMP -> timestamp,
 * DATE -> date, NUMERIC/DECIMAL -> numeric. A column with no declared type can hold anything in
 * SQLite and has no PostgreSQL equivalent.
 * PostgreSQL -> SQLite keeps values exact: integers -> INTEGER, float4/float8 -> REAL,
 * bytea -> BLOB, boolean -> INTEGER (0/1), everything else (numeric, text, dates, json, uuid,
 * arrays, ...) -> TEXT holding PostgreSQL's text form.
 */
import { TandemError } from '../core/errors.js';
import type { TableSchema } from '../core/record.js';

export type Engine = 'sqlite' | 'postgres';

export function sqliteTypeToPg(declared: string): string | null {
  const t = declared.toUpperCase();
  if (t.includes('INT')) return 'bigint';
  if (t.includes('CHAR') || t.includes('CLOB') || t.includes('TEXT')) return 'text';
  if (t.includes('BLOB')) return 'bytea';
  if (t.includes('REAL') || t.includes('FLOA') || t.includes('DOUB')) return 'double precision';
  if (t.includes('BOOL')) return 'boolean';
  if (t.includes('DATETIME') || t.includes('TIMESTAMP')) return 'timestamp';
  if (t.includes('DATE')) return 'date';
  if (t.includes('NUMERIC') || t.includes('DECIMAL')) return 'numeric';
  return null;
}

export function pgTypeToSqlite(type: string): string {
  const t = type.toLowerCase();
  if (t.endsWith('[]')) return 'TEXT';
  if (/^(smallint|integer|bigint|oid)$/.test(t)) return 'INTEGER';
  if (/^(real|double precision)$/.test(t)) return 'REAL';
  if (t === 'bytea') return 'BLOB';
  if (t === 'boolean') return 'INTEGER';
  return 'TEXT';
}

/** The schema with types (and defaults) for `target`. Throws TYPE_UNMAPPABLE naming the column. */
export function schemaFor(schema: TableSchema, target: Engine): TableSchema {
  const from = schema.dialect ?? target;
  if (from === target) return schema;
  return {
    ...schema,
    dialect: target,
    // Constraint and index definitions are PostgreSQL SQL: a SQLite backup keeps only the key.
    constraints: undefined,
    indexes: undefined,
    columns: schema.columns.map((c) => {
      let type: string;
      if (target === 'postgres') {
        const mapped = sqliteTypeToPg(c.type);
        if (mapped === null) {
          throw new TandemError(
            'TYPE_UNMAPPABLE',
            `column "${c.name}" of table "${schema.name}" has SQLite type "${c.type}", which has no PostgreSQL equivalent${c.type ? '' : ' (no declared type: it may hold values of any kind)'}`,
            `Declare a type on the SQLite column (INTEGER, TEXT, REAL, BLOB, NUMERIC, BOOLEAN, DATE or DATETIME), or leave the table out of groups.*.tables`,
          );
        }
        type = mapped;
      } else type = pgTypeToSqlite(c.type);
      // Defaults are the source's business (their expressions are engine-specific): the backup
      // receives every value the source wrote.
      return { ...c, type, default: null };
    }),
  };
}
