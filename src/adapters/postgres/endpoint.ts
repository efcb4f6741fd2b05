/**
 * Connecting to a PostgreSQL endpoint, and checking before anything starts that it can play its
 * part: a source needs logical decoding (wal_level, a role allowed to replicate, a free slot and
 * WAL sender, its own slot in this database), the right to create what capture creates (schema
 * tandem, the publication of tables it owns) and a row identity on every replicated table; a
 * target needs a schema to create tables in. Every problem comes with the statement a DBA would
 * run to fix it, and all of them are reported at once, so one round of fixes is enough.
 *
 * Messages name the endpoint by its config field and by host, port, database and user: never by
 * its URL, and never with a password.
 */
import pg from 'pg';
import { toClientConfig } from 'pg-connection-string';
import { readPgUrl, tableMatches } from '../../config/index.js';
import { TandemError } from '../../core/errors.js';
import { fenceFunction, fenceName } from './fence.js';
import {
  LEFT_OUT_TABLES_WHERE,
  publicationName,
  qualifiedName,
  splitName,
  USER_TABLES_WHERE,
} from './schema.js';
import { usedTypesSql } from './user-types.js';

export interface PgPrereqOptions {
  url: string;
  /** The endpoint's config field (`groups.shop.endpoints.east`); every message starts with it. */
  field: string;
  role: 'source' | 'target';
  /** The group's table patterns (globs, see tableMatches). */
  tables: readonly string[];
  /** The group's configured keys, by table name as matched (`log`, `audit.events`). */
  keys: Readonly<Record<string, readonly string[]>>;
  group: string;
  /** A source's replication slot when it already exists (a restart): it needs no free slot. */
  slot?: string;
  /** What to do once the problems are fixed (default: start again). */
  after?: string;
}

export interface PgProblem {
  what: string;
  fix: string;
}

export interface PgCheckResult {
  /** What prevents the endpoint from playing its role; checkPostgres throws when there are any. */
  problems: PgProblem[];
  /** What works now but is risky; never refused. */
  warnings: PgProblem[];
  /** The tables matching the group's patterns: `schema.table`, or `table` in schema public. */
  tables: string[];
  /** server_version_num, such as 150018. */
  serverVersion: number;
}

/**
 * PostgreSQL 14: the fence's and a virtual switch's triggers are made with CREATE OR REPLACE
 * TRIGGER (14), after logical replication with pgoutput (10) and EXECUTE FUNCTION (11). Tested
 * on 15.
 */
const MIN_SERVER_VERSION = 140_000;

/** The search_path of every session of Tandem's (pgClientConfig). */
const SEARCH_PATH = '-c search_path=public';

/** How long connecting may take when the URL sets no connect_timeout. */
const DEFAULT_CONNECT_TIMEOUT_S = 10;

/**
 * A pg client config for a `postgres://` URL, read as the driver and psql read it (`readPgUrl`):
 * sslmode `require` encrypts without verifying the certificate, `verify-full` verifies it. Host,
 * port, user and database left out of the URL come from PGHOST, PGPORT, ... and the password
 * from PGPASSWORD or ~/.pgpass, as for libpq. `connect_timeout` (seconds) applies, 10 s when not
 * given.
 */
export function pgClientConfig(url: string): pg.ClientConfig {
  const parsed = readPgUrl(url);
  const given = Number(parsed.connect_timeout);
  // 0 waits forever, in libpq and in pg alike.
  const seconds = Number.isFinite(given) && given >= 0 ? given : DEFAULT_CONNECT_TIMEOUT_S;
  const config = toClientConfig(parsed);
  return {
    fallback_application_name: 'tandem',
    ...config,
    // Names are read and written relative to schema public alone, on both sides: the default
    // path starts with "$user", a schema named after the role, which anyone who may create a
    // schema could make (and have replicated), so that an unqualified type, function or table
    // in a definition would be its on the backup. Last, so that it wins over the URL's options.
    options: [config.options, SEARCH_PATH].filter((x) => x).join(' '),
    connectionTimeoutMillis: seconds * 1000,
  };
}

/** `host:port/database as user`, after pg filled in what the URL left out. */
function describe(client: pg.Client): string {
  return `${client.host}:${client.port}/${client.database} as ${client.user}`;
}

/** An identifier as a DBA types it: bare when it is a plain lower-case name, quoted otherwise. */
function ident(name: string | undefined): string {
  const text = name ?? '';
  return /^[a-z_][a-z0-9_]*$/.test(text) ? text : `"${text.replaceAll('"', '""')}"`;
}

