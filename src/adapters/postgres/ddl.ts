/**
 * Schema changes on a PostgreSQL source, in stream order. Tandem installs, per group, an event
 * trigger whose function runs inside the DDL's own transaction and
 * - emits a transactional logical message (prefix `tandem_ddl:<group>`, signed: see below)
 *   holding the table's new definition (columns with attnum, type, NOT NULL, default; primary
 *   key; CHECK, UNIQUE, EXCLUDE and FOREIGN KEY constraints; other indexes), or its drop;
 *   pgoutput delivers it at its place among the transaction's row changes. A dropped constraint
 *   re-emits its table's definition (before any table drop of the same command, so a CASCADE's
 *   foreign keys go first); a dropped index no longer names its table, so its drop re-emits the
 *   definitions of the group's tables in the index's schema;
 * - adds a new table that matches the group's patterns to the publication in the same
 *   transaction, so not one of its rows is missed.
 * Creating event triggers needs a superuser; without one, DDL is not followed (logged, and said
 * in status) and the table list is fixed at start.
 *
 * Any role may call pg_logical_emit_message, so a message's prefix proves nothing. Each message
 * is `<mac>:<json>`, the mac an HMAC-SHA256 of `<xid>:<json>` (the transaction's id, which
 * capture has from its BEGIN) under the group's key in `tandem.ddl_keys`, which only superusers
 * read; capture drops a message whose mac is wrong. The trigger functions run as the superuser
 * that installed them (SECURITY DEFINER, search_path pg_catalog, pg_temp: nothing another role
 * makes is called), compute what they send from the catalog and the rows themselves, and no
 * other role may call them or their helpers. So a role sends nothing but what its own DDL did.
 * The helpers that print names relative to schema public (as capture's session reads a table)
 * call pg_catalog's functions by their full names.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import type { GroupConfig } from '../../config/index.js';
import { globToRegExp } from '../../config/index.js';
import type { GeneratedColumnDef, UserType } from '../../core/record.js';
import { fencedSql } from './fence.js';
import { parseLsn } from './pgoutput.js';
import {
  COLLATION_SQL,
  IDENTITY_SEQUENCE_SQL,
  KEY_INDEX,
  NO_GENERATED_KEY,
  PRIMARY_KEY_NAME,
  PRIVILEGES_SQL,
  quoteIdent,
  quoteLiteral,
  SERIAL_SQL,
  TABLE_ID_SQL,
  USER_TABLES_WHERE,
} from './schema.js';
import { type Deparse, definitionTypesSql, usesTypesSql, valueTypeSql } from './user-types.js';

export const DDL_PREFIX = 'tandem_ddl:';

/** Length of a message's mac in hex, before its `:`. */
const MAC_HEX = 64;

/**
 * A message's JSON when its mac is the group's key's for transaction `xid`, else null. The mac
 * covers the bytes as the server wrote them (its encoding), after `<xid>:`. A message written
 * (at `lsn`) before the key's start may be an earlier version's: JSON alone.
 */
export function verifyDdlMessage(k: DdlKey, xid: number, lsn: bigint, content: Buffer): Buffer | null {
  if (content.length > MAC_HEX && content[MAC_HEX] === 0x3a) {
    const json = content.subarray(MAC_HEX + 1);
    const want = createHmac('sha256', k.key)
      .update(`${xid >>> 0}:`)
      .update(json)
      .digest();
    const got = Buffer.from(content.toString('latin1', 0, MAC_HEX), 'hex');
    if (got.length === want.length && timingSafeEqual(got, want)) return json;
  }
  return lsn < k.since && content[0] === 0x7b ? content : null;
}

/**
 * The event trigger's functions do nothing for Tandem's own apply (a node that was this
 * database's primary is a backup now, and its triggers stay when its role may not disable them;
 * its apply changes tables as the new primary did, which reports them itself): a session that
 * says it is the apply (`tandem.apply = on`) in a database that is fenced. Any role may set the
 * setting; on a primary, which is not fenced, it changes nothing.
 */
function skipApply(group: string, ret: string): string {
  return `IF current_setting('tandem.apply', true) = 'on' AND ${fencedSql(group)} THEN
        RETURN${ret};
      END IF;`;
}

/** Rows per message when a partition's rows enter or leave a partitioned table. */
const ROWS_PER_MESSAGE = 1000;

