/**
 * Schema changes on a PostgreSQL source, in stream order. Tandem installs, per group, an event
 * trigger whose function runs inside the DDL's own transaction and
 * - emits a transactional logical message (prefix `tandem_ddl:<group>`) holding the table's new
 *   definition (columns with attnum, type, NOT NULL, default; primary key), or its drop;
 *   pgoutput delivers it at its place among the transaction's row changes;
 * - adds a new table that matches the group's patterns to the publication in the same
 *   transaction, so not one of its rows is missed.
 * Creating event triggers needs a superuser; without one, DDL is not followed (logged, and said
 * in status) and the table list is fixed at start.
 */
import type pg from 'pg';
import type { GroupConfig } from '../../config/index.js';
import { globToRegExp } from '../../config/index.js';
import { quoteIdent, quoteLiteral } from './schema.js';

export const DDL_PREFIX = 'tandem_ddl:';

export interface DdlMessage {
  op: 'table' | 'drop';
  schema: string;
  name: string;
  columns?: { name: string; type: string; notNull: boolean; default: string | null; attnum: number }[];
  primaryKey?: string[];
}

function ident(group: string): string {
  return group.replaceAll('-', '_').toLowerCase();
}

/**
 * The regular expressions of the group's table patterns, for PostgreSQL's `~` operator
 * (JavaScript and POSIX agree on the subset globToRegExp produces: anchors, `.`, classes).
 */
function patternRegexes(group: GroupConfig): string {
  return `ARRAY[${group.tables.map((p) => quoteLiteral(globToRegExp(p).source)).join(', ')}]::text[]`;
}

/** Installs (or refreshes) the group's DDL function and event triggers. Needs a superuser. */
export async function installDdlCapture(
  client: pg.Client,
  group: GroupConfig,
  publication: string,
): Promise<void> {
  const g = ident(group.name);
  const fn = `tandem.ddl_${g}`;
  const dropFn = `tandem.ddl_drop_${g}`;
  const prefix = quoteLiteral(`${DDL_PREFIX}${group.name}`);
  const qname = "CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END";
  await client.query('CREATE SCHEMA IF NOT EXISTS tandem');
  await client.query(`
    CREATE OR REPLACE FUNCTION ${fn}() RETURNS event_trigger LANGUAGE plpgsql AS $f$
    DECLARE
      t oid;
      q text;
      def jsonb;
    BEGIN
      FOR t IN
        SELECT DISTINCT CASE WHEN d.object_type = 'index' THEN (SELECT indrelid FROM pg_index WHERE indexrelid = d.objid) ELSE d.objid END
          FROM pg_event_trigger_ddl_commands() d
         WHERE d.object_type IN ('table', 'table column', 'index') AND d.schema_name <> 'tandem'
      LOOP
        SELECT ${qname} INTO q FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = t AND c.relkind IN ('r', 'p') AND NOT c.relispartition;
        CONTINUE WHEN q IS NULL OR NOT q ~ ANY (${patternRegexes(group)});
        IF NOT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                        WHERE p.pubname = ${quoteLiteral(publication)} AND pr.prrelid = t) THEN
          EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', ${quoteLiteral(publication)}, t::regclass);
        END IF;
        SELECT jsonb_build_object(
          'op', 'table', 'schema', n.nspname, 'name', c.relname,
          'columns', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                         'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod), 'notNull', a.attnotnull,
                         'default', CASE WHEN pg_get_expr(ad.adbin, ad.adrelid) LIKE 'nextval(%' THEN NULL ELSE pg_get_expr(ad.adbin, ad.adrelid) END,
                         'attnum', a.attnum) ORDER BY a.attnum), '[]'::jsonb)
                        FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                       WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''),
          'primaryKey', (SELECT coalesce(jsonb_agg(a.attname ORDER BY k.ord), '[]'::jsonb)
                           FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                          WHERE i.indrelid = t AND i.indisprimary))
          INTO def FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t;
        PERFORM pg_logical_emit_message(true, ${prefix}, def::text);
      END LOOP;
    END $f$`);
  await client.query(`
    CREATE OR REPLACE FUNCTION ${dropFn}() RETURNS event_trigger LANGUAGE plpgsql AS $f$
    DECLARE r record;
    BEGIN
      FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE object_type = 'table' AND NOT is_temporary LOOP
        CONTINUE WHEN NOT (CASE WHEN r.schema_name = 'public' THEN r.object_name ELSE r.schema_name || '.' || r.object_name END) ~ ANY (${patternRegexes(group)});
        PERFORM pg_logical_emit_message(true, ${prefix},
          jsonb_build_object('op', 'drop', 'schema', r.schema_name, 'name', r.object_name)::text);
      END LOOP;
    END $f$`);
  for (const [name, event, f] of [
    [`tandem_ddl_${g}`, 'ddl_command_end', fn],
    [`tandem_ddl_drop_${g}`, 'sql_drop', dropFn],
  ] as const) {
    await client.query(`DROP EVENT TRIGGER IF EXISTS ${quoteIdent(name)}`);
    await client.query(`CREATE EVENT TRIGGER ${quoteIdent(name)} ON ${event} EXECUTE FUNCTION ${f}()`);
  }
}
