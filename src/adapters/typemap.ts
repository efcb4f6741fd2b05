/**
 * Column types across engines, for heterogeneous groups (SQLite <-> PostgreSQL). The mapping is
 * documented in docs/postgres.md; a type without one fails before streaming, never mid-stream.
 *
 * SQLite -> PostgreSQL follows SQLite's own affinity rules (section 3.1 of "Datatypes In
 * SQLite"): INT -> bigint (SQLite integers are 64-bit); CHAR/CLOB/TEXT -> text; BLOB -> bytea;
 * REAL/FLOA/DOUB -> double precision; then BOOL -> boolean, DATETIME/TIMESTAMP -> timestamp,
 * DATE -> date, NUMERIC/DECIMAL -> numeric. A column with no declared type can hold anything in
 * SQLite and has no PostgreSQL equivalent.
 * PostgreSQL -> SQLite keeps values exact: integers -> INTEGER, float4/float8 -> REAL (NaN,
 * which SQLite would store as NULL, as the TEXT 'NaN': sqlite/literal.ts), bytea -> BLOB,
 * boolean -> INTEGER (0/1), everything else (numeric, text, dates, json, uuid, arrays, ...) ->
 * TEXT holding PostgreSQL's text form.
 */
import { TandemError } from '../core/errors.js';
import type { TableSchema } from '../core/record.js';
import { quoteIdent as sqliteIdent } from './sqlite/schema.js';

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

/** A column of a table that has no type on the other engine, described for TYPE_UNMAPPABLE. */
function unmappable(schema: TableSchema, target: Engine): string[] {
  if ((schema.dialect ?? target) === target || target !== 'postgres') return [];
  return schema.columns
    .filter((c) => sqliteTypeToPg(c.type) === null)
    .map((c) =>
      c.type
        ? `column "${c.name}" of table "${schema.name}" (SQLite type "${c.type}")`
        : `column "${c.name}" of table "${schema.name}" (no declared type: it may hold values of any kind)`,
    );
}

/**
 * Checks that every column of every table has a type on each engine in `targets`, and throws
 * one TYPE_UNMAPPABLE listing all that do not, so one round of fixes is enough. `group` names
 * the group in the fix.
 */
export function checkMappable(
  schemas: readonly TableSchema[],
  targets: Iterable<Engine>,
  group: string,
): void {
  const engines = [...targets];
  const bad = schemas.flatMap((s) => engines.flatMap((e) => unmappable(s, e)));
  if (bad.length === 0) return;
  const one = bad.length === 1;
  throw new TandemError(
    'TYPE_UNMAPPABLE',
    `${bad.length} SQLite column${one ? ' has' : 's have'} no PostgreSQL type to be replicated as: ${bad.join('; ')}`,
    `Declare ${one ? 'a type on the column' : 'a type on each'} in SQLite: INTEGER, TEXT, REAL, BLOB, NUMERIC, BOOLEAN, DATE or DATETIME (JSON, UUID or STRING as TEXT, MONEY as NUMERIC; SQLite changes a column's type only by copying the table into a new one), or leave ${one ? 'its table' : 'their tables'} out of groups.${group}.tables`,
  );
}

/**
 * The column types of a PostgreSQL table's schema as their values are: a domain as its base type
 * (through domains over domains), every other type as it is.
 */
export function valueTypes(schema: TableSchema): string[] {
  const domains = new Map(
    (schema.types ?? []).flatMap((t) => (t.kind === 'domain' ? [[t.ref, t.base] as const] : [])),
  );
  return schema.columns.map((c) => {
    let t = c.type;
    for (let i = 0; i < 32 && domains.has(t); i++) t = domains.get(t)!;
    return t;
  });
}

/**
 * The schema with types (and defaults) for `target`. Throws TYPE_UNMAPPABLE naming every column
 * that has none there (checkMappable; a source checks all its tables so at start).
 */
