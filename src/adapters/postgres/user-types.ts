/**
 * User-defined types on a PostgreSQL target: the enums, domains, composite and range types a
 * table's columns use (through arrays, domains, composites and ranges, however deep), and the
 * extensions that provide types (citext, hstore, ...). The source reads them with each table's
 * definition (schema.ts for seeds, the event trigger's definition for DDL: one SQL text,
 * `typesJsonSql`); the backup makes what it lacks before it creates or changes the table, and
 * brings what it has to the source's definition:
 * - an enum gets the labels it lacks, each in its place (ADD VALUE ... BEFORE / AFTER); one label
 *   renamed at the same place is renamed; labels the source no longer has stay (PostgreSQL cannot
 *   drop one);
 * - a domain gets the source's default, NOT NULL and CHECK constraints (by name);
 * - a composite type gets the attributes it lacks, loses those the source dropped, and takes the
 *   source's attribute types; one attribute renamed at the same place is renamed;
 * - an extension is created when missing (its package must be installed on the target's server).
 * A type of the same name but another kind, a domain over another base type, or a range over
 * another subtype is dropped and made anew when nothing on the target uses it (the source
 * dropped its type and made another: DROP TYPE is not followed); otherwise it is refused
 * (SCHEMA_CHANGE_UNSUPPORTED), naming why it cannot be dropped.
 */
import type pg from 'pg';
import { TandemError } from '../../core/errors.js';
import type { UserType } from '../../core/record.js';
import { moveSql, quoteIdent, quoteLiteral } from './schema.js';

/**
 * The user-defined types the columns of relation `rel` (an SQL expression of type oid) use, with
 * the types those use in turn, as rows (oid, depth): a type is used by one of smaller depth.
 * Only standalone composite types (a table's row type is not made on the target), not array
 * types themselves (their element type is), not the system's.
 */
export function usedTypesSql(rel: string): string {
  return `WITH RECURSIVE used(oid, depth) AS (
      SELECT a.atttypid, 1 FROM pg_attribute a
       WHERE a.attrelid = ${rel} AND a.attnum > 0 AND NOT a.attisdropped
      UNION ALL
      SELECT x.oid, u.depth + 1 FROM used u JOIN pg_type ty ON ty.oid = u.oid
       CROSS JOIN LATERAL (
         SELECT ty.typbasetype WHERE ty.typtype = 'd'
         UNION ALL SELECT ty.typelem WHERE ty.typcategory = 'A' AND ty.typelem <> 0
         UNION ALL SELECT a.atttypid FROM pg_attribute a
                    WHERE ty.typtype = 'c' AND a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped
         UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = ty.oid) AS x(oid)
       WHERE u.depth < 32)
    SELECT u.oid, max(u.depth) AS depth FROM used u
      JOIN pg_type ty ON ty.oid = u.oid JOIN pg_namespace n ON n.oid = ty.typnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND (ty.typtype IN ('e', 'd', 'r') OR ty.typtype = 'b' AND ty.typcategory <> 'A'
            OR ty.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = ty.typrelid) = 'c')
     GROUP BY u.oid`;
}

/**
 * The type whose values a value of type `oid` (an SQL expression) is: a domain's base type,
 * through domains over domains; any other type itself.
 */
export function valueTypeSql(oid: string): string {
  return `(WITH RECURSIVE b(o, d) AS (
             SELECT ${oid}, 0 UNION ALL
             SELECT t.typbasetype, b.d + 1 FROM pg_type t JOIN b ON t.oid = b.o WHERE t.typtype = 'd')
           SELECT o FROM b ORDER BY d DESC LIMIT 1)`;
}

/** SQL that prints a type (format_type) and a constraint (pg_get_constraintdef). */
export interface Deparse {
  type(oid: string, mod: string): string;
  constraint(oid: string): string;
}

const DEPARSE: Deparse = {
  type: (oid, mod) => `format_type(${oid}, ${mod})`,
  constraint: (oid) => `pg_get_constraintdef(${oid})`,
};

