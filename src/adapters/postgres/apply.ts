/**
 * PostgreSQL apply: replays journal records into the target database.
 *
 * Invariants (as for SQLite, see docs/postgres.md)
 * - Records in position order; `tandem.applied` is updated in the same transaction as the data
 *   (exactly-once across crashes); commits only at a record that ends a source transaction.
 * - Row operations are idempotent on images (insert = upsert, update of a missing row = upsert,
 *   delete of a missing row = nothing), so records replayed over a seed converge.
 * - The fence: a statement trigger on every replicated table refuses writes unless the session
 *   runs as the apply role with `tandem.apply = on`, which only the apply connection sets.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isDeepStrictEqual } from 'node:util';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { tableMatches } from '../../config/index.js';
import { TandemError } from '../../core/errors.js';
import type { ColumnDef, JournalRecord, RowChange, TableSchema, Value } from '../../core/record.js';
import { LanePlanner, lanesFor, type Schedulable, scheduleUnits } from '../apply-scheduler.js';
import { foldChanges, keyText, type Upserts } from '../coalesce.js';
import { fenceText } from '../fence-text.js';
import {
  checkResume,
  checkVerifiedCounts,
  chunkDiffers,
  tablesToVerify,
  uniqueAfter,
} from '../seed-checks.js';
import { StepRecords } from '../step-records.js';
import { Stepper } from '../stepper.js';
import { isUniqueIndex, pgIndexes, schemaFor } from '../typemap.js';
import {
  APPLY_FAILED_FIX,
  type Apply,
  type ApplyOptions,
  type SeedData,
  type SeedPlan,
  type SeedState,
  seedRowCount,
} from '../types.js';
import { ApplySession, arrayLiteral, literal } from './apply-session.js';
import { disableDdlCapture } from './ddl.js';
import { checkPostgres, closeClient, pgClientConfig } from './endpoint.js';
import { type FenceState, fencePrimary, fenceTable, setFence } from './fence.js';
import {
  addConstraintSql,
  columnTypeSql,
  completeTableSql,
  createTableSql,
  generatedColumnSql,
  IDENTITY_SEQUENCE_SQL,
  identitySql,
  isUniqueConstraint,
  listTables,
  moveSql,
  noKey,
  primaryKeySql,
  quoteIdent,
  quoteLiteral,
  readApplyFacts,
  readTableSchema,
  relaxIdentity,
  sequenceOf,
  splitName,
  tableRef,
} from './schema.js';
import { ensureTypes, renameTypes } from './user-types.js';
import { toCopyText } from './values.js';

const VS_LOG =
  'CREATE TABLE IF NOT EXISTS tandem.vs_log (seq bigserial PRIMARY KEY, tbl text NOT NULL, op "char" NOT NULL, old jsonb, new jsonb)';

/** The function that logs a virtual switch's test writes of group `g`. */
function vsFunction(g: string): string {
  return `tandem.${quoteIdent(`vs_log_${g.replaceAll('-', '_').toLowerCase()}`)}`;
}

export interface PgApplyOptions extends ApplyOptions {
  url: string;
}

export class PgApply implements Apply {
  readonly #o: PgApplyOptions;
  #client!: pg.Client;
  /** Session 0 runs on #client (also DDL, seeding bookkeeping); the others apply in parallel. */
  readonly #sessions: ApplySession[] = [];
  readonly #shapes = new Map<string, Shape>();
  /** Tables and index lists #noteSkipped has logged. */
  /** Owner and grant warnings given (#applyPrivileges), once each. */
  readonly #privilegesNoted = new Set<string>();
  readonly #skippedNoted = new Set<string>();
  /**
   * Units (source transactions, by their last position) above #applied that a parallel round
   * committed before a restart: applied once, never again (see #restoreRounds).
   */
  #skip = new Set<number>();
  /** Whether a parallel round's conflicts are worked out (after one-lane rounds, not). */
  readonly #lanePlanner = new LanePlanner();
  /** The parallel round being sent (see #step). */
  #inflight: Promise<void> = Promise.resolve();
  /** The role Tandem applies as (the fence lets it through). */
  #user = '';
  #applied = 0;
  /** Applied and flushed to the target's WAL (see #syncCommit). */
  #durableApplied = 0;
  #lastSyncCommit = 0;
  #appliedHlc = 0n;
  #seeded = false;
  /** The group was seeded here once (its applied row exists): the tables' rows are Tandem's. */
  #everSeeded = false;
  /** Apply connections run with session_replication_role = replica (no foreign-key checks). */
  #replica = false;
  #next = 1;
  #stopped = false;
  /** A virtual switch holds apply (docs/virtual-switch.md). */
  #paused = false;
  #seeding = false;
  #seedState: SeedState | null = null;
  /** Tables that held rows Tandem did not put there: seeding compares instead of writing. */
  #verify = new Set<string>();
  /**
   * After a resumed seed: the position of its newest snapshot. Until apply has passed it, the
   * rows are a mix of states (records replayed over chunks that hold them), so unique indexes
   * and UNIQUE / EXCLUDE constraints wait (#createDeferredUnique). 0: none wait.
   */
  #uniqueAfter = 0;
  readonly #lanes: Lane[] = [];
  #unsubscribe: (() => void) | undefined;