export function schemaFor(schema: TableSchema, target: Engine, group: string): TableSchema {
  const from = schema.dialect ?? target;
  if (from === target) return schema;
  checkMappable([schema], [target], group);
  // A PostgreSQL domain is stored as its base type would be.
  const types = valueTypes(schema);
  return {
    ...schema,
    dialect: target,
    types: undefined,
    // A generated column's expression is PostgreSQL's SQL (a SQLite backup has none of them).
    generated: undefined,
    // Index and constraint definitions are each engine's SQL: a SQLite backup creates what
    // sqliteIndexes translates, a PostgreSQL backup what pgIndexes does.
    constraints: target === 'postgres' ? [] : undefined,
    indexes: target === 'postgres' ? pgIndexes(schema).sql : undefined,
    columns: schema.columns.map((c, i) => ({
      ...c,
      type: target === 'postgres' ? sqliteTypeToPg(c.type)! : pgTypeToSqlite(types[i]!),
      // Defaults are the source's business (their expressions are engine-specific): the backup
      // receives every value the source wrote.
      default: null,
    })),
  };
}

/**
 * A unique index, in either engine's CREATE INDEX text: what one row's older state next to
 * another row's newer one can break, so a backup applying records again over a resumed seed's
 * later chunks makes them only once it has applied through them.
 */
export function isUniqueIndex(sql: string): boolean {
  return /^\s*CREATE\s+UNIQUE\s+INDEX\b/i.test(sql);
}

/** An index or constraint of the source that a backup of the other engine does not get, and why. */
export interface SkippedIndex {
  name: string;
  why: string;
}

/**
 * A PostgreSQL source's indexes and UNIQUE constraints as SQLite `CREATE INDEX` statements, for
 * a SQLite backup. Only indexes on plain columns translate faithfully: a btree or hash index's
 * columns and their ASC/DESC are kept; collation, operator class and NULLS FIRST/LAST are
 * dropped (they change how PostgreSQL orders or searches, not which rows are equal) and so are
 * INCLUDE columns. Partial and expression indexes, other methods, and uniqueness SQLite checks
 * differently (DEFERRABLE, NULLS NOT DISTINCT) are skipped, as are CHECK, FOREIGN KEY and
 * EXCLUDE constraints (their text is PostgreSQL SQL); each is named in `skipped`. SQLite index
 * names are per database, so a table outside `public` prefixes its indexes with its schema.
 * A SQLite source's own statements (record.ts) are given as they are, with IF NOT EXISTS.
 */
export function sqliteIndexes(schema: TableSchema): { sql: Map<string, string>; skipped: SkippedIndex[] } {
  const sql = new Map<string, string>();
  const skipped: SkippedIndex[] = [];
  if (schema.dialect === 'sqlite') {
    // A SQLite source's own statements, as they are.
    for (const def of schema.indexes ?? []) {
      const m = SQLITE_INDEX.exec(def);
      if (!m) continue;
      const rest = def.slice(m[0].length);
      sql.set(unquoteSqlite(m[2]!), `CREATE ${m[1] ? 'UNIQUE ' : ''}INDEX IF NOT EXISTS ${m[2]} ON ${rest}`);
    }
    return { sql, skipped };
  }
  if (schema.dialect !== 'postgres') return { sql, skipped };
  const dot = schema.name.indexOf('.');
  const prefix = dot >= 0 ? schema.name.slice(0, dot + 1) : '';
  const generated = new Set((schema.generated ?? []).map((g) => g.name));
  const create = (name: string, unique: boolean, columns: { name: string; desc: boolean }[]) => {
    if (columns.some((c) => generated.has(c.name))) {
      skipped.push({
        name,
        why: 'on a generated column (a SQLite backup has none: its expression is PostgreSQL SQL)',
      });
      return;
    }
    const cols = columns.map((c) => `${sqliteIdent(c.name)}${c.desc ? ' DESC' : ''}`).join(', ');
    sql.set(
      prefix + name,
      `CREATE ${unique ? 'UNIQUE ' : ''}INDEX IF NOT EXISTS ${sqliteIdent(prefix + name)} ON ${sqliteIdent(schema.name)} (${cols})`,
    );
  };
  for (const def of schema.indexes ?? []) {
    const m = /^CREATE (UNIQUE )?INDEX ("(?:[^"]|"")+"|\S+) ON (?:ONLY )?\S+ USING (\w+) \(/.exec(def);
    const name = m ? unquotePg(m[2]!) : def;
    if (!m) {
      skipped.push({ name, why: 'not a CREATE INDEX statement Tandem reads' });
      continue;
    }
    if (m[3] !== 'btree' && m[3] !== 'hash') {
      skipped.push({ name, why: `index method ${m[3]} has no SQLite equivalent` });
      continue;
    }
    const end = closingParen(def, m[0].length - 1);
    const rest = def.slice(end + 1);
    if (/ WHERE /.test(rest)) {
      skipped.push({ name, why: 'a partial index (its WHERE clause is PostgreSQL SQL)' });
      continue;
    }
    if (/NULLS NOT DISTINCT/.test(rest)) {
      skipped.push({ name, why: 'NULLS NOT DISTINCT (SQLite treats NULLs as distinct)' });
      continue;
    }
    const columns = keyColumns(def.slice(m[0].length, end));
    if (!columns) {
      skipped.push({ name, why: 'an index on expressions (PostgreSQL SQL)' });
      continue;
    }
    create(name, m[1] !== undefined, columns);
  }
  for (const k of schema.constraints ?? []) {
    const u = /^UNIQUE (?:NULLS DISTINCT )?\((.*?)\)(?: INCLUDE \(.*?\))?$/.exec(k.def);
    const columns = u ? keyColumns(u[1]!) : null;
    if (columns) create(k.name, true, columns);
    else skipped.push({ name: k.name, why: constraintWhy(k.def) });
  }
  return { sql, skipped };
}