export interface DdlMessage {
  /**
   * `skipped`: a new table the group's patterns match, left out for want of a key. `rows`: rows
   * written to (`action` insert) or taken from (delete) the table, columns `names`, as values in
   * their types' text form (`typeOids`): an attached or detached partition's.
   */
  op: 'table' | 'drop' | 'skipped' | 'rows';
  /** What a `drop` dropped: a table (absent) or a sequence. */
  kind?: 'sequence';
  action?: 'insert' | 'delete';
  names?: string[];
  typeOids?: number[];
  rows?: (string | null)[][];
  schema: string;
  name: string;
  columns?: {
    name: string;
    type: string;
    notNull: boolean;
    default: string | null;
    attnum: number;
    identity?: boolean;
    identitySequence?: string;
    collation?: string;
    serial?: boolean;
  }[];
  /** (null: none.) */
  generated?: GeneratedColumnDef[] | null;
  primaryKey?: string[];
  /** (null: no primary key constraint; the key is a replica identity's.) */
  primaryKeyName?: string | null;
  owner?: string;
  grants?: string[];
  sequenceGrants?: Record<string, string[]>;
  constraints?: { name: string; def: string; references?: string }[];
  indexes?: string[];
  types?: UserType[];
  /** The table's id (TableSchema.id). */
  id?: string;
  /** The command rewrote the table: all its rows follow this definition (TableSchema.rewritten). */
  rewritten?: boolean;
  /** The table joined the group (it got a key) with rows written before, which the backup lacks. */
  rowsBefore?: boolean;
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

/**
 * The key of a group's messages (verifyDdlMessage), and the position before which they were
 * written unsigned, by a version of Tandem before signing: read as they are.
 */
export interface DdlKey {
  key: Buffer;
  since: bigint;
}

/** Installs (or refreshes) the group's DDL functions and event triggers. Needs a superuser. */
export async function installDdlCapture(
  client: pg.Client,
  group: GroupConfig,
  publication: string,
): Promise<DdlKey> {
  const g = ident(group.name);
  const fn = `tandem.ddl_${g}`;
  const dropFn = `tandem.ddl_drop_${g}`;
  const defFn = `tandem.ddl_def_${g}`;
  const publishFn = `tandem.ddl_publish_${g}`;
  const partsFn = `tandem.ddl_parts_${g}`;
  const rowsFn = `tandem.ddl_rows_${g}`;
  const startFn = `tandem.ddl_start_${g}`;
  const macFn = `tandem.ddl_mac_${g}`;
  const emitFn = `tandem.ddl_emit_${g}`;
  const deparse: Deparse = {
    type: (oid, mod) => `tandem.ddl_type_${g}(${oid}, ${mod})`,
    constraint: (oid) => `tandem.ddl_constraint_${g}(${oid})`,
  };
  // The session settings the functions leave for each other: any role may set a setting, so each
  // is `<mac>:<value>`, the mac over `salt || value` (salt: what binds it, '' for nothing), and
  // one whose mac is not the key's is no value (NULL).
  const signed = (value: string, salt: string) => `${macFn}(${salt} || ${value}) || ':' || ${value}`;
  const verified = (setting: string, salt: string) =>
    `(SELECT CASE WHEN left(v, ${MAC_HEX}) = ${macFn}(${salt} || substr(v, ${MAC_HEX + 2})) THEN substr(v, ${MAC_HEX + 2}) END
        FROM (SELECT current_setting(${setting}, true) AS v) y WHERE length(v) > ${MAC_HEX})`;
  const beforeSetting = quoteLiteral(`tandem.before_${g}`);
  // What the command's start noted, if this is still its statement (a session setting, so that
  // DETACH PARTITION ... CONCURRENTLY, which commits part-way, keeps it; a later statement's
  // stamp differs).
  const noted = `(SELECT b FROM (SELECT ${verified(beforeSetting, "''")}::jsonb AS b) x
                   WHERE b->>'at' = statement_timestamp()::text)`;
  const truncFn = `tandem.ddl_truncate_${g}`;
  const truncSetting = quoteLiteral(`tandem.truncated_${g}`);
  // (Bound to its transaction.)
  const truncSalt = "txid_current()::text || ':'";
  const truncTrigger = quoteIdent(`tandem_truncate_${g}`);
  // Every table under the group's partitioned tables (and they) without the TRUNCATE trigger.
  const untriggered = `SELECT p.relid::oid FROM pg_publication_rel pr JOIN pg_publication pb ON pb.oid = pr.prpubid
       JOIN pg_class c ON c.oid = pr.prrelid CROSS JOIN LATERAL pg_partition_tree(pr.prrelid::regclass) p
      WHERE pb.pubname = ${quoteLiteral(publication)} AND c.relkind = 'p'
        AND NOT EXISTS (SELECT 1 FROM pg_trigger tg WHERE tg.tgrelid = p.relid AND tg.tgname = ${quoteLiteral(`tandem_truncate_${g}`)})`;
  const prefix = quoteLiteral(`${DDL_PREFIX}${group.name}`);
  const qname = "CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END";
  // A table the group can match rows of: a primary key, a replica identity index (KEY_INDEX) of
  // no generated column, or a key named in the config.
  const configured = Object.keys(group.keys);
  const keyed = `(EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t AND ${KEY_INDEX('i')} AND ${NO_GENERATED_KEY('i')})${
    configured.length ? ` OR q = ANY (ARRAY[${configured.map(quoteLiteral).join(', ')}]::text[])` : ''
  })`;
  // Whether a table (its oid) is in the publication.
  const published = (
    t: string,
  ) => `EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                        WHERE p.pubname = ${quoteLiteral(publication)} AND pr.prrelid = ${t})`;
  // A table whose name or schema's holds a dot (schema.ts, DOTLESS_WHERE): sch, rel.
  const dotted = "(strpos(sch, '.') > 0 OR strpos(rel, '.') > 0)";
  const dotHint = quoteLiteral(
    'with a dot in its name or its schema\'s, its name in the group would also be another table\'s (public."a.b" and a.b)',
  );
  // A table of the group's (q, t) that would lose what its rows are matched by.
  const lostKey = `RAISE EXCEPTION 'tandem: table % would lose the primary key group % matches its rows by (or have one of a generated column, whose values logical decoding does not send)', q, ${quoteLiteral(group.name)}
            USING HINT = format('Keep a primary key or a replica identity index of plain columns on it (ALTER TABLE %s DROP CONSTRAINT ..., ADD PRIMARY KEY (...) in one statement), or leave the table out of the group''s tables', t::regclass);`;
  await client.query('CREATE SCHEMA IF NOT EXISTS tandem');
  // The group's key: made once, kept across starts (a message written before a restart is read
  // after it). Stored as HMAC's inner pad (the key XOR 0x36, 64 bytes) and outer pad (XOR 0x5c),
  // so that the server's sha256 makes the mac. \`since\`: where the functions that sign began
  // (set at the end of the first install with the key); messages before it are an earlier
  // version's, unsigned.
  await client.query(`CREATE TABLE IF NOT EXISTS tandem.ddl_keys (
      grp text PRIMARY KEY, ipad bytea NOT NULL, opad bytea NOT NULL, since pg_lsn)`);
  await client.query('REVOKE ALL ON tandem.ddl_keys FROM PUBLIC');
  const fresh = Buffer.concat([randomBytes(32), Buffer.alloc(32)]);
  await client.query(
    'INSERT INTO tandem.ddl_keys (grp, ipad, opad) VALUES ($1, $2, $3) ON CONFLICT (grp) DO NOTHING',
    [group.name, Buffer.from(fresh.map((b) => b ^ 0x36)), Buffer.from(fresh.map((b) => b ^ 0x5c))],
  );
  const secure = 'SET search_path = pg_catalog, pg_temp';
  await client.query(`
    CREATE OR REPLACE FUNCTION ${macFn}(content text) RETURNS text LANGUAGE sql STABLE ${secure} AS $f$
      SELECT encode(sha256(k.opad || sha256(k.ipad || convert_to(content, current_setting('server_encoding')))), 'hex')
        FROM tandem.ddl_keys k WHERE k.grp = ${quoteLiteral(group.name)}
    $f$`);
  // Every message of the group's: transactional, signed for its transaction (txid_current's low
  // 32 bits are the xid pgoutput's BEGIN carries).
  await client.query(`
    CREATE OR REPLACE FUNCTION ${emitFn}(content text) RETURNS void LANGUAGE sql VOLATILE ${secure} AS $f$
      SELECT pg_logical_emit_message(true, ${prefix}, ${macFn}((txid_current() % 4294967296)::text || ':' || content) || ':' || content)
    $f$`);
  // Names as capture's session prints them (schema public on the path), by pg_catalog's
  // functions named in full: nothing in public is called.
  const exprFn = `tandem.ddl_expr_${g}`;
  const indexFn = `tandem.ddl_index_${g}`;
  const printers = [
    [deparse.type('o oid', 'm int4'), 'format_type(o, m)'],
    [deparse.constraint('o oid'), 'pg_get_constraintdef(o)'],
    [`${exprFn}(e pg_node_tree, o oid)`, 'pg_get_expr(e, o)'],
    [`${indexFn}(o oid)`, 'pg_get_indexdef(o)'],
  ];
  await client.query(
    printers
      .map(
        ([head, call]) =>
          `CREATE OR REPLACE FUNCTION ${head} RETURNS text LANGUAGE sql STABLE SET search_path = public AS $f$ SELECT pg_catalog.${call} $f$`,
      )
      .join(';\n'),
  );
  // The table's definition as the capture reads it (schema.ts readTableSchema, same catalog).
  await client.query(`
    CREATE OR REPLACE FUNCTION ${defFn}(t oid) RETURNS jsonb LANGUAGE sql STABLE ${secure} AS $f$
      SELECT jsonb_build_object(
        'op', 'table', 'schema', n.nspname, 'name', c.relname, 'id', ${TABLE_ID_SQL('c.oid')},
        'columns', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'name', a.attname, 'type', ${deparse.type('a.atttypid', 'a.atttypmod')}, 'notNull', a.attnotnull,
                       'default', ${exprFn}(ad.adbin, ad.adrelid),
                       'attnum', a.attnum, 'identity', a.attidentity <> '')
                       || jsonb_strip_nulls(jsonb_build_object('serial', ${SERIAL_SQL('a', 'ad')},
                                                               'identitySequence', ${IDENTITY_SEQUENCE_SQL('a')},
                                                               'collation', ${COLLATION_SQL('a')}))
                     ORDER BY a.attnum), '[]'::jsonb)
                      FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                     WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''),
        'generated', (SELECT jsonb_agg(jsonb_build_object(
                       'name', a.attname, 'type', ${deparse.type('a.atttypid', 'a.atttypmod')}, 'notNull', a.attnotnull,
                       'expr', ${exprFn}(ad.adbin, ad.adrelid), 'attnum', a.attnum) ORDER BY a.attnum)
                      FROM pg_attribute a JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                     WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''),
        'primaryKey', (SELECT coalesce(jsonb_agg(a.attname ORDER BY k.ord), '[]'::jsonb)
                         FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                        WHERE i.indrelid = t AND ${KEY_INDEX('i')} AND k.ord <= i.indnkeyatts),
        'primaryKeyName', (SELECT ${PRIMARY_KEY_NAME('i')} FROM pg_index i WHERE i.indrelid = t AND i.indisprimary),
        'constraints', (SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object('name', k.conname, 'def', ${deparse.constraint('k.oid')},
                                  'references', CASE WHEN rn.nspname = 'public' THEN rc.relname ELSE rn.nspname || '.' || rc.relname END))
                                  ORDER BY k.conname), '[]'::jsonb)
                          FROM pg_constraint k LEFT JOIN pg_class rc ON rc.oid = k.confrelid LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
                         WHERE k.conrelid = t AND k.contype IN ('c', 'u', 'x', 'f')),
        -- (Names qualified here, not in capture's session: an index is in its table's schema, so
        -- both order them alike.)
        'indexes', (SELECT coalesce(jsonb_agg(${indexFn}(i.indexrelid) ORDER BY i.indexrelid::regclass::text), '[]'::jsonb)
                      FROM pg_index i
                     WHERE i.indrelid = t AND NOT i.indisprimary
                       AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)))
        || coalesce((SELECT jsonb_build_object('types', j) FROM (SELECT ${definitionTypesSql('t', deparse)} AS j) x WHERE j IS NOT NULL), '{}'::jsonb)
        || ${PRIVILEGES_SQL('t')}
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t
    $f$`);
  await client.query(`
    CREATE OR REPLACE FUNCTION ${publishFn}(t oid, add boolean) RETURNS void LANGUAGE plpgsql ${secure} AS $f$
    DECLARE q text;
    BEGIN
      IF add THEN
        SELECT ${qname} INTO q FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = t AND ${USER_TABLES_WHERE};
        IF q IS NULL OR NOT q ~ ANY (${patternRegexes(group)}) OR NOT ${keyed} THEN
          RAISE EXCEPTION 'tandem: % is not a table of group %', t::regclass, ${quoteLiteral(group.name)};
        END IF;
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', ${quoteLiteral(publication)}, t::regclass);
      ELSE
        -- Only a partition, which the publication publishes through its partitioned table.
        IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = t AND relispartition) THEN
          RAISE EXCEPTION 'tandem: % is not a partition', t::regclass;
        END IF;
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', ${quoteLiteral(publication)}, t::regclass);
      END IF;
    END $f$`);
  // The partitions under one of the group's partitioned tables (every level), with their parents.
  await client.query(`
    CREATE OR REPLACE FUNCTION ${partsFn}(root oid) RETURNS jsonb LANGUAGE sql STABLE ${secure} AS $f$
      SELECT coalesce(jsonb_agg(jsonb_build_object('oid', p.relid::oid::int8, 'parent', p.parentrelid::oid::int8)), '[]'::jsonb)
        FROM pg_partition_tree(root::regclass) p WHERE p.level > 0
    $f$`);
  // Rows of table \`src\` as transactional messages of up to ${ROWS_PER_MESSAGE} rows each, written to
  // (\`insert\`) or taken from (\`delete\`) table \`dst\`, in \`dst\`'s columns: each value in its
  // type's text form, as pgoutput sends it, whatever the DDL session's date and number styles
  // (money in the server's own lc_monetary, this session's: the walsender's).
  await client.query(`
    CREATE OR REPLACE FUNCTION ${rowsFn}(src oid, dst oid, action text) RETURNS void LANGUAGE plpgsql ${secure}
      SET datestyle = 'ISO, MDY' SET intervalstyle = 'postgres' SET timezone = 'UTC'
      SET extra_float_digits = 1 SET bytea_output = 'hex' SET lc_monetary FROM CURRENT AS $f$
    DECLARE
      names text[];
      types int8[];
      sch text;
      rel text;
      r jsonb;
      batch jsonb[] := '{}';
      head jsonb;
    BEGIN
      -- (A domain's values are its base type's.)
      SELECT array_agg(a.attname::text ORDER BY a.attnum),
             array_agg(${valueTypeSql('a.atttypid')}::int8 ORDER BY a.attnum)
        INTO names, types
        FROM pg_attribute a WHERE a.attrelid = dst AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
      SELECT n.nspname, c.relname INTO sch, rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = dst;
      head := jsonb_build_object('op', 'rows', 'action', action, 'schema', sch, 'name', rel,
                                 'names', to_jsonb(names), 'typeOids', to_jsonb(types));
      FOR r IN EXECUTE format('SELECT to_jsonb(ARRAY[%s]::text[]) FROM %s',
          -- (num_nulls, not IS NULL: a composite value whose fields are all NULL IS NULL too.)
          (SELECT string_agg(format('CASE WHEN num_nulls(%1$I) = 1 THEN NULL ELSE format(''%%s'', %1$I) END', x), ', ') FROM unnest(names) x),
          src::regclass) LOOP
        batch := batch || r;
        IF cardinality(batch) >= ${ROWS_PER_MESSAGE} THEN
          PERFORM ${emitFn}((head || jsonb_build_object('rows', to_jsonb(batch)))::text);
          batch := '{}';
        END IF;
      END LOOP;
      IF cardinality(batch) > 0 THEN
        PERFORM ${emitFn}((head || jsonb_build_object('rows', to_jsonb(batch)))::text);
      END IF;
    END $f$`);
  // TRUNCATE of a partition: pgoutput leaves it out when it publishes through the partitioned
  // table, so its rows go as deletes from it, before they are gone. The trigger is on every
  // table under the group's partitioned tables and on them; a TRUNCATE of a partitioned table
  // (replicated as such) fires it on each partition below too, after its own: each marks the
  // tables below it so that they do not send their rows again, in a transaction-local setting.
  const marked = (list: string) => `set_config(${truncSetting}, ${signed(list, truncSalt)}, true)`;
  await client.query(`
    CREATE OR REPLACE FUNCTION ${truncFn}() RETURNS trigger LANGUAGE plpgsql
      SECURITY DEFINER ${secure} AS $f$
    DECLARE
      done int8[] := coalesce(${verified(truncSetting, truncSalt)}::int8[], '{}');
      root oid := pg_partition_root(TG_RELID);
    BEGIN
      ${skipApply(group.name, ' NULL')}
      IF TG_RELID::int8 = ANY (done) THEN
        PERFORM ${marked('array_remove(done, TG_RELID::int8)::text')};
        RETURN NULL;
      END IF;
      PERFORM ${marked('(done || ARRAY(SELECT relid::oid::int8 FROM pg_partition_tree(TG_RELID::regclass) WHERE level > 0))::text')};
      IF root <> TG_RELID AND ${published('root')} THEN
        PERFORM ${rowsFn}(TG_RELID, root, 'delete');
      END IF;
      RETURN NULL;
    END $f$`);
  // Before an ALTER TABLE, DROP TABLE or DROP SCHEMA (no object is named at a command's start):
  // - the partitions of the group's partitioned tables, for its end to see which it attached or
  //   detached, and its drop which it drops;
  // - the files of the group's tables and of the partitions under its partitioned tables: an
  //   ALTER TABLE that rewrites one may have given its rows new values with no row change (a
  //   column added with a volatile default or as an identity, a type changed USING anything);
  // - their generated columns: one made plain (DROP EXPRESSION) holds values a backup that does
  //   not compute it (SQLite's) lacks, with no rewrite.
  // (The group's tables and the partitions under them, by oid; pg_partition_tree lists nothing
  // for a table that is not partitioned.)
  const groupFiles = `SELECT unnest(pr.prrelid || ARRAY(SELECT relid::oid FROM pg_partition_tree(pr.prrelid::regclass)))
               FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
              WHERE p.pubname = ${quoteLiteral(publication)}`;
  await client.query(`
    CREATE OR REPLACE FUNCTION ${startFn}() RETURNS event_trigger LANGUAGE plpgsql
      SECURITY DEFINER ${secure} AS $f$
    DECLARE note text;
    BEGIN
      ${skipApply(group.name, '')}
      note := (jsonb_build_object(
        'at', statement_timestamp()::text,
        'parts', coalesce((
          SELECT jsonb_object_agg(pr.prrelid::int8::text, ${partsFn}(pr.prrelid))
            FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid JOIN pg_class c ON c.oid = pr.prrelid
           WHERE p.pubname = ${quoteLiteral(publication)} AND c.relkind = 'p'), '{}'::jsonb),
        'files', coalesce((
          SELECT jsonb_object_agg(c.oid::int8::text, c.relfilenode::int8) FROM pg_class c
           WHERE c.relkind = 'r' AND c.oid IN (${groupFiles})), '{}'::jsonb),
        'generated', coalesce((
          SELECT jsonb_object_agg(a.attrelid::int8::text, a.names) FROM (
            SELECT attrelid, jsonb_agg(attname) AS names FROM pg_attribute
             WHERE attrelid IN (${groupFiles}) AND attgenerated <> '' AND NOT attisdropped GROUP BY attrelid) a), '{}'::jsonb))
        -- (GRANT and REVOKE name no object at their end: the privileges of the group's tables
        -- now, for the end to see which changed.)
        || CASE WHEN TG_TAG IN ('GRANT', 'REVOKE') THEN jsonb_build_object('privileges', (
             SELECT jsonb_object_agg(pr.prrelid::int8::text, ${PRIVILEGES_SQL('pr.prrelid')})
               FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
              WHERE p.pubname = ${quoteLiteral(publication)})) ELSE '{}'::jsonb END)::text;
      PERFORM set_config(${beforeSetting}, ${signed('note', "''")}, false);
    END $f$`);
  await client.query(`
    CREATE OR REPLACE FUNCTION ${fn}() RETURNS event_trigger LANGUAGE plpgsql
      SECURITY DEFINER ${secure} AS $f$
    DECLARE
      t oid;
      q text;
      sch text;
      rel text;
      persistence char;
      filled boolean;
      changed oid[];
      root oid;
      was jsonb;
      now jsonb;
      files jsonb;
      computed jsonb;
      privileges jsonb;
    BEGIN
      ${skipApply(group.name, '')}
      -- What the command's start noted, taken at once: the ALTER PUBLICATION below fires this
      -- function again, nested.
      SELECT b->'parts', b->'files', b->'generated', b->'privileges' INTO was, files, computed, privileges FROM ${noted} n(b);
      PERFORM set_config(${beforeSetting}, '', false);
      FOR t IN
        SELECT DISTINCT CASE d.object_type
                 WHEN 'index' THEN (SELECT indrelid FROM pg_index WHERE indexrelid = d.objid)
                 WHEN 'table constraint' THEN (SELECT conrelid FROM pg_constraint WHERE oid = d.objid)
                 ELSE d.objid END
          FROM pg_event_trigger_ddl_commands() d
         WHERE d.object_type IN ('table', 'table column', 'table constraint', 'index') AND d.schema_name <> 'tandem'
      LOOP
        SELECT ${qname}, n.nspname, c.relname, c.relpersistence INTO q, sch, rel, persistence
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = t AND c.relkind IN ('r', 'p') AND NOT c.relispartition;
        -- (A temporary table is its session's; an unlogged one's rows are not in the WAL.)
        CONTINUE WHEN q IS NULL OR persistence = 't' OR NOT q ~ ANY (${patternRegexes(group)});
        IF persistence = 'u' THEN
          IF ${published('t')} THEN
            RAISE EXCEPTION 'tandem: table % of group % cannot be unlogged: logical decoding does not see its rows', t::regclass, ${quoteLiteral(group.name)};
          END IF;
          RAISE WARNING 'tandem: table % is not replicated by group %: it is unlogged, and logical decoding does not see its rows', t::regclass, ${quoteLiteral(group.name)}
            USING HINT = format('ALTER TABLE %s SET LOGGED; it joins the group then', t::regclass);
          CONTINUE;
        END IF;
        IF ${dotted} THEN
          IF ${published('t')} THEN
            RAISE EXCEPTION 'tandem: table % of group % cannot be named so: %', t::regclass, ${quoteLiteral(group.name)}, ${dotHint}
              USING HINT = 'Choose a name without a dot';
          END IF;
          RAISE WARNING 'tandem: table % is not replicated by group %: %', t::regclass, ${quoteLiteral(group.name)}, ${dotHint}
            USING HINT = 'Rename it to replicate it';
          CONTINUE;
        END IF;
        IF NOT ${published('t')} THEN
          -- Without a key its rows could not be matched on the backup, and in the publication its
          -- updates and deletes would fail here: it joins once it has one.
          IF NOT ${keyed} THEN
            RAISE WARNING 'tandem: table % is not replicated by group %: it has no primary key (of plain columns: logical decoding sends no value of a generated one)',
              q, ${quoteLiteral(group.name)}
              USING HINT = format('Add one (ALTER TABLE %s ADD PRIMARY KEY (...)); the table joins the group then, with its rows', t::regclass);
            PERFORM ${emitFn}(jsonb_build_object('op', 'skipped', 'schema', sch, 'name', rel)::text);
            CONTINUE;
          END IF;
          PERFORM ${publishFn}(t, true);
          EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', t::regclass) INTO filled;
          PERFORM ${emitFn}((${defFn}(t) || jsonb_build_object('rowsBefore', filled))::text);
          -- Rows written before it joined (CREATE TABLE AS, a load before ADD PRIMARY KEY, as
          -- pg_restore does): sent after its definition, as for a detached partition that joins.
          IF filled THEN
            PERFORM ${rowsFn}(t, t, 'insert');
          END IF;
          CONTINUE;
        END IF;
        -- (As DROP CONSTRAINT of its key does: REPLICA IDENTITY DEFAULT without a primary key.)
        IF NOT ${keyed} THEN
          ${lostKey}
        END IF;
        -- A table the command rewrote (a plain one: every row of it follows, below) says so: a
        -- backup whose cast cannot give a column's new values empties it instead.
        PERFORM ${emitFn}((${defFn}(t) || CASE WHEN files->>(t::text) <> (SELECT relfilenode::text FROM pg_class WHERE oid = t AND relkind = 'r')
                                          THEN '{"rewritten": true}'::jsonb ELSE '{}'::jsonb END)::text);
      END LOOP;
      -- A schema of the group's tables renamed with a dot: their names would be other tables'.
      SELECT string_agg(c.oid::regclass::text, ', ') INTO q
        FROM pg_event_trigger_ddl_commands() d JOIN pg_class c ON c.relnamespace = d.objid
       WHERE d.object_type = 'schema' AND strpos(d.object_identity, '.') > 0 AND ${published('c.oid')};
      IF q IS NOT NULL THEN
        RAISE EXCEPTION 'tandem: the tables % of group % cannot be named so: %', q, ${quoteLiteral(group.name)}, ${dotHint}
          USING HINT = 'Choose a schema name without a dot';
      END IF;
      -- A schema of the group's tables renamed: their definitions under their new names (the
      -- backup moves its tables, known by their ids).
      FOR t, q IN
        SELECT c.oid, ${qname} FROM pg_event_trigger_ddl_commands() d
          JOIN pg_namespace n ON n.oid = d.objid JOIN pg_class c ON c.relnamespace = n.oid
         WHERE d.object_type = 'schema' AND d.command_tag = 'ALTER SCHEMA' AND ${published('c.oid')}
      LOOP
        CONTINUE WHEN NOT q ~ ANY (${patternRegexes(group)});
        PERFORM ${emitFn}(${defFn}(t)::text);
      END LOOP;
      -- A type or domain changed (ALTER TYPE ... ADD VALUE, ALTER DOMAIN, ...): the definitions of
      -- the group's tables that use it, which carry the types (the backup changes its own).
      -- A composite type's attributes are a pg_class row's: its type is the row's reltype.
      changed := ARRAY(SELECT CASE WHEN d.classid = 'pg_class'::regclass THEN (SELECT reltype FROM pg_class WHERE oid = d.objid)
                                   ELSE d.objid END
                         FROM pg_event_trigger_ddl_commands() d
                        WHERE d.command_tag IN ('ALTER TYPE', 'ALTER DOMAIN'));
      IF cardinality(changed) > 0 THEN
        FOR t IN
          SELECT pr.prrelid FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
           WHERE p.pubname = ${quoteLiteral(publication)} AND ${usesTypesSql('pr.prrelid', 'changed')}
        LOOP
          PERFORM ${emitFn}(${defFn}(t)::text);
        END LOOP;
      END IF;
      -- Privileges granted or revoked (GRANT and REVOKE name no object to this trigger): the
      -- definitions of the group's tables whose privileges, or their sequences', changed.
      IF privileges IS NOT NULL THEN
        FOR t IN
          SELECT pr.prrelid FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
           WHERE p.pubname = ${quoteLiteral(publication)}
             AND privileges->(pr.prrelid::text) IS DISTINCT FROM ${PRIVILEGES_SQL('pr.prrelid')}
        LOOP
          PERFORM ${emitFn}(${defFn}(t)::text);
        END LOOP;
      END IF;
      -- Tables the command rewrote, or whose generated columns it made plain: their rows, after
      -- their new definition, as upserts.
      FOR t, root IN
        SELECT c.oid, CASE WHEN c.relispartition THEN pg_partition_root(c.oid) ELSE c.oid END
          FROM jsonb_each_text(coalesce(files, '{}'::jsonb)) f JOIN pg_class c ON c.oid = f.key::oid
         WHERE c.relfilenode::text <> f.value
            OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(computed->(c.oid::text)) x(name)
                         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = x.name
                        WHERE a.attgenerated = '' AND NOT a.attisdropped)
      LOOP
        PERFORM ${rowsFn}(t, root, 'insert');
      END LOOP;
      -- Partitions an ALTER TABLE attached or detached (ATTACH / DETACH PARTITION): their rows
      -- enter or leave the group's partitioned table without a row change in the WAL, so they go
      -- as messages of rows. Only the topmost of a subtree: its rows are the whole subtree's.
      FOR root IN SELECT key::oid FROM jsonb_each(coalesce(was, '{}'::jsonb)) LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = root AND relkind = 'p');
        now := ${partsFn}(root);
        FOR t IN
          SELECT (x->>'oid')::oid FROM jsonb_array_elements(now) x
           WHERE NOT jsonb_path_exists(was->(root::text), '$[*] ? (@.oid == $o)', jsonb_build_object('o', x->'oid'))
             AND ((x->>'parent')::oid = root OR jsonb_path_exists(was->(root::text), '$[*] ? (@.oid == $o)', jsonb_build_object('o', x->'parent')))
        LOOP
          PERFORM ${rowsFn}(t, root, 'insert');
          -- A table of the group until now: the backup drops its copy (its rows are the root's
          -- now). Another is no longer one the group leaves out for want of a key.
          IF ${published('t')} THEN
            PERFORM ${publishFn}(t, false);
          END IF;
          SELECT ${qname}, n.nspname, c.relname INTO q, sch, rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.oid = t;
          IF q ~ ANY (${patternRegexes(group)}) AND NOT ${dotted} THEN
            PERFORM ${emitFn}(jsonb_build_object('op', 'drop', 'schema', sch, 'name', rel)::text);
          END IF;
        END LOOP;
        FOR t IN
          SELECT (x->>'oid')::oid FROM jsonb_array_elements(was->(root::text)) x
           WHERE NOT jsonb_path_exists(now, '$[*] ? (@.oid == $o)', jsonb_build_object('o', x->'oid'))
             AND ((x->>'parent')::oid = root OR jsonb_path_exists(now, '$[*] ? (@.oid == $o)', jsonb_build_object('o', x->'parent')))
             AND EXISTS (SELECT 1 FROM pg_class WHERE oid = (x->>'oid')::oid)
        LOOP
          -- The detached table joins the group as a table of its own when the patterns match it.
          SELECT ${qname} INTO q FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.oid = t AND ${USER_TABLES_WHERE};
          IF q IS NOT NULL AND q ~ ANY (${patternRegexes(group)}) AND ${keyed} THEN
            PERFORM ${publishFn}(t, true);
            PERFORM ${emitFn}(${defFn}(t)::text);
            PERFORM ${rowsFn}(t, t, 'insert');
          END IF;
          PERFORM ${rowsFn}(t, root, 'delete');
        END LOOP;
      END LOOP;
      -- New partitions (created or attached) and partitioned tables get the TRUNCATE trigger.
      -- Each CREATE TRIGGER fires this function again, which makes none (no CREATE TRIGGER
      -- makes a partition).
      IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE command_tag <> 'CREATE TRIGGER') THEN
        FOR t IN ${untriggered} LOOP
          EXECUTE format('CREATE OR REPLACE TRIGGER ${truncTrigger} BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION ${truncFn}()', t::regclass);
        END LOOP;
      END IF;
    END $f$`);
  await client.query(`
    CREATE OR REPLACE FUNCTION ${dropFn}() RETURNS event_trigger LANGUAGE plpgsql
      SECURITY DEFINER ${secure} AS $f$
    DECLARE r record; t oid; q text;
    BEGIN
      ${skipApply(group.name, '')}
      -- A partition's rows go with it, and no row change says so: refused, unless its
      -- partitioned table goes too.
      SELECT d.object_identity INTO q
        FROM pg_event_trigger_dropped_objects() d,
             jsonb_each(coalesce((SELECT b->'parts' FROM ${noted} n(b)), '{}'::jsonb)) w
       WHERE d.object_type = 'table' AND jsonb_path_exists(w.value, '$[*] ? (@.oid == $o)', jsonb_build_object('o', d.objid::int8))
         AND NOT EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() x WHERE x.objid = w.key::oid)
       LIMIT 1;
      IF q IS NOT NULL THEN
        RAISE EXCEPTION 'tandem: dropping partition % is not followed by group %: its rows would stay on the backups', q, ${quoteLiteral(group.name)}
          USING HINT = 'Detach it first (ALTER TABLE ... DETACH PARTITION ...; Tandem moves its rows out of the partitioned table on the backups), then drop it';
      END IF;
      -- First the tables that lost a constraint, a column or an index but stay (a DROP TABLE ...
      -- CASCADE takes the foreign keys of other tables with it: the backup must drop them before
      -- the table they reference; a DROP TYPE ... CASCADE takes the columns of that type, with
      -- no ALTER TABLE to report it). A constraint or column names its table; an index does not,
      -- so a DROP INDEX re-emits the group's tables in its schema (the backup skips unchanged
      -- definitions).
      FOR t IN
        SELECT to_regclass(quote_ident(d.address_names[1]) || '.' || quote_ident(d.address_names[2]))::oid
          FROM pg_event_trigger_dropped_objects() d
         WHERE d.object_type IN ('table constraint', 'table column', 'default value') AND NOT d.is_temporary
        UNION
        SELECT c.oid FROM pg_event_trigger_dropped_objects() d
          JOIN pg_namespace n ON n.nspname = d.schema_name
          JOIN pg_class c ON c.relnamespace = n.oid
         WHERE d.object_type = 'index' AND NOT d.is_temporary
           AND NOT EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() x WHERE x.object_type = 'table')
      LOOP
        CONTINUE WHEN t IS NULL OR NOT ${published('t')};
        SELECT ${qname} INTO q FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t;
        IF NOT ${keyed} THEN
          ${lostKey}
        END IF;
        PERFORM ${emitFn}(${defFn}(t)::text);
      END LOOP;
      FOR r IN SELECT * FROM pg_event_trigger_dropped_objects()
                WHERE object_type = 'table' AND NOT is_temporary AND strpos(schema_name, '.') = 0 AND strpos(object_name, '.') = 0 LOOP
        CONTINUE WHEN NOT (CASE WHEN r.schema_name = 'public' THEN r.object_name ELSE r.schema_name || '.' || r.object_name END) ~ ANY (${patternRegexes(group)});
        PERFORM ${emitFn}(jsonb_build_object('op', 'drop', 'schema', r.schema_name, 'name', r.object_name)::text);
      END LOOP;
      -- Sequences, after the tables whose defaults they took with them (DROP SEQUENCE ...
      -- CASCADE, above): capture keeps those whose values it sends.
      FOR r IN SELECT * FROM pg_event_trigger_dropped_objects()
                WHERE object_type = 'sequence' AND NOT is_temporary AND strpos(schema_name, '.') = 0 AND strpos(object_name, '.') = 0 LOOP
        PERFORM ${emitFn}(jsonb_build_object('op', 'drop', 'kind', 'sequence', 'schema', r.schema_name, 'name', r.object_name)::text);
      END LOOP;
    END $f$`);
  const missing = await client.query<{ t: string }>(
    `SELECT relid::regclass::text AS t FROM (${untriggered}) x(relid)`,
  );
  for (const { t } of missing.rows)
    await client.query(
      `CREATE OR REPLACE TRIGGER ${truncTrigger} BEFORE TRUNCATE ON ${t} FOR EACH STATEMENT EXECUTE FUNCTION ${truncFn}()`,
    );
  for (const [name, event, f, when] of [
    [`tandem_ddl_${g}`, 'ddl_command_end', fn, ''],
    [`tandem_ddl_drop_${g}`, 'sql_drop', dropFn, ''],
    [
      `tandem_ddl_start_${g}`,
      'ddl_command_start',
      startFn,
      " WHEN TAG IN ('ALTER TABLE', 'DROP TABLE', 'DROP SCHEMA', 'GRANT', 'REVOKE')",
    ],
  ] as const) {
    await client.query(`DROP EVENT TRIGGER IF EXISTS ${quoteIdent(name)}`);
    await client.query(`CREATE EVENT TRIGGER ${quoteIdent(name)} ON ${event}${when} EXECUTE FUNCTION ${f}()`);
  }
  // Only triggers call these (which need no EXECUTE right), and the functions they call run as
  // their owner: no other role calls any of them.
  const signatures = [
    `${fn}()`,
    `${dropFn}()`,
    `${startFn}()`,
    `${truncFn}()`,
    `${rowsFn}(oid, oid, text)`,
    `${publishFn}(oid, boolean)`,
    `${partsFn}(oid)`,
    `${defFn}(oid)`,
    `${macFn}(text)`,
    `${emitFn}(text)`,
    ...printers.map(([head]) => head),
  ];
  await client.query(`REVOKE EXECUTE ON FUNCTION ${signatures.join(', ')} FROM PUBLIC`);
  const stored = await client.query<{ ipad: Buffer; since: string }>(
    `UPDATE tandem.ddl_keys SET since = coalesce(since, pg_current_wal_lsn()) WHERE grp = $1
     RETURNING ipad, since::text`,
    [group.name],
  );
  const row = stored.rows[0]!;
  return { key: Buffer.from(row.ipad.map((b) => b ^ 0x36)), since: parseLsn(row.since) };
}

/**
 * Why the group's event trigger may not run as a superuser here, or null. Its functions call
 * Tandem's others in schema tandem: a role that owns that schema could drop one and put its own
 * in its place, which would then run as the superuser.
 */
export async function ddlSchemaProblem(client: pg.Client): Promise<string | null> {
  const r = await client.query<{ owner: string; me: string }>(
    `SELECT nspowner::regrole::text AS owner, quote_ident(current_user) AS me
       FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
      WHERE n.nspname = 'tandem' AND NOT r.rolsuper`,
  );
  const row = r.rows[0];
  if (!row) return null;
  return `schema tandem belongs to ${row.owner}, who is not a superuser and could replace the functions there that the event trigger runs as a superuser. Run ALTER SCHEMA tandem OWNER TO ${row.me}; then restart the node`;
}

/**
 * Disables the group's event triggers in a database that stops being a primary's (their
 * functions stay): a backup's tables change only by its apply, and manual DDL there must not
 * report into its old publication. installDdlCapture makes them anew when it is a primary again.
 * Only a superuser may (the one that made them); another role leaves them as they are.
 */
export async function disableDdlCapture(client: pg.Client, group: string): Promise<void> {
  const g = ident(group);
  const r = await client.query<{ name: string }>(
    `SELECT evtname AS name FROM pg_event_trigger WHERE evtname = ANY ($1) AND evtenabled <> $2
        AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)`,
    [[`tandem_ddl_${g}`, `tandem_ddl_drop_${g}`, `tandem_ddl_start_${g}`], 'D'],
  );
  for (const { name } of r.rows) await client.query(`ALTER EVENT TRIGGER ${quoteIdent(name)} DISABLE`);
}