  readonly #stepper = new Stepper(
    () => this.#step(),
    async (err) => {
      await this.#rollback();
      this.#fatal(err);
    },
  );

  constructor(o: PgApplyOptions) {
    this.#o = o;
  }

  get #where(): string {
    return `on the backup (${this.#field})`;
  }

  get #field(): string {
    return `groups.${this.#o.group.name}.endpoints.${this.#o.node}`;
  }

  async open(): Promise<void> {
    const g = this.#o.group;
    // The apply connections open while the checks run (each is a server process and three round
    // trips); stop() closes them once they are sessions.
    const connecting = Array.from({ length: g.apply.workers }, () => this.#connect('apply'));
    for (const p of connecting) p.catch(() => {}); // awaited below, after the checks
    try {
      await checkPostgres({
        url: this.#o.url,
        field: this.#field,
        role: 'target',
        tables: g.tables,
        keys: g.keys,
        group: g.name,
      });
      for (const client of await Promise.all(connecting)) this.#sessions.push(new ApplySession(client));
    } catch (err) {
      await Promise.all(connecting.map((p) => p.then(closeClient, () => {})));
      throw err;
    }
    const c = this.#sessions[0]!.client;
    this.#client = c;
    await c.query(`CREATE SCHEMA IF NOT EXISTS tandem;
      CREATE TABLE IF NOT EXISTS tandem.applied (grp text PRIMARY KEY, position bigint NOT NULL, epoch int NOT NULL, seeded boolean NOT NULL DEFAULT false);
      CREATE TABLE IF NOT EXISTS tandem.tables (grp text NOT NULL, name text NOT NULL, schema jsonb NOT NULL, PRIMARY KEY (grp, name));
      CREATE TABLE IF NOT EXISTS tandem.seed (grp text PRIMARY KEY, plan text NOT NULL, verify text[] NOT NULL);
      CREATE TABLE IF NOT EXISTS tandem.seed_chunks (grp text NOT NULL, tbl text NOT NULL, chunk int NOT NULL, rows bigint NOT NULL, PRIMARY KEY (grp, tbl, chunk));
      CREATE TABLE IF NOT EXISTS tandem.apply_workers (grp text NOT NULL, worker int NOT NULL, base bigint NOT NULL, units bigint[] NOT NULL, PRIMARY KEY (grp, worker));
      CREATE TABLE IF NOT EXISTS tandem.unique_after (grp text PRIMARY KEY, position bigint NOT NULL);`);
    // The fence: only the apply role with tandem.apply = on may write (fence.ts).
    this.#user = (await c.query<{ u: string }>('SELECT session_user AS u')).rows[0]!.u;
    // A virtual switch keeps the database open to test writers (and apply held) across restarts.
    this.#paused = this.#o.testing === true;
    if (!this.#paused) await setFence(c, g.name, this.#backupFence);
    // A seed's end writes the unique wait with the applied row: one read takes both.
    const r = await c.query<{ position: string; seeded: boolean; unique_after: string | null }>(
      `SELECT a.position::text, a.seeded, u.position::text AS unique_after
       FROM tandem.applied a LEFT JOIN tandem.unique_after u USING (grp) WHERE a.grp = $1`,
      [g.name],
    );
    const row = r.rows[0];
    this.#applied = row ? Number(row.position) : 0;
    this.#seeded = row?.seeded ?? false;
    this.#everSeeded = row !== undefined;
    this.#uniqueAfter = row?.unique_after ? Number(row.unique_after) : 0;
    await this.#restoreRounds();
    this.#durableApplied = this.#applied;
    this.#next = this.#applied + 1;
    await this.#loadSeedState();
    if (this.#seeded && !this.#paused) {
      const tables = await this.#groupTables();
      for (const t of tables) await fenceTable(c, g.name, t);
      await relaxIdentity(c, tables);
      // Now, while nothing else waits: the first round after a start needs them, and would
      // wait for them behind the link's batches.
      if (tables.length > 0) await this.#readShapes(tables);
    }
  }

  get appliedPosition(): number {
    return this.#applied;
  }
  get durableAppliedPosition(): number {
    return this.#durableApplied;
  }
  get appliedHlc(): bigint {
    return this.#appliedHlc;
  }
  get seeded(): boolean {
    return this.#seeded;
  }

  run(): void {
    this.#unsubscribe = this.#o.journal.onDurable(() => this.kick());
    this.#stepper.start();
  }

  kick(): void {
    this.#stepper.kick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe?.();
    await this.#stepper.stop();
    await this.#rollback();
    // Commits were asynchronous: one synchronous commit makes them all durable.
    if (this.#seeded && this.#client) {
      await this.#client
        .query('BEGIN; SET LOCAL synchronous_commit = local; SELECT txid_current(); COMMIT')
        .then(() => (this.#durableApplied = this.#applied))
        .catch((err: Error) => this.#o.log.warn({ err: err.message }, 'final synchronous commit failed'));
    }
    await this.#closeLanes();
    await Promise.all(this.#sessions.splice(1).map((x) => closeClient(x.client)));
    await this.#client?.end().catch(() => {});
  }

  #fatal(err: Error): void {
    this.#o.onFatal(
      err instanceof TandemError
        ? err
        : new TandemError(
            'APPLY_FAILED',
            `group ${this.#o.group.name}: applying position ${this.#next} on ${this.#field} failed: ${err.message}`,
            APPLY_FAILED_FIX,
            { cause: err },
          ),
    );
  }

  /**
   * Lets the round in flight finish (or fail), rolls back every open apply transaction; apply
   * resumes after the applied position.
   */
  async #rollback(): Promise<void> {
    await this.#inflight.catch(() => {});
    await Promise.all(this.#sessions.map((x) => x.rollback()));
    this.#next = this.#applied + 1;
  }

  /**
   * An apply connection: a superuser sets session_replication_role = replica, as PostgreSQL's
   * own apply workers do, so ordinary triggers (the fence included, and foreign-key checks) do
   * not fire for it, which saves a trigger call per statement; otherwise the fence lets the
   * session through by its role and tandem.apply.
   */
  async #connect(kind: 'apply' | 'seed'): Promise<pg.Client> {
    const client = new pg.Client({
      ...pgClientConfig(this.#o.url),
      application_name: `tandem_${kind}_${this.#o.group.name}`,
    });
    client.on('error', (err) => {
      if (this.#stopped) return;
      if (kind === 'apply') this.#fatal(err);
      else this.#o.log.warn({ err: err.message }, 'seed connection failed');
    });
    await client.connect();
    // Commits do not wait for the target's WAL flush, as PostgreSQL's own apply workers do not:
    // a transaction lost to a crash of the target takes its applied position with it, and the
    // journal still holds its records (see #syncCommit). The search_path again, as the
    // connection's options set it (pgClientConfig), in case a pooler dropped them.
    await client.query(
      "SET tandem.apply = 'on'; SET standard_conforming_strings = on; SET synchronous_commit = off; SET search_path = public",
    );
    if (kind === 'apply') {
      this.#replica = await client.query('SET session_replication_role = replica').then(
        () => true,
        () => false,
      );
    } else await client.query('SET session_replication_role = replica').catch(() => {});
    return client;
  }

  /**
   * After a restart: a parallel round that was cut short left some of its units committed. Each
   * worker's transaction records the round's base (the applied position when it began) and the
   * units it committed; the newest base above the stored applied position is where apply
   * resumes, skipping those units.
   */
  async #restoreRounds(): Promise<void> {
    const r = await this.#client.query<{ base: string; units: string[] }>(
      'SELECT base::text, units::text[] FROM tandem.apply_workers WHERE grp = $1',
      [this.#o.group.name],
    );
    const base = Math.max(0, ...r.rows.map((x) => Number(x.base)));
    if (base <= this.#applied) return;
    this.#applied = base;
    this.#skip = new Set(r.rows.filter((x) => Number(x.base) === base).flatMap((x) => x.units.map(Number)));
    this.#o.log.info({ applied: base, committed: this.#skip.size }, 'resuming after a parallel apply round');
  }

  /**
   * Applies what the journal holds: a run of whole source transactions of row changes goes in
   * one parallel round over the apply connections; anything else (a transaction bigger than a
   * step, schema changes, TRUNCATE, sequences) goes alone through the serial path. Rounds are
   * pipelined: the next one is built while the one in flight runs, and sent when it has
   * committed.
   */
  async #step(): Promise<void> {
    if (!this.#seeded || this.#seeding || this.#paused) return;
    const session = this.#sessions[0]!;
    if (this.#uniqueAfter > 0 && this.#applied >= this.#uniqueAfter && !session.inTx) {
      await this.#inflight;
      await this.#createDeferredUnique();
    }
    if (!session.inTx) {
      // Nothing here holds the round's records past its build: while the round before runs, its
      // statements are all that is left of them (records kept that long outlive a scavenge and
      // are copied to the old generation).
      const send = await this.#round(this.#collect().units);
      if (send) {
        await this.#inflight;
        this.#inflight = send();
        // A failure surfaces at the next step's await (or the rollback's).
        this.#inflight.catch(() => {});
        this.#stepper.more();
        return;
      }
    }
    await this.#inflight;
    await this.#serialStep(session);
  }

  /**
   * Whole source transactions of row changes from #next, within one step's budget; stops before
   * a transaction that is not one (the serial path takes it).
   */
  #collect(): { units: Unit[]; more: boolean } {
    const units: Unit[] = [];
    let records: JournalRecord[] = [];
    const step = new StepRecords(this.#o.journal, this.#next, this.#o);
    for (const rec of step) {
      if (rec.changes.some((c) => c.op !== 'insert' && c.op !== 'update' && c.op !== 'delete')) break;
      records.push(rec);
      if (rec.txCount > 0) {
        units.push({
          records,
          last: rec,
          keys: [],
          weight: records.reduce((a, r) => a + r.changes.length, 0),
        });
        records = [];
      }
    }
    return { units, more: step.full || units.length > 0 };
  }

  /**
   * Whether the next apply commit waits for the target's WAL flush: about once a second. That
   * flush also covers every earlier (asynchronous) commit, so the position it commits is
   * durable, and the journal may let go of what lies before it.
   */
  #syncCommit(): boolean {
    const now = performance.now();
    if (now - this.#lastSyncCommit < 1000) return false;
    this.#lastSyncCommit = now;
    return true;
  }

  /**
   * One parallel round: the units are split over the apply connections by the keys they touch
   * (scheduleUnits), and each connection applies its share in one transaction, in source order,
   * recording the round's base and its units in tandem.apply_workers in the same transaction.
   * Readers may see one connection's commit before another's: those touch different rows.
   */
  async #round(units: Unit[]): Promise<(() => Promise<void>) | null> {
    if (units.length === 0) return null;
    // Everything up to the base has committed when this round is sent.
    const base = this.#next - 1;
    const todo = units.filter((u) => !this.#skip.has(u.last.position));
    const changesOf = (us: Unit[]) => {
      const out: RowChange[] = [];
      for (const u of us) for (const r of u.records) for (const c of r.changes) out.push(c as RowChange);
      return out;
    };
    // The round's table shapes, once: for the conflict keys and for every lane's writes.
    const shapes = await this.#shapesOf(changesOf(todo));
    const n = this.#lanePlanner.plan(
      lanesFor(
        todo.reduce((a, u) => a + u.weight, 0),
        this.#sessions.length,
      ),
    );
    if (n > 1) for (const u of todo) u.keys = conflictKeys(u, shapes);
    const carried = [...this.#skip].filter((p) => p > base);
    const lanes = scheduleUnits(todo, n);
    this.#lanePlanner.observe(n, lanes.length);
    const g = quoteLiteral(this.#o.group.name);
    const sync = lanes.length > 0 && this.#syncCommit();
    for (const [i, lane] of lanes.entries()) {
      const x = this.#sessions[i]!;
      x.queue('BEGIN');
      if (sync) x.queue('SET LOCAL synchronous_commit = local');
      await this.#applyRows(changesOf(lane), x, false, shapes);
      const done = [...carried, ...lane.map((u) => u.last.position)];
      const record = x.prepare(RECORD_ROUND, () => ({
        types: ['text', 'int', 'bigint', 'bigint[]'],
        sql: `INSERT INTO tandem.apply_workers (grp, worker, base, units) VALUES ($1, $2, $3, $4)
              ON CONFLICT (grp, worker) DO UPDATE SET base = EXCLUDED.base, units = EXCLUDED.units`,
      }));
      x.queue(`EXECUTE ${record}(${g}, ${i}, ${base}, '{${done.join(',')}}')`);
      x.queue('COMMIT');
    }
    const last = units[units.length - 1]!.last;
    this.#next = last.position + 1;
    const sessions = this.#sessions.slice(0, lanes.length);
    return async () => {
      await Promise.all(sessions.map((x) => x.flush()));
      for (const p of this.#skip) if (p <= last.position) this.#skip.delete(p);
      this.#applied = last.position;
      if (sync) this.#durableApplied = last.position;
      this.#appliedHlc = last.hlc;
      this.#o.onApplied?.();
    };
  }

  /**
   * The serial path, on the main connection: one source transaction (or as much of a big one as
   * the step allows; it continues in the next step), committed with the applied position.
   */
  async #serialStep(x: ApplySession): Promise<void> {
    const step = new StepRecords(this.#o.journal, this.#next, this.#o);
    let last: JournalRecord | null = null;
    // Row changes of the step's records are folded together (a large transaction's step is
    // thousands of rows: COPY), up to the next change of another kind.
    const rows: RowChange[] = [];
    for (const rec of step) {
      if (this.#stopped) break;
      if (!x.inTx) {
        x.queue('BEGIN');
        x.inTx = true;
      }
      await this.#applyRecord(rec, rows, x);
      this.#next = rec.position + 1;
      last = rec;
      if (rec.txCount > 0) break;
    }
    await this.#applyRows(rows.splice(0), x, true);
    if (x.inTx && last && last.txCount > 0) {
      const record = x.prepare(RECORD_APPLIED, () => ({
        types: ['bigint', 'int', 'text'],
        sql: 'UPDATE tandem.applied SET position = $1, epoch = $2 WHERE grp = $3',
      }));
      x.queue(`EXECUTE ${record}(${last.position}, ${last.epoch}, ${quoteLiteral(this.#o.group.name)})`);
      const sync = this.#syncCommit();
      if (sync) x.queue('SET LOCAL synchronous_commit = local');
      x.queue('COMMIT');
      await x.flush();
      x.inTx = false;
      this.#applied = last.position;
      if (sync) this.#durableApplied = last.position;
      this.#appliedHlc = last.hlc;
      this.#o.onApplied?.();
    } else await x.flush();
    if (last) this.#stepper.more();
  }

  /**
   * One record on the serial path. Row changes are added to `rows` (folded and written by the
   * caller, or here before a change of another kind).
   */
  async #applyRecord(rec: JournalRecord, rows: RowChange[], x: ApplySession): Promise<void> {
    let truncate: string[] = [];
    for (const c of rec.changes) {
      if (c.op === 'truncate') {
        await this.#applyRows(rows.splice(0), x, true);
        truncate.push(tableRef(c.table));
        continue;
      }
      // Tables truncated together go in one statement: a table that another one references
      // can only be truncated with it.
      if (truncate.length > 0) x.queue(`TRUNCATE ${truncate.join(', ')}`);
      truncate = [];
      if (c.op === 'insert' || c.op === 'update' || c.op === 'delete') {
        rows.push(c);
        continue;
      }
      await this.#applyRows(rows.splice(0), x, true);
      switch (c.op) {
        case 'schema':
          await x.flush();
          await asSource(c.table, () => this.#applySchema(c.schema));
          break;
        case 'drop':
          await x.flush();
          if (await this.#dropSequence(c.table)) break;
          await this.#client.query(`DROP TABLE IF EXISTS ${tableRef(c.table)}`);
          await this.#client.query('DELETE FROM tandem.tables WHERE grp = $1 AND name = $2', [
            this.#o.group.name,
            c.table,
          ]);
          this.#forget(c.table);
          break;
        case 'sequence': {
          // The backup keeps the source's sequences at their values, counting as they do (for a
          // switchover); the tables' defaults do not use them while it is a backup.
          const ref = tableRef(c.table);
          const { schema } = splitName(c.table);
          const o = c.options;
          const options = o
            ? `${/^(smallint|integer|bigint)$/.test(o.type) ? ` AS ${o.type}` : ''} INCREMENT BY ${o.increment} MINVALUE ${o.min} MAXVALUE ${o.max} START WITH ${o.start} CACHE ${o.cache} ${o.cycle ? '' : 'NO '}CYCLE`
            : '';
          if (schema !== 'public') x.queue(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
          x.queue(`CREATE SEQUENCE IF NOT EXISTS ${ref}${options}`);
          // (The value goes with the new bounds: the old value may lie outside them.)
          if (o) x.queue(`ALTER SEQUENCE ${ref}${options} RESTART WITH ${c.value}`);
          x.queue(`SELECT setval(${quoteLiteral(ref)}, ${c.value}, ${c.called !== false})`);
          break;
        }
      }
    }
    if (truncate.length > 0) x.queue(`TRUNCATE ${truncate.join(', ')}`);
  }

  /**
   * A drop of a sequence (DropChange): dropped here too, unless something of the backup's own
   * still uses it (the source's uses went before its drop), which a warning names. False when
   * `name` is not a sequence here.
   */
  async #dropSequence(name: string, ref = tableRef(name)): Promise<boolean> {
    const c = this.#client;
    const r = await c.query(
      "SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relkind = 'S') AS s",
      [ref],
    );
    if (r.rows[0].s !== true) return false;
    await c.query('SAVEPOINT tandem_drop_sequence');
    try {
      await c.query(`DROP SEQUENCE ${ref}`);
    } catch (err) {
      await c.query('ROLLBACK TO SAVEPOINT tandem_drop_sequence');
      // 2BP01: dependent objects still exist.
      if ((err as { code?: string }).code !== '2BP01') throw err;
      this.#o.log.warn(
        { sequence: name, err: (err as Error).message },
        `sequence ${name}, which the source dropped, is kept on the backup: something made there still uses it`,
      );
    }
    await c.query('RELEASE SAVEPOINT tandem_drop_sequence');
    return true;
  }

  /** Whether the target has the table (a table: not a sequence or a view of that name). */
  async #tableExists(table: string): Promise<boolean> {
    const r = await this.#client.query(
      "SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relkind IN ('r', 'p')) AS e",
      [tableRef(table)],
    );
    return r.rows[0].e === true;
  }

  /**
   * A table the source renamed or moved to another schema (known by its id, under another name
   * in tandem.tables), renamed or moved here too, with its definition's record: true once done.
   */
  async #renamed(schema: TableSchema): Promise<boolean> {
    if (!schema.id) return false;
    const c = this.#client;
    const r = await c.query<{ name: string }>(
      "SELECT name FROM tandem.tables WHERE grp = $1 AND name <> $2 AND schema->>'id' = $3",
      [this.#o.group.name, schema.name, schema.id],
    );
    const old = r.rows[0]?.name;
    if (old === undefined || !(await this.#tableExists(old))) return false;
    for (const sql of moveSql('ALTER TABLE', splitName(old), splitName(schema.name))) await c.query(sql);
    await c.query('UPDATE tandem.tables SET name = $3 WHERE grp = $1 AND name = $2', [
      this.#o.group.name,
      old,
      schema.name,
    ]);
    this.#forget(old);
    return true;
  }

  /**
   * Brings the target table to the source's new definition. With the previous definition and
   * attribute numbers (PostgreSQL sources), columns are dropped, renamed, retyped and added as
   * the source did; otherwise missing columns are added. Then the primary key, constraints and
   * indexes follow the source's (#applyKeysAndIndexes).
   */
  async #applySchema(incoming: TableSchema): Promise<void> {
    this.#noteSkipped(incoming);
    const schema = schemaFor(incoming, 'postgres', this.#o.group.name);
    const ref = tableRef(schema.name);
    const c = this.#client;
    const exists = (await this.#tableExists(schema.name)) || (await this.#renamed(schema));
    const stored = exists
      ? await c.query<{ schema: TableSchema }>(
          'SELECT schema FROM tandem.tables WHERE grp = $1 AND name = $2',
          [this.#o.group.name, schema.name],
        )
      : null;
    const prev = stored?.rows[0]?.schema;
    if (prev) await renameTypes(c, prev.types ?? [], schema.types ?? []);
    await ensureTypes(c, schema.types ?? [], this.#o.group.name);
    if (!exists) {
      await this.#createTable(schema);
      return;
    }
    // The same definition again (a dropped index re-emits every table of its schema).
    if (prev && isDeepStrictEqual(prev, JSON.parse(JSON.stringify(schema)))) return;
    // Generated columns the source dropped or changed go first: a column one uses cannot be
    // dropped before it (the source's DROP COLUMN ... CASCADE dropped both).
    await this.#changeGenerated(ref, schema, prev);
    const byAttnum = (s: TableSchema) =>
      new Map(s.columns.filter((x) => x.attnum !== undefined).map((x) => [x.attnum!, x]));
    if (
      prev?.columns.every((x) => x.attnum !== undefined) &&
      schema.columns.every((x) => x.attnum !== undefined)
    ) {
      const before = byAttnum(prev);
      const after = byAttnum(schema);
      // The backup's own column types by their names before this change, read once if a type
      // changed (a column of a type renamed by renameTypes has the new type already).
      const retyped = [...after].some(([n, col]) => before.has(n) && before.get(n)!.type !== col.type);
      const held = retyped ? (await readApplyFacts(c, [schema.name]))[0]!.types : new Map<string, string>();
      for (const [n, col] of before)
        if (!after.has(n)) await c.query(`ALTER TABLE ${ref} DROP COLUMN IF EXISTS ${quoteIdent(col.name)}`);
      for (const [n, col] of after) {
        const old = before.get(n);
        if (!old) continue;
        const alter = (what: string) =>
          c.query(`ALTER TABLE ${ref} ALTER COLUMN ${quoteIdent(col.name)} ${what}`);
        if (old.name !== col.name)
          await c.query(
            `ALTER TABLE ${ref} RENAME COLUMN ${quoteIdent(old.name)} TO ${quoteIdent(col.name)}`,
          );
        // The old default goes first: the retype below must not cast it, an identity cannot
        // have one; the new one comes last.
        const redefault = old.default !== col.default;
        if (redefault && old.default !== null) await alter('DROP DEFAULT');
        const retype = old.type !== col.type && held.get(old.name) !== col.type;
        if (retype) await this.#retype(ref, col.name, col.type, schema.rewritten === true);
        // (A retype takes the new type's collation.)
        if ((old.collation ?? null) !== (col.collation ?? null) || (retype && col.collation))
          await alter(`TYPE ${col.type} COLLATE ${col.collation ?? 'pg_catalog."default"'}`);
        if (old.notNull !== col.notNull) await alter(`${col.notNull ? 'SET' : 'DROP'} NOT NULL`);
        if (Boolean(old.identity) !== Boolean(col.identity)) {
          // A serial column made an identity: the source dropped the sequence it owned (the
          // identity's takes its name, which the backup's must have too).
          if (col.identity) await this.#dropOwnedSequences(ref, col.name);
          await alter(col.identity ? `ADD ${identitySql(col)}` : 'DROP IDENTITY IF EXISTS');
        } else if (col.identity) await this.#nameIdentitySequence(ref, col);
        if (redefault && col.default !== null) {
          await this.#drawFrom(ref, old.default, col);
          await alter(`SET DEFAULT ${col.default}`);
        }
      }
    }
    const have = await readTableSchema(c, schema.name, this.#o.group.name, schema.primaryKey);
    // Columns the backup lacks, in the source's order (a statement may add a generated column
    // between plain ones): plain ones with their defaults; generated ones it lacks or holds with
    // another expression (dropped first), once the columns they use are there and renamed. Then
    // the indexes, which may use them.
    const names = new Set(have.columns.map((col) => col.name));
    const held = new Map((have.generated ?? []).map((g) => [g.name, g.expr]));
    const adds: { attnum: number; add: () => Promise<unknown> }[] = [];
    for (const col of schema.columns) {
      if (names.has(col.name)) continue;
      adds.push({
        attnum: col.attnum ?? Number.MAX_SAFE_INTEGER,
        add: async () => {
          // (NOT NULL without a default: the source's table was empty, so is the backup's.)
          const def = `${col.default !== null ? ` DEFAULT ${col.default}` : col.identity ? ` ${identitySql(col)}` : ''}${col.notNull ? ' NOT NULL' : ''}`;
          const seq = sequenceOf(col.default);
          if (seq) await c.query(`CREATE SEQUENCE IF NOT EXISTS ${seq}`);
          await c.query(`ALTER TABLE ${ref} ADD COLUMN ${quoteIdent(col.name)} ${columnTypeSql(col)}${def}`);
          // (As createTableSql: the column's own sequence only, as the source says.)
          if (seq && col.serial)
            await c.query(`ALTER SEQUENCE ${seq} OWNED BY ${ref}.${quoteIdent(col.name)}`);
        },
      });
    }
    for (const g of schema.generated ?? []) {
      if (held.get(g.name) === g.expr) continue;
      if (held.has(g.name)) await c.query(`ALTER TABLE ${ref} DROP COLUMN ${quoteIdent(g.name)}`);
      adds.push({
        attnum: g.attnum,
        add: () => c.query(`ALTER TABLE ${ref} ADD COLUMN ${generatedColumnSql(g)}`),
      });
    }
    for (const { add } of adds.sort((a, b) => a.attnum - b.attnum)) await add();
    await this.#applyKeysAndIndexes(schema, prev, have);
    await this.#applyPrivileges(schema);
    await this.#remember(schema);
    this.#forget(schema.name);
  }

  /**
   * The source's owner and grants of a table (and of the sequences its defaults draw from), on
   * the backup: what the application's roles need once it is promoted. The owner is taken only
   * when the apply role has its rights (a member of it, or a superuser), else it stays and a
   * warning says how; grants to roles the backup lacks are left out with a warning. The fence
   * holds whatever the grants.
   */
  async #applyPrivileges(schema: TableSchema): Promise<void> {
    if (schema.owner === undefined) return; // (not a PostgreSQL source of this version)
    const c = this.#client;
    const ref = tableRef(schema.name);
    const items = (acl: readonly string[] | null | undefined) =>
      (acl ?? []).flatMap((a) => parseAcl(a) ?? []);
    const granted = [schema.grants, ...Object.values(schema.sequenceGrants ?? {})].flatMap(items);
    const names = [schema.owner, ...granted.map((g) => g.grantee).filter((g) => g !== '')];
    const r = await c.query<{ name: string; usable: boolean }>(
      "SELECT rolname AS name, pg_has_role(oid, 'USAGE') AS usable FROM pg_roles WHERE rolname = ANY ($1::text[])",
      [names],
    );
    const roles = new Map(r.rows.map((x) => [x.name, x.usable]));
    const missing = [...new Set(names.filter((n) => !roles.has(n)))];
    const held = async (target: string) =>
      (
        await c.query<{ owner: string; acl: string[] | null }>(
          'SELECT pg_get_userbyid(relowner) AS owner, relacl::text[] AS acl FROM pg_class WHERE oid = to_regclass($1)',
          [target],
        )
      ).rows[0];
    const owner = (await held(ref))!.owner;
    let kept: string | null = null;
    if (owner !== schema.owner) {
      if (roles.get(schema.owner)) await c.query(`ALTER TABLE ${ref} OWNER TO ${quoteIdent(schema.owner)}`);
      else kept = owner;
    }
    const noted = `${schema.name}\0${missing.join('\0')}\0${kept}`;
    if ((missing.length > 0 || kept) && !this.#privilegesNoted.has(noted)) {
      this.#privilegesNoted.add(noted);
      const keeps = kept
        ? `keeps table ${schema.name} owned by ${kept}, not by the source's owner ${schema.owner} (to give it that owner, make the apply role a member: GRANT ${quoteIdent(schema.owner)} TO ${quoteIdent(kept)})`
        : `gives table ${schema.name} its source's owner`;
      const lacks =
        missing.length > 0
          ? `; it lacks roles the source grants to, which get nothing on it here: ${missing.join(', ')} (CREATE ROLE them; the grants follow with the table's next definition)`
          : '';
      this.#o.log.warn(
        { table: schema.name, missingRoles: missing, owner: schema.owner },
        `the backup ${keeps}${lacks}`,
      );
    }
    const grant = async (kind: 'TABLE' | 'SEQUENCE', target: string, wanted: AclItem[]) => {
      const here = await held(target);
      if (!here) return;
      // (The backup owner's rights are its own. The source's owner, when it is not the backup
      // owner, gets its rights as grants: it reads and writes once promoted, if not migrate.)
      const key = (g: AclItem) => `${g.grantee}=${[...g.privileges].sort().join('')}`;
      const want = wanted.filter(
        (g) => g.grantee !== here.owner && (g.grantee === '' || roles.has(g.grantee)),
      );
      const have = items(here.acl).filter((g) => g.grantee !== here.owner);
      if (want.map(key).sort().join() === have.map(key).sort().join()) return;
      const who = (g: string) => (g === '' ? 'PUBLIC' : quoteIdent(g));
      for (const g of new Set(have.map((x) => x.grantee)))
        await c.query(`REVOKE ALL ON ${kind} ${target} FROM ${who(g)}`);
      for (const g of want) {
        const privileges = [...g.privileges].flatMap((p) => PRIVILEGE_NAMES[p] ?? []);
        if (privileges.length > 0)
          await c.query(`GRANT ${privileges.join(', ')} ON ${kind} ${target} TO ${who(g.grantee)}`);
      }
    };
    // (No grants: the defaults, all rights to the owner only.)
    await grant(
      'TABLE',
      ref,
      schema.grants ? items(schema.grants) : [{ grantee: schema.owner, privileges: 'arwdDxt' }],
    );
    for (const [seq, acl] of Object.entries(schema.sequenceGrants ?? {}))
      await grant('SEQUENCE', tableRef(seq), items(acl));
  }

  /**
   * The backup's generated columns brought to the source's, known by their attribute numbers,
   * but for their expressions (#applySchema, after the other columns): one the source dropped is
   * dropped, one it made an ordinary column (DROP EXPRESSION) is made one here too, one it
   * renamed, retyped or made NOT NULL (or not) likewise.
   */
  async #changeGenerated(ref: string, schema: TableSchema, prev: TableSchema | undefined): Promise<void> {
    const alter = (sql: string) => this.#client.query(`ALTER TABLE ${ref} ${sql}`);
    const now = new Map((schema.generated ?? []).map((g) => [g.attnum, g]));
    const plain = new Set(schema.columns.map((col) => col.attnum));
    for (const old of prev?.generated ?? []) {
      const g = now.get(old.attnum);
      if (!g) {
        await alter(
          plain.has(old.attnum)
            ? `ALTER COLUMN ${quoteIdent(old.name)} DROP EXPRESSION IF EXISTS`
            : `DROP COLUMN IF EXISTS ${quoteIdent(old.name)}`,
        );
        continue;
      }
      if (old.name !== g.name) await alter(`RENAME COLUMN ${quoteIdent(old.name)} TO ${quoteIdent(g.name)}`);
      if (old.type !== g.type) await alter(`ALTER COLUMN ${quoteIdent(g.name)} TYPE ${g.type}`);
      if (old.notNull !== g.notNull)
        await alter(`ALTER COLUMN ${quoteIdent(g.name)} ${g.notNull ? 'SET' : 'DROP'} NOT NULL`);
    }
  }

  /**
   * The primary key, CHECK / UNIQUE / EXCLUDE constraints and indexes of a PostgreSQL source's
   * table, on the target: a different key is replaced; what the source dropped since `prev` (the
   * definition last applied) is dropped; what the target lacks, or holds under the same name
   * with another definition, is (re)created. Indexes made on the backup by hand, which the
   * source never had, are left alone.
   */
  async #applyKeysAndIndexes(
    schema: TableSchema,
    prev: TableSchema | undefined,
    have: TableSchema,
  ): Promise<void> {
    if (schema.constraints === undefined || schema.indexes === undefined) return; // not a PostgreSQL source
    const c = this.#client;
    const ref = tableRef(schema.name);
    const pk = await c.query<{ name: string; cols: string[] }>(
      `SELECT conname AS name, ARRAY(SELECT a.attname FROM unnest(conkey) WITH ORDINALITY AS k(n, o)
                JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = k.n ORDER BY k.o)::text[] AS cols
         FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'`,
      [ref],
    );
    // What the source dropped goes first: the key may take a dropped index's or constraint's
    // name (ADD PRIMARY KEY USING INDEX, a UNIQUE constraint made the key under its name).
    const wanted = new Set(schema.constraints.map((k) => k.name));
    const held = new Map((have.constraints ?? []).map((k) => [k.name, k.def]));
    const dropConstraint = (name: string) =>
      c.query(`ALTER TABLE ${ref} DROP CONSTRAINT IF EXISTS ${quoteIdent(name)}`);
    for (const k of prev?.constraints ?? []) if (!wanted.has(k.name)) await dropConstraint(k.name);
    const { schema: namespace } = splitName(schema.name);
    const byName = (defs: string[]) => new Map(defs.map((d) => [indexName(d), d]));
    const want = byName(schema.indexes);
    const hold = byName(have.indexes ?? []);
    const dropIndex = (name: string) => c.query(`DROP INDEX IF EXISTS ${quoteIdent(namespace)}.${name}`);
    for (const name of byName(prev?.indexes ?? []).keys()) if (!want.has(name)) await dropIndex(name);
    const key = pk.rows[0];
    if (key?.cols.join('\0') !== schema.primaryKey.join('\0')) {
      if (key) await c.query(`ALTER TABLE ${ref} DROP CONSTRAINT ${quoteIdent(key.name)}`);
      await c.query(`ALTER TABLE ${ref} ADD ${primaryKeySql(schema)}`);
    } else if (schema.primaryKeyName && key.name !== schema.primaryKeyName) {
      await c.query(
        `ALTER TABLE ${ref} RENAME CONSTRAINT ${quoteIdent(key.name)} TO ${quoteIdent(schema.primaryKeyName)}`,
      );
    }
    const waits = this.#uniqueAfter > 0; // #createDeferredUnique makes them later
    for (const k of schema.constraints) {
      if (held.get(k.name) === k.def) continue;
      if (held.has(k.name)) await dropConstraint(k.name);
      if (!(waits && isUniqueConstraint(k))) await this.#addConstraint(schema.name, k);
    }
    for (const [name, def] of want) {
      if (hold.get(name) === def) continue;
      if (hold.has(name)) await dropIndex(name);
      if (!(waits && isUniqueIndex(def))) await c.query(def);
    }
  }

  /**
   * Apply has passed a resumed seed's newest snapshot: the rows are a state the source had, and
   * every table gets the unique indexes and constraints of its definition now, in one transaction
   * that also clears the wait.
   */
  async #createDeferredUnique(): Promise<void> {
    const c = this.#client;
    const g = this.#o.group.name;
    const position = this.#uniqueAfter;
    await c.query('BEGIN');
    try {
      this.#uniqueAfter = 0;
      const r = await c.query<{ schema: TableSchema }>('SELECT schema FROM tandem.tables WHERE grp = $1', [
        g,
      ]);
      for (const { schema } of r.rows) {
        if (!(await this.#tableExists(schema.name))) continue;
        const have = await readTableSchema(c, schema.name, g, schema.primaryKey);
        await this.#applyKeysAndIndexes(schema, schema, have);
        // Its shape now has unique indexes: its rows no longer go to several connections at once.
        this.#forget(schema.name);
      }
      await c.query('DELETE FROM tandem.unique_after WHERE grp = $1', [g]);
      await c.query('COMMIT');
    } catch (err) {
      this.#uniqueAfter = position;
      await c.query('ROLLBACK').catch(() => {});
      throw new TandemError(
        'APPLY_FAILED',
        `group ${g}: the unique indexes and constraints held back after a resumed seed could not be created ${this.#where}: ${(err as Error).message}`,
        'The backup differs from the primary: reseed it (stop it, delete its state folder, start it)',
        { cause: err },
      );
    }
    this.#o.log.info(
      { position },
      "unique indexes and constraints created: apply has passed the resumed seed's newest snapshot",
    );
  }

  /** Logs, once per table and list, the indexes of a SQLite source this backup does not get. */
  #noteSkipped(incoming: TableSchema): void {
    const { skipped } = pgIndexes(incoming);
    const key = `${incoming.name}\0${skipped.map((x) => x.name).join('\0')}`;
    if (skipped.length === 0 || this.#skippedNoted.has(key)) return;
    this.#skippedNoted.add(key);
    this.#o.log.warn(
      { table: incoming.name, skipped },
      'the PostgreSQL backup does not get these indexes of the SQLite source',
    );
  }

  /**
   * Changes a column's type as the source did. The source's USING is not known: the cast, or
   * where there is none (one enum or composite type to another) through text. The source sends
   * the rows of a table it rewrote afterwards (ddl.ts), so their values end as its own.
   */
  async #retype(ref: string, column: string, type: string, rewritten: boolean): Promise<void> {
    const c = this.#client;
    const alter = (using: string) =>
      c.query(
        `ALTER TABLE ${ref} ALTER COLUMN ${quoteIdent(column)} TYPE ${type} USING ${quoteIdent(column)}${using}::${type}`,
      );
    let failed: unknown = null;
    for (const using of ['', '::text']) {
      await c.query('SAVEPOINT tandem_retype');
      try {
        await alter(using);
        await c.query('RELEASE SAVEPOINT tandem_retype');
        return;
      } catch (err) {
        await c.query('ROLLBACK TO SAVEPOINT tandem_retype');
        await c.query('RELEASE SAVEPOINT tandem_retype');
        const code = (err as { code?: string }).code ?? '';
        // 42846: cannot cast type ... to ...; class 22: a value the cast cannot take.
        if (code !== '42846' && !code.startsWith('22')) throw err;
        failed = err;
      }
    }
    // The source changed the type USING an expression no cast of the old value gives ('active'
    // to true): it rewrote the table and sends every row after this definition (ddl.ts), so the
    // table is emptied and retyped, and those rows fill it. Only with ordinary triggers off
    // (session_replication_role = replica): no foreign key's ON DELETE may act on the delete.
    if (!rewritten || !this.#replica) throw failed;
    await c.query(`DELETE FROM ${ref}`);
    await alter('::text');
  }

  /**
   * The sequence of identity column `col` of table `ref` named as the source's: a backup made
   * before identities carried it, or a source that renamed it. A sequence of that name already
   * here (its values, sent before) goes first.
   */
  async #nameIdentitySequence(ref: string, col: ColumnDef): Promise<void> {
    const want = col.identitySequence;
    if (!want) return;
    const c = this.#client;
    const r = await c.query<{ seq: string | null }>(
      `SELECT ${IDENTITY_SEQUENCE_SQL('a')} AS seq FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attname = $2`,
      [ref, col.name],
    );
    const have = r.rows[0]?.seq;
    if (!have || have === want) return;
    await this.#dropSequence(want);
    for (const sql of moveSql('ALTER SEQUENCE', splitName(have), splitName(want))) await c.query(sql);
  }

  /** Drops the sequences column `name` of table `ref` owns. */
  async #dropOwnedSequences(ref: string, name: string): Promise<void> {
    const r = await this.#client.query<{ seq: string }>(
      `SELECT s.oid::regclass::text AS seq FROM pg_attribute a
         JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum
         JOIN pg_class s ON s.oid = d.objid AND d.classid = 'pg_class'::regclass
        WHERE a.attrelid = $1::regclass AND a.attname = $2 AND d.deptype = 'a' AND s.relkind = 'S'`,
      [ref, name],
    );
    for (const { seq } of r.rows) await this.#client.query(`DROP SEQUENCE ${seq}`);
  }

  /**
   * The sequence a column's new default draws from, before the default is set: the one it drew
   * from before, renamed, when the source renamed it (Rails renames a table's sequence with it;
   * the backup's keeps its value and owner); else made if missing, and the column's own when
   * the source's owns it.
   */
  async #drawFrom(ref: string, before: string | null, col: TableSchema['columns'][number]): Promise<void> {
    const c = this.#client;
    const seq = sequenceOf(col.default);
    if (!seq) return;
    const was = sequenceOf(before);
    if (was && was !== seq && col.serial) {
      const r = await c.query<{ bare: string | null; both: boolean }>(
        `SELECT (parse_ident($1))[cardinality(parse_ident($1))] AS bare, to_regclass($1) IS NOT NULL AS both
          WHERE to_regclass($2) IS NOT NULL
            AND (parse_ident($1))[1:cardinality(parse_ident($1)) - 1] = (parse_ident($2))[1:cardinality(parse_ident($2)) - 1]`,
        [seq, was],
      );
      const row = r.rows[0];
      // The new name already here: a sequence read between the rename's commit and its turn in
      // the stream sent its value first. The old one is stale (the column's default no longer
      // draws from it).
      if (row?.both) await this.#dropSequence(was, was);
      else if (row?.bare) await c.query(`ALTER SEQUENCE ${was} RENAME TO ${quoteIdent(row.bare)}`);
    }
    await c.query(`CREATE SEQUENCE IF NOT EXISTS ${seq}`);
    if (col.serial) await c.query(`ALTER SEQUENCE ${seq} OWNED BY ${ref}.${quoteIdent(col.name)}`);
  }

  /** The source definition a target table was last brought to (in the apply transaction). */
  async #remember(schema: TableSchema): Promise<void> {
    await this.#client.query(
      `INSERT INTO tandem.tables (grp, name, schema) VALUES ($1, $2, $3)
       ON CONFLICT (grp, name) DO UPDATE SET schema = EXCLUDED.schema`,
      [this.#o.group.name, schema.name, JSON.stringify({ ...schema, rewritten: undefined })],
    );
  }

  /** Creates a table with its key, constraints and indexes; `bare`: columns only (seeding). */
  async #createTable(incoming: TableSchema, bare = false): Promise<void> {
    const schema = schemaFor(incoming, 'postgres', this.#o.group.name);
    // A sequence of that name here is one the source no longer has (it has a table of that
    // name now): dropped or renamed while its node was down, say.
    await this.#dropSequence(schema.name);
    await asSource(schema.name, async () => {
      await this.#client.query(createTableSql(schema, bare));
      if (!bare) {
        for (const sql of completeTableSql(schema, false, this.#uniqueAfter === 0))
          await this.#client.query(sql);
        await this.#addForeignKeys(schema);
      }
    });
    await fenceTable(this.#client, this.#o.group.name, schema.name);
    await relaxIdentity(this.#client, [schema.name]);
    await this.#applyPrivileges(schema);
    await this.#remember(schema);
    this.#forget(schema.name);
  }

  async #addForeignKeys(schema: TableSchema): Promise<void> {
    for (const k of schema.constraints ?? []) if (k.references) await this.#addConstraint(schema.name, k);
  }

  /** Adds a constraint; a foreign key only when the backup has the table it references. */
  async #addConstraint(table: string, k: { name: string; def: string; references?: string }): Promise<void> {
    if (k.references && !(await this.#tableExists(k.references))) {
      this.#o.log.warn(
        { table, constraint: k.name, references: k.references },
        'foreign key not created on the backup: the table it references is not replicated',
      );
      return;
    }
    await this.#client.query(addConstraintSql(table, k));
  }

  /** The shapes of the tables `changes` touch. */
  async #shapesOf(changes: RowChange[]): Promise<Map<string, Shape>> {
    const tables = new Set<string>();
    let last = '';
    for (const c of changes) {
      if (c.table === last) continue;
      last = c.table;
      tables.add(c.table);
    }
    const missing = [...tables].filter((t) => !this.#shapes.has(t));
    if (missing.length > 0) await this.#readShapes(missing);
    const shapes = new Map<string, Shape>();
    for (const t of tables) {
      const shape = this.#shapes.get(t);
      if (!shape) throw noKey(t, this.#o.group.name);
      shapes.set(t, shape);
    }
    return shapes;
  }

  /**
   * Key columns and column types of target tables, into the cache (kept until a table's schema
   * changes; a table without a primary key is left out). One query for all of them: the first
   * round after a start reads several tables while the link floods this process with the
   * backlog, and each round trip then waits its turn behind the batches arriving.
   */
  async #readShapes(tables: string[]): Promise<void> {
    const facts = await readApplyFacts(this.#client, tables);
    for (const [i, f] of facts.entries()) {
      if (f.key.length === 0) continue;
      const table = tables[i]!;
      this.#shapes.set(table, {
        key: f.key,
        types: f.types,
        whole: f.foreignKeys ? '\0foreign keys' : f.unique ? `${table}\0` : null,
        // Folding reorders writes inside a transaction: fine unless a check fires on each
        // statement (unique indexes always; foreign keys when not applying as a replica).
        foldable: !f.unique && (!f.foreignKeys || this.#replica),
      });
    }
  }

  /**
   * Row changes that one target transaction takes, folded into each row's final state
   * (coalesce.ts; readers see the transaction whole, so they cannot tell): per table, the rows
   * that end deleted or replaced are deleted by key, then the rest written as upserts, a few rows
   * by prepared statement, more as one INSERT ... ON CONFLICT of unnested arrays, and with `copy` (the
   * serial path: large transactions) long runs through COPY into a staging table. A parallel
   * round stays one round trip per connection: each extra one would wait for this process, busy
   * building the next round (measured: catch-up 73k -> 93k changes/s). Tables where the order of writes inside a transaction matters (other
   * unique indexes, exclusion constraints; foreign keys unless the session is a replica, which
   * does not check them) take one statement per change, in source order.
   */
  async #applyRows(
    changes: RowChange[],
    x: ApplySession,
    copy: boolean,
    known?: Map<string, Shape>,
  ): Promise<void> {
    if (changes.length === 0) return;
    const shapes = known ?? (await this.#shapesOf(changes));
    const folded = foldChanges(changes, (table) => {
      const shape = shapes.get(table)!;
      return shape.foldable ? { key: shape.key, columns: [...shape.types.keys()] } : null;
    });
    for (const c of folded.sequential) this.#applyRow(c, shapes.get(c.table)!, x);
    for (const f of folded.tables) {
      const shape = shapes.get(f.table)!;
      this.#delete(f.table, shape, f.deletes, x);
      for (const g of f.upserts) this.#upsert(f.table, shape, g, x, copy);
    }
  }

  /**
   * Rows deleted by key: a few by prepared statement, more by one statement per statement's
   * worth, an index scan per key inside it. A one-column key goes as `key = ANY(array)`
   * (10,000 pgbench_accounts rows: 23-42 ms, against 65-115 ms as 10,000 EXECUTEs); a wider one
   * as a join with the keys' unnested arrays (10,000 rows of a two-column key in a 4M-row table:
   * 119-140 ms, against 163-228 ms), at most JOIN_DELETE_KEYS keys a statement, so the planner
   * keeps to the index rather than hashing the keys and scanning the whole table.
   */
  #delete(table: string, shape: Shape, keys: Value[][], x: ApplySession): void {
    const types = shape.key.map((col) => columnType(shape, table, col));
    if (keys.length < VALUES_MIN_ROWS || !types.every(unnestable)) {
      for (const key of keys)
        this.#applyRow({ op: 'delete', table, columns: shape.key, before: key, after: null }, shape, x);
      return;
    }
    const ref = tableRef(table);
    if (shape.key.length === 1) {
      for (const part of statementParts(keys)) {
        const values = arrayLiteral(part.map((k) => k[0]!));
        x.queue(`DELETE FROM ${ref} WHERE ${quoteIdent(shape.key[0]!)} = ANY(${values}::${types[0]}[])`);
      }
      return;
    }
    // The keys' alias must differ from the table's own name.
    const alias = splitName(table).name === 'tandem_keys' ? 'tandem_keys_' : 'tandem_keys';
    const on = shape.key.map((col, i) => `${ref}.${quoteIdent(col)} = ${alias}.k${i}`).join(' AND ');
    for (const part of statementParts(keys, JOIN_DELETE_KEYS)) {
      const columns = types.map((t, i) => `unnest(${arrayLiteral(part.map((k) => k[i]!))}::${t}[]) AS k${i}`);
      x.queue(`DELETE FROM ${ref} USING (SELECT ${columns.join(', ')}) AS ${alias} WHERE ${on}`);
    }
  }

  /** Rows that end present, written over whatever the target holds at their keys. */
  #upsert(table: string, shape: Shape, g: Upserts, x: ApplySession, copy: boolean): void {
    if (g.rows.length < VALUES_MIN_ROWS) {
      for (const after of g.rows)
        this.#applyRow({ op: 'insert', table, columns: g.columns, before: null, after }, shape, x);
      return;
    }
    const cols = g.columns.map(quoteIdent).join(', ');
    const into = `INSERT INTO ${tableRef(table)} (${cols})`;
    const conflict = onConflict(shape.key, g.columns);
    if (copy && g.rows.length >= COPY_MIN_ROWS) {
      x.copy(table, g.columns, g.rows, (stage) => `${into} SELECT ${cols} FROM ${stage} ${conflict}`);
      return;
    }
    const types = g.columns.map((col) => columnType(shape, table, col));
    // In the select list a composite or a domain stays one value (unnest in FROM would spread a
    // composite's fields).
    const unnest = types.every(unnestable);
    for (const rows of statementParts(g.rows)) {
      if (unnest) {
        const columns = types.map((t, i) => `unnest(${arrayLiteral(rows.map((r) => r[i]!))}::${t}[])`);
        x.queue(`${into} SELECT ${columns.join(', ')} ${conflict}`);
      } else {
        x.queue(
          `${into} VALUES ${rows.map((r) => `(${r.map(literal).join(', ')})`).join(',\n')} ${conflict}`,
        );
      }
    }
  }

  /**
   * One row change as `EXECUTE stmt(literals)`, queued. Each (table, operation, column list) gets
   * a server-side prepared statement, created in the batch before its first use, so the server
   * parses and plans it once (4x the rate of planning each statement, measured).
   */
  #applyRow(c: RowChange, shape: Shape, x: ApplySession): void {
    const { key } = shape;
    const typeOf = (col: string) => columnType(shape, c.table, col);
    const keyImage = c.before ?? c.after!;
    const keyArgs = key.map((k) => {
      const i = c.columns.indexOf(k);
      if (i < 0) throw new Error(`change for table "${c.table}" lacks key column "${k}"`);
      return literal(keyImage[i]!);
    });
    const name = x.prepare(`${c.table}\0${c.op}\0${c.columns.join('\0')}`, () => {
      const ref = tableRef(c.table);
      const n = c.columns.length;
      const where = key
        .map((k, i) => `${quoteIdent(k)} = $${(c.op === 'delete' ? 0 : n) + i + 1}`)
        .join(' AND ');
      const keyTypes = key.map(typeOf);
      if (c.op === 'delete') return { types: keyTypes, sql: `DELETE FROM ${ref} WHERE ${where}` };
      const cols = c.columns.map(quoteIdent).join(', ');
      const params = c.columns.map((_, i) => `$${i + 1}`).join(', ');
      const colTypes = c.columns.map(typeOf);
      if (c.op === 'insert') {
        return {
          types: colTypes,
          sql: `INSERT INTO ${ref} (${cols}) VALUES (${params}) ${onConflict(key, c.columns)}`,
        };
      }
      // Update, or insert the after image when the row is missing: one statement.
      const set = c.columns.map((col, i) => `${quoteIdent(col)} = $${i + 1}`).join(', ');
      return {
        types: [...colTypes, ...keyTypes],
        sql: `WITH u AS (UPDATE ${ref} SET ${set} WHERE ${where} RETURNING 1) INSERT INTO ${ref} (${cols}) SELECT ${params} WHERE NOT EXISTS (SELECT 1 FROM u) ON CONFLICT (${key.map(quoteIdent).join(', ')}) DO NOTHING`,
      };
    });
    const args =
      c.op === 'delete' ? keyArgs : [...c.after!.map(literal), ...(c.op === 'update' ? keyArgs : [])];
    x.queue(`EXECUTE ${name}(${args.join(', ')})`);
  }

  /** Forgets (and deallocates) the prepared statements of `table` after its shape changed. */
  #forget(table: string): void {
    this.#shapes.delete(table);
    for (const x of this.#sessions) x.forget(table);
  }

  // ---- seeding: chunks committed one by one, on several connections ----

  get seedState(): SeedState | null {
    return this.#verify.size > 0 ? null : this.#seedState;
  }

  get seedLanes(): number {
    return this.#o.group.seed.workers;
  }

  async #loadSeedState(): Promise<void> {
    const g = this.#o.group.name;
    const r = await this.#client.query<{ plan: string; verify: string[] }>(
      'SELECT plan, verify FROM tandem.seed WHERE grp = $1',
      [g],
    );
    if (!r.rowCount) return;
    if (this.#o.group.seed.overwrite && r.rows[0]!.verify.length > 0) {
      // The seed stopped verifying tables that now may be overwritten: start it over.
      await this.#client.query('DELETE FROM tandem.seed WHERE grp = $1', [g]);
      return;
    }
    const done = await this.#client.query<{ table: string; chunk: number; rows: string }>(
      'SELECT tbl AS table, chunk, rows::text FROM tandem.seed_chunks WHERE grp = $1 ORDER BY tbl, chunk',
      [g],
    );
    this.#seedState = {
      // Kept as the source's text: the source compares its table definitions with it.
      plan: JSON.parse(r.rows[0]!.plan) as SeedPlan,
      done: done.rows.map((d) => ({ table: d.table, chunk: d.chunk, rows: Number(d.rows) })),
    };
    this.#verify = new Set(r.rows[0]!.verify);
  }

  async unseed(): Promise<void> {
    this.#seeded = false;
    await this.#stepper.idle();
    await this.#rollback();
    await this.#client.query(
      `BEGIN; SET LOCAL synchronous_commit = local;
       UPDATE tandem.applied SET seeded = false WHERE grp = ${quoteLiteral(this.#o.group.name)}; COMMIT`,
    );
  }

  /**
   * Starts a seed. A new one keeps tables holding rows Tandem did not put there (they are
   * verified chunk by chunk instead, unless seed.overwrite) and recreates the others empty,
   * then records the plan; all of it committed, so a crash from here on resumes.
   */
  async beginSeed(plan: SeedPlan, resume: boolean): Promise<void> {
    await this.#stepper.idle();
    await this.#rollback();
    const c = this.#client;
    const g = this.#o.group;
    if (resume) {
      if (checkResume(this.#seedState, plan))
        await c.query('UPDATE tandem.seed SET plan = $2 WHERE grp = $1', [
          g.name,
          JSON.stringify(this.#seedState!.plan),
        ]);
    } else {
      const verify = await tablesToVerify(plan, {
        group: g,
        where: this.#where,
        log: this.#o.log,
        everSeeded: this.#everSeeded,
        previous: this.#seedState,
        verifying: this.#verify,
        hasRows: async (t) =>
          (await this.#tableExists(t)) &&
          (await c.query(`SELECT EXISTS (SELECT 1 FROM ${tableRef(t)}) AS e`)).rows[0].e === true,
      });
      await c.query('BEGIN');
      this.#sessions[0]!.inTx = true;
      for (const s of plan.schemas) {
        this.#noteSkipped(s);
        await ensureTypes(c, s.types ?? [], g.name);
        if (verify.has(s.name)) await this.#adoptTable(s);
        else {
          await c.query(`DROP TABLE IF EXISTS ${tableRef(s.name)} CASCADE`);
          await this.#createTable(s, true);
        }
      }
      await c.query('DELETE FROM tandem.seed_chunks WHERE grp = $1', [g.name]);
      await c.query(
        `INSERT INTO tandem.seed (grp, plan, verify) VALUES ($1, $2, $3)
         ON CONFLICT (grp) DO UPDATE SET plan = EXCLUDED.plan, verify = EXCLUDED.verify`,
        [g.name, JSON.stringify(plan), [...verify]],
      );
      await c.query('UPDATE tandem.applied SET seeded = false WHERE grp = $1', [g.name]);
      await c.query('COMMIT');
      this.#sessions[0]!.inTx = false;
      this.#seeded = false;
      this.#seedState = { plan, done: [] };
      this.#verify = verify;
    }
    this.#seeding = true;
    for (let i = 0; i < this.seedLanes; i++) {
      this.#lanes.push({ client: await this.#connect('seed'), inTx: false, rows: 0, temp: new Map() });
    }
  }

  async #groupTables(): Promise<string[]> {
    return (await listTables(this.#client)).filter((t) => tableMatches(this.#o.group.tables, t));
  }

  /**
   * A primary until now becomes a backup that has applied `position`: stored as applied and
   * seeded, each table fenced and its definition remembered as the source's, in one transaction.
   */
  async adopt(position: number, epoch: number): Promise<void> {
    const c = this.#client;
    const g = this.#o.group;
    await c.query('BEGIN');
    try {
      await c.query(
        `INSERT INTO tandem.applied (grp, position, epoch, seeded) VALUES ($1, $2, $3, true)
         ON CONFLICT (grp) DO UPDATE SET position = EXCLUDED.position, epoch = EXCLUDED.epoch, seeded = true`,
        [g.name, position, epoch],
      );
      await c.query('DELETE FROM tandem.tables WHERE grp = $1', [g.name]);
      await c.query('DELETE FROM tandem.apply_workers WHERE grp = $1', [g.name]);
      await disableDdlCapture(c, g.name);
      for (const t of await this.#groupTables()) {
        await fenceTable(c, g.name, t);
        await this.#remember(await readTableSchema(c, t, g.name, g.keys[t]));
      }
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    }
    this.#applied = position;
    this.#durableApplied = position;
    this.#next = position + 1;
    this.#seeded = true;
    this.#everSeeded = true;
    this.#skip.clear();
    this.#shapes.clear();
  }

  get #backupFence(): FenceState & { kind: 'fenced' } {
    const g = this.#o.group.name;
    return {
      kind: 'fenced',
      message: fenceText({ kind: 'backup', group: g, primary: this.#o.primary }),
      user: this.#user,
    };
  }

  async pause(): Promise<void> {
    this.#paused = true;
    await this.#stepper.idle();
    await this.#rollback();
  }

  resume(): void {
    this.#paused = false;
    this.kick();
  }

  /**
   * Test writes are logged by a row trigger (before and after images as jsonb) into
   * tandem.vs_log; TRUNCATE is refused (it could not be reverted); the fence opens.
   */
  async beginTest(): Promise<void> {
    const c = this.#client;
    const g = this.#o.group.name;
    const fn = vsFunction(g);
    const tables = await this.#groupTables();
    await c.query(`BEGIN;
      ${VS_LOG};
      CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp AS $f$
        BEGIN
          IF TG_OP = 'TRUNCATE' THEN
            RAISE EXCEPTION 'tandem: TRUNCATE is refused during a virtual switch of group %: it could not be reverted', ${quoteLiteral(g)}
              USING ERRCODE = 'feature_not_supported';
          END IF;
          INSERT INTO tandem.vs_log (tbl, op, old, new) VALUES (
            format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), left(TG_OP, 1),
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END, CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
          RETURN NULL;
        END $f$;
      ${tables
        .map(
          (
            t,
          ) => `CREATE OR REPLACE TRIGGER tandem_vs_log AFTER INSERT OR UPDATE OR DELETE ON ${tableRef(t)} FOR EACH ROW EXECUTE FUNCTION ${fn}();
      CREATE OR REPLACE TRIGGER tandem_vs_truncate BEFORE TRUNCATE ON ${tableRef(t)} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();`,
        )
        .join('\n')}
      COMMIT`);
    await setFence(c, g, { kind: 'open', lease: null });
  }

  /**
   * Fences again (test sessions that hold a transaction are ended), then in one transaction
   * drops the log triggers and reverts the log newest first: a row a test inserted or updated is
   * deleted by its key, one it updated or deleted is written back from its before image.
   */
  async endTest(timeoutMs: number): Promise<number> {
    const c = this.#client;
    const g = this.#o.group;
    const tables = await this.#groupTables();
    await fencePrimary(c, {
      group: g.name,
      tables,
      message: this.#backupFence.message,
      lease: null,
      exceptRoles: [],
      timeoutMs,
      field: this.#field,
    });
    await c.query('BEGIN');
    try {
      for (const t of tables) {
        await c.query(
          `DROP TRIGGER IF EXISTS tandem_vs_log ON ${tableRef(t)}; DROP TRIGGER IF EXISTS tandem_vs_truncate ON ${tableRef(t)}`,
        );
      }
      await c.query(VS_LOG); // a restart between the start's record and its triggers left none
      const n = await c.query<{ n: string }>('SELECT count(*)::text AS n FROM tandem.vs_log');
      await c.query(`DO $do$
        DECLARE r record; pk text;
        BEGIN
          FOR r IN SELECT tbl, op, old, new FROM tandem.vs_log ORDER BY seq DESC LOOP
            SELECT string_agg(format('%I', a.attname), ', ' ORDER BY array_position(i.indkey::int2[], a.attnum)) INTO pk
              FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
             WHERE i.indrelid = r.tbl::regclass AND i.indisprimary;
            IF r.op IN ('I', 'U') THEN
              EXECUTE format('DELETE FROM %s WHERE (%s) = (SELECT %s FROM jsonb_populate_record(NULL::%s, $1))',
                             r.tbl, pk, pk, r.tbl) USING r.new;
            END IF;
            IF r.op IN ('D', 'U') THEN
              EXECUTE format('INSERT INTO %s SELECT * FROM jsonb_populate_record(NULL::%s, $1)', r.tbl, r.tbl) USING r.old;
            END IF;
          END LOOP;
        END $do$`);
      await c.query(`DROP TABLE tandem.vs_log; DROP FUNCTION IF EXISTS ${vsFunction(g.name)}()`);
      await c.query('COMMIT');
      for (const t of tables) await fenceTable(c, g.name, t);
      return Number(n.rows[0]!.n);
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    }
  }

  async applyChanges(changes: RowChange[]): Promise<void> {
    const x = this.#sessions[0]!;
    x.queue('BEGIN');
    x.inTx = true;
    try {
      await this.#applyRows(changes, x, false);
      x.queue('COMMIT');
      await x.flush();
      x.inTx = false;
    } catch (err) {
      await x.rollback();
      throw err;
    }
  }

  /** Takes an existing table into the group as it is: fence and remembered definition. */
  async #adoptTable(incoming: TableSchema): Promise<void> {
    const schema = schemaFor(incoming, 'postgres', this.#o.group.name);
    await fenceTable(this.#client, this.#o.group.name, schema.name);
    await relaxIdentity(this.#client, [schema.name]);
    await this.#applyPrivileges(schema);
    await this.#remember(schema);
    this.#forget(schema.name);
  }

  /**
   * Writes a chunk part with COPY: the source's COPY text as it came, or values converted to it.
   * A verified table's rows go to a temporary table and are compared with the table's own.
   */
  async seedChunk(lane: number, table: string, chunk: number, data: SeedData, final: boolean): Promise<void> {
    const l = this.#lanes[lane];
    if (!l || !this.#seeding) throw new Error(`seed lane ${lane} is not open`);
    const c = l.client;
    if (!l.inTx) {
      await c.query('BEGIN');
      l.inTx = true;
    }
    const verify = this.#verify.has(table);
    const dest = verify ? await this.#verifyTable(l, table) : tableRef(table);
    const text =
      data.format === 'pgcopy'
        ? data.text
        : Buffer.from(data.rows.map((r) => `${r.map(toCopyText).join('\t')}\n`).join(''));
    if (text.length > 0) {
      const stream = c.query(
        copyFrom(`COPY ${dest} (${data.columns.map(quoteIdent).join(', ')}) FROM STDIN`),
      );
      await pipeline(Readable.from([text]), stream);
    }
    l.rows += seedRowCount(data);
    if (!final) return;
    if (verify) await this.#compare(c, table, dest, data.columns, chunk);
    await c.query('INSERT INTO tandem.seed_chunks (grp, tbl, chunk, rows) VALUES ($1, $2, $3, $4)', [
      this.#o.group.name,
      table,
      chunk,
      l.rows,
    ]);
    await c.query('COMMIT');
    l.inTx = false;
    this.#seedState?.done.push({ table, chunk, rows: l.rows });
    l.rows = 0;
  }

  /** The lane's temporary table for rows of a verified table (emptied at each commit). */
  async #verifyTable(l: Lane, table: string): Promise<string> {
    let name = l.temp.get(table);
    if (!name) {
      name = `tandem_verify_${createHash('sha1').update(table).digest('hex').slice(0, 12)}`;
      await l.client.query(`CREATE TEMP TABLE ${name} (LIKE ${tableRef(table)}) ON COMMIT DELETE ROWS`);
      l.temp.set(table, name);
    }
    return name;
  }

  /** Fails the seed when the primary's rows of a chunk are missing or different on the backup. */
  async #compare(c: pg.Client, table: string, tmp: string, columns: string[], chunk: number): Promise<void> {
    const key = this.#seedState!.plan.schemas.find((s) => s.name === table)!.primaryKey;
    const on = key.map((k) => `s.${quoteIdent(k)} = d.${quoteIdent(k)}`).join(' AND ');
    const row = (a: string) => `ROW(${columns.map((x) => `${a}.${quoteIdent(x)}::text`).join(', ')})`;
    const r = await c.query<{ missing: string; differ: string }>(
      `SELECT count(*) FILTER (WHERE d.ctid IS NULL)::text AS missing,
              count(*) FILTER (WHERE d.ctid IS NOT NULL AND ${row('s')} IS DISTINCT FROM ${row('d')})::text AS differ
         FROM ${tmp} s LEFT JOIN ${tableRef(table)} d ON ${on}`,
    );
    const { missing, differ } = r.rows[0]!;
    if (missing !== '0' || differ !== '0')
      throw chunkDiffers(this.#o.group, this.#where, table, chunk, missing, differ);
  }

  async endSeed(epoch: number): Promise<number> {
    const state = this.#seedState;
    if (!state || !this.#seeding) throw new Error('no seed in progress');
    const c = this.#client;
    const g = this.#o.group.name;
    await checkVerifiedCounts(
      state,
      this.#verify,
      async (t) => Number((await c.query(`SELECT count(*)::text AS n FROM ${tableRef(t)}`)).rows[0].n),
      this.#o.group,
      this.#where,
    );
    const position = state.plan.position;
    const waitFor = uniqueAfter(state.plan);
    // The seed's end is waited for: the journal restarts from its position.
    await c.query('BEGIN; SET LOCAL synchronous_commit = local');
    try {
      // Tables this seed created bare get their key, constraints and indexes now, after the load
      // (unique ones once apply has passed a resumed seed's newest snapshot).
      const made = state.plan.schemas
        .filter((s) => !this.#verify.has(s.name))
        .map((s) => schemaFor(s, 'postgres', this.#o.group.name));
      for (const s of made)
        await asSource(s.name, async () => {
          for (const sql of completeTableSql(s, true, waitFor === 0)) await c.query(sql);
        });
      if (waitFor > 0)
        await c.query(
          'INSERT INTO tandem.unique_after (grp, position) VALUES ($1, $2) ON CONFLICT (grp) DO UPDATE SET position = EXCLUDED.position',
          [g, waitFor],
        );
      else await c.query('DELETE FROM tandem.unique_after WHERE grp = $1', [g]);
      // Foreign keys once every table they may reference has its key.
      for (const s of made) await this.#addForeignKeys(s);
      await c.query(
        `INSERT INTO tandem.applied (grp, position, epoch, seeded) VALUES ($1, $2, $3, true)
         ON CONFLICT (grp) DO UPDATE SET position = EXCLUDED.position, epoch = EXCLUDED.epoch, seeded = true`,
        [g, position, epoch],
      );
      await c.query('DELETE FROM tandem.seed WHERE grp = $1', [g]);
      await c.query('DELETE FROM tandem.seed_chunks WHERE grp = $1', [g]);
      // Parallel rounds of an earlier life of this backup are behind the seed's position.
      await c.query('DELETE FROM tandem.apply_workers WHERE grp = $1', [g]);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    }
    await this.#closeLanes();
    this.#seedState = null;
    this.#verify.clear();
    this.#seeding = false;
    this.#applied = position;
    this.#next = position + 1;
    this.#seeded = true;
    this.#everSeeded = true;
    this.#uniqueAfter = waitFor;
    this.kick();
    return position;
  }

  async abortSeed(): Promise<void> {
    await this.#closeLanes();
    this.#seeding = false;
  }

  /** Closing a lane rolls back its open chunk. */
  async #closeLanes(): Promise<void> {
    const lanes = this.#lanes.splice(0);
    await Promise.all(lanes.map((l) => closeClient(l.client)));
  }
}

/** A source transaction of row changes, as parallel apply schedules it. */
interface Unit extends Schedulable {
  records: JournalRecord[];
  /** Its last record (the unit's identity is its position). */
  last: JournalRecord;
  keys: string[];
}

/** A connection a seed writes chunks on, one chunk per transaction. */
interface Lane {
  client: pg.Client;
  inTx: boolean;
  /** Rows of the open chunk. */
  rows: number;
  /** Temporary tables this connection compares verified tables' rows in, by table. */
  temp: Map<string, string>;
}

interface Shape {
  key: string[];
  types: Map<string, string>;
  /** A key that every change of the table conflicts on (scheduled as a whole), or null. */
  whole: string | null;
  /** Its changes may be folded into final row states (see #applyRows). */
  foldable: boolean;
}

/**
 * What a unit touches, for scheduling: each row by table and key (before and after image), or
 * the whole table when the backup has other unique indexes or exclusion constraints (two rows
 * could collide there), and one shared name for every table in a foreign key.
 */
function conflictKeys(u: Unit, shapes: Map<string, Shape>): string[] {
  const keys: string[] = [];
  for (const rec of u.records) {
    for (const c of rec.changes as RowChange[]) {
      const shape = shapes.get(c.table)!;
      if (shape.whole) {
        keys.push(shape.whole);
        continue;
      }
      const image = c.after ?? c.before!;
      keys.push(rowKey(c, image, shape.key));
      // An update that moves the row (or carries its old image) touches the old key too.
      if (c.before && c.after) keys.push(rowKey(c, c.before, shape.key));
    }
  }
  return keys;
}

/** A row's identity for scheduling: table and key values. */
function rowKey(c: RowChange, image: readonly Value[], key: readonly string[]): string {
  if (key.length === 1) return `${c.table}\0${keyText(image[c.columns.indexOf(key[0]!)] ?? null)}`;
  return `${c.table}\0${key.map((k) => keyText(image[c.columns.indexOf(k)] ?? null)).join('\u0001')}`;
}

/** The (quoted where needed) name in pg_get_indexdef's `CREATE [UNIQUE] INDEX name ON ...`. */
function indexName(def: string): string {
  const m = /^CREATE (?:UNIQUE )?INDEX ("(?:[^"]|"")+"|\S+) ON /.exec(def);
  if (!m) throw new Error(`unexpected index definition: ${def}`);
  return m[1]!;
}

/**
 * Prepared-statement ids of the statements that record apply's progress, one per round or
 * transaction (a leading NUL: no table's id starts so, so forgetting a table never drops them).
 */
const RECORD_ROUND = '\0apply_workers';
const RECORD_APPLIED = '\0applied';

/**
 * Upserts of a few rows go through the prepared insert; from VALUES_MIN_ROWS on, one multi-row
 * INSERT; on the serial path from COPY_MIN_ROWS on, COPY into a staging table and one
 * INSERT ... SELECT (measured on pgbench rows: about 180k and 240k rows/s against 25k one
 * statement per row).
 */
const VALUES_MIN_ROWS = 4;
const COPY_MIN_ROWS = 1000;

/** Whether values of `type` can go as an array to unnest: not arrays, which unnest would flatten. */
function unnestable(type: string): boolean {
  return !type.endsWith(']');
}

/** Keys a multi-column delete joins at most (see `#delete`). */
const JOIN_DELETE_KEYS = 1000;

/** `rows` cut into pieces of about 1 MiB of values each (and at most `maxRows`), one statement each. */
function* statementParts(rows: Value[][], maxRows = Number.POSITIVE_INFINITY): Generator<Value[][]> {
  let start = 0;
  let bytes = 0;
  for (let i = 0; i < rows.length; i++) {
    for (const v of rows[i]!)
      bytes += typeof v === 'string' ? v.length + 3 : v instanceof Uint8Array ? 2 * v.length + 5 : 8;
    if (bytes > 1 << 20 || i + 1 - start >= maxRows) {
      yield rows.slice(start, i + 1);
      start = i + 1;
      bytes = 0;
    }
  }
  if (start < rows.length) yield rows.slice(start);
}

/** A target column's declared type; a column the target lacks is an error that names it. */
function columnType(shape: Shape, table: string, column: string): string {
  const type = shape.types.get(column);
  if (!type) throw new Error(`target table ${table} has no column "${column}"`);
  return type;
}

/** An insert's ON CONFLICT clause: the listed columns replace the row's at an existing key. */
function onConflict(key: string[], columns: string[]): string {
  const rest = columns.filter((col) => !key.includes(col));
  const set = rest.length
    ? `DO UPDATE SET ${rest.map((col) => `${quoteIdent(col)} = EXCLUDED.${quoteIdent(col)}`).join(', ')}`
    : 'DO NOTHING';
  return `ON CONFLICT (${key.map(quoteIdent).join(', ')}) ${set}`;
}

/** A table that could not be made or changed as its source definition says, named. */
class DefinitionError extends Error {}

/**
 * Runs `work`, which makes or changes `table` as the source defines it; an error of
 * PostgreSQL's (which names a function or type it lacks, not the table) comes out naming it.
 */
async function asSource(table: string, work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch (err) {
    if (err instanceof TandemError || err instanceof DefinitionError) throw err;
    throw new DefinitionError(
      `table ${table} could not be made as the source defines it: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** A grantee ('' for PUBLIC) and its privileges' letters, of an `aclitem` text. */
interface AclItem {
  grantee: string;
  privileges: string;
}

/** The privileges of an `aclitem`'s letters (tables' and sequences'; grant options left out). */
const PRIVILEGE_NAMES: Record<string, string> = {
  r: 'SELECT',
  a: 'INSERT',
  w: 'UPDATE',
  d: 'DELETE',
  D: 'TRUNCATE',
  x: 'REFERENCES',
  t: 'TRIGGER',
  U: 'USAGE',
};

/** `grantee=privileges/grantor`, the grantee quoted as an identifier when it needs to be. */
function parseAcl(text: string): AclItem | null {
  const m = /^((?:"(?:[^"]|"")*"|[^=])*)=([A-Za-z*]*)\/.*$/.exec(text);
  if (!m) return null;
  const raw = m[1]!;
  const grantee = raw.startsWith('"') ? raw.slice(1, -1).replaceAll('""', '"') : raw;
  return { grantee, privileges: m[2]!.replaceAll('*', '') };
}