/** The head of a SQLite CREATE INDEX: UNIQUE, the (unqualified) name, up to the table. */
const SQLITE_INDEX =
  /^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:(?:"(?:[^"]|"")+"|\w+)\s*\.\s*)?("(?:[^"]|"")+"|\[[^\]]+\]|`[^`]+`|\w+)\s+ON\s+/i;

function unquoteSqlite(id: string): string {
  if (id.startsWith('"')) return id.slice(1, -1).replaceAll('""', '"');
  if (id.startsWith('[') || id.startsWith('`')) return id.slice(1, -1);
  return id;
}

/**
 * A SQLite source's indexes (record.ts: its own CREATE INDEX statements, UNIQUE constraints
 * among them) as PostgreSQL statements in `pg_get_indexdef`'s form, for a PostgreSQL backup:
 * those on plain columns with SQLite's default collation, ASC/DESC kept. Partial and
 * expression indexes and columns under another collation (NOCASE, RTRIM: other equality) are
 * named in `skipped`.
 */
export function pgIndexes(schema: TableSchema): { sql: string[]; skipped: SkippedIndex[] } {
  const sql: string[] = [];
  const skipped: SkippedIndex[] = [];
  if (schema.dialect !== 'sqlite') return { sql, skipped };
  const dot = schema.name.indexOf('.');
  const [ns, table] =
    dot >= 0 ? [schema.name.slice(0, dot), schema.name.slice(dot + 1)] : ['public', schema.name];
  for (const def of schema.indexes ?? []) {
    const flat = def.replace(/\s+/g, ' ').trim();
    const m = SQLITE_INDEX.exec(flat);
    if (!m) continue;
    const name = unquoteSqlite(m[2]!);
    const open = flat.indexOf('(', m[0].length);
    const end = open < 0 ? -1 : closingParen(flat, open);
    if (end < 0 || end >= flat.length) {
      skipped.push({ name, why: 'not a CREATE INDEX statement Tandem reads' });
      continue;
    }
    if (/\bWHERE\b/i.test(flat.slice(end + 1))) {
      skipped.push({ name, why: 'a partial index (its WHERE clause is SQLite SQL)' });
      continue;
    }
    const columns: string[] = [];
    for (const part of splitTopLevel(flat.slice(open + 1, end))) {
      const c =
        /^("(?:[^"]|"")+"|\[[^\]]+\]|`[^`]+`|[A-Za-z_][A-Za-z0-9_$]*)(?: COLLATE (\w+))?(?: (ASC|DESC))?$/i.exec(
          part.trim(),
        );
      if (!c || (c[2] !== undefined && c[2].toUpperCase() !== 'BINARY')) {
        columns.length = 0;
        break;
      }
      columns.push(`${pgIdent(unquoteSqlite(c[1]!))}${c[3]?.toUpperCase() === 'DESC' ? ' DESC' : ''}`);
    }
    if (columns.length === 0) {
      skipped.push({ name, why: 'an index on expressions or under a collation other than BINARY' });
      continue;
    }
    sql.push(
      `CREATE ${m[1] ? 'UNIQUE ' : ''}INDEX ${pgIdent(name)} ON ${pgIdent(ns)}.${pgIdent(table)} USING btree (${columns.join(', ')})`,
    );
  }
  return { sql, skipped };
}

