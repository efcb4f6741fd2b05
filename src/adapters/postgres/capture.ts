/**
 * PostgreSQL capture: logical decoding with pgoutput over the streaming replication protocol,
 * through a slot and a publication that Tandem manages for the group.
 *
 * Invariants
 * - One source transaction becomes one journal record; a transaction of more than
 *   `maxChangesPerRecord` changes is split into records with txCount 0 until its commit, so it is
 *   never held in memory whole (pgoutput v1 sends a transaction only once it has committed).
 * - PostgreSQL is told a position is done (confirmed_flush_lsn) only once the journal holds it
 *   durably; in sync mode, only once every backup's journal does. A keepalive's end of WAL is
 *   confirmed only when nothing received is still waiting for the journal.
 * - Each record's `source` is its commit's end LSN. After a restart, transactions at or below the
 *   journal's last one are skipped, so nothing is journaled twice even if PostgreSQL resends.
 * - Unchanged TOASTed values are left out of the change's columns: the target keeps its value.
 */
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type pg from 'pg';
import type { Logger } from 'pino';
import { type GroupConfig, tableMatches } from '../../config/index.js';
import { TandemError } from '../../core/errors.js';
import { monoNow } from '../../core/mono.js';
import {
  type Change,
  encodeRecord,
  type JournalRecord,
  type SequenceOptions,
  type TableSchema,
  type Value,
} from '../../core/record.js';
import { type PendingCut, pendingCut } from '../cut.js';
import { type FenceReason, fenceText } from '../fence-text.js';
import type { Capture, CaptureCut, CaptureOptions } from '../types.js';
import {
  DDL_PREFIX,
  type DdlKey,
  type DdlMessage,
  ddlSchemaProblem,
  disableDdlCapture,
  installDdlCapture,
  verifyDdlMessage,
} from './ddl.js';
import { checkPostgres, connectPostgres, pgClientConfig } from './endpoint.js';
import { fencePrimary, fenceTable, LEASE_TABLE, setFence } from './fence.js';
import { formatLsn, type PgMessage, parseLsn, type RawValue, type Relation, UNCHANGED } from './pgoutput.js';
import {
  columnDef,
  dotless,
  FIRST_USER_OID,
  keyName,
  listTables,
  publicationName,
  qualifiedName,
  quoteIdent,
  quoteLiteral,
  readTableSchema,
  slotName,
  tableRef,
} from './schema.js';
import { ReplicationStream } from './stream.js';
import { valueTypeSql } from './user-types.js';
import { fromPgText } from './values.js';

export interface PgCaptureOptions extends CaptureOptions {
  url: string;
  maxChangesPerRecord?: number;
}

/** Whether synchronous_standby_names is just this capture's name, as configure_server sets it. */
async function onlyThisCapture(client: pg.Client, slot: string): Promise<boolean> {
  const r = await client.query<{ names: string }>(
    "SELECT current_setting('synchronous_standby_names') AS names",
  );
  return r.rows[0]?.names === `"${slot}"`;
}

/** Commits on the source stop waiting for any standby. */
async function resetSyncNames(client: pg.Client): Promise<void> {
  await client.query('ALTER SYSTEM RESET synchronous_standby_names');
  await client.query('SELECT pg_reload_conf()');
}

/**
 * Sync mode rests on PostgreSQL's own commit protocol: a commit returns once the standbys in
 * synchronous_standby_names have flushed it, and Tandem's capture connection (application_name
 * = the slot name) reports as flushed only what every backup's journal holds. With
 * sync.configure_server and an empty setting, Tandem sets it (unless `dryRun`: a check before a
 * switchover promotes this server).
 */
export async function checkSyncSetup(
  client: pg.Client,
  g: GroupConfig,
  node: string,
  field: string,
  log: Logger,
  dryRun = false,
): Promise<void> {
  const name = slotName(g.name, node);
  const r = await client.query<{ names: string; commit: string }>(
    // reset_val: what sessions get by default (this session sets its own, see open).
    "SELECT current_setting('synchronous_standby_names') AS names, (SELECT reset_val FROM pg_settings WHERE name = 'synchronous_commit') AS commit",
  );
  const { names, commit } = r.rows[0]!;
  const listed = names === '*' || new RegExp(`(^|[\\s,("])${name}([\\s,)"]|$)`, 'i').test(names);
  if (!listed) {
    const fix = `ALTER SYSTEM SET synchronous_standby_names = '"${name}"'; SELECT pg_reload_conf();`;
    if (g.sync.configureServer && names.trim() === '') {
      if (dryRun) return;
      await client.query(`ALTER SYSTEM SET synchronous_standby_names = '"${name}"'`);
      await client.query('SELECT pg_reload_conf()');
      log.warn({ synchronous_standby_names: name }, 'sync mode: set synchronous_standby_names on the source');
    } else {
      throw new TandemError(
        'ENDPOINT_UNAVAILABLE',
        `${field}: group ${g.name} is in sync mode, but synchronous_standby_names (${names ? `"${names}"` : 'empty'}) does not name Tandem's capture connection "${name}", so commits would not wait for the backups`,
        names.trim() === ''
          ? `Run ${fix} or set groups.${g.name}.sync.configure_server: true`
          : `Add "${name}" to synchronous_standby_names (for example FIRST 1 ("${name}", ...)), then SELECT pg_reload_conf();`,
      );
    }
  }
  if (!dryRun && (commit === 'off' || commit === 'local')) {
    log.warn(
      { synchronous_commit: commit },
      'sync mode: synchronous_commit is off or local, so commits do not wait for Tandem',
    );
  }
}

/** Prefix of the logical message a barrier sends through the stream (then the group's name). */
const BARRIER_PREFIX = 'tandem_barrier_';