/**
 * The types `usedTypesSql` finds, as a jsonb array of UserType in creation order (a type after
 * what it uses), or NULL when there are none. A type an extension owns stands for its
 * extension; other base types (written in C by hand) are not made on the target. Names are
 * printed by `d` (the event trigger's own functions; by default the session's).
 */
function typesJsonSql(rel: string, d: Deparse = DEPARSE): string {
  return `(SELECT jsonb_agg(def ORDER BY depth DESC, def::text) FROM (
      SELECT max(depth) AS depth, def FROM (
        SELECT u.depth, CASE
          WHEN e.oid IS NOT NULL THEN jsonb_build_object('kind', 'extension', 'name', e.extname, 'schema', en.nspname)
          WHEN ty.typtype = 'e' THEN jsonb_build_object('kind', 'enum', 'schema', n.nspname, 'name', ty.typname,
            'ref', ${d.type('ty.oid', 'NULL')}, 'id', (SELECT system_identifier FROM pg_control_system()) || ':' || ty.oid,
            'labels', (SELECT jsonb_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = ty.oid))
          WHEN ty.typtype = 'd' THEN jsonb_build_object('kind', 'domain', 'schema', n.nspname, 'name', ty.typname,
            'ref', ${d.type('ty.oid', 'NULL')}, 'id', (SELECT system_identifier FROM pg_control_system()) || ':' || ty.oid, 'base', ${d.type('ty.typbasetype', 'ty.typtypmod')},
            'notNull', ty.typnotnull, 'default', ty.typdefault,
            'checks', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', k.conname, 'def', ${d.constraint('k.oid')})
                                                 ORDER BY k.conname), '[]'::jsonb)
                         FROM pg_constraint k WHERE k.contypid = ty.oid AND k.contype = 'c'))
          WHEN ty.typtype = 'c' THEN jsonb_build_object('kind', 'composite', 'schema', n.nspname, 'name', ty.typname,
            'ref', ${d.type('ty.oid', 'NULL')}, 'id', (SELECT system_identifier FROM pg_control_system()) || ':' || ty.oid,
            'attributes', (SELECT jsonb_agg(jsonb_build_object('name', a.attname, 'type', ${d.type('a.atttypid', 'a.atttypmod')})
                                            ORDER BY a.attnum)
                             FROM pg_attribute a WHERE a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped))
          WHEN ty.typtype = 'r' THEN jsonb_build_object('kind', 'range', 'schema', n.nspname, 'name', ty.typname,
            'ref', ${d.type('ty.oid', 'NULL')}, 'id', (SELECT system_identifier FROM pg_control_system()) || ':' || ty.oid,
            'subtype', (SELECT ${d.type('rngsubtype', 'NULL')} FROM pg_range WHERE rngtypid = ty.oid))
        END AS def
        FROM (${usedTypesSql(rel)}) u
        JOIN pg_type ty ON ty.oid = u.oid JOIN pg_namespace n ON n.oid = ty.typnamespace
        LEFT JOIN pg_depend d ON d.classid = 'pg_type'::regclass AND d.objid = ty.oid AND d.deptype = 'e'
        LEFT JOIN pg_extension e ON e.oid = d.refobjid
        LEFT JOIN pg_namespace en ON en.oid = e.extnamespace) k
       WHERE def IS NOT NULL GROUP BY def) s)`;
}

/**
 * The extensions whose objects the indexes of relation `rel` use (operator classes, as
 * pg_trgm's or btree_gist's; functions of index expressions), as a jsonb array of UserType
 * extensions in name order, or NULL when there are none.
 */
export function indexExtensionsSql(rel: string): string {
  return `(SELECT jsonb_agg(j ORDER BY j::text) FROM (
      SELECT DISTINCT jsonb_build_object('kind', 'extension', 'name', e.extname, 'schema', en.nspname) AS j
        FROM pg_index i JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
        JOIN pg_depend x ON x.classid = d.refclassid AND x.objid = d.refobjid AND x.deptype = 'e'
                        AND x.refclassid = 'pg_extension'::regclass
        JOIN pg_extension e ON e.oid = x.refobjid JOIN pg_namespace en ON en.oid = e.extnamespace
       WHERE i.indrelid = ${rel}) s)`;
}

