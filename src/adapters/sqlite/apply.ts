/**
 * SQLite apply: replays journal records into the target database.
 *
 * Invariants
 * - Records are applied in position order; the applied position is written in the same target
 *   transaction as the data, so a crash at any instant resumes exactly after the last committed
 *   record (exactly-once).
 * - Many records go into one target transaction, which commits only at a record that ends a
 *   source transaction (txCount > 0): no reader ever sees part of a source transaction.
 * - Row operations are idempotent on full images (insert = upsert, update of a missing row =
 *   upsert, delete of a missing row = nothing), so records replayed over a seed snapshot that
 *   already holds them converge to the source state.
 * - The database is fenced: triggers refuse every write unless `_tandem_fence.open` is 1, which
 *   only this connection sets inside its own transaction and resets before committing.
 */
import type Database from 'better-sqlite3';
import { tableMatches } from '../../config/index.js';
import { TandemError } from '../../core/errors.js';
import type { JournalRecord, RowChange, TableSchema, Value } from '../../core/record.js';
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
import { isUniqueIndex, schemaFor, sqliteIndexes } from '../typemap.js';
import {
  APPLY_FAILED_FIX,
  type Apply,
  type ApplyOptions,
  type SeedData,
  type SeedPlan,
  type SeedState,
} from '../types.js';
import {
  createTargetTables,
  createTestLog,
  dropTandemTriggers,
  installFenceTriggers,
  installTestTriggers,
} from './internal.js';
import { type Param, parseImage, toParam } from './literal.js';
import { openDatabase } from './open.js';
import { createTableSql, listTables, quoteIdent, readTableSchema, sameSchema } from './schema.js';

/**
 * A source column default as a SQLite expression when it is a constant, else null: a SQLite
 * default as it is; from PostgreSQL a number, a quoted string with or without a cast, or a
 * boolean. (A volatile default, such as now(), was evaluated per row on the source and cannot
 * be reproduced.)
 */
function constantDefault(def: string | null, dialect: string): string | null {
  if (def === null) return null;
  if (dialect === 'sqlite') return def;
  if (/^\(?-?\d+(\.\d+)?\)?(::[a-z ]+)?$/.test(def)) return def.replace(/::.*$/, '').replace(/[()]/g, '');
  const text = /^'((?:[^']|'')*)'(::[\w ."]+(\(\d+(,\d+)?\))?)?$/.exec(def);
  if (text) return `'${text[1]}'`;
  if (def === 'true' || def === 'false') return def === 'true' ? '1' : '0';
  return null;
}

export interface SqliteApplyOptions extends ApplyOptions {
  path: string;
}

export class SqliteApply implements Apply {
  readonly #o: SqliteApplyOptions;
  readonly #db: Database.Database;
  readonly #statements = new Map<string, Database.Statement>();
  readonly #keys = new Map<string, string[]>();
  #applied = 0;
  #appliedHlc = 0n;
  #seeded = false;
  /** The group was seeded here once (its applied row exists): the tables' rows are Tandem's. */
  #everSeeded = false;
  #next = 1;
  #inTx = false;
  /** A virtual switch holds apply (docs/virtual-switch.md). */
  #paused = false;
  #unsubscribe: (() => void) | undefined;
  #seeding = false;
  #seedState: SeedState | null = null;
  /** After a resumed seed: its newest snapshot's position; unique indexes wait until apply passes it (0: none). */
  #uniqueAfter = 0;
  /** Tables that held rows Tandem did not put there: seeding compares instead of writing. */
  #verify = new Set<string>();
  /** Rows of the chunk being written. */
  #chunkRows = 0;