/** An identifier as PostgreSQL prints it: bare when that reads back the same, else quoted. */
function pgIdent(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) && !PG_RESERVED.has(name)
    ? name
    : `"${name.replaceAll('"', '""')}"`;
}

/** PostgreSQL's reserved and column-name keywords: names it always quotes. */
const PG_RESERVED = new Set(
  (
    'all analyse analyze and any array as asc asymmetric authorization between bigint binary bit boolean both case cast ' +
    'char character check coalesce collate collation column concurrently constraint create cross current_catalog ' +
    'current_date current_role current_schema current_time current_timestamp current_user dec decimal default ' +
    'deferrable desc distinct do else end except exists extract false fetch float for foreign freeze from full grant ' +
    'greatest group grouping having ilike in initially inner inout int integer intersect interval into is isnull join ' +
    'lateral leading least left like limit localtime localtimestamp national natural nchar none normalize not notnull ' +
    'null nullif numeric offset on only or order out outer overlaps overlay placing position precision primary real ' +
    'references returning right row select session_user setof similar smallint some substring symmetric table ' +
    'tablesample then time timestamp to trailing treat trim true union unique user using values varchar variadic ' +
    'verbose when where window with xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse ' +
    'xmlpi xmlroot xmlserialize xmltable'
  ).split(' '),
);

function constraintWhy(def: string): string {
  if (def.startsWith('UNIQUE')) {
    if (def.includes('DEFERRABLE'))
      return 'a deferrable UNIQUE constraint (SQLite checks uniqueness at once)';
    if (def.includes('NULLS NOT DISTINCT'))
      return 'UNIQUE NULLS NOT DISTINCT (SQLite treats NULLs as distinct)';
    return 'a UNIQUE constraint Tandem does not read';
  }
  const kind = ['CHECK', 'FOREIGN KEY', 'EXCLUDE'].find((k) => def.startsWith(k)) ?? 'other';
  return `a ${kind} constraint (its text is PostgreSQL SQL)`;
}

function unquotePg(id: string): string {
  return id.startsWith('"') ? id.slice(1, -1).replaceAll('""', '"') : id;
}

/** Index of the parenthesis closing the one at `open`, past quoted names and strings. */
function closingParen(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const ch = s[i];
    if (ch === '"' || ch === "'") {
      i = s.indexOf(ch, i + 1);
      while (i >= 0 && s[i + 1] === ch) i = s.indexOf(ch, i + 2);
      if (i < 0) return s.length;
    } else if (ch === '(') depth++;
    else if (ch === ')' && --depth === 0) return i;
  }
  return s.length;
}

/** The columns of a PostgreSQL key list, or null when an element is not a plain column. */
function keyColumns(list: string): { name: string; desc: boolean }[] | null {
  const out: { name: string; desc: boolean }[] = [];
  for (const part of splitTopLevel(list)) {
    const m =
      /^("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)(?: COLLATE (?:"(?:[^"]|"")+"|\S+))?(?: [A-Za-z_][A-Za-z0-9_.]*_ops)?( DESC| ASC)?(?: NULLS (?:FIRST|LAST))?$/.exec(
        part.trim(),
      );
    if (!m) return null;
    out.push({ name: unquotePg(m[1]!), desc: m[2] === ' DESC' });
  }
  return out.length > 0 ? out : null;
}

function splitTopLevel(list: string): string[] {
  const parts: string[] = [];
  let start = 0;
  let depth = 0;
  let quote: string | null = null;
  for (let i = 0; i < list.length; i++) {
    const ch = list[i]!;
    if (quote) {
      if (ch === quote) quote = null;
    } else if (ch === '"' || ch === "'") quote = ch;
    else if (ch === '(') depth++;
    else if (ch === ')') depth--;
    else if (ch === ',' && depth === 0) {
      parts.push(list.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(list.slice(start));
  return parts;
}