export class PgCapture implements Capture {
  readonly #o: PgCaptureOptions;
  #stream: ReplicationStream | null = null;
  #client: pg.Client | null = null;
  #stopped = false;
  /** End LSN of the last journaled transaction (resume point; skip anything at or below). */
  #lastLsn = 0n;
  /** Transaction being assembled, and its id (what the event trigger's messages are signed for). */
  #tx: { changes: Change[]; xid: number } | null = null;
  /** Journaled records not yet confirmed to PostgreSQL: (position, commit end LSN). */
  readonly #unconfirmed: { position: number; lsn: bigint; at: number }[] = [];
  /** Sync mode that gave up waiting for the backups (sync.degrade) until they catch up. */
  #degraded = false;
  #degradeTimer: NodeJS.Timeout | null = null;
  /** The key of the event trigger's messages: null when it is not installed (DDL not followed). */
  #ddlKey: DdlKey | null = null;
  /** Why schema changes are not followed (null: not known yet, or they are). */
  #ddlOff: string | null = null;
  /** New tables the group's patterns match that the event trigger left out for want of a key. */
  readonly #unkeyed = new Set<string>();
  #healthTimer: NodeJS.Timeout | null = null;
  #sequenceTimer: NodeJS.Timeout | null = null;
  /** Last value and options journaled per sequence. */
  readonly #sequenceValues = new Map<string, { value: bigint; called: boolean; options: SequenceOptions }>();
  /**
   * Schema changes read from the stream: a sequence look that read the catalog across one
   * journals nothing (its values would follow a rename or drop the stream already holds).
   */
  #schemaChanges = 0;
  #lastWalStatus = 'reserved';
  #confirmedLsn = 0n;
  readonly #typeNames = new Map<string, string>();
  /** Per relation: its table name, whether the group replicates it, the definition last journaled. */
  /**
   * Per relation of the stream: its journal name, whether the group replicates it, its schema
   * as last journaled (without DDL following), and the type each column's values are converted
   * by (a domain's base type: pgoutput names the domain).
   */
  readonly #schemas = new Map<
    number,
    { table: string; replicated: boolean; schema: TableSchema | null; valueOids: number[] }
  >();
  /** User-defined type oids -> the built-in type their values are (a domain's base type, else itself). */
  readonly #valueOids = new Map<number, number>();
  #unsubscribe: (() => void) | null = null;
  #keepaliveTimer: NodeJS.Timeout | null = null;
  /** A status update to the server is due (async mode: at most one per 50 ms). */
  #statusTimer: NodeJS.Timeout | null = null;
  /** The database refuses writes unless the lease runs (guardLease). */
  #guarded = false;
  /** Tables a schema change made or changed that still need the fence trigger (guarded). */
  readonly #unguarded = new Set<string>();
  /** barrier() calls waiting for their message to come through the stream, by nonce. */
  readonly #barriers = new Map<string, () => void>();
  /**
   * Seeds' cuts (openCut). Until a cut learns its mark it notes, at every boundary the stream
   * passes (a transaction's BEGIN, a message outside transactions), its LSN and the journal's
   * last position there; with its mark, it ends at the first boundary at or past it.
   */
  readonly #cuts = new Set<PendingCut & { seen: { lsn: bigint; position: number }[] }>();

  constructor(o: PgCaptureOptions) {
    this.#o = o;
  }