/** Why a connection failed, in words, and what to do, from the driver's or the server's error. */
function connectFailure(err: unknown, client: pg.Client, field: string): PgProblem {
  const { code, message } = err as { code?: string; message?: string };
  const user = ident(client.user);
  if (client.host.startsWith('/') && (code === 'ENOENT' || code === 'ECONNREFUSED')) {
    return {
      what: `no server listens on the Unix socket ${client.host}/.s.PGSQL.${client.port} (${code})`,
      fix: `Start PostgreSQL, or correct the socket folder (host) and port in ${field}; the server makes its socket in each folder of unix_socket_directories in postgresql.conf`,
    };
  }
  // Node's names for a certificate that does not chain to a trusted CA.
  if (
    /^(SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_UNTRUSTED)$/.test(
      code ?? '',
    )
  ) {
    return {
      what: `the server's TLS certificate is not signed by a CA this node trusts (${code}: ${message})`,
      fix: `Give the CA that signed the server's certificate as sslrootcert=/path/to/ca.pem in ${field} (a file on this node), or sslmode=require to encrypt without verifying the server`,
    };
  }
  switch (code) {
    case 'ECONNREFUSED':
      return {
        what: 'the connection was refused (ECONNREFUSED): no server listens there',
        fix: `Start PostgreSQL, or correct the host and port in ${field}; the server must listen on that address (listen_addresses and port in postgresql.conf)`,
      };
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return {
        what: `the host name ${client.host} does not resolve (${code})`,
        fix: `Correct the host in ${field}`,
      };
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return {
        what: `the server cannot be reached (${code})`,
        fix: 'Check the host and port, and that no firewall blocks this node from the server',
      };
    case '28P01':
      return {
        what: `the server refused the password (${message})`,
        fix: `Give ${user}'s password in PGPASSWORD or ~/.pgpass on this node (never in tandem.yaml), or set a new one: ALTER ROLE ${user} PASSWORD '...';`,
      };
    case '28000':
      return /role .* does not exist/.test(message ?? '')
        ? {
            what: `the role ${user} does not exist`,
            fix: `Run CREATE ROLE ${user} LOGIN; as a superuser, or correct the user in ${field}`,
          }
        : {
            what: `the server does not let this user in (${message})`,
            fix: `Add a line for ${user} from this node to pg_hba.conf (host ${ident(client.database)} ${user} <this node's address>/32 scram-sha-256), then SELECT pg_reload_conf();`,
          };
    case '3D000':
      return {
        what: `the database ${ident(client.database)} does not exist`,
        fix: `Run CREATE DATABASE ${ident(client.database)}; or correct the database in ${field}`,
      };
    case '57P03':
      return {
        what: `the server is not accepting connections now (${message})`,
        fix: 'Wait until it has started (or finished recovery), then start again',
      };
    case '53300':
      // A replication connection (a seed's snapshot) is refused when every WAL sender is taken.
      if (/max_wal_senders/.test(message ?? ''))
        return {
          what: `no WAL sender is free (${message})`,
          fix: 'Raise max_wal_senders by one (ALTER SYSTEM SET max_wal_senders = ...; then restart PostgreSQL): a seed takes one more than streaming while its snapshot is taken',
        };
      return {
        what: 'the server has no free connection (max_connections reached)',
        fix: 'Close idle connections, or raise max_connections (ALTER SYSTEM SET max_connections = ...; then restart PostgreSQL)',
      };
  }
  if (/password must be a/.test(message ?? '')) {
    return {
      what: `the server asks for ${user}'s password and none is given`,
      fix: `Give it in PGPASSWORD or ~/.pgpass on this node (never in tandem.yaml)`,
    };
  }
  if (/does not support SSL/.test(message ?? '')) {
    return {
      what: 'the URL asks for SSL and the server does not offer it',
      fix: `Turn on ssl in postgresql.conf, or remove sslmode from ${field} (sslmode=disable)`,
    };
  }
  if (/timeout/i.test(message ?? '')) {
    return {
      what: 'the server did not answer in time',
      fix: 'Check the host and port, and that no firewall blocks this node from the server (connect_timeout in the URL sets the wait, in seconds)',
    };
  }
  return {
    what: message || code || String(err),
    fix: `Check the URL in ${field} and that the server accepts connections from this node`,
  };
}

/**
 * Ends a client, dropping its socket if the server does not let go within `graceMs`: a backend
 * blocked on a lock, or in the middle of a COPY nobody reads, never reads the goodbye. Its
 * transaction rolls back when the backend finds the socket gone.
 */
