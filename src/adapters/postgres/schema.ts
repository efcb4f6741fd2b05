/** Reading table definitions from PostgreSQL's catalog and writing them as DDL. */
import type pg from 'pg';
import { TandemError } from '../../core/errors.js';
import type { ColumnDef, GeneratedColumnDef, TableSchema, UserType } from '../../core/record.js';
import { isUniqueIndex } from '../typemap.js';
import { definitionTypesSql, indexExtensionsSql } from './user-types.js';

/** PostgreSQL's first oid for objects made after initdb: below it, the built-in ones. */
export const FIRST_USER_OID = 16384;

/** "name" for the public schema, "schema.name" otherwise (the journal's table names). */
export function qualifiedName(schema: string, name: string): string {
  return schema === 'public' ? name : `${schema}.${name}`;
}

/** Slot and publication names: PostgreSQL identifiers, unique per group and node. */
export function slotName(group: string, node: string): string {
  return `tandem_${group}_${node}`.replaceAll('-', '_').toLowerCase();
}
export function publicationName(group: string): string {
  return `tandem_${group}`.replaceAll('-', '_').toLowerCase();
}

export function splitName(table: string): { schema: string; name: string } {
  const i = table.indexOf('.');
  return i < 0 ? { schema: 'public', name: table } : { schema: table.slice(0, i), name: table.slice(i + 1) };
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** A string literal (standard_conforming_strings on, the default since PostgreSQL 9.1). */
export function quoteLiteral(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** A journal table name as a quoted SQL reference. */
export function tableRef(table: string): string {
  const { schema, name } = splitName(table);
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/**
 * The statements that give a table, type or domain (`alter`: its ALTER command) named `from` the
 * name and schema of `to`, the schema made if missing: a backup following a source's rename.
 */
export function moveSql(
  alter: string,
  from: { schema: string; name: string },
  to: { schema: string; name: string },
): string[] {
  return [
    ...(from.name !== to.name
      ? [`${alter} ${quoteIdent(from.schema)}.${quoteIdent(from.name)} RENAME TO ${quoteIdent(to.name)}`]
      : []),
    ...(from.schema !== to.schema
      ? [
          `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(to.schema)}`,
          `${alter} ${quoteIdent(from.schema)}.${quoteIdent(to.name)} SET SCHEMA ${quoteIdent(to.schema)}`,
        ]
      : []),
  ];
}

/**
 * A table's name in a group is `schema.table`, or `table` in schema public: a dot in its schema's
 * name or its own would make it another table's (`public."a.b"` and `a.b`). Such tables are left
 * out of every group (over `pg_class c JOIN pg_namespace n`).
 */
const DOTLESS_WHERE = "strpos(n.nspname, '.') = 0 AND strpos(c.relname, '.') = 0";

export function dotless(schema: string, name: string): boolean {
  return !schema.includes('.') && !name.includes('.');
}

const ANY_USER_TABLE_WHERE = `c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence <> 't'
   AND n.nspname NOT IN ('information_schema', 'tandem') AND n.nspname NOT LIKE 'pg\\_%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`;

/**
 * The tables a group may replicate, over `pg_class c JOIN pg_namespace n`: ordinary and
 * partitioned tables, not partitions (changes are replicated under the partitioned table's
 * name: the publication publishes via the partition root, capture.ts), not system tables, not
 * Tandem's own, not tables that belong to an extension (the extension creates them on the
 * target too), not temporary or unlogged tables (logical decoding sees none of their rows), not
 * tables with a dot in their name or their schema's (DOTLESS_WHERE).
 */
export const USER_TABLES_WHERE = `${ANY_USER_TABLE_WHERE} AND c.relpersistence = 'p' AND ${DOTLESS_WHERE}`;

/** The tables USER_TABLES_WHERE leaves out for being unlogged or for a dot in a name, to say so. */
export const LEFT_OUT_TABLES_WHERE = `${ANY_USER_TABLE_WHERE} AND NOT (c.relpersistence = 'p' AND ${DOTLESS_WHERE})`;

/** A table's columns, generated ones included: not system columns, not dropped (alias `a` of pg_attribute). */
const ALL_COLUMNS_WHERE = 'a.attnum > 0 AND NOT a.attisdropped';

/** A table's columns as rows are written: not generated either. */
const COLUMNS_WHERE = `${ALL_COLUMNS_WHERE} AND a.attgenerated = ''`;

/** The columns a table's rows are written with (COLUMNS_WHERE), in order. */
export async function writtenColumns(client: pg.Client, table: string): Promise<string[]> {
  const r = await client.query<{ name: string }>(
    `SELECT a.attname AS name FROM pg_attribute a WHERE a.attrelid = $1::regclass AND ${COLUMNS_WHERE} ORDER BY a.attnum`,
    [tableRef(table)],
  );
  return r.rows.map((x) => x.name);
}

/** User tables (see USER_TABLES_WHERE) as journal names. */
export async function listTables(client: pg.Client): Promise<string[]> {
  const r = await client.query<{ schema: string; name: string }>(
    `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE ${USER_TABLES_WHERE} ORDER BY 1, 2`,
  );
  return r.rows.map((x) => qualifiedName(x.schema, x.name));
}

/**
 * ColumnDef.serial, for attribute `a` and its default `ad` (pg_attrdef): null unless the default
 * draws from a sequence; then whether the column owns the sequence it draws from.
 */
export const SERIAL_SQL = (
  a: string,
  ad: string,
) => `CASE WHEN pg_get_expr(${ad}.adbin, ${ad}.adrelid) LIKE 'nextval(%'
    THEN EXISTS (SELECT 1 FROM pg_depend own JOIN pg_depend dd ON dd.refclassid = 'pg_class'::regclass AND dd.refobjid = own.objid
                  WHERE own.classid = 'pg_class'::regclass AND own.refclassid = 'pg_class'::regclass AND own.deptype = 'a'
                    AND own.refobjid = ${a}.attrelid AND own.refobjsubid = ${a}.attnum
                    AND dd.classid = 'pg_attrdef'::regclass AND dd.objid = ${ad}.oid) END`;

/**
 * ColumnDef.identitySequence, for attribute `a`: the name of the sequence of its identity (as
 * journal names go), or NULL.
 */
export const IDENTITY_SEQUENCE_SQL = (a: string) =>
  `(SELECT CASE WHEN sn.nspname = 'public' THEN sc.relname ELSE sn.nspname || '.' || sc.relname END
      FROM pg_depend sd JOIN pg_class sc ON sc.oid = sd.objid JOIN pg_namespace sn ON sn.oid = sc.relnamespace
     WHERE sd.classid = 'pg_class'::regclass AND sd.refclassid = 'pg_class'::regclass AND sd.deptype = 'i'
       AND sd.refobjid = ${a}.attrelid AND sd.refobjsubid = ${a}.attnum AND sc.relkind = 'S')`;

/**
 * ColumnDef.collation, for attribute `a`: its collation as SQL when it is not its type's (the
 * system's unqualified, as format_type prints types), or NULL.
 */
export const COLLATION_SQL = (a: string) =>
  `(SELECT CASE WHEN cn.nspname = 'pg_catalog' THEN quote_ident(co.collname) ELSE quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END
      FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
     WHERE co.oid = ${a}.attcollation AND ${a}.attcollation <> (SELECT typcollation FROM pg_type WHERE oid = ${a}.atttypid))`;

/**
 * TableSchema's owner, grants and sequenceGrants of the table of oid `oid` (an SQL expression),
 * as a jsonb object.
 */
export const PRIVILEGES_SQL = (oid: string) =>
  `(SELECT jsonb_strip_nulls(jsonb_build_object(
       'owner', pg_get_userbyid(c.relowner), 'grants', to_jsonb(c.relacl::text[]),
       'sequenceGrants', (SELECT jsonb_object_agg(CASE WHEN sn.nspname = 'public' THEN s.relname ELSE sn.nspname || '.' || s.relname END,
                                                  s.relacl::text[])
                            FROM pg_attrdef ad
                            JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
                            JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
                           WHERE ad.adrelid = c.oid AND s.relacl IS NOT NULL)))
     FROM pg_class c WHERE c.oid = ${oid})`;

/** A table's id as a TableSchema carries it, from its oid (an SQL expression). */
export const TABLE_ID_SQL = (oid: string) =>
  `((SELECT system_identifier FROM pg_control_system())::text || ':' || ${oid}::oid::text)`;

export async function readTableSchema(
  client: pg.Client,
  table: string,
  group: string,
  configuredKey: readonly string[] | undefined,
): Promise<TableSchema> {
  const ref = tableRef(table);
  const cols = await client.query<{
    name: string;
    type: string;
    notnull: boolean;
    def: string | null;
    attnum: number;
    identity: boolean;
    identity_sequence: string | null;
    collation: string | null;
    privileges: Pick<TableSchema, 'owner' | 'grants' | 'sequenceGrants'>;
    user_type: boolean;
    id: string;
    serial: boolean | null;
    ext_index: boolean;
    generated: boolean;
  }>(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS notnull, a.attnum,
            a.attidentity <> '' AS identity, ${IDENTITY_SEQUENCE_SQL('a')} AS identity_sequence,
            ${COLLATION_SQL('a')} AS collation,
            a.atttypid >= ${FIRST_USER_OID} AS user_type, a.attgenerated <> '' AS generated,
            pg_get_expr(d.adbin, d.adrelid) AS def, ${SERIAL_SQL('a', 'd')} AS serial, t.id, t.ext_index, t.privileges
       FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
       -- (Of the table, once: its id, and whether its indexes need an extension.)
       CROSS JOIN (SELECT ${TABLE_ID_SQL('$1::regclass')} AS id, ${PRIVILEGES_SQL('$1::regclass')} AS privileges,
                          ${indexExtensionsSql('$1::regclass')} IS NOT NULL AS ext_index) t
      WHERE a.attrelid = $1::regclass AND ${ALL_COLUMNS_WHERE}
      ORDER BY a.attnum`,
    [ref],
  );
  const pk = await client.query<{ name: string; constraint: string | null }>(
    `SELECT a.attname AS name, ${PRIMARY_KEY_NAME('i')} AS constraint FROM pg_index i
       JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON k.ord <= i.indnkeyatts
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      WHERE i.indrelid = $1::regclass AND ${KEY_INDEX('i')} ORDER BY k.ord`,
    [ref],
  );
  const primaryKey =
    configuredKey && configuredKey.length > 0 ? [...configuredKey] : pk.rows.map((r) => r.name);
  if (primaryKey.length === 0) throw noKey(table, group);
  const computed = primaryKey.filter((k) => cols.rows.some((c) => c.name === k && c.generated));
  if (computed.length > 0) throw generatedKey(table, group, computed);
  const primaryKeyName = keyName(
    primaryKey,
    pk.rows.map((r) => r.name),
    pk.rows[0]?.constraint,
  );
  const constraints = await client.query<{ name: string; def: string; references: string | null }>(
    `SELECT k.conname AS name, pg_get_constraintdef(k.oid) AS def,
            CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END AS references
       FROM pg_constraint k LEFT JOIN pg_class c ON c.oid = k.confrelid LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE k.conrelid = $1::regclass AND k.contype IN ('c', 'u', 'x', 'f') ORDER BY k.conname`,
    [ref],
  );
  const indexes = await client.query<{ def: string }>(
    `SELECT pg_get_indexdef(i.indexrelid) AS def FROM pg_index i
      WHERE i.indrelid = $1::regclass AND NOT i.indisprimary
        AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
      ORDER BY i.indexrelid::regclass::text`,
    [ref],
  );
  // (Built-in types, arrays of them included, need nothing made on a backup; nor do indexes
  // that need no extension.)
  const types = cols.rows.some((c) => c.user_type || c.ext_index)
    ? (
        await client.query<{ types: UserType[] | null }>(
          `SELECT ${definitionTypesSql('$1::regclass::oid')} AS types`,
          [ref],
        )
      ).rows[0]!.types
    : null;
  const generated = cols.rows
    .filter((c) => c.generated)
    .map((c) => ({ name: c.name, type: c.type, notNull: c.notnull, expr: c.def!, attnum: c.attnum }));
  return {
    name: table,
    dialect: 'postgres',
    columns: cols.rows
      .filter((c) => !c.generated)
      .map((c) =>
        columnDef({ ...c, notNull: c.notnull, default: c.def, identitySequence: c.identity_sequence }),
      ),
    ...(generated.length > 0 ? { generated } : {}),
    primaryKey,
    ...(primaryKeyName ? { primaryKeyName } : {}),
    constraints: constraints.rows.map((k) =>
      k.references ? { name: k.name, def: k.def, references: k.references } : { name: k.name, def: k.def },
    ),
    indexes: indexes.rows.map((r) => r.def),
    ...(types ? { types } : {}),
    ...(cols.rows[0] ? { id: cols.rows[0].id, ...cols.rows[0].privileges } : {}),
  };
}

/**
 * A column of a definition, with only the optional fields that say something: from the catalog
 * (readTableSchema) or from the event trigger's message (capture), which read the same.
 */
export function columnDef(c: {
  name: string;
  type: string;
  notNull: boolean;
  default: string | null;
  attnum: number;
  identity?: boolean | null;
  identitySequence?: string | null;
  collation?: string | null;
  serial?: boolean | null;
}): ColumnDef {
  return {
    name: c.name,
    type: c.type,
    notNull: c.notNull,
    default: c.default,
    attnum: c.attnum,
    ...(c.identity ? { identity: true } : {}),
    ...(c.identitySequence ? { identitySequence: c.identitySequence } : {}),
    ...(c.collation ? { collation: c.collation } : {}),
    ...(c.serial !== null && c.serial !== undefined ? { serial: c.serial } : {}),
  };
}

/** What an apply writing rows needs to know of a target table (readApplyFacts). */
export interface ApplyFacts {
  /** The primary key's columns, in order (none: the table has no primary key). */
  key: string[];
  /** Each column's declared type. */
  types: Map<string, string>;
  /** Unique indexes besides the key, or exclusion constraints. */
  unique: boolean;
  /** Foreign keys from or to the table. */
  foreignKeys: boolean;
}

/** ApplyFacts of several tables in one query (in their order). */
export async function readApplyFacts(client: pg.Client, tables: readonly string[]): Promise<ApplyFacts[]> {
  const r = await client.query<{
    key: string[];
    names: string[];
    types: string[];
    unique: boolean;
    fk: boolean;
  }>(
    `SELECT ARRAY(SELECT a.attname::text FROM pg_index i
                    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE i.indrelid = t.oid AND i.indisprimary ORDER BY k.n) AS key,
            ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = t.oid AND ${COLUMNS_WHERE}
                   ORDER BY a.attnum) AS names,
            ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                   WHERE a.attrelid = t.oid AND ${COLUMNS_WHERE} ORDER BY a.attnum) AS types,
            EXISTS (SELECT 1 FROM pg_index WHERE indrelid = t.oid AND indisunique AND NOT indisprimary)
              OR EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = t.oid AND contype = 'x') AS unique,
            EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND t.oid IN (conrelid, confrelid)) AS fk
       FROM unnest($1::text[]) WITH ORDINALITY AS u(ref, ord), LATERAL (SELECT u.ref::regclass::oid AS oid) t
      ORDER BY u.ord`,
    [tables.map(tableRef)],
  );
  return r.rows.map((row) => ({
    key: row.key,
    types: new Map(row.names.map((n, i) => [n, row.types[i]!])),
    unique: row.unique,
    foreignKeys: row.fk,
  }));
}

/**
 * The index whose columns are a table's key (`alias` is its pg_index row): the primary key, or
 * without one the unique index the table's replica identity uses (`REPLICA IDENTITY USING
 * INDEX`), whose columns PostgreSQL requires to be NOT NULL. The event trigger's definitions
 * (ddl.ts) read the same.
 */
export const KEY_INDEX = (alias: string) =>
  `(${alias}.indisprimary OR (${alias}.indisreplident AND NOT EXISTS (SELECT 1 FROM pg_index pk WHERE pk.indrelid = ${alias}.indrelid AND pk.indisprimary)))`;

/**
 * Whether index `alias` (a pg_index row) holds no generated column: logical decoding sends no
 * value of one, in old keys either, so a key that holds one cannot match rows.
 */
export const NO_GENERATED_KEY = (alias: string) =>
  `NOT EXISTS (SELECT 1 FROM pg_attribute ga WHERE ga.attrelid = ${alias}.indrelid AND ga.attnum = ANY (${alias}.indkey) AND ga.attgenerated <> '')`;

/**
 * The name of the primary key constraint whose index is `alias` (a pg_index row), or NULL for
 * another index (a replica identity's), as SQL.
 */
export const PRIMARY_KEY_NAME = (alias: string) =>
  `(SELECT conname FROM pg_constraint WHERE conindid = ${alias}.indexrelid AND contype = 'p')`;

/**
 * TableSchema.primaryKeyName: the source's primary key's `name` (null: none), when the group
 * uses its columns (`source`) as the table's key (`key`).
 */
export function keyName(key: readonly string[], source: readonly string[], name: string | null | undefined) {
  return name && key.join('\0') === source.join('\0') ? name : undefined;
}

/** The PRIMARY KEY clause of a table on a PostgreSQL target, named as the source's. */
export function primaryKeySql(s: TableSchema): string {
  return `${s.primaryKeyName ? `CONSTRAINT ${quoteIdent(s.primaryKeyName)} ` : ''}PRIMARY KEY (${s.primaryKey.map(quoteIdent).join(', ')})`;
}

/** A table whose rows cannot be matched (no primary key, none configured): what to do about it. */
export function noKey(table: string, group: string): TandemError {
  return new TandemError(
    'TABLE_NO_KEY',
    `table "${table}" in group "${group}" has no primary key, so its rows cannot be matched on the target`,
    `Add one (ALTER TABLE ${tableRef(table)} ADD PRIMARY KEY (...)), or name a key in the config: groups.${group}.keys: { ${table}: [...] }`,
  );
}

/** A table whose key holds generated columns: logical decoding sends none of their values. */
export function generatedKey(table: string, group: string, columns: string[]): TandemError {
  return new TandemError(
    'TABLE_NO_KEY',
    `table "${table}" in group "${group}" is keyed by generated column(s) ${columns.join(', ')}, whose values logical decoding does not send, so its rows cannot be matched on the target`,
    `Key it by plain columns that identify a row (a primary key, or groups.${group}.keys: { ${table}: [...] } with ALTER TABLE ${tableRef(table)} REPLICA IDENTITY FULL), or leave it out of groups.${group}.tables`,
  );
}

/**
 * The sequence a column default draws from (`nextval('name'::regclass)`), as SQL, or null; null
 * also for a bare oid (a default whose sequence is gone prints its number).
 */
export function sequenceOf(def: string | null): string | null {
  const m = def === null ? null : /^nextval\('((?:[^']|'')+)'::regclass\)$/.exec(def);
  const name = m ? m[1]!.replaceAll("''", "'") : null;
  return name === null || /^\d+$/.test(name) ? null : name;
}

/**
 * How a source's identity column is made on a PostgreSQL target, whether the source's is ALWAYS
 * or BY DEFAULT: a backup's apply writes every value the source gave, and once promoted the
 * column numbers new rows from its sequence (the sequence's value follows the source's, by name:
 * PostgreSQL names both `<table>_<column>_seq`).
 */
const IDENTITY = 'GENERATED BY DEFAULT AS IDENTITY';

/** A column's type on a PostgreSQL target, with its collation. */
export function columnTypeSql(c: ColumnDef): string {
  return `${c.type || 'text'}${c.collation ? ` COLLATE ${c.collation}` : ''}`;
}

/** IDENTITY for a column, its sequence named as the source's. */
export function identitySql(c: ColumnDef): string {
  return `${IDENTITY}${c.identitySequence ? ` (SEQUENCE NAME ${tableRef(c.identitySequence)})` : ''}`;
}

/**
 * The GENERATED ALWAYS identity columns of `tables` (a backup's, or an old primary's that became
 * one) made BY DEFAULT, as IDENTITY makes them: PostgreSQL refuses an ALWAYS column the
 * source's values, even with OVERRIDING SYSTEM VALUE in an upsert's update.
 */
export async function relaxIdentity(client: pg.Client, tables: readonly string[]): Promise<void> {
  if (tables.length === 0) return;
  const r = await client.query<{ t: string; col: string }>(
    `SELECT attrelid::regclass::text AS t, attname AS col FROM pg_attribute
      WHERE attrelid = ANY ($1::regclass[]) AND attidentity = 'a' AND NOT attisdropped`,
    [tables.map(tableRef)],
  );
  for (const { t, col } of r.rows)
    await client.query(`ALTER TABLE ${t} ALTER COLUMN ${quoteIdent(col)} SET GENERATED BY DEFAULT`);
}

/**
 * CREATE TABLE for a schema on a PostgreSQL target (declared types must be PostgreSQL types):
 * columns and primary key, or with `bare` the columns only, for a bulk load followed by
 * `completeTableSql` (an index built after the load is built much faster than row by row).
 */
export function createTableSql(s: TableSchema, bare = false): string {
  // A sequence a default draws from comes first, made if missing (the default needs it); it
  // belongs to the column when the source's column owns it (a serial column; a definition of an
  // earlier version does not say: as before, it does): a backup's inserts carry every value, and
  // once promoted the default numbers new rows (the switchover sets the sequence to the source's
  // value).
  const drawn = s.columns.flatMap((c) => {
    const seq = sequenceOf(c.default);
    return seq ? [{ seq, col: c.name, owns: c.serial !== false }] : [];
  });
  const owned = drawn.filter((o) => o.owns);
  // Columns in the source's order (generated ones among them, by attribute number where known).
  const cols = [
    ...s.columns.map((c) => {
      let def = `${quoteIdent(c.name)} ${columnTypeSql(c)}`;
      if (c.notNull) def += ' NOT NULL';
      if (c.default !== null) def += ` DEFAULT ${c.default}`;
      if (c.identity) def += ` ${identitySql(c)}`;
      return { attnum: c.attnum ?? Number.MAX_SAFE_INTEGER, def };
    }),
    ...(s.generated ?? []).map((g) => ({ attnum: g.attnum, def: generatedColumnSql(g) })),
  ]
    .sort((a, b) => a.attnum - b.attnum)
    .map((c) => c.def);
  if (!bare) cols.push(primaryKeySql(s));
  const { schema } = splitName(s.name);
  const create = [
    ...(schema === 'public' ? [] : [`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`]),
    ...drawn.map((o) => `CREATE SEQUENCE IF NOT EXISTS ${o.seq}`),
    `CREATE TABLE IF NOT EXISTS ${tableRef(s.name)} (${cols.join(', ')})`,
    ...owned.map((o) => `ALTER SEQUENCE ${o.seq} OWNED BY ${tableRef(s.name)}.${quoteIdent(o.col)}`),
  ];
  return create.join('; ');
}

/** A generated column as ADD COLUMN and CREATE TABLE take it. */
export function generatedColumnSql(g: GeneratedColumnDef): string {
  return `${quoteIdent(g.name)} ${g.type} GENERATED ALWAYS AS (${g.expr}) STORED${g.notNull ? ' NOT NULL' : ''}`;
}

/**
 * What createTableSql leaves out: the primary key (after a bare create), constraints other than
 * foreign keys, indexes. Foreign keys come after every table they may reference is complete
 * (addConstraintSql for each of `s.constraints` with `references`).
 */
export function completeTableSql(s: TableSchema, withKey: boolean, unique = true): string[] {
  const ref = tableRef(s.name);
  return [
    ...(withKey ? [`ALTER TABLE ${ref} ADD ${primaryKeySql(s)}`] : []),
    ...(s.constraints ?? [])
      .filter((c) => !c.references && (unique || !isUniqueConstraint(c)))
      .map((c) => addConstraintSql(s.name, c)),
    ...(s.indexes ?? []).filter((sql) => unique || !isUniqueIndex(sql)),
  ];
}

/** UNIQUE and EXCLUDE constraints (pg_get_constraintdef's text): as isUniqueIndex (typemap.ts). */
export function isUniqueConstraint(c: { def: string }): boolean {
  return /^(UNIQUE|EXCLUDE)\b/i.test(c.def);
}

export function addConstraintSql(table: string, c: { name: string; def: string }): string {
  return `ALTER TABLE ${tableRef(table)} ADD CONSTRAINT ${quoteIdent(c.name)} ${c.def}`;
}