  get #field(): string {
    return `groups.${this.#o.group.name}.endpoints.${this.#o.node}`;
  }

  async open(lastRecord: JournalRecord | null): Promise<void> {
    const g = this.#o.group;
    const checked = await checkPostgres({
      url: this.#o.url,
      field: this.#field,
      role: 'source',
      tables: g.tables,
      keys: g.keys,
      group: g.name,
      slot: slotName(g.name, this.#o.node),
    });
    for (const w of checked.warnings)
      this.#o.log.warn({ group: g.name }, `${this.#field}: ${w.what}. ${w.fix}`);
    const client = await connectPostgres(this.#o.url, this.#field);
    this.#client = client;
    // Tandem's own writes here (fence, lease, DDL) need local durability only: in sync mode a
    // synchronous commit would wait for this very capture.
    await client.query('SET synchronous_commit = local');
    const tables = (await listTables(client)).filter((t) => tableMatches(g.tables, t));
    // Fail at start, not mid-stream, on a table that cannot be matched.
    for (const t of tables) await readTableSchema(client, t, g.name, g.keys[t]);
    const pub = publicationName(g.name);
    const exists = await client.query<{ viaroot: boolean }>(
      'SELECT pubviaroot AS viaroot FROM pg_publication WHERE pubname = $1',
      [pub],
    );
    const list = tables.map(tableRef).join(', ');
    // A partitioned table's changes come under its own name, as the group knows it (the
    // partitions' names are the source's business; pgoutput would use them by default).
    const viaRoot = 'publish_via_partition_root = true';
    if (exists.rowCount === 0) {
      await client.query(
        `CREATE PUBLICATION ${quoteIdent(pub)}${tables.length ? ` FOR TABLE ${list}` : ''} WITH (${viaRoot})`,
      );
    } else if (!exists.rows[0]!.viaroot) {
      await client.query(`ALTER PUBLICATION ${quoteIdent(pub)} SET (${viaRoot})`);
    }
    if (exists.rowCount !== 0 && tables.length) {
      // Altered only when it differs: ALTER PUBLICATION waits for the lock of a DDL transaction
      // that added a table to it, and in sync mode that transaction's commit waits for this very
      // capture (a deadlock at every restart, found by an audit).
      const members = await client.query<{ name: string }>(
        `SELECT CASE WHEN schemaname = 'public' THEN tablename ELSE schemaname || '.' || tablename END AS name
           FROM pg_publication_tables WHERE pubname = $1`,
        [pub],
      );
      const now = new Set(members.rows.map((r) => r.name));
      if (now.size !== tables.length || tables.some((t) => !now.has(t)))
        await client.query(`ALTER PUBLICATION ${quoteIdent(pub)} SET TABLE ${list}`);
    }
    const superuser = await client.query<{ su: boolean }>(
      'SELECT rolsuper AS su FROM pg_roles WHERE rolname = current_user',
    );
    const su = superuser.rows[0]?.su === true;
    const unsafe = su ? await ddlSchemaProblem(client) : null;
    if (!su) {
      this.#ddlOff = 'no superuser for the event trigger';
      this.#o.log.warn(
        { group: g.name },
        'schema changes are not followed: creating the event trigger that reports them needs a superuser; tables are those matching at start',
      );
    } else if (unsafe) {
      this.#ddlOff = 'schema tandem belongs to a role that is not a superuser';
      await disableDdlCapture(client, g.name);
      this.#o.log.warn(
        { group: g.name },
        `schema changes are not followed (tables are those matching at start): ${unsafe}`,
      );
    } else {
      this.#ddlKey = await installDdlCapture(client, g, pub);
    }
    const slot = slotName(g.name, this.#o.node);
    const s = await client.query<{ confirmed: string | null; wal_status: string | null }>(
      'SELECT confirmed_flush_lsn::text AS confirmed, wal_status FROM pg_replication_slots WHERE slot_name = $1',
      [slot],
    );
    if (s.rowCount === 0) {
      if (lastRecord) {
        throw new TandemError(
          'ENDPOINT_UNAVAILABLE',
          `${this.#field}: replication slot ${slot} is gone, but the journal holds changes up to ${lastRecord.source}: changes after that may be lost`,
          'The backups must be reseeded: stop the nodes, delete the state folders of this node and its backups, and start them again',
        );
      }
      await client.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
      this.#o.log.info({ slot, publication: pub, tables }, 'replication slot created');
    } else if (s.rows[0]!.wal_status === 'lost') {
      throw new TandemError(
        'ENDPOINT_UNAVAILABLE',
        `${this.#field}: replication slot ${slot} has lost WAL it needs (wal_status = lost)`,
        `Drop the slot (SELECT pg_drop_replication_slot('${slot}')), delete this node's and its backups' state folders, and start again to reseed`,
      );
    }
    // First start in this epoch (a new primary): sequences behind the rows that reached this
    // database (their values come about once a second) move past them.
    if (!lastRecord) await this.#catchUpSequences(tables);
    this.#lastLsn = lastRecord ? parseLsn(lastRecord.source.replace(/^pg:/, '')) : 0n;
    this.#confirmedLsn = this.#lastLsn;
    if (g.mode === 'sync') await checkSyncSetup(client, g, this.#o.node, this.#field, this.#o.log);
  }

  /**
   * Every sequence owned by a column of the group's tables is set past that column's highest
   * value (never back): a backup taking over after a failover holds the rows but may lag the
   * source's sequence by up to a second of values.
   */
  async #catchUpSequences(tables: string[]): Promise<void> {
    const c = this.#client!;
    const owned = await c.query<{ seq: string; tbl: string; col: string }>(
      `SELECT s.oid::regclass::text AS seq, t.oid::regclass::text AS tbl, a.attname AS col
         FROM pg_class s JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
         JOIN pg_class t ON t.oid = d.refobjid
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE s.relkind = 'S' AND t.oid = ANY($1::text[]::regclass[])`,
      [tables.map(tableRef)],
    );
    for (const o of owned.rows) {
      await c.query(
        `SELECT setval($1::regclass, m) FROM (SELECT max(${quoteIdent(o.col)})::bigint AS m FROM ${o.tbl}) x
          WHERE m IS NOT NULL AND m > (SELECT last_value FROM ${o.seq})`,
        [o.seq],
      );
    }
  }

  get degraded(): boolean {
    return this.#degraded;
  }

  /** Whether schema changes reach the journal (event trigger installed). */
  get followsDdl(): boolean {
    return this.#ddlKey !== null;
  }

  describe(mode: 'async' | 'sync', degraded: boolean): string {
    const unkeyed = this.#unkeyed.size
      ? `; NOT replicated for want of a primary key: ${[...this.#unkeyed].join(', ')}`
      : '';
    return mode === 'sync'
      ? `sync: PostgreSQL commits wait for Tandem (synchronous_standby_names) and Tandem confirms only what every backup's journal holds${degraded ? '; DEGRADED to async now' : ''}${unkeyed}`
      : `async: logical decoding of every commit; RPO is the lag shown${this.#ddlOff ? `; schema changes NOT followed (${this.#ddlOff})` : ''}${unkeyed}`;
  }

  pendingChanges(): number | null {
    return null;
  }

  run(): void {
    const g = this.#o.group;
    const stream = new ReplicationStream(
      { ...pgClientConfig(this.#o.url), application_name: slotName(g.name, this.#o.node) },
      {
        data: (msg) => this.#message(msg),
        keepalive: (walEnd, replyRequested) => {
          // Nothing received is waiting: the server's end of WAL is as good as confirmed. Said
          // at once: the server sends a keepalive after a transaction it skipped (nothing for
          // the publication), and in sync mode that transaction's commit waits for this answer.
          let moved = false;
          if (this.#tx === null && this.#unconfirmed.length === 0 && stream.pending === 0) {
            if (walEnd > this.#confirmedLsn) {
              this.#confirmedLsn = walEnd;
              moved = true;
            }
          }
          if (replyRequested || moved) this.#sendStatus();
        },
      },
    );
    this.#stream = stream;
    const slot = slotName(g.name, this.#o.node);
    const from = this.#lastLsn > 0n ? formatLsn(this.#lastLsn) : '0/0';
    stream
      .run(
        quoteIdent(slot),
        from,
        `proto_version '1', publication_names '${publicationName(g.name)}', messages 'true'`,
      )
      .catch((err: Error) => {
        if (!this.#stopped) this.#fatal(err);
      });
    this.#unsubscribe = this.#o.journal.onDurable((p) => {
      if (this.#o.group.mode === 'async' || this.#degraded) this.#confirm(p);
    });
    if (g.mode === 'sync' && g.sync.degrade) {
      this.#degradeTimer = setInterval(() => this.#checkDegrade(), 100);
      this.#degradeTimer.unref();
    }
    // Standby status at least every 10 s, so the server sees progress and keeps the slot moving;
    // slot health every 30 s.
    this.#keepaliveTimer = setInterval(() => this.#sendStatus(), 10_000);
    this.#healthTimer = setInterval(() => void this.#health(), 30_000);
    this.#healthTimer.unref();
    this.#sequenceTimer = setInterval(() => void this.#sequences(), 1000);
    this.#sequenceTimer.unref();
    this.#keepaliveTimer.unref();
  }

  kick(): void {}

  confirmedUpTo(position: number): void {
    if (this.#o.group.mode !== 'sync') return;
    this.#confirm(position);
    if (this.#degraded && position >= this.#o.journal.durablePosition) {
      this.#degraded = false;
      this.#o.log.warn('sync mode restored: every backup has caught up; commits wait for them again');
    }
  }

  /**
   * Keeps the slot healthy: on an idle database a non-transactional logical message gives the
   * slot something to decode and confirm, so WAL written by other databases is released; a slot
   * whose WAL is at risk (wal_status unreserved) is reported loudly, a lost one stops the group.
   */
  async #health(): Promise<void> {
    if (this.#stopped || !this.#client) return;
    try {
      if (this.#tx === null && this.#unconfirmed.length === 0) {
        await this.#client.query("SELECT pg_logical_emit_message(false, 'tandem_ping', '')");
      }
      const slot = slotName(this.#o.group.name, this.#o.node);
      const r = await this.#client.query<{ wal_status: string | null; safe: string | null }>(
        'SELECT wal_status, safe_wal_size::text AS safe FROM pg_replication_slots WHERE slot_name = $1',
        [slot],
      );
      const status = r.rows[0]?.wal_status ?? 'missing';
      if (status === 'lost' || status === 'missing') {
        this.#fatal(
          new TandemError(
            'ENDPOINT_UNAVAILABLE',
            `${this.#field}: replication slot ${slot} is ${status === 'lost' ? 'lost (its WAL was removed)' : 'gone'}; changes after the journal's last record cannot be read`,
            `Drop the slot if it exists (SELECT pg_drop_replication_slot('${slot}')), delete this node's and its backups' state folders, and start again to reseed`,
          ),
        );
      } else if (status !== this.#lastWalStatus && (status === 'unreserved' || status === 'extended')) {
        this.#o.log.warn(
          { slot, wal_status: status, safe_wal_size: r.rows[0]?.safe },
          'replication slot WAL is at risk: the slot falls behind max_wal_size / max_slot_wal_keep_size; check the backups',
        );
      }
      this.#lastWalStatus = status;
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, 'slot health check failed');
    }
  }

  /**
   * Sequence values reach the journal continually: once a second, between transactions, the
   * group's sequences that moved since the last look become one record (a sequence several
   * tables use, once), with their options when first sent and whenever they changed. The group's
   * sequences: those its tables own (serial, identity) or draw defaults from, and those no table
   * owns whose names its patterns match (an application's own, as Hibernate's `nextval` calls).
   */
  async #sequences(all = false): Promise<number> {
    if (!this.#client || this.#tx !== null) return 0;
    const changesBefore = this.#schemaChanges;
    const name = (ns: string, rel: string) =>
      `CASE WHEN ${ns}.nspname = 'public' THEN ${rel}.relname ELSE ${ns}.nspname || '.' || ${rel}.relname END`;
    try {
      const r = await this.#client.query<{
        seq: string;
        owner: string | null;
        value: string | null;
        called: boolean;
        type: string;
        increment: string;
        min: string;
        max: string;
        start: string;
        cache: string;
        cycle: boolean;
      }>(
        // (pg_sequences shows no value before one is handed out, as after setval(..., false):
        // then the sequence itself is read, through query_to_xml. NULL: not readable.)
        `SELECT x.seq, x.owner, ps.last_value IS NOT NULL AS called,
                coalesce(ps.last_value::text, CASE WHEN has_sequence_privilege(s.oid, 'SELECT') THEN
                  (xpath('/row/last_value/text()', query_to_xml(format('SELECT last_value FROM %s', s.oid::regclass), false, true, '')))[1]::text END) AS value,
                ps.data_type::text AS type, ps.increment_by::text AS increment,
                ps.min_value::text AS min, ps.max_value::text AS max, ps.start_value::text AS start,
                ps.cache_size::text AS cache, ps.cycle
           FROM (
             -- Owned by the group's tables (serial, identity), or drawn from by their defaults:
             -- not a table's it leaves out (for want of a key, say).
             SELECT s.oid, ${name('n', 's')} AS seq, ${name('tn', 't')} AS owner
               FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
               JOIN (SELECT d.objid AS seq, d.refobjid AS tbl FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                     UNION
                     SELECT d.refobjid, ad.adrelid FROM pg_depend d JOIN pg_attrdef ad ON ad.oid = d.objid
                      WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass) u ON u.seq = s.oid
               JOIN pg_class t ON t.oid = u.tbl JOIN pg_namespace tn ON tn.oid = t.relnamespace
              WHERE EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                             WHERE p.pubname = $1 AND pr.prrelid = t.oid)
                AND strpos(tn.nspname, '.') = 0 AND strpos(t.relname, '.') = 0
             UNION ALL
             -- Owned by no table, not an extension's: matched by name.
             SELECT s.oid, ${name('n', 's')}, NULL FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
              WHERE s.relkind = 'S' AND s.relpersistence = 'p'
                AND n.nspname NOT IN ('information_schema', 'tandem') AND n.nspname NOT LIKE 'pg\\_%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = s.oid
                                   AND (d.deptype IN ('a', 'i') AND d.refclassid = 'pg_class'::regclass OR d.deptype = 'e'))
           ) x JOIN pg_class s ON s.oid = x.oid JOIN pg_namespace n ON n.oid = s.relnamespace
           JOIN pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = s.relname
          WHERE s.relkind = 'S' AND strpos(n.nspname, '.') = 0 AND strpos(s.relname, '.') = 0`,
        [publicationName(this.#o.group.name)],
      );
      // (A sequence renamed or dropped meanwhile would be made anew on the backup.)
      if (this.#schemaChanges !== changesBefore) return 0;
      const changes: Change[] = [];
      const seen = new Set<string>();
      for (const row of r.rows) {
        if (
          row.value === null ||
          !tableMatches(this.#o.group.tables, row.owner ?? row.seq) ||
          seen.has(row.seq)
        )
          continue;
        seen.add(row.seq);
        const value = BigInt(row.value);
        const options: SequenceOptions = {
          type: row.type,
          increment: BigInt(row.increment),
          min: BigInt(row.min),
          max: BigInt(row.max),
          start: BigInt(row.start),
          cache: BigInt(row.cache),
          cycle: row.cycle,
        };
        const known = this.#sequenceValues.get(row.seq);
        const moved = known && isDeepStrictEqual(known.options, options) ? undefined : options;
        if (!all && known?.value === value && known.called === row.called && !moved) continue;
        this.#sequenceValues.set(row.seq, { value, called: row.called, options });
        changes.push({
          op: 'sequence',
          table: row.seq,
          value,
          ...(row.called ? {} : { called: false }),
          ...(moved ? { options: moved } : {}),
        });
      }
      // A transaction may have started while the query ran: sequences wait for the next look.
      if (changes.length === 0 || this.#tx !== null) return 0;
      const journal = this.#o.journal;
      await journal
        .append(
          encodeRecord({
            position: journal.nextPosition,
            epoch: this.#o.epoch(),
            origin: this.#o.node,
            hlc: this.#o.hlc.now(),
            source: `pg:${formatLsn(this.#lastLsn)}`,
            txCount: 1,
            changes,
          }),
        )
        .catch((err: Error) => this.#fatal(err));
      return changes.length;
    } catch (err) {
      if (!this.#stopped) this.#o.log.warn({ err: (err as Error).message }, 'reading sequence values failed');
      return 0;
    }
  }

  /** sync.degrade: a commit waiting longer than sync.timeout turns the group async, loudly. */
  #checkDegrade(): void {
    const oldest = this.#unconfirmed[0];
    if (this.#degraded || !oldest || monoNow() - oldest.at < this.#o.group.sync.timeoutMs) return;
    this.#degraded = true;
    this.#o.log.error(
      { timeoutMs: this.#o.group.sync.timeoutMs, position: oldest.position },
      'SYNC DEGRADED TO ASYNC: the backups did not confirm a commit within sync.timeout; commits no longer wait for them (RPO is no longer 0)',
    );
    this.#confirm(this.#o.journal.durablePosition);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const c of this.#cuts) c.reject(new Error('capture stopped'));
    this.#cuts.clear();
    this.#unsubscribe?.();
    if (this.#keepaliveTimer) clearInterval(this.#keepaliveTimer);
    if (this.#degradeTimer) clearInterval(this.#degradeTimer);
    if (this.#healthTimer) clearInterval(this.#healthTimer);
    if (this.#sequenceTimer) clearInterval(this.#sequenceTimer);
    if (this.#statusTimer) clearTimeout(this.#statusTimer);
    await this.#sequences();
    this.#sendStatus();
    await this.#stream?.stop();
    if (this.#o.group.mode === 'sync') await this.#leaveSync();
    await this.#client?.end().catch(() => {});
  }

  /**
   * A sync group's capture stopping: nothing answers the source's commits until it runs again.
   * With `degrade` they would wait for nobody to degrade them, so the name Tandem put in
   * synchronous_standby_names (configure_server) comes out now, loudly, and goes back at the next
   * start; without `degrade` commits wait, as asked, and the log says so.
   */
  async #leaveSync(): Promise<void> {
    const g = this.#o.group;
    const slot = slotName(g.name, this.#o.node);
    try {
      if (!(await onlyThisCapture(this.#client!, slot))) return;
      if (g.sync.degrade && g.sync.configureServer) {
        await resetSyncNames(this.#client!);
        this.#o.log.warn(
          { group: g.name },
          'sync mode: capture stopped, so commits on the source no longer wait for Tandem (sync.degrade); synchronous_standby_names is set again when it starts',
        );
      } else {
        this.#o.log.warn(
          { group: g.name },
          `sync mode: capture stopped; commits on the source wait until it runs again (synchronous_standby_names names "${slot}"; sync.degrade is off)`,
        );
      }
    } catch (err) {
      this.#o.log.warn(
        { group: g.name, err: (err as Error).message },
        'sync mode: could not read synchronous_standby_names at stop',
      );
    }
  }

  // ---- role changes ----

  async fence(reason: FenceReason, timeoutMs: number): Promise<void> {
    const g = this.#o.group;
    const tables = (await listTables(this.#client!)).filter((t) => tableMatches(g.tables, t));
    await fencePrimary(this.#client!, {
      group: g.name,
      tables,
      message: fenceText(reason),
      lease: this.#leaseMessage,
      exceptRoles: g.switchover.exceptRoles,
      timeoutMs,
      field: this.#field,
    });
  }

  async unfence(): Promise<void> {
    await setFence(this.#client!, this.#o.group.name, { kind: 'open', lease: this.#leaseMessage });
  }

  /** The no-quorum message when the database is guarded by the lease, else null. */
  get #leaseMessage(): string | null {
    return this.#guarded
      ? fenceText({ kind: 'no-quorum', group: this.#o.group.name, node: this.#o.node })
      : null;
  }

  async guardLease(): Promise<void> {
    const g = this.#o.group;
    const c = this.#client!;
    await c.query(`CREATE SCHEMA IF NOT EXISTS tandem; ${LEASE_TABLE}`);
    await c.query(
      "INSERT INTO tandem.lease (grp, until) VALUES ($1, '-infinity') ON CONFLICT (grp) DO UPDATE SET until = '-infinity'",
      [g.name],
    );
    this.#guarded = true;
    await this.unfence();
    for (const t of (await listTables(c)).filter((x) => tableMatches(g.tables, x)))
      await fenceTable(c, g.name, t);
  }

  /** A table made after guardLease gets the fence trigger once its creation has committed. */
  async #guardNewTables(): Promise<void> {
    for (const t of [...this.#unguarded]) {
      this.#unguarded.delete(t);
      await fenceTable(this.#client!, this.#o.group.name, t).catch((err: Error) =>
        this.#o.log.error(
          { table: t, err: err.message },
          'the lease trigger could not be put on a new table',
        ),
      );
    }
  }

  async extendLease(ms: number): Promise<void> {
    await this.#client!.query(
      "UPDATE tandem.lease SET until = clock_timestamp() + $2 * interval '1 millisecond', set_at = clock_timestamp() WHERE grp = $1",
      [this.#o.group.name, ms],
    );
  }

  /**
   * A non-transactional logical message is decoded after every transaction that committed
   * before it: once capture sees it, everything before the call is in the journal. The
   * sequences' values follow it.
   */
  async barrier(): Promise<number> {
    const nonce = randomUUID();
    const seen = new Promise<void>((resolve) => this.#barriers.set(nonce, resolve));
    await this.#emitFlushed(`${BARRIER_PREFIX}${this.#o.group.name}`, nonce);
    await seen;
    const journal = this.#o.journal;
    const last = journal.lastPosition;
    await journal.whenDurable(last);
    return last;
  }

  /**
   * The snapshot holds exactly the transactions whose commit record starts before its slot's
   * consistent point (the mark), and capture journals transactions in commit order: the cut is
   * the journal's last position at the first boundary at or past the mark. A message written
   * after the slot was made is such a boundary, so the stream always reaches one.
   */
  openCut(): CaptureCut {
    const cut = { ...pendingCut(), seen: [] as { lsn: bigint; position: number }[] };
    this.#cuts.add(cut);
    return {
      at: async (mark) => {
        const hit = cut.seen.find((b) => b.lsn >= mark);
        if (hit) {
          this.#cuts.delete(cut);
          return hit.position;
        }
        cut.mark = mark;
        cut.seen = [];
        if (this.#stopped || !this.#client) throw new Error('capture stopped');
        await this.#emitFlushed('tandem_cut', '');
        return cut.done;
      },
      close: () => {
        this.#cuts.delete(cut);
        cut.reject(new Error('cut closed'));
      },
    };
  }

  /**
   * Writes a non-transactional logical message and flushes WAL past it. A walsender sends only
   * flushed WAL, and alone such a message waits for the WAL writer, up to `wal_writer_delay`
   * (200 ms by default) on a database with no commits: a seed's start or a switchover's barrier
   * waited that long (0-200 ms, about 100 on average, measured on PostgreSQL 15). Written in a
   * transaction that takes a transaction id, it is flushed by that transaction's commit (1-2
   * ms), locally: in sync mode Tandem is the standby the commit would wait for. The message is
   * still decoded on its own, and the transaction has no changes to decode.
   */
  async #emitFlushed(prefix: string, content: string): Promise<void> {
    await this.#client!.query(
      `BEGIN; SET LOCAL synchronous_commit = local;
       SELECT pg_logical_emit_message(false, ${quoteLiteral(prefix)}, ${quoteLiteral(content)});
       SELECT txid_current(); COMMIT`,
    );
  }

  /** The stream is between transactions at `lsn`: everything before it is journaled. */
  #boundary(lsn: bigint): void {
    const position = this.#o.journal.lastPosition;
    for (const c of this.#cuts) {
      if (c.mark === null) c.seen.push({ lsn, position });
      else if (lsn >= c.mark) {
        this.#cuts.delete(c);
        c.resolve(position);
      }
    }
  }

  async handOverSequences(): Promise<number> {
    // Between transactions (one of a table outside the fence may be being decoded).
    while (this.#tx !== null) await new Promise((r) => setTimeout(r, 1));
    const n = await this.#sequences(true);
    await this.#o.journal.whenDurable(this.#o.journal.lastPosition);
    return n;
  }

  /**
   * Drops the slot (the node is a backup now; a slot nobody reads would hold WAL forever) and,
   * when Tandem put it there (sync.configure_server), its name in synchronous_standby_names.
   */
  async retire(): Promise<void> {
    const g = this.#o.group;
    const slot = slotName(g.name, this.#o.node);
    const client = await connectPostgres(this.#o.url, this.#field);
    try {
      const deadline = monoNow() + 10_000;
      for (;;) {
        try {
          await client.query(
            'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1',
            [slot],
          );
          break;
        } catch (err) {
          // The walsender of the stopped capture may not have exited yet.
          if ((err as { code?: string }).code !== '55006' || monoNow() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      if (g.mode === 'sync' && g.sync.configureServer && (await onlyThisCapture(client, slot)))
        await resetSyncNames(client);
    } finally {
      await client.end().catch(() => {});
    }
  }

  #fatal(err: Error): void {
    this.#stopped = true;
    for (const c of this.#cuts) c.reject(err);
    this.#cuts.clear();
    this.#o.onFatal(
      err instanceof TandemError
        ? err
        : new TandemError(
            'ENDPOINT_UNAVAILABLE',
            `${this.#field}: logical replication failed: ${err.message}`,
            'The node starts the group again by itself (after 1 s, doubling to 30 s), and capture resumes after the last change its journal holds; if the error comes back, check the PostgreSQL server and its log',
            { cause: err },
          ),
    );
  }

  /** Positions up to `position` may be confirmed to PostgreSQL. */
  #confirm(position: number): void {
    let moved = false;
    while (this.#unconfirmed.length > 0 && this.#unconfirmed[0]!.position <= position) {
      const u = this.#unconfirmed.shift()!;
      if (u.lsn > this.#confirmedLsn) this.#confirmedLsn = u.lsn;
      moved = true;
    }
    if (!moved) return;
    // A waiting sync commit hears at once. Otherwise the position only lets the server recycle
    // WAL: said at most every 50 ms, which spares both processes a wake-up per journal fsync.
    if (this.#o.group.mode === 'sync' && !this.#degraded) this.#sendStatus();
    else
      this.#statusTimer ??= setTimeout(() => {
        this.#statusTimer = null;
        this.#sendStatus();
      }, 50);
  }

  #sendStatus(): void {
    if (this.#confirmedLsn !== 0n) this.#stream?.status(this.#confirmedLsn);
  }

  /** Whether the group replicates a table: its patterns match it, and its name is its own. */
  #replicates(schema: string, name: string): boolean {
    return dotless(schema, name) && tableMatches(this.#o.group.tables, qualifiedName(schema, name));
  }

  async #schemaOf(rel: Relation): Promise<void> {
    const table = qualifiedName(rel.schema, rel.name);
    if (!this.#replicates(rel.schema, rel.name)) {
      this.#schemas.set(rel.oid, { table, replicated: false, schema: null, valueOids: [] });
      return;
    }
    const valueOids = await this.#valueOidsOf(rel.columns.map((c) => c.typeOid));
    // With the event trigger, schema changes come from it, in stream order, and nothing more is
    // needed here; without it, the catalog as read now is the best there is.
    if (this.#ddlKey) {
      this.#schemas.set(rel.oid, { table, replicated: true, schema: null, valueOids });
      return;
    }
    const prev = this.#schemas.get(rel.oid);
    const schema = await this.#relationSchema(rel, table);
    this.#schemas.set(rel.oid, { table, replicated: true, schema, valueOids });
    if (!prev || JSON.stringify(prev.schema) !== JSON.stringify(schema)) {
      this.#tx?.changes.push({ op: 'schema', table, schema });
    }
  }

  /**
   * The types values of columns of types `oids` are converted by: built-in types as they are, a
   * domain (through domains over domains) as its base type, other user-defined types as text.
   */
  async #valueOidsOf(oids: number[]): Promise<number[]> {
    const unknown = [...new Set(oids.filter((o) => o >= FIRST_USER_OID && !this.#valueOids.has(o)))];
    if (unknown.length > 0) {
      const r = await this.#client!.query<{ oid: number; base: number }>(
        `SELECT u.o::int8 AS oid, ${valueTypeSql('u.o')}::int8 AS base FROM unnest($1::oid[]) AS u(o)`,
        [unknown],
      );
      for (const row of r.rows) this.#valueOids.set(Number(row.oid), Number(row.base));
    }
    return oids.map((o) => this.#valueOids.get(o) ?? o);
  }

  /**
   * One message of the stream. Returns a promise only when it must wait (a table's schema to
   * read, the journal to catch up): the stream then holds the next messages until it settles.
   */
  #message(msg: PgMessage): Promise<void> | undefined {
    if (this.#stopped) return;
    switch (msg.tag) {
      case 'begin':
        // Already journaled before a restart (the server may resend from its confirmed point):
        // its commit record starts before the end of the last journaled one. A commit record
        // that starts exactly there is the next transaction, not a repeat.
        this.#tx = msg.finalLsn < this.#lastLsn ? null : { changes: [], xid: msg.xid };
        if (this.#tx && this.#cuts.size > 0) this.#boundary(msg.finalLsn);
        return;
      case 'relation':
        if (this.#tx) return this.#schemaOf(msg.relation);
        this.#schemas.delete(msg.relation.oid);
        return;
      case 'insert':
      case 'update':
      case 'delete':
        if (!this.#tx) return;
        if (!this.#schemas.has(msg.relation.oid))
          return this.#schemaOf(msg.relation).then(() => this.#rowMessage(msg));
        return this.#rowMessage(msg);
      case 'truncate':
        if (!this.#tx) return;
        for (const rel of msg.relations)
          if (this.#replicates(rel.schema, rel.name))
            this.#tx.changes.push({ op: 'truncate', table: qualifiedName(rel.schema, rel.name) });
        return;
      case 'message':
        if (!msg.transactional && this.#cuts.size > 0) this.#boundary(msg.lsn);
        if (!msg.transactional && msg.prefix === `${BARRIER_PREFIX}${this.#o.group.name}`) {
          const nonce = msg.content.toString('utf8');
          this.#barriers.get(nonce)?.();
          this.#barriers.delete(nonce);
          return;
        }
        if (this.#tx && msg.transactional && msg.prefix === `${DDL_PREFIX}${this.#o.group.name}`) {
          const json = this.#ddlKey && verifyDdlMessage(this.#ddlKey, this.#tx.xid, msg.lsn, msg.content);
          if (!json) {
            this.#o.log.error(
              { group: this.#o.group.name, lsn: formatLsn(msg.lsn), xid: this.#tx.xid >>> 0 },
              this.#ddlKey
                ? `ignored a schema-change message that the group's event trigger did not write (its signature is wrong): a role connected to the source sent it with pg_logical_emit_message, in the transaction of this id. To stop any role from sending messages, revoke EXECUTE on pg_logical_emit_message from PUBLIC and grant it to Tandem's capture role`
                : `ignored a schema-change message: schema changes are not followed (${this.#ddlOff}), and the message cannot be checked`,
            );
            return;
          }
          const m = JSON.parse(json.toString('utf8')) as DdlMessage;
          // (The trigger sends none for such a name.)
          if (!dotless(m.schema, m.name)) return;
          if (m.op !== 'rows') this.#ddl(m);
          else {
            this.#rows(m);
            return this.#partIfFull();
          }
        }
        return;
      case 'commit': {
        if (!this.#tx) return;
        const wait = this.#emit(1, msg.endLsn);
        if (wait) return wait.then(() => this.#committed());
        this.#committed();
        return;
      }
      default:
        return;
    }
  }

  #rowMessage(msg: PgMessage & { tag: 'insert' | 'update' | 'delete' }): Promise<void> | undefined {
    this.#row(msg);
    return this.#partIfFull();
  }

  /** A large transaction goes to the journal in parts, as its changes come. */
  #partIfFull(): Promise<void> | undefined {
    if (this.#tx!.changes.length >= (this.#o.maxChangesPerRecord ?? 4096)) return this.#emit(0, null);
    return;
  }

  #committed(): void {
    this.#tx = null;
    if (this.#unguarded.size > 0) void this.#guardNewTables();
  }

  /**
   * Rows the event trigger sent (a partition attached to or detached from one of the group's
   * partitioned tables), as row changes at their place in the transaction.
   */
  #rows(m: DdlMessage): void {
    if (!this.#replicates(m.schema, m.name)) return;
    const table = qualifiedName(m.schema, m.name);
    const columns = m.names!;
    const types = m.typeOids!;
    for (const row of m.rows!) {
      const values = row.map((v, i) => fromPgText(v, types[i]!));
      this.#tx!.changes.push(
        m.action === 'delete'
          ? { op: 'delete', table, columns, before: values, after: null }
          : { op: 'insert', table, columns, before: null, after: values },
      );
    }
  }

  /** A schema change reported by the event trigger, at its place in the transaction. */
  #ddl(m: DdlMessage): void {
    const g = this.#o.group;
    const table = qualifiedName(m.schema, m.name);
    this.#schemaChanges++;
    if (m.op === 'drop' && m.kind === 'sequence') {
      // One whose values it sent (the backup made it from them), or whose name the patterns
      // match (dropped while this node was down, before it read it): the backup drops it too.
      if (this.#sequenceValues.delete(table) || tableMatches(g.tables, table))
        this.#tx!.changes.push({ op: 'drop', table });
      return;
    }
    if (m.op === 'drop') {
      this.#unkeyed.delete(table);
      this.#tx!.changes.push({ op: 'drop', table });
      return;
    }
    if (m.op === 'skipped') {
      this.#unkeyed.add(table);
      this.#o.log.warn(
        { group: g.name, table },
        `table ${table} matches the group's tables but is not replicated: it has no primary key. Add one (ALTER TABLE ${tableRef(table)} ADD PRIMARY KEY (...)); it joins then, with its rows`,
      );
      return;
    }
    if (this.#unkeyed.delete(table) || m.rowsBefore) {
      this.#o.log.info(
        { group: g.name, table },
        `table ${table} joins the group${m.rowsBefore ? ', with the rows written before (they follow its definition)' : ''}`,
      );
    }
    if (this.#guarded) this.#unguarded.add(table);
    const configured = g.keys[table];
    const primaryKey = configured && configured.length > 0 ? [...configured] : (m.primaryKey ?? []);
    if (primaryKey.length === 0) {
      throw new TandemError(
        'TABLE_NO_KEY',
        `table "${table}" was created or changed in group "${g.name}" without a primary key, so its rows cannot be matched on the target`,
        `Add one (ALTER TABLE ${tableRef(table)} ADD PRIMARY KEY (...)) or name a key in groups.${g.name}.keys, then restart the node`,
      );
    }
    const primaryKeyName = keyName(primaryKey, m.primaryKey ?? [], m.primaryKeyName);
    const schema: TableSchema = {
      name: table,
      dialect: 'postgres',
      columns: (m.columns ?? []).map(columnDef),
      ...(m.generated ? { generated: m.generated } : {}),
      primaryKey,
      ...(primaryKeyName ? { primaryKeyName } : {}),
      constraints: m.constraints ?? [],
      indexes: m.indexes ?? [],
      ...(m.types ? { types: m.types } : {}),
      ...(m.id ? { id: m.id } : {}),
      ...(m.owner ? { owner: m.owner } : {}),
      ...(m.grants ? { grants: m.grants } : {}),
      ...(m.sequenceGrants ? { sequenceGrants: m.sequenceGrants } : {}),
      ...(m.rewritten ? { rewritten: true } : {}),
    };
    this.#tx!.changes.push({ op: 'schema', table, schema });
  }

  #row(msg: Extract<PgMessage, { tag: 'insert' | 'update' | 'delete' }>): void {
    const known = this.#schemas.get(msg.relation.oid)!;
    if (!known.replicated) return;
    const cols = msg.relation.columns;
    // Columns whose new value is an unchanged TOAST datum are left out: the target keeps them.
    const keep = (img: RawValue[]) => cols.map((_, i) => img[i] !== UNCHANGED);
    const present = msg.tag === 'delete' ? cols.map(() => true) : keep(msg.new);
    const columns = cols.filter((_, i) => present[i]).map((c) => c.name);
    const image = (img: RawValue[] | null): Value[] | null =>
      img === null
        ? null
        : cols.flatMap((_, i) =>
            present[i]
              ? [img[i] === UNCHANGED ? null : fromPgText(img[i] as string | null, known.valueOids[i]!)]
              : [],
          );
    let before: Value[] | null = null;
    if (msg.tag !== 'insert' && msg.old) {
      // A key-only old tuple holds NULL for non-key columns: keep only what it really carries.
      before = image(msg.old);
      if (msg.keyOnly && before) {
        const keyNames = new Set(cols.filter((c) => c.key).map((c) => c.name));
        before = before.map((v, i) => (keyNames.has(columns[i]!) ? v : null));
      }
    }
    // An update that kept its key comes without an old tuple: before stays null (the source gave
    // none) and the new image's key identifies the row.
    const after = msg.tag === 'delete' ? null : image(msg.new);
    this.#tx!.changes.push({ op: msg.tag, table: known.table, columns, before, after });
  }

  /**
   * The table as the stream describes it at this point (column names and types from the
   * RELATION message, so a later ALTER does not leak into earlier changes); NOT NULL, defaults
   * and the key come from the catalog and the config.
   */
  async #relationSchema(rel: Relation, table: string): Promise<TableSchema> {
    const g = this.#o.group;
    const catalog = await readTableSchema(this.#client!, table, g.name, g.keys[table]);
    const byName = new Map(catalog.columns.map((c) => [c.name, c]));
    const columns = [];
    for (const c of rel.columns) {
      const k = `${c.typeOid}:${c.typeMod}`;
      let type = this.#typeNames.get(k);
      if (!type) {
        const r = await this.#client!.query<{ t: string }>('SELECT format_type($1, $2) AS t', [
          c.typeOid,
          c.typeMod,
        ]);
        type = r.rows[0]!.t;
        this.#typeNames.set(k, type);
      }
      const known = byName.get(c.name);
      columns.push({
        name: c.name,
        type,
        notNull: known?.notNull ?? false,
        default: known?.default ?? null,
        attnum: known?.attnum,
      });
    }
    return {
      name: table,
      dialect: 'postgres',
      columns,
      ...(catalog.generated ? { generated: catalog.generated } : {}),
      primaryKey: catalog.primaryKey,
      ...(catalog.types ? { types: catalog.types } : {}),
    };
  }

  /**
   * Journals the open transaction's changes as one record (`txCount` 0: a part of a large one;
   * `endLsn` null then). Waits, returning a promise, only when the journal is far behind.
   */
  #emit(txCount: number, endLsn: bigint | null): Promise<void> | undefined {
    const tx = this.#tx!;
    if (tx.changes.length === 0 && endLsn === null) return;
    const journal = this.#o.journal;
    // Bounded memory: do not run far ahead of the disk.
    if (journal.lastPosition - journal.durablePosition > 256) {
      return journal.whenDurable(journal.lastPosition - 256).then(() => this.#emit(txCount, endLsn));
    }
    const rec: JournalRecord = {
      position: journal.nextPosition,
      epoch: this.#o.epoch(),
      origin: this.#o.node,
      hlc: this.#o.hlc.now(),
      source: `pg:${formatLsn(endLsn ?? this.#lastLsn)}`,
      txCount,
      changes: tx.changes,
    };
    tx.changes = [];
    journal.append(encodeRecord(rec)).catch((err: Error) => this.#fatal(err));
    if (endLsn !== null) {
      this.#lastLsn = endLsn;
      this.#unconfirmed.push({ position: rec.position, lsn: endLsn, at: monoNow() });
    }
    return;
  }
}