  readonly #stepper = new Stepper(
    () => this.#step(),
    (err) => {
      this.#rollback();
      this.#o.onFatal(
        err instanceof TandemError
          ? err
          : new TandemError(
              'APPLY_FAILED',
              `group ${this.#o.group.name}: applying position ${this.#next} failed: ${err.message}`,
              APPLY_FAILED_FIX,
              { cause: err },
            ),
      );
    },
  );

  constructor(o: SqliteApplyOptions) {
    this.#o = o;
    this.#db = openDatabase(o.path, { field: `groups.${o.group.name}.endpoints.${o.node}`, timeout: 5000 });
    // In WAL mode SQLite's default here syncs the WAL only at checkpoints: a commit would survive
    // a crash of this process but not of the machine, while the applied position it stores lets
    // both journals release what it covers. FULL syncs the WAL at every commit (one per batch).
    this.#db.pragma('synchronous = FULL');
  }

  async open(): Promise<void> {
    createTargetTables(this.#db);
    const row = this.#db
      .prepare('SELECT position, epoch, seeded FROM _tandem_applied WHERE grp = ?')
      .get(this.#o.group.name) as { position: bigint; epoch: bigint; seeded: bigint } | undefined;
    this.#applied = row ? Number(row.position) : 0;
    this.#seeded = row ? row.seeded === 1n : false;
    this.#everSeeded = row !== undefined;
    this.#next = this.#applied + 1;
    const u = this.#db
      .prepare('SELECT position FROM _tandem_unique_after WHERE grp = ?')
      .get(this.#o.group.name) as { position: bigint } | undefined;
    this.#uniqueAfter = u ? Number(u.position) : 0;
    this.#loadSeedState();
    this.#paused = this.#o.testing === true;
    if (this.#seeded && !this.#paused) this.#fenceAll();
  }

  get appliedPosition(): number {
    return this.#applied;
  }
  get durableAppliedPosition(): number {
    return this.appliedPosition;
  }
  /** HLC timestamp of the last applied record (0 before any). */
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
    this.#unsubscribe?.();
    await this.#stepper.stop();
    this.#rollback();
    this.#db.close();
  }

  #rollback(): void {
    if (this.#inTx && this.#db.open) {
      try {
        this.#db.exec('ROLLBACK');
      } catch {
        // the connection may already have rolled back on error
      }
      this.#next = this.#applied + 1;
    }
    this.#inTx = false;
  }

  /** Applies what the journal holds, committing at transaction boundaries. */
  #step(): void {
    if (!this.#seeded || this.#seeding || this.#paused) return;
    if (this.#uniqueAfter > 0 && this.#applied >= this.#uniqueAfter && !this.#inTx)
      this.#createDeferredUnique();
    const step = new StepRecords(this.#o.journal, this.#next, this.#o);
    for (const rec of step) {
      if (!this.#inTx) {
        this.#db.exec('BEGIN IMMEDIATE');
        this.#db.exec('UPDATE _tandem_fence SET open = 1');
        this.#inTx = true;
      }
      this.#applyRecord(rec);
      this.#next = rec.position + 1;
    }
    const last = step.last;
    if (this.#inTx && last && step.atBoundary) {
      this.#db
        .prepare('UPDATE _tandem_applied SET position = ?, epoch = ? WHERE grp = ?')
        .run(last.position, last.epoch, this.#o.group.name);
      this.#db.exec('UPDATE _tandem_fence SET open = 0');
      this.#db.exec('COMMIT');
      this.#inTx = false;
      this.#applied = last.position;
      this.#appliedHlc = last.hlc;
      this.#o.onApplied?.();
    }
    // More may be waiting (also when the transaction is still open at a partial record).
    if (step.full) this.#stepper.more();
  }

  #applyRecord(rec: JournalRecord): void {
    for (const c of rec.changes) {
      switch (c.op) {
        case 'insert':
        case 'update':
        case 'delete':
          this.#applyRow(c);
          break;
        case 'schema':
          this.#applySchema(c.schema);
          break;
        case 'drop':
          this.#db.exec(`DROP TABLE IF EXISTS ${quoteIdent(c.table)}`);
          this.#db
            .prepare('DELETE FROM _tandem_tables WHERE grp = ? AND name = ?')
            .run(this.#o.group.name, c.table);
          this.#forget(c.table);
          break;
        case 'truncate':
          this.#db.exec(`DELETE FROM ${quoteIdent(c.table)}`);
          break;
        case 'sequence':
          this.#applySequence(c.table, c.value);
          break;
      }
    }
  }

  /**
   * A SQLite source's AUTOINCREMENT counter (journaled at a switchover) is set exactly, so this
   * database, once primary, never hands out a number the source used. A PostgreSQL source's
   * sequences name no table here: SQLite has no sequences.
   */
  #applySequence(table: string, value: bigint): void {
    const db = this.#db;
    const auto = db
      .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ? AND sql LIKE '%AUTOINCREMENT%'")
      .get(table);
    if (!auto) return;
    if (db.prepare('UPDATE sqlite_sequence SET seq = ? WHERE name = ?').run(value, table).changes === 0)
      db.prepare('INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)').run(table, value);
  }

  async pause(): Promise<void> {
    this.#paused = true;
    await this.#stepper.idle();
    this.#rollback();
  }

  resume(): void {
    this.#paused = false;
    this.kick();
  }

  async beginTest(): Promise<void> {
    const db = this.#db;
    db.transaction(() => {
      createTestLog(db);
      for (const t of this.#groupTables()) {
        dropTandemTriggers(db, t, 'fence');
        installTestTriggers(db, readTableSchema(db, t, this.#o.group.name, this.#o.group.keys[t]));
      }
    }).immediate();
  }

  async endTest(timeoutMs: number): Promise<number> {
    const db = this.#db;
    const g = this.#o.group;
    db.pragma(`busy_timeout = ${Math.max(1, timeoutMs)}`);
    try {
      return db
        .transaction(() => {
          // Taking the write lock waits for test writers; from the commit on they are fenced.
          const tables = this.#groupTables();
          createTestLog(db); // a restart between the start's record and its triggers left none
          for (const t of tables) dropTandemTriggers(db, t, 'vs');
          const log = db
            .prepare('SELECT tbl, op, old, new FROM _tandem_vs_changes ORDER BY seq DESC')
            .all() as {
            tbl: string;
            op: string;
            old: string | null;
            new: string | null;
          }[];
          const columns = new Map<string, string[]>();
          for (const r of log) {
            let cols = columns.get(r.tbl);
            if (!cols) {
              cols = readTableSchema(db, r.tbl, g.name, g.keys[r.tbl]).columns.map((c) => c.name);
              columns.set(r.tbl, cols);
            }
            const before = r.old === null ? null : parseImage(r.old);
            const after = r.new === null ? null : parseImage(r.new);
            if (after)
              this.#applyRow({ op: 'delete', table: r.tbl, columns: cols, before: after, after: null });
            if (before)
              this.#applyRow({ op: 'insert', table: r.tbl, columns: cols, before: null, after: before });
          }
          db.exec('DROP TABLE IF EXISTS _tandem_vs_changes');
          for (const t of tables) installFenceTriggers(db, t, this.#fenceMessage);
          return log.length;
        })
        .immediate();
    } finally {
      db.pragma('busy_timeout = 5000');
    }
  }

  async applyChanges(changes: RowChange[]): Promise<void> {
    const db = this.#db;
    db.transaction(() => {
      db.exec('UPDATE _tandem_fence SET open = 1');
      for (const c of changes) this.#applyRow(c);
      db.exec('UPDATE _tandem_fence SET open = 0');
    }).immediate();
  }

  #forget(table: string): void {
    this.#keys.delete(table);
    for (const k of this.#statements.keys()) if (k.split('\0')[1] === table) this.#statements.delete(k);
  }

  /** Creates the table, or brings an existing one to the new definition, keeping its rows. */
  #applySchema(incoming: TableSchema): void {
    const schema = schemaFor(incoming, 'sqlite', this.#o.group.name);
    const g = this.#o.group.name;
    const db = this.#db;
    const stored = db
      .prepare('SELECT schema FROM _tandem_tables WHERE grp = ? AND name = ?')
      .get(g, schema.name) as { schema: string } | undefined;
    db.prepare('INSERT OR REPLACE INTO _tandem_tables (grp, name, schema) VALUES (?, ?, ?)').run(
      g,
      schema.name,
      JSON.stringify(incoming),
    );
    const prev = stored ? (JSON.parse(stored.schema) as TableSchema) : undefined;
    if (listTables(db).includes(schema.name)) {
      const have = readTableSchema(db, schema.name, g, schema.primaryKey);
      if (sameSchema(have, schema)) {
        this.#syncIndexes(incoming, prev);
        return;
      }
      this.#rebuild(incoming, schema, have, prev);
    } else db.exec(createTableSql(schema));
    this.#syncIndexes(incoming, prev);
    installFenceTriggers(db, schema.name, this.#fenceMessage);
    this.#forget(schema.name);
  }

  /**
   * Creates the source's indexes that SQLite can hold (typemap.ts, sqliteIndexes) and drops the
   * ones Tandem created for the table's previous definition that are gone or changed; indexes
   * added to the backup by hand are left alone. What cannot be held is logged when it changes.
   */
  #syncIndexes(incoming: TableSchema, prev: TableSchema | undefined): void {
    const { sql, skipped } = sqliteIndexes(incoming);
    const before = prev ? sqliteIndexes(prev) : { sql: new Map<string, string>(), skipped: [] };
    for (const [name, def] of before.sql) {
      if (sql.get(name) !== def) this.#db.exec(`DROP INDEX IF EXISTS ${quoteIdent(name)}`);
    }
    for (const [name, def] of sql) {
      // After a resumed seed, unique ones wait (#createDeferredUnique).
      if (this.#uniqueAfter > 0 && isUniqueIndex(def)) continue;
      try {
        this.#db.exec(def);
      } catch (err) {
        throw new TandemError(
          'APPLY_FAILED',
          `group ${this.#o.group.name}: index "${name}" of the source could not be created on table "${incoming.name}" of the backup: ${(err as Error).message}`,
          `The backup's rows break it (a unique index over duplicates) or a different object has that name; drop the backup's duplicates or that object, or reseed the backup`,
          { cause: err },
        );
      }
    }
    const names = (l: { name: string }[]) => l.map((x) => x.name).join('\0');
    if (skipped.length > 0 && names(skipped) !== names(before.skipped)) {
      this.#o.log.warn(
        { table: incoming.name, skipped },
        'the SQLite backup does not get these indexes and constraints of the PostgreSQL source',
      );
    }
  }

  /**
   * Apply has passed a resumed seed's newest snapshot: the rows are a state the source had, and
   * every table gets the unique indexes of its definition now, in one transaction that also
   * clears the wait.
   */
  #createDeferredUnique(): void {
    const db = this.#db;
    const g = this.#o.group.name;
    const position = this.#uniqueAfter;
    this.#uniqueAfter = 0;
    try {
      db.transaction(() => {
        const rows = db.prepare('SELECT schema FROM _tandem_tables WHERE grp = ?').all(g) as {
          schema: string;
        }[];
        const tables = new Set(listTables(db));
        for (const r of rows) {
          const s = JSON.parse(r.schema) as TableSchema;
          if (tables.has(s.name)) this.#syncIndexes(s, s);
        }
        db.prepare('DELETE FROM _tandem_unique_after WHERE grp = ?').run(g);
      }).immediate();
    } catch (err) {
      this.#uniqueAfter = position;
      throw err;
    }
    this.#o.log.info(
      { position },
      "unique indexes created: apply has passed the resumed seed's newest snapshot",
    );
  }

  /**
   * Brings an existing table to a new definition keeping its rows, by SQLite's own recipe for
   * any ALTER: a new table, the rows copied, the old table dropped, the new one renamed, all in
   * the apply transaction. A column keeps its values when the definition applied before had it
   * under the same attribute number (a PostgreSQL source's rename or retype), or else the same
   * name; a new column takes the source's default when that is a constant (the source fills
   * existing rows with it without writing them), else NULL. A SQLite source re-sends the
   * table's rows after a schema change, which then land as upserts.
   */
  #rebuild(
    incoming: TableSchema,
    schema: TableSchema,
    have: TableSchema,
    prev: TableSchema | undefined,
  ): void {
    const db = this.#db;
    const held = new Set(have.columns.map((c) => c.name));
    const before = new Map(
      (prev?.columns ?? []).filter((c) => c.attnum !== undefined).map((c) => [c.attnum!, c.name]),
    );
    const values = schema.columns.map((c, i) => {
      const old = c.attnum !== undefined ? before.get(c.attnum) : undefined;
      if (old !== undefined && held.has(old)) return quoteIdent(old);
      if (held.has(c.name)) return quoteIdent(c.name);
      return constantDefault(incoming.columns[i]!.default, incoming.dialect ?? 'sqlite') ?? 'NULL';
    });
    const tmp = '_tandem_rebuild';
    db.exec(`DROP TABLE IF EXISTS ${quoteIdent(tmp)}`);
    db.exec(createTableSql({ ...schema, name: tmp }));
    db.exec(
      `INSERT INTO ${quoteIdent(tmp)} (${schema.columns.map((c) => quoteIdent(c.name)).join(', ')})
       SELECT ${values.join(', ')} FROM ${quoteIdent(schema.name)}`,
    );
    db.exec(`DROP TABLE ${quoteIdent(schema.name)}`);
    db.exec(`ALTER TABLE ${quoteIdent(tmp)} RENAME TO ${quoteIdent(schema.name)}`);
  }

  #key(table: string): string[] {
    let k = this.#keys.get(table);
    if (!k) {
      const s = readTableSchema(this.#db, table, this.#o.group.name, undefined);
      k = s.primaryKey;
      this.#keys.set(table, k);
    }
    return k;
  }

  #stmt(kind: string, table: string, columns: string[], build: () => string): Database.Statement {
    const id = `${kind}\0${table}\0${columns.join('\0')}`;
    let s = this.#statements.get(id);
    if (!s) {
      s = this.#db.prepare(build());
      this.#statements.set(id, s);
    }
    return s;
  }

  #upsert(table: string, columns: string[], after: Value[]): void {
    const key = this.#key(table);
    const s = this.#stmt('upsert', table, columns, () => {
      const cols = columns.map(quoteIdent).join(', ');
      const marks = columns.map(() => '?').join(', ');
      const rest = columns.filter((c) => !key.includes(c));
      const conflict = rest.length
        ? `DO UPDATE SET ${rest.map((c) => `${quoteIdent(c)} = excluded.${quoteIdent(c)}`).join(', ')}`
        : 'DO NOTHING';
      return `INSERT INTO ${quoteIdent(table)} (${cols}) VALUES (${marks}) ON CONFLICT (${key.map(quoteIdent).join(', ')}) ${conflict}`;
    });
    s.run(after.map(toParam));
  }

  #keyValues(table: string, columns: string[], image: Value[]): Param[] {
    return this.#key(table).map((k) => {
      const i = columns.indexOf(k);
      if (i < 0) throw new Error(`change for table "${table}" lacks key column "${k}"`);
      return toParam(image[i]!);
    });
  }

  #applyRow(c: RowChange): void {
    const key = this.#key(c.table);
    const where = key.map((k) => `${quoteIdent(k)} = ?`).join(' AND ');
    if (c.op === 'insert') {
      this.#upsert(c.table, c.columns, c.after!);
    } else if (c.op === 'delete') {
      const s = this.#stmt('delete', c.table, [], () => `DELETE FROM ${quoteIdent(c.table)} WHERE ${where}`);
      s.run(this.#keyValues(c.table, c.columns, c.before ?? c.after!));
    } else {
      const s = this.#stmt('update', c.table, c.columns, () => {
        const set = c.columns.map((col) => `${quoteIdent(col)} = ?`).join(', ');
        return `UPDATE ${quoteIdent(c.table)} SET ${set} WHERE ${where}`;
      });
      // No before image (the source sent none): the key did not change, the after image has it.
      const r = s.run([
        ...c.after!.map(toParam),
        ...this.#keyValues(c.table, c.columns, c.before ?? c.after!),
      ]);
      if (r.changes === 0) this.#upsert(c.table, c.columns, c.after!);
    }
  }

  #groupTables(): string[] {
    return listTables(this.#db).filter((t) => tableMatches(this.#o.group.tables, t));
  }

  get #fenceMessage(): string {
    return fenceText({ kind: 'backup', group: this.#o.group.name, primary: this.#o.primary });
  }

  #fenceAll(): void {
    const tx = this.#db.transaction(() => {
      for (const t of this.#groupTables()) installFenceTriggers(this.#db, t, this.#fenceMessage);
    });
    tx.immediate();
  }

  /**
   * A primary until now becomes a backup that has applied `position`: the position is stored
   * as applied and seeded, each table's definition is remembered as the source's (the next
   * primary sends the same), and every table is fenced, its capture triggers gone.
   */
  async adopt(position: number, epoch: number): Promise<void> {
    const db = this.#db;
    const g = this.#o.group;
    db.transaction(() => {
      db.prepare(
        'INSERT INTO _tandem_applied (grp, position, epoch, seeded) VALUES (?, ?, ?, 1) ON CONFLICT (grp) DO UPDATE SET position = excluded.position, epoch = excluded.epoch, seeded = 1',
      ).run(g.name, position, epoch);
      db.prepare('DELETE FROM _tandem_tables WHERE grp = ?').run(g.name);
      const remember = db.prepare('INSERT INTO _tandem_tables (grp, name, schema) VALUES (?, ?, ?)');
      for (const t of this.#groupTables()) {
        remember.run(g.name, t, JSON.stringify(readTableSchema(db, t, g.name, g.keys[t])));
        installFenceTriggers(db, t, this.#fenceMessage);
      }
    }).immediate();
    this.#applied = position;
    this.#next = position + 1;
    this.#seeded = true;
    this.#everSeeded = true;
    this.#keys.clear();
    this.#statements.clear();
  }

  // ---- seeding: chunks committed one by one ----

  get #where(): string {
    return `in the backup database ${this.#o.path}`;
  }

  get seedState(): SeedState | null {
    return this.#verify.size > 0 ? null : this.#seedState;
  }

  /** better-sqlite3 is synchronous: one connection takes every chunk. */
  get seedLanes(): number {
    return 1;
  }

  #loadSeedState(): void {
    const g = this.#o.group.name;
    const row = this.#db.prepare('SELECT plan, verify FROM _tandem_seed WHERE grp = ?').get(g) as
      | { plan: string; verify: string }
      | undefined;
    if (!row) return;
    if (this.#o.group.seed.overwrite && row.verify !== '[]') {
      // The seed stopped verifying tables that now may be overwritten: start it over.
      this.#db.prepare('DELETE FROM _tandem_seed WHERE grp = ?').run(g);
      return;
    }
    const done = this.#db
      .prepare(
        'SELECT tbl AS "table", chunk, rows FROM _tandem_seed_chunks WHERE grp = ? ORDER BY tbl, chunk',
      )
      .all(g) as { table: string; chunk: bigint; rows: bigint }[];
    this.#seedState = {
      plan: JSON.parse(row.plan) as SeedPlan,
      done: done.map((d) => ({ table: d.table, chunk: Number(d.chunk), rows: Number(d.rows) })),
    };
    this.#verify = new Set(JSON.parse(row.verify) as string[]);
  }

  unseed(): void {
    if (this.#inTx) this.#rollback();
    this.#seeded = false;
    this.#db.prepare('UPDATE _tandem_applied SET seeded = 0 WHERE grp = ?').run(this.#o.group.name);
  }

  /**
   * Starts a seed. A new one keeps tables holding rows Tandem did not put there (they are
   * verified chunk by chunk instead, unless seed.overwrite) and recreates the others empty,
   * then records the plan; all of it committed, so a crash from here on resumes.
   */
  async beginSeed(plan: SeedPlan, resume: boolean): Promise<void> {
    if (this.#inTx) this.#rollback();
    const db = this.#db;
    const g = this.#o.group;
    if (resume) {
      if (checkResume(this.#seedState, plan))
        db.prepare('UPDATE _tandem_seed SET plan = ? WHERE grp = ?').run(
          JSON.stringify(this.#seedState!.plan),
          g.name,
        );
      this.#seeding = true;
      return;
    }
    const tables = new Set(listTables(db));
    const verify = await tablesToVerify(plan, {
      group: g,
      where: this.#where,
      log: this.#o.log,
      everSeeded: this.#everSeeded,
      previous: this.#seedState,
      verifying: this.#verify,
      hasRows: (t) =>
        tables.has(t) && db.prepare(`SELECT 1 FROM ${quoteIdent(t)} LIMIT 1`).get() !== undefined,
    });
    db.exec('BEGIN IMMEDIATE');
    db.exec('UPDATE _tandem_fence SET open = 1');
    this.#inTx = true;
    for (const s of plan.schemas.map((x) => schemaFor(x, 'sqlite', this.#o.group.name))) {
      if (!verify.has(s.name)) {
        db.exec(`DROP TABLE IF EXISTS ${quoteIdent(s.name)}`);
        db.exec(createTableSql(s));
      }
      installFenceTriggers(db, s.name, this.#fenceMessage);
      this.#forget(s.name);
    }
    db.prepare('DELETE FROM _tandem_seed_chunks WHERE grp = ?').run(g.name);
    db.prepare('INSERT OR REPLACE INTO _tandem_seed (grp, plan, verify) VALUES (?, ?, ?)').run(
      g.name,
      JSON.stringify(plan),
      JSON.stringify([...verify]),
    );
    db.prepare('UPDATE _tandem_applied SET seeded = 0 WHERE grp = ?').run(g.name);
    db.exec('UPDATE _tandem_fence SET open = 0');
    db.exec('COMMIT');
    this.#inTx = false;
    this.#seeded = false;
    this.#seedState = { plan, done: [] };
    this.#verify = verify;
    this.#seeding = true;
  }

  seedChunk(_lane: number, table: string, chunk: number, data: SeedData, final: boolean): void {
    if (!this.#seeding) throw new Error('no seed in progress');
    if (data.format !== 'values')
      throw new Error(`a SQLite backup takes seed rows as values, not ${data.format}`);
    const db = this.#db;
    if (!this.#inTx) {
      db.exec('BEGIN IMMEDIATE');
      db.exec('UPDATE _tandem_fence SET open = 1');
      this.#inTx = true;
    }
    const { columns, rows } = data;
    if (this.#verify.has(table)) this.#compare(table, columns, rows, chunk);
    else {
      const s = this.#stmt('seed', table, columns, () => {
        return `INSERT INTO ${quoteIdent(table)} (${columns.map(quoteIdent).join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`;
      });
      for (const r of rows) s.run(r.map(toParam));
    }
    this.#chunkRows += rows.length;
    if (!final) return;
    db.prepare('INSERT INTO _tandem_seed_chunks (grp, tbl, chunk, rows) VALUES (?, ?, ?, ?)').run(
      this.#o.group.name,
      table,
      chunk,
      this.#chunkRows,
    );
    db.exec('UPDATE _tandem_fence SET open = 0');
    db.exec('COMMIT');
    this.#inTx = false;
    this.#seedState?.done.push({ table, chunk, rows: this.#chunkRows });
    this.#chunkRows = 0;
  }

  /** Fails the seed when rows of the primary are missing or different in a verified table. */
  #compare(table: string, columns: string[], rows: Value[][], chunk: number): void {
    const key = this.#seedState!.plan.schemas.find((s) => s.name === table)!.primaryKey;
    const at = key.map((k) => columns.indexOf(k));
    const s = this.#stmt('verify', table, columns, () => {
      return `SELECT ${columns.map(quoteIdent).join(', ')} FROM ${quoteIdent(table)} WHERE ${key.map((k) => `${quoteIdent(k)} = ?`).join(' AND ')}`;
    });
    let missing = 0;
    let differ = 0;
    for (const r of rows) {
      const have = s.raw(true).get(at.map((i) => toParam(r[i]!))) as Value[] | undefined;
      if (!have) missing++;
      else if (!r.every((v, i) => sameParam(toParam(v), toParam(have[i]!)))) differ++;
    }
    if (missing || differ) throw chunkDiffers(this.#o.group, this.#where, table, chunk, missing, differ);
  }

  /** Commits the seed; apply resumes after its position. */
  async endSeed(epoch: number): Promise<number> {
    const state = this.#seedState;
    if (!state || !this.#seeding) throw new Error('no seed in progress');
    const db = this.#db;
    const g = this.#o.group.name;
    await checkVerifiedCounts(
      state,
      this.#verify,
      (t) => Number((db.prepare(`SELECT count(*) AS n FROM ${quoteIdent(t)}`).get() as { n: bigint }).n),
      this.#o.group,
      this.#where,
    );
    const position = state.plan.position;
    const waitFor = uniqueAfter(state.plan);
    db.transaction(() => {
      // Indexes last, as a bulk load would (unique ones once apply has passed a resumed seed's
      // newest snapshot); each table's definition remembered as the source's.
      this.#uniqueAfter = waitFor;
      const remember = db.prepare(
        'INSERT OR REPLACE INTO _tandem_tables (grp, name, schema) VALUES (?, ?, ?)',
      );
      for (const s of state.plan.schemas) {
        this.#syncIndexes(s, undefined);
        remember.run(g, s.name, JSON.stringify(s));
      }
      if (waitFor > 0)
        db.prepare('INSERT OR REPLACE INTO _tandem_unique_after (grp, position) VALUES (?, ?)').run(
          g,
          waitFor,
        );
      else db.prepare('DELETE FROM _tandem_unique_after WHERE grp = ?').run(g);
      db.prepare(
        'INSERT INTO _tandem_applied (grp, position, epoch, seeded) VALUES (?, ?, ?, 1) ON CONFLICT (grp) DO UPDATE SET position = excluded.position, epoch = excluded.epoch, seeded = 1',
      ).run(g, position, epoch);
      db.prepare('DELETE FROM _tandem_seed WHERE grp = ?').run(g);
      db.prepare('DELETE FROM _tandem_seed_chunks WHERE grp = ?').run(g);
    }).immediate();
    this.#seedState = null;
    this.#verify.clear();
    this.#seeding = false;
    this.#applied = position;
    this.#next = position + 1;
    this.#seeded = true;
    this.#everSeeded = true;
    return position;
  }

  abortSeed(): void {
    this.#rollback();
    this.#chunkRows = 0;
    this.#seeding = false;
  }
}

/** Two parameters hold the same value (blobs by content). */
function sameParam(a: Param, b: Param): boolean {
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  return a === b;
}
