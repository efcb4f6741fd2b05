/**
 * Reading table definitions out of a SQLite database and writing them back as DDL.
 * Tandem's own tables all start with `_tandem_` and are never replicated.
 */
import type Database from 'better-sqlite3';
import { TandemError } from '../../core/errors.js';
import type { TableSchema } from '../../core/record.js';

export const INTERNAL_PREFIX = '_tandem_';

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function quoteText(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** Names of user tables (not SQLite's; not Tandem's unless `internal`) in the main schema. */
export function listTables(db: Database.Database, internal = false): string[] {
  const rows = db
    .prepare(
      "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .all() as { name: string }[];
  return rows.map((r) => r.name).filter((n) => internal || !n.startsWith(INTERNAL_PREFIX));
}

interface ColumnInfo {
  name: string;
  type: string;
  notnull: number;
  dflt_value: string | null;
  pk: number;
}

/**
 * The table's definition. `configuredKey` is the key the config names for a table without a
 * primary key; a table with neither is refused, because rows could not be matched on the target.
 */
export function readTableSchema(
  db: Database.Database,
  table: string,
  group: string,
  configuredKey: readonly string[] | undefined,
): TableSchema {
  // Number(): the connection may return integers as bigint (safeIntegers).
  const cols = (db.prepare(`PRAGMA table_info(${quoteIdent(table)})`).all() as ColumnInfo[]).map((c) => ({
    ...c,
    notnull: Number(c.notnull),
    pk: Number(c.pk),
  }));
  if (cols.length === 0) {
    throw new TandemError('APPLY_FAILED', `table "${table}" does not exist`, 'Check the table name.');
  }
  const pk = cols
    .filter((c) => c.pk > 0)
    .sort((a, b) => a.pk - b.pk)
    .map((c) => c.name);
  let primaryKey = pk;
  if (configuredKey && configuredKey.length > 0) {
    const names = new Set(cols.map((c) => c.name));
    const missing = configuredKey.filter((k) => !names.has(k));
    if (missing.length > 0) {
      throw new TandemError(
        'TABLE_NO_KEY',
        `groups.${group}.keys.${table} names column(s) ${missing.join(', ')} that table "${table}" does not have (columns: ${[...names].join(', ')})`,
        `Name existing columns that identify a row, for example: keys: { ${table}: [${cols[0]!.name}] }`,
      );
    }
    primaryKey = [...configuredKey];
  }
  if (primaryKey.length === 0) {
    throw new TandemError(
      'TABLE_NO_KEY',
      `table "${table}" in group "${group}" has no primary key, so its rows cannot be matched on the target`,
      `Add a primary key to the table, or name a key in the config, for example: groups.${group}.keys: { ${table}: [${cols[0]!.name}] }`,
    );
  }
  return {
    name: table,
    dialect: 'sqlite',
    columns: cols.map((c) => ({
      name: c.name,
      type: c.type,
      notNull: c.notnull === 1,
      default: c.dflt_value,
    })),
    primaryKey,
    indexes: tableIndexes(db, table),
  };
}

/**
 * The table's indexes as CREATE INDEX statements: those made with CREATE INDEX as SQLite keeps
 * them, and one for each UNIQUE constraint of the table's definition (SQLite's automatic index
 * for it has no statement), named `<table>_<columns>_key` as PostgreSQL would.
 */
function tableIndexes(db: Database.Database, table: string): string[] {
  const list = db.prepare('SELECT name, origin FROM pragma_index_list(?) ORDER BY name').all(table) as {
    name: string;
    origin: string;
  }[];
  const statement = db.prepare("SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = ?");
  const keys = db.prepare(
    'SELECT name, "desc" AS d, coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno',
  );
  const out: string[] = [];
  for (const ix of list) {
    if (ix.origin === 'c') {
      const row = statement.get(ix.name) as { sql: string | null } | undefined;
      if (row?.sql) out.push(row.sql);
    } else if (ix.origin === 'u') {
      const cols = keys.all(ix.name) as { name: string | null; d: number | bigint; coll: string }[];
      if (cols.some((c) => c.name === null)) continue;
      const list = cols.map(
        (c) =>
          `${quoteIdent(c.name!)}${c.coll !== 'BINARY' ? ` COLLATE ${c.coll}` : ''}${Number(c.d) ? ' DESC' : ''}`,
      );
      const name = `${table}_${cols.map((c) => c.name).join('_')}_key`;
      out.push(`CREATE UNIQUE INDEX ${quoteIdent(name)} ON ${quoteIdent(table)} (${list.join(', ')})`);
    }
  }
  return out;
}

/** The same indexes (CREATE INDEX statements) in both definitions. */
export function sameIndexes(a: TableSchema, b: TableSchema): boolean {
  return (a.indexes ?? []).join('\0') === (b.indexes ?? []).join('\0');
}

/** CREATE TABLE for a schema, keyed by its primary key (SQLite target). */
export function createTableSql(s: TableSchema): string {
  const cols = s.columns.map((c) => {
    let def = quoteIdent(c.name);
    if (c.type) def += ` ${c.type}`;
    if (c.notNull) def += ' NOT NULL';
    if (c.default !== null) def += ` DEFAULT ${c.default}`;
    return def;
  });
  cols.push(`PRIMARY KEY (${s.primaryKey.map(quoteIdent).join(', ')})`);
  return `CREATE TABLE IF NOT EXISTS ${quoteIdent(s.name)} (${cols.join(', ')})`;
}

/** True when `next` only appends columns to `prev` with the same key (ALTER TABLE ADD COLUMN). */
export function isAdditive(prev: TableSchema, next: TableSchema): boolean {
  if (next.columns.length < prev.columns.length) return false;
  if (prev.primaryKey.join('\0') !== next.primaryKey.join('\0')) return false;
  return prev.columns.every((c, i) => {
    const n = next.columns[i]!;
    return n.name === c.name && n.type === c.type && n.notNull === c.notNull && n.default === c.default;
  });
}

export function sameSchema(a: TableSchema, b: TableSchema): boolean {
  return a.columns.length === b.columns.length && isAdditive(a, b);
}