/**
 * What a table's definition carries as its `types`: the extensions its indexes need, then the
 * types its columns use (typesJsonSql), or NULL when there are none.
 */
export function definitionTypesSql(rel: string, d: Deparse = DEPARSE): string {
  return `(SELECT CASE WHEN x IS NOT NULL OR t IS NOT NULL THEN coalesce(x, '[]'::jsonb) || coalesce(t, '[]'::jsonb) END
             FROM (SELECT ${indexExtensionsSql(rel)} AS x, ${typesJsonSql(rel, d)} AS t) s)`;
}

/** Whether relation `rel` uses one of the types `oids` (an SQL expression of type oid[]). */
export function usesTypesSql(rel: string, oids: string): string {
  return `EXISTS (SELECT 1 FROM (${usedTypesSql(rel)}) u WHERE u.oid = ANY (${oids}))`;
}

function typeRef(t: { schema: string; name: string }): string {
  return `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;
}

function refused(t: UserType & { name: string }, group: string, why: string, fix: string): TandemError {
  return new TandemError(
    'SCHEMA_CHANGE_UNSUPPORTED',
    `group ${group}: type ${typeRef(t)} on the backup ${why}`,
    fix,
  );
}

/** What the target holds under a type's name: its kind and what ensureTypes compares. */
interface Held {
  typtype: string;
  labels: string[] | null;
  base: string | null;
  notNull: boolean;
  default: string | null;
  checks: { name: string; def: string }[] | null;
  attributes: { name: string; type: string }[] | null;
  subtype: string | null;
}

async function held(client: pg.Client, t: { schema: string; name: string }): Promise<Held | null> {
  const r = await client.query<Held>(
    `SELECT ty.typtype,
            (SELECT array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = ty.oid) AS labels,
            CASE WHEN ty.typtype = 'd' THEN format_type(ty.typbasetype, ty.typtypmod) END AS base,
            ty.typnotnull AS "notNull", ty.typdefault AS default,
            (SELECT jsonb_agg(jsonb_build_object('name', k.conname, 'def', pg_get_constraintdef(k.oid)))
               FROM pg_constraint k WHERE k.contypid = ty.oid AND k.contype = 'c') AS checks,
            (SELECT jsonb_agg(jsonb_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod))
                              ORDER BY a.attnum)
               FROM pg_attribute a WHERE a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped) AS attributes,
            (SELECT format_type(rngsubtype, NULL) FROM pg_range WHERE rngtypid = ty.oid) AS subtype
       FROM pg_type ty JOIN pg_namespace n ON n.oid = ty.typnamespace
      WHERE n.nspname = $1 AND ty.typname = $2`,
    [t.schema, t.name],
  );
  return r.rows[0] ?? null;
}

const KINDS: Record<string, string> = { e: 'enum', d: 'domain', c: 'composite', r: 'range' };

function article(kind: string): string {
  return `${kind === 'enum' ? 'an' : 'a'} ${kind}${kind === 'composite' || kind === 'range' ? ' type' : ''}`;
}

/** CREATE statements for a type the target lacks. */
function createSql(t: Exclude<UserType, { kind: 'extension' }>): string {
  const ref = typeRef(t);
  switch (t.kind) {
    case 'enum':
      return `CREATE TYPE ${ref} AS ENUM (${t.labels.map(quoteLiteral).join(', ')})`;
    case 'domain':
      return [
        `CREATE DOMAIN ${ref} AS ${t.base}`,
        ...(t.default !== null ? [`DEFAULT ${t.default}`] : []),
        ...(t.notNull ? ['NOT NULL'] : []),
        ...t.checks.map((k) => `CONSTRAINT ${quoteIdent(k.name)} ${k.def}`),
      ].join(' ');
    case 'composite':
      return `CREATE TYPE ${ref} AS (${t.attributes.map((a) => `${quoteIdent(a.name)} ${a.type}`).join(', ')})`;
    case 'range':
      return `CREATE TYPE ${ref} AS RANGE (SUBTYPE = ${t.subtype})`;
  }
}

/**
 * The one name of `have` that `want` has under another name at the same place, as [old, new]:
 * what a rename leaves (drop + add would empty it), or null.
 */
function renamedInPlace(have: readonly string[], want: readonly string[]): [string, string] | null {
  const missing = want.filter((l) => !have.includes(l));
  const extra = have.filter((l) => !want.includes(l));
  return missing.length === 1 && extra.length === 1 && want.indexOf(missing[0]!) === have.indexOf(extra[0]!)
    ? [extra[0]!, missing[0]!]
    : null;
}

/**
 * The statements that bring an enum's labels on the target (`have`) to the source's (`want`):
 * one label renamed in place is renamed, each missing label is added next to its neighbour.
 */
export function enumSql(ref: string, have: readonly string[], want: readonly string[]): string[] {
  const renamed = renamedInPlace(have, want);
  if (renamed)
    return [`ALTER TYPE ${ref} RENAME VALUE ${quoteLiteral(renamed[0])} TO ${quoteLiteral(renamed[1])}`];
  const out: string[] = [];
  const labels = [...have];
  for (const [i, l] of want.entries()) {
    if (labels.includes(l)) continue;
    // Next to the nearest label before it that the target has; the first goes before the first.
    const before = want.slice(0, i).findLast((x) => labels.includes(x));
    const place =
      before !== undefined
        ? `AFTER ${quoteLiteral(before)}`
        : labels.length > 0
          ? `BEFORE ${quoteLiteral(labels[0]!)}`
          : '';
    out.push(`ALTER TYPE ${ref} ADD VALUE IF NOT EXISTS ${quoteLiteral(l)} ${place}`.trimEnd());
    labels.splice(before !== undefined ? labels.indexOf(before) + 1 : 0, 0, l);
  }
  return out;
}

/**
 * Types the source renamed or moved to another schema since `before` (the table definition the
 * backup last applied; a type is known by its `id` on the source: after a role change the new
 * source's ids are all new), renamed or moved on the target
 * too, where it still has the old name and not the new one: made anew, its columns could not be
 * retyped to it (no cast between two enums or composites).
 */
export async function renameTypes(
  client: pg.Client,
  before: readonly UserType[],
  after: readonly UserType[],
): Promise<void> {
  const old = new Map(before.flatMap((t) => (t.kind !== 'extension' && t.id ? [[t.id, t] as const] : [])));
  for (const t of after) {
    if (t.kind === 'extension' || !t.id) continue;
    const was = old.get(t.id);
    if (!was || (was.schema === t.schema && was.name === t.name)) continue;
    if (!(await held(client, was)) || (await held(client, t))) continue;
    for (const sql of moveSql(t.kind === 'domain' ? 'ALTER DOMAIN' : 'ALTER TYPE', was, t))
      await client.query(sql);
  }
}

/**
 * Drops a type of the target's that is not the source's under its name (another kind, a domain
 * over another base type, a range over another subtype) when nothing there uses it: one the
 * source dropped (DROP TYPE is not followed) and made anew, say. Null once dropped; else, with
 * nothing dropped, why not (something uses it: a column, a function, an extension; or another
 * role owns it).
 */
async function dropUnused(client: pg.Client, ref: string, typtype: string): Promise<string | null> {
  await client.query('SAVEPOINT tandem_type');
  try {
    await client.query(`${typtype === 'd' ? 'DROP DOMAIN' : 'DROP TYPE'} ${ref}`);
    await client.query('RELEASE SAVEPOINT tandem_type');
    return null;
  } catch (err) {
    const e = err as { code?: string; message: string; detail?: string };
    if (e.code !== '2BP01' && e.code !== '42501') throw err;
    await client.query('ROLLBACK TO SAVEPOINT tandem_type');
    await client.query('RELEASE SAVEPOINT tandem_type');
    return e.detail ? `${e.message}: ${e.detail}` : e.message;
  }
}

/**
 * Makes the types a table uses on a PostgreSQL target, and brings those it has to the source's
 * definitions (see the file's comment), in the caller's transaction.
 */
export async function ensureTypes(
  client: pg.Client,
  types: readonly UserType[],
  group: string,
): Promise<void> {
  for (const t of types) {
    if (t.kind === 'extension') {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(t.schema)}`);
      try {
        await client.query(
          `CREATE EXTENSION IF NOT EXISTS ${quoteIdent(t.name)} SCHEMA ${quoteIdent(t.schema)}`,
        );
      } catch (err) {
        throw new TandemError(
          'SCHEMA_CHANGE_UNSUPPORTED',
          `group ${group}: extension "${t.name}", whose types the replicated tables use, cannot be created on the backup: ${(err as Error).message}`,
          `Install the extension's package on the backup's PostgreSQL server (a contrib extension comes with the server's own package on Debian; others have their own, as postgresql-15-postgis-3), or create it there by hand (CREATE EXTENSION ${quoteIdent(t.name)}): apply goes on by itself once it exists`,
        );
      }
      continue;
    }
    const have = await held(client, t);
    if (!have) {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(t.schema)}`);
      await client.query(createSql(t));
      continue;
    }
    const ref = typeRef(t);
    const other =
      KINDS[have.typtype] !== t.kind
        ? `is ${KINDS[have.typtype] ? article(KINDS[have.typtype]!) : 'another kind of type'}, the source's is ${article(t.kind)}`
        : t.kind === 'domain' && have.base !== t.base
          ? `is a domain over ${have.base}, the source's over ${t.base}`
          : t.kind === 'range' && have.subtype !== t.subtype
            ? `is a range over ${have.subtype}, the source's over ${t.subtype}`
            : null;
    if (other !== null) {
      const kept = await dropUnused(client, ref, have.typtype);
      if (kept !== null)
        throw refused(
          t,
          group,
          `${other}, and it cannot be dropped there (${kept})`,
          "Drop or rename the backup's type, or what uses it there: apply goes on by itself once it is out of the way",
        );
      await client.query(createSql(t));
      continue;
    }
    switch (t.kind) {
      case 'enum':
        for (const sql of enumSql(ref, have.labels ?? [], t.labels)) await client.query(sql);
        break;
      case 'domain': {
        if (have.default !== t.default)
          await client.query(
            `ALTER DOMAIN ${ref} ${t.default === null ? 'DROP DEFAULT' : `SET DEFAULT ${t.default}`}`,
          );
        if (have.notNull !== t.notNull)
          await client.query(`ALTER DOMAIN ${ref} ${t.notNull ? 'SET' : 'DROP'} NOT NULL`);
        const mine = new Map((have.checks ?? []).map((k) => [k.name, k.def]));
        const wanted = new Map(t.checks.map((k) => [k.name, k.def]));
        for (const [name, def] of mine)
          if (wanted.get(name) !== def)
            await client.query(`ALTER DOMAIN ${ref} DROP CONSTRAINT ${quoteIdent(name)}`);
        for (const [name, def] of wanted)
          if (mine.get(name) !== def)
            await client.query(`ALTER DOMAIN ${ref} ADD CONSTRAINT ${quoteIdent(name)} ${def}`);
        break;
      }
      case 'composite': {
        const attributes = have.attributes ?? [];
        const renamed = renamedInPlace(
          attributes.map((a) => a.name),
          t.attributes.map((a) => a.name),
        );
        if (renamed) {
          await client.query(
            `ALTER TYPE ${ref} RENAME ATTRIBUTE ${quoteIdent(renamed[0])} TO ${quoteIdent(renamed[1])}`,
          );
          for (const a of attributes) if (a.name === renamed[0]) a.name = renamed[1];
        }
        const mine = new Map(attributes.map((a) => [a.name, a.type]));
        const wanted = new Map(t.attributes.map((a) => [a.name, a.type]));
        for (const name of mine.keys())
          if (!wanted.has(name)) await client.query(`ALTER TYPE ${ref} DROP ATTRIBUTE ${quoteIdent(name)}`);
        for (const [name, type] of wanted) {
          const now = mine.get(name);
          if (now === undefined)
            await client.query(`ALTER TYPE ${ref} ADD ATTRIBUTE ${quoteIdent(name)} ${type}`);
          else if (now !== type)
            await client.query(`ALTER TYPE ${ref} ALTER ATTRIBUTE ${quoteIdent(name)} TYPE ${type}`);
        }
        break;
      }
      case 'range':
        break;
    }
  }
}