export async function closeClient(c: pg.Client, graceMs = 1000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((r) => {
    timer = setTimeout(() => r('late'), graceMs);
  });
  const ended = c.end().then(
    () => 'ended' as const,
    () => 'ended' as const,
  );
  if ((await Promise.race([ended, late])) === 'late') {
    (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
  }
  clearTimeout(timer);
}

/**
 * A connected client, or ENDPOINT_UNAVAILABLE naming the field, where it tried, why it failed and
 * what to do. The caller ends the client. `extra` adds to the URL's settings (`replication:
 * 'database'` for a walsender connection).
 */
export async function connectPostgres(
  url: string,
  field: string,
  extra: pg.ClientConfig = {},
): Promise<pg.Client> {
  let client: pg.Client;
  try {
    client = new pg.Client({ ...pgClientConfig(url), ...extra });
  } catch (err) {
    throw new TandemError(
      'ENDPOINT_UNAVAILABLE',
      `${field}: the PostgreSQL URL cannot be used: ${(err as Error).message}`,
      `Correct the URL in ${field} (postgres://USER@HOST:PORT/DB, options such as ?sslmode=require)`,
      { cause: err },
    );
  }
  // An idle client reports a lost connection only as an 'error' event, which would otherwise
  // crash the process; failures of queries in flight still reach their callers.
  client.on('error', () => {});
  try {
    await client.connect();
    return client;
  } catch (err) {
    await client.end().catch(() => {});
    const { what, fix } = connectFailure(err, client, field);
    throw new TandemError(
      'ENDPOINT_UNAVAILABLE',
      `${field}: cannot connect to PostgreSQL at ${describe(client)}: ${what}`,
      fix,
      { cause: err },
    );
  }
}

interface ServerRow {
  version: number;
  wal_level: string;
  max_slots: number;
  used_slots: number;
  slot_names: string[];
  has_slot: boolean;
  /** The database the group's slot was made in (null: no such slot, or a physical one). */
  slot_database: string | null;
  /** The process streaming from the group's slot now, if any. */
  slot_pid: number | null;
  max_senders: number;
  used_senders: number;
  keep_size: string | null;
  superuser: boolean;
  replication: boolean;
  user_ident: string;
  db_name: string;
  db_ident: string;
  /** CREATE on this database: CREATE SCHEMA tandem (even IF NOT EXISTS) and CREATE PUBLICATION. */
  can_create_db: boolean;
  /** USAGE and CREATE on schema tandem when it exists (null: it does not): the fence function is made there. */
  can_create_tandem: boolean | null;
  /** Whether the role owns (or has the privileges of the owner of) the group's publication; null: none yet. */
  owns_publication: boolean | null;
  publication_owner: string | null;
  /** The same for the group's fence function (CREATE OR REPLACE needs its owner); null: none yet. */
  owns_fence: boolean | null;
  fence_owner: string | null;
  /**
   * Tables in schema tandem of other roles (an earlier start as another role), `tandem.t (owner)`;
   * not ddl_keys, which only a superuser's start makes and reads (ddl.ts).
   */
  foreign_tandem_tables: string[];
}

// $1 the group's slot, $2 its publication, $3 its fence function's name in schema tandem (read
// from the catalog: to_regprocedure fails on a schema the role may not use). pg_has_role(...,
// 'USAGE') is what PostgreSQL's ownership checks ask: the owner, a member that inherits its
// privileges, or a superuser.
const SERVER_SQL = `
SELECT current_setting('server_version_num')::int AS version,
       current_setting('wal_level') AS wal_level,
       current_setting('max_replication_slots')::int AS max_slots,
       (SELECT count(*)::int FROM pg_replication_slots) AS used_slots,
       ARRAY(SELECT slot_name::text FROM pg_replication_slots ORDER BY 1) AS slot_names,
       EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1) AS has_slot,
       (SELECT database::text FROM pg_replication_slots WHERE slot_name = $1) AS slot_database,
       (SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1) AS slot_pid,
       current_setting('max_wal_senders')::int AS max_senders,
       (SELECT count(*)::int FROM pg_stat_replication) AS used_senders,
       current_setting('max_slot_wal_keep_size', true) AS keep_size,
       r.rolsuper AS superuser,
       r.rolreplication AS replication,
       quote_ident(current_user) AS user_ident,
       current_database()::text AS db_name,
       quote_ident(current_database()) AS db_ident,
       has_database_privilege(current_database(), 'CREATE') AS can_create_db,
       (SELECT has_schema_privilege(oid, 'CREATE') AND has_schema_privilege(oid, 'USAGE')
          FROM pg_namespace WHERE nspname = 'tandem') AS can_create_tandem,
       (SELECT pg_has_role(pubowner, 'USAGE') FROM pg_publication WHERE pubname = $2) AS owns_publication,
       (SELECT pubowner::regrole::text FROM pg_publication WHERE pubname = $2) AS publication_owner,
       (SELECT pg_has_role(p.proowner, 'USAGE') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'tandem' AND p.proname = $3 AND p.pronargs = 0) AS owns_fence,
       (SELECT p.proowner::regrole::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'tandem' AND p.proname = $3 AND p.pronargs = 0) AS fence_owner,
       ARRAY(SELECT 'tandem.' || quote_ident(c.relname) || ' (owner ' || c.relowner::regrole::text || ')'
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'tandem' AND c.relkind IN ('r', 'p') AND NOT pg_has_role(c.relowner, 'USAGE')
                AND c.relname <> 'ddl_keys'
              ORDER BY c.relname) AS foreign_tandem_tables
  FROM pg_roles r
 WHERE r.rolname = current_user`;

interface TableRow {
  oid: string;
  schema: string;
  name: string;
  /** quote_ident'ed, schema-qualified unless in public: as a DBA would type it. */
  ident: string;
  /** pg_class.relreplident: d(efault: the primary key), f(ull), i(ndex), n(othing). */
  identity: 'd' | 'f' | 'i' | 'n';
  columns: string[];
  /** Its generated columns: logical decoding sends none of their values. */
  generated: string[];
  primary_key: string[];
  identity_index: string[];
  readable: boolean;
  /** The role owns the table, or has its owner's privileges: CREATE / ALTER PUBLICATION need it. */
  owned: boolean;
  /** The owner as a DBA types it, and whether it is a superuser. */
  owner: string;
  owner_super: boolean;
  /** A partitioned table, and its partition key's columns (its primary key must include them). */
  partitioned: boolean;
  partition_key: string[];
  /** The best unique index on NOT NULL columns, or null: what a primary key could be made of. */
  unique_key: UniqueKey | null;
}

interface UniqueKey {
  /** quote_ident'ed index name. */
  index: string;
  columns: string[];
  /** `ADD PRIMARY KEY USING INDEX` takes it: a plain btree index of no constraint (see UNIQUE_KEY). */
  usable: boolean;
}

/** The columns of an index of table `c`, in key order. */
const indexColumns = (which: string) => `
  ARRAY(SELECT a.attname::text
          FROM pg_index i
         CROSS JOIN unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid AND i.${which}
         ORDER BY k.ord)`;

/**
 * The unique index of table `c` whose key columns are all NOT NULL (not partial, not on
 * expressions): a primary key can be made of its columns. Fewest columns first. `usable`: ALTER
 * TABLE ... ADD PRIMARY KEY USING INDEX takes it as it is (PostgreSQL's transformIndexConstraint:
 * a valid btree index of an ordinary table, of no constraint, without INCLUDE columns, each
 * column with its default operator class, collation and ordering).
 */
const UNIQUE_KEY = `
  (SELECT json_build_object('index', quote_ident(ic.relname), 'columns', u.columns, 'usable', u.usable)
     FROM pg_index i
     JOIN pg_class ic ON ic.oid = i.indexrelid
     JOIN pg_am am ON am.oid = ic.relam
    CROSS JOIN LATERAL (
      SELECT ARRAY(SELECT a.attname::text
                     FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                    WHERE k.ord <= i.indnkeyatts ORDER BY k.ord) AS columns,
             c.relkind = 'r' AND am.amname = 'btree' AND i.indnatts = i.indnkeyatts
               AND NOT EXISTS (SELECT 1 FROM pg_constraint x WHERE x.conindid = i.indexrelid)
               AND NOT EXISTS (
                 SELECT 1
                   FROM unnest(i.indkey::int2[], i.indclass::oid[], i.indcollation::oid[], i.indoption::int2[])
                        AS k(attnum, opclass, coll, opt)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   JOIN pg_opclass oc ON oc.oid = k.opclass
                  WHERE k.opt <> 0 OR NOT oc.opcdefault OR k.coll <> a.attcollation) AS usable) u
    WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
      AND i.indpred IS NULL AND i.indexprs IS NULL
      AND NOT EXISTS (SELECT 1
                        FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                       WHERE k.ord <= i.indnkeyatts AND (NOT a.attnotnull OR a.attgenerated <> ''))
    ORDER BY i.indnkeyatts, u.usable DESC, ic.relname
    LIMIT 1)`;

/** User tables (USER_TABLES_WHERE) with what the checks need. */
const TABLES_SQL = `
SELECT n.nspname::text AS schema,
       c.relname::text AS name,
       c.oid::int8::text AS oid,
       CASE WHEN n.nspname = 'public' THEN quote_ident(c.relname)
            ELSE quote_ident(n.nspname) || '.' || quote_ident(c.relname) END AS ident,
       c.relreplident AS identity,
       ARRAY(SELECT attname::text FROM pg_attribute
              WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum) AS columns,
       ARRAY(SELECT attname::text FROM pg_attribute
              WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped AND attgenerated <> '' ORDER BY attnum) AS generated,
       ${indexColumns('indisprimary')} AS primary_key,
       ${indexColumns('indisreplident')} AS identity_index,
       has_table_privilege(c.oid, 'SELECT') AS readable,
       pg_has_role(c.relowner, 'USAGE') AS owned,
       c.relowner::regrole::text AS owner,
       (SELECT rolsuper FROM pg_roles WHERE oid = c.relowner) AS owner_super,
       c.relkind = 'p' AS partitioned,
       ARRAY(SELECT a.attname::text
               FROM pg_partitioned_table p
              CROSS JOIN unnest(p.partattrs::int2[]) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.attnum
              WHERE p.partrelid = c.oid ORDER BY k.ord) AS partition_key,
       ${UNIQUE_KEY} AS unique_key
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE ${USER_TABLES_WHERE}
 ORDER BY 1, 2`;

const TARGET_SQL = `
SELECT quote_ident(current_user) AS user_ident,
       quote_ident(current_database()) AS db_ident,
       (SELECT has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = 'public') AS can_create`;

/** What the server must allow for logical decoding from this user. */
function sourceServerProblems(s: ServerRow, o: PgPrereqOptions, out: PgCheckResult): void {
  const restart = 'then restart PostgreSQL';
  if (s.wal_level !== 'logical') {
    out.problems.push({
      what: `wal_level is ${s.wal_level}, and logical decoding needs logical`,
      fix: `Run ALTER SYSTEM SET wal_level = logical; as a superuser, ${restart}`,
    });
  }
  if (!s.superuser && !s.replication) {
    out.problems.push({
      what: `the role ${s.user_ident} may not replicate (it has neither REPLICATION nor SUPERUSER)`,
      fix: `Run ALTER ROLE ${s.user_ident} REPLICATION; as a superuser`,
    });
  }
  if (o.slot && s.has_slot && s.slot_database !== s.db_name) out.problems.push(foreignSlot(s, o, o.slot));
  if (!s.has_slot && s.used_slots >= s.max_slots) {
    const names = s.slot_names.length > 0 ? `, used by ${s.slot_names.join(', ')}` : '';
    out.problems.push({
      what: `no replication slot is free (max_replication_slots = ${s.max_slots}${names})`,
      fix: `Run ALTER SYSTEM SET max_replication_slots = ${s.used_slots + 1}; as a superuser, ${restart} (or drop a slot nobody uses: SELECT pg_drop_replication_slot('name');)`,
    });
  }
  if (s.used_senders >= s.max_senders) {
    out.problems.push({
      what: `no WAL sender is free (max_wal_senders = ${s.max_senders}, ${s.used_senders} in use)`,
      fix: `Run ALTER SYSTEM SET max_wal_senders = ${s.used_senders + 1}; as a superuser, ${restart}`,
    });
  }
  if (s.keep_size === '-1') {
    out.warnings.push({
      what: 'max_slot_wal_keep_size is -1 (unlimited): while Tandem is stopped its slot keeps all WAL, until the disk is full',
      fix: "Cap it: ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'; SELECT pg_reload_conf(); (a slot that falls further behind is invalidated and the backup seeded again)",
    });
  }
}

/**
 * The group's slot exists, but not as this database's logical slot: in another database (the
 * endpoint named another database when it was made) a logical slot cannot be read from here,
 * and the stream would fail at every restart. Its changes are in this node's journal, so the
 * backups must be seeded again once it is dropped (capture.ts refuses a journal whose slot is
 * gone).
 */
function foreignSlot(s: ServerRow, o: PgPrereqOptions, slot: string): PgProblem {
  const busy = s.slot_pid === null ? '' : ` (process ${s.slot_pid} streams from it now: stop that first)`;
  if (s.slot_database === null) {
    return {
      what: `a physical replication slot named ${slot} exists, and this node's logical slot needs that name`,
      fix: `If no standby uses it, run SELECT pg_drop_replication_slot('${slot}');${busy}`,
    };
  }
  const there = ident(s.slot_database);
  return {
    what: `replication slot ${slot} (this node's) was made in database ${there}, and ${o.field} now names database ${s.db_ident}: a logical slot reads only the database it was made in`,
    fix: `Connected to database ${there}, run SELECT pg_drop_replication_slot('${slot}');${busy} (or point ${o.field} back at ${there}). This node's journal holds ${there}'s changes, so the backups must then be reseeded: stop the nodes, delete the state folders of this node and its backups, and start them again`,
  };
}

/**
 * What capture creates and changes as this role at every start: schema tandem (CREATE SCHEMA IF
 * NOT EXISTS still needs CREATE on the database), the group's fence function in it (CREATE OR
 * REPLACE: its owner), and the publication (CREATE PUBLICATION: CREATE on the database and
 * owning every table it lists; ALTER PUBLICATION: owning the publication and every table it
 * lists). "Owning" includes being a member of the owning role that inherits its privileges; a
 * superuser passes each.
 */
function sourceOwnershipProblems(s: ServerRow, o: PgPrereqOptions, tables: TableRow[]): PgProblem[] {
  const user = s.user_ident;
  const db = s.db_ident;
  const pub = ident(publicationName(o.group));
  const problems: PgProblem[] = [];
  if (!s.can_create_db) {
    problems.push({
      what: `the role ${user} lacks CREATE on database ${db}, which Tandem needs to create its schema tandem and the publication ${pub} there`,
      fix: `Run GRANT CREATE ON DATABASE ${db} TO ${user}; as a superuser or the database's owner`,
    });
  }
  if (s.can_create_tandem === false) {
    problems.push({
      what: `the role ${user} may not create in schema tandem (another role made it), where Tandem keeps the group's fence function`,
      fix: `Connected to ${db}, run GRANT USAGE, CREATE ON SCHEMA tandem TO ${user};`,
    });
  }
  problems.push(...tandemOwnerProblems(s, o));
  if (s.owns_publication === false) {
    problems.push({
      what: `the publication ${pub} (made at an earlier start) belongs to ${s.publication_owner}, and only its owner may change its tables`,
      fix: `Connected to ${db}, run ALTER PUBLICATION ${pub} OWNER TO ${user}; as a superuser`,
    });
  }
  problems.push(
    ...tableOwnerProblems(s, o, tables, `only a table's owner may add it to the publication ${pub}`),
  );
  return problems;
}

/** The fence function and Tandem's tables, made by another role at an earlier start. */
function tandemOwnerProblems(s: ServerRow, o: PgPrereqOptions): PgProblem[] {
  const problems: PgProblem[] = [];
  if (s.owns_fence === false) {
    const fn = `${fenceFunction(o.group)}()`;
    problems.push({
      what: `the fence function ${fn} belongs to ${s.fence_owner}, and Tandem replaces it at every start`,
      fix: `Connected to ${s.db_ident}, run ALTER FUNCTION ${fn} OWNER TO ${s.user_ident}; as a superuser`,
    });
  }
  const tables = s.foreign_tandem_tables;
  if (tables.length > 0) {
    const names = tables.map((t) => t.slice(0, t.indexOf(' (')));
    problems.push({
      what: `Tandem's table${tables.length === 1 ? '' : 's'} ${tables.join(', ')} belong${tables.length === 1 ? 's' : ''} to another role (an earlier start as that role made ${tables.length === 1 ? 'it' : 'them'}), and Tandem writes its tables and brings them up to date at start`,
      fix: `Connected to ${s.db_ident}, run ${names.map((t) => `ALTER TABLE ${t} OWNER TO ${s.user_ident};`).join(' ')} as a superuser`,
    });
  }
  return problems;
}

/** The group's tables the role does not own, one problem per owner; `why` it must. */
function tableOwnerProblems(s: ServerRow, o: PgPrereqOptions, tables: TableRow[], why: string): PgProblem[] {
  const user = s.user_ident;
  const byOwner = new Map<string, TableRow[]>();
  for (const t of tables.filter((x) => !x.owned)) byOwner.set(t.owner, [...(byOwner.get(t.owner) ?? []), t]);
  return [...byOwner].map(([owner, owned]) => {
    const names = owned.map((t) => t.ident);
    const alter = names.map((t) => `ALTER TABLE ${t} OWNER TO ${user};`).join(' ');
    return {
      what: `the role ${user} does not own table${names.length === 1 ? '' : 's'} ${names.join(', ')} (owner ${owner}), and ${why}`,
      fix: owned[0]!.owner_super
        ? `Run ${alter} as a superuser, or use a superuser in ${o.field}`
        : `Run GRANT ${owner} TO ${user}; as a superuser (a member of the owning role counts as its owner), or ${alter}`,
    };
  });
}

/**
 * What to do about a table without a key, as honest advice: a primary key on the columns of a
 * unique index over NOT NULL columns (made from the index as it is when PostgreSQL takes it), or
 * the same columns named in the config; when no such index exists, a new key column (a
 * partitioned table's key must include its partition key instead).
 */
function keyAdvice(t: TableRow, o: PgPrereqOptions): string {
  const name = qualifiedName(t.schema, t.name);
  const k = t.unique_key;
  if (k) {
    const cols = k.columns.map(ident).join(', ');
    const add = k.usable
      ? `ALTER TABLE ${t.ident} ADD PRIMARY KEY USING INDEX ${k.index};`
      : `ALTER TABLE ${t.ident} ADD PRIMARY KEY (${cols});`;
    const one = k.columns.length === 1;
    return `Give it a primary key on its unique NOT NULL column${one ? '' : 's'} ${cols} (${add}), or name ${one ? 'it' : 'them'} in the config (groups.${o.group}.keys: { ${name}: [${k.columns.join(', ')}] }) and run ALTER TABLE ${t.ident} REPLICA IDENTITY FULL;`;
  }
  const none = 'No unique index on NOT NULL columns identifies its rows';
  const leave = `or leave it out of groups.${o.group}.tables`;
  if (t.partitioned) {
    const key = t.partition_key.map(ident).join(', ');
    return `${none}: give it a primary key of columns that identify a row, including its partition key: ALTER TABLE ${t.ident} ADD PRIMARY KEY (${key ? `${key}, ` : ''}...); ${leave}`;
  }
  const column = ['id', 'row_id', 'tandem_id'].find((c) => !t.columns.includes(c)) ?? 'tandem_row_id';
  return `${none}: give it a key column (this rewrites the table): ALTER TABLE ${t.ident} ADD COLUMN ${column} bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY; ${leave}`;
}

/**
 * Every replicated table needs a row identity that the WAL carries for updates and deletes: the
 * primary key (REPLICA IDENTITY DEFAULT), a unique index (USING INDEX) or the whole old row
 * (FULL). A key named in the config must be part of that identity, which in practice means FULL.
 */
function tableProblems(t: TableRow, o: PgPrereqOptions, user: string): PgProblem[] {
  const name = qualifiedName(t.schema, t.name);
  const problems: PgProblem[] = [];
  if (!t.readable) {
    problems.push({
      what: `the role ${user} cannot read table ${t.ident}, so the backup cannot be seeded from it`,
      fix: `Run GRANT SELECT ON ${t.ident} TO ${user};`,
    });
  }
  const identity =
    t.identity === 'd'
      ? t.primary_key
      : t.identity === 'i'
        ? t.identity_index
        : t.identity === 'f'
          ? t.columns
          : [];
  const configured = o.keys[name];
  // (The key: the configured one, else the identity's, which with FULL is the primary key.)
  const computed = (configured ?? (t.identity === 'f' ? t.primary_key : identity)).filter((c) =>
    t.generated.includes(c),
  );
  if (computed.length > 0) {
    const plain = t.unique_key?.columns ?? [];
    problems.push({
      what: `table ${t.ident} is keyed by generated column(s) ${computed.join(', ')} (${configured ? `groups.${o.group}.keys` : t.identity === 'i' ? 'its replica identity index' : 'its primary key'}), whose values logical decoding does not send, so its rows cannot be matched on the target`,
      fix: `Key it by plain columns that identify a row: a primary key of them, or groups.${o.group}.keys: { ${name}: [${plain.length > 0 ? plain.join(', ') : '...'}] } and ALTER TABLE ${t.ident} REPLICA IDENTITY FULL; or leave it out of groups.${o.group}.tables`,
    });
  } else if (configured) {
    const missing = configured.filter((c) => !t.columns.includes(c));
    if (missing.length > 0) {
      const unique = t.unique_key ?? (t.primary_key.length > 0 ? { columns: t.primary_key } : null);
      problems.push({
        what: `groups.${o.group}.keys names column(s) ${missing.join(', ')} that table ${t.ident} does not have (it has ${t.columns.join(', ') || 'no columns'})`,
        fix: unique
          ? `Name existing columns that identify a row, for example: ${name}: [${unique.columns.join(', ')}]`
          : `Name existing columns that together identify a row (no unique index of ${t.ident} shows which)`,
      });
    } else if (!configured.every((c) => identity.includes(c))) {
      problems.push({
        what: `table ${t.ident} is keyed by groups.${o.group}.keys (${configured.join(', ')}), but its updates and deletes do not carry the old values of those columns`,
        fix: `Run ALTER TABLE ${t.ident} REPLICA IDENTITY FULL;`,
      });
    }
  } else if (identity.length === 0) {
    if (t.identity === 'n' && t.primary_key.length > 0) {
      problems.push({
        what: `table ${t.ident} has REPLICA IDENTITY NOTHING, so its updates and deletes cannot be replicated`,
        fix: `Run ALTER TABLE ${t.ident} REPLICA IDENTITY DEFAULT; (its primary key identifies rows)`,
      });
    } else {
      problems.push({
        what: `table ${t.ident} has no primary key and no replica identity, so its rows cannot be matched on the target`,
        fix: keyAdvice(t, o),
      });
    }
  }
  return problems;
}

/**
 * Checks what the endpoint needs for its role and returns every problem and warning, without
 * throwing for them. Throws ENDPOINT_UNAVAILABLE only when it cannot connect.
 */
export async function inspectPostgres(o: PgPrereqOptions): Promise<PgCheckResult> {
  const client = await connectPostgres(o.url, o.field);
  try {
    const server = (
      await client.query<ServerRow>(SERVER_SQL, [
        o.slot ?? null,
        publicationName(o.group),
        fenceName(o.group),
      ])
    ).rows[0];
    if (!server) throw new Error('the current role is missing from pg_roles');
    const out: PgCheckResult = { problems: [], warnings: [], tables: [], serverVersion: server.version };
    if (server.version < MIN_SERVER_VERSION) {
      out.problems.push({
        what: `the server runs PostgreSQL ${Math.floor(server.version / 10_000)}, and Tandem needs 14 or later (logical replication with pgoutput, CREATE OR REPLACE TRIGGER for the fence)`,
        fix: 'Upgrade PostgreSQL',
      });
      return out;
    }
    const tables = (await client.query<TableRow>(TABLES_SQL)).rows.filter((t) =>
      tableMatches(o.tables, qualifiedName(t.schema, t.name)),
    );
    out.tables = tables.map((t) => qualifiedName(t.schema, t.name));
    if (o.role === 'source') {
      const leftOut = await client.query<{ schema: string; name: string; ident: string; unlogged: boolean }>(
        `SELECT n.nspname AS schema, c.relname AS name, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS ident,
                c.relpersistence = 'u' AS unlogged
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ${LEFT_OUT_TABLES_WHERE} ORDER BY 1, 2`,
      );
      for (const t of leftOut.rows.filter((x) => tableMatches(o.tables, qualifiedName(x.schema, x.name)))) {
        const as = splitName(qualifiedName(t.schema, t.name));
        out.warnings.push(
          t.unlogged
            ? {
                what: `table ${t.ident} is left out of group ${o.group}: it is unlogged, and logical decoding does not see its rows`,
                fix: `ALTER TABLE ${t.ident} SET LOGGED; to replicate it`,
              }
            : {
                what: `table ${t.ident} is left out of group ${o.group}: with a dot in its name or its schema's, its name in the group, ${qualifiedName(t.schema, t.name)}, would also be that of table ${as.name} in schema ${as.schema}`,
                fix: `Rename it (ALTER TABLE ${t.ident} RENAME TO ... or ALTER SCHEMA ... RENAME TO ...) to replicate it`,
              },
        );
      }
      sourceServerProblems(server, o, out);
      out.problems.push(...sourceOwnershipProblems(server, o, tables));
      for (const t of tables) out.problems.push(...tableProblems(t, o, server.user_ident));
    } else {
      const target = (await client.query(TARGET_SQL)).rows[0] as {
        user_ident: string;
        db_ident: string;
        can_create: boolean | null;
      };
      if (target.can_create === null) {
        out.problems.push({
          what: `database ${target.db_ident} has no schema public to create the replicated tables in`,
          fix: `Connected to ${target.db_ident}, run CREATE SCHEMA public AUTHORIZATION ${target.user_ident};`,
        });
      } else if (!target.can_create) {
        out.problems.push({
          what: `the role ${target.user_ident} cannot create tables in schema public of database ${target.db_ident}`,
          fix: `Connected to ${target.db_ident}, run GRANT CREATE ON SCHEMA public TO ${target.user_ident};`,
        });
      }
      out.problems.push(...targetOwnershipProblems(server, o, tables));
      out.problems.push(...(await typeOwnerProblems(client, server, tables)));
    }
    return out;
  } catch (err) {
    throw new TandemError(
      'ENDPOINT_UNAVAILABLE',
      `${o.field}: checking the PostgreSQL ${o.role} failed: ${(err as Error).message}`,
      'Check that the user may read the system catalogs (pg_roles, pg_class, pg_replication_slots)',
      { cause: err },
    );
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * What a backup's role must be allowed beyond creating tables: schema tandem (its applied
 * position, seed state and fence function), and ownership of the group's tables it finds there
 * (it fences them with a trigger, changes them as the source's change, and replaces them at a
 * seed).
 */
function targetOwnershipProblems(s: ServerRow, o: PgPrereqOptions, tables: TableRow[]): PgProblem[] {
  const user = s.user_ident;
  const db = s.db_ident;
  const problems: PgProblem[] = [];
  if (s.can_create_tandem === null && !s.can_create_db) {
    problems.push({
      what: `the role ${user} lacks CREATE on database ${db}, which Tandem needs to create its schema tandem there (the backup's applied position and fence)`,
      fix: `Run GRANT CREATE ON DATABASE ${db} TO ${user}; as a superuser or the database's owner, or create the schema for it: CREATE SCHEMA tandem AUTHORIZATION ${user};`,
    });
  }
  if (s.can_create_tandem === false) {
    problems.push({
      what: `the role ${user} may not create in schema tandem (another role made it), where the backup keeps its applied position and fence`,
      fix: `Connected to ${db}, run GRANT USAGE, CREATE ON SCHEMA tandem TO ${user};`,
    });
  }
  problems.push(...tandemOwnerProblems(s, o));
  problems.push(
    ...tableOwnerProblems(
      s,
      o,
      tables,
      "the backup fences its tables with a trigger, changes them as the source's change, and replaces them at a seed",
    ),
  );
  return problems;
}

/**
 * The user-defined types the group's tables on a backup use that its role does not own: apply
 * changes them as the source's change (ALTER TYPE ... ADD VALUE, ALTER DOMAIN), which only their
 * owner may. Types of extensions are the extension's business.
 */
async function typeOwnerProblems(client: pg.Client, s: ServerRow, tables: TableRow[]): Promise<PgProblem[]> {
  if (tables.length === 0) return [];
  const r = await client.query<{ ref: string; domain: boolean; owner: string; owner_super: boolean }>(
    `SELECT DISTINCT format_type(ty.oid, NULL) AS ref, ty.typtype = 'd' AS domain, ty.typowner::regrole::text AS owner,
            (SELECT rolsuper FROM pg_roles WHERE oid = ty.typowner) AS owner_super
       FROM unnest($1::oid[]) AS r(rel) CROSS JOIN LATERAL (${usedTypesSql('r.rel')}) u
       JOIN pg_type ty ON ty.oid = u.oid
      WHERE NOT pg_has_role(ty.typowner, 'USAGE')
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = ty.oid AND d.deptype = 'e')
      ORDER BY 1`,
    [tables.map((t) => t.oid)],
  );
  if (r.rows.length === 0) return [];
  const names = r.rows.map((t) => `${t.ref} (owner ${t.owner})`);
  const alter = r.rows
    .map((t) => `ALTER ${t.domain ? 'DOMAIN' : 'TYPE'} ${t.ref} OWNER TO ${s.user_ident};`)
    .join(' ');
  const owners = [...new Set(r.rows.map((t) => t.owner))];
  return [
    {
      what: `the role ${s.user_ident} does not own type${names.length === 1 ? '' : 's'} ${names.join(', ')}, which the group's tables use and the backup changes as the source's change (ALTER TYPE ... ADD VALUE, ALTER DOMAIN)`,
      fix: r.rows.every((t) => !t.owner_super)
        ? `Run GRANT ${owners.join(', ')} TO ${s.user_ident}; as a superuser (a member of the owning role counts as its owner), or ${alter}`
        : `Run ${alter} as a superuser`,
    },
  ];
}

/**
 * Checks the endpoint for its role and throws one ENDPOINT_UNAVAILABLE listing every problem,
 * each on its own line as `field: what. fix`. Returns the result (warnings, tables) when none.
 */
export async function checkPostgres(o: PgPrereqOptions): Promise<PgCheckResult> {
  const result = await inspectPostgres(o);
  const count = result.problems.length;
  if (count > 0) {
    throw new TandemError(
      'ENDPOINT_UNAVAILABLE',
      `${o.field}: this PostgreSQL database cannot be a ${o.role} yet (${count} problem${count === 1 ? '' : 's'})`,
      `Fix each, then ${o.after ?? 'start again'}:\n${result.problems.map((p) => `${o.field}: ${p.what}. ${p.fix}`).join('\n')}`,
    );
  }
  return result;
}
