/**
 * SQLite capture: triggers write every row change into `_tandem_changes` in the writer's own
 * transaction; this service turns committed changes into journal records within milliseconds
 * and deletes them from the change table only once the journal holds them durably.
 *
 * Invariants
 * - One SELECT reads a snapshot, and a snapshot holds whole commits only, so a record that ends
 *   a read holds whole source transactions. A read cut by the size limit may end inside a
 *   transaction: such a record has txCount 0 and apply keeps its target transaction open into
 *   the next record.
 * - `_tandem_changes.seq` is AUTOINCREMENT (never reused). Each record's `source` is the last seq
 *   it holds, so after a crash capture resumes after the journal's last record: nothing is
 *   captured twice and nothing is skipped.
 * - Schema changes (new matching tables, altered or dropped tables) are made into change rows
 *   under the database write lock, together with new triggers and, for new or altered tables, a
 *   copy of every row, so no write can slip between the old and the new triggers unseen.
 */
import type Database from 'better-sqlite3';
import { tableMatches } from '../../config/index.js';
import { TandemError } from '../../core/errors.js';
import { monoNow } from '../../core/mono.js';
import { type Change, encodeRecord, type JournalRecord, type TableSchema } from '../../core/record.js';
import { type PendingCut, pendingCut } from '../cut.js';
import { type FenceReason, fenceText } from '../fence-text.js';
import type { Capture, CaptureCut, CaptureOptions } from '../types.js';
import {
  createLeaseTable,
  createSourceTables,
  createTargetTables,
  dropTandemTriggers,
  installCaptureTriggers,
  installFenceTriggers,
  installLeaseTriggers,
  NOW_MS,
} from './internal.js';
import { parseImage } from './literal.js';
import { openDatabase } from './open.js';
import {
  INTERNAL_PREFIX,
  listTables,
  quoteIdent,
  readTableSchema,
  sameIndexes,
  sameSchema,
} from './schema.js';

export interface SqliteCaptureOptions extends CaptureOptions {
  path: string;
  /** How often to look for new commits (PRAGMA data_version is a few microseconds). */
  pollMs?: number;
  maxChangesPerRecord?: number;
  /** Records appended but not yet durable before capture waits. */
  maxInFlight?: number;
}

interface ChangeRow {
  seq: bigint;
  tbl: string;
  op: string;
  lv: bigint;
  old: string | null;
  new: string | null;
}

/** Above any seq: SQLite's integers stop at 2^63 - 1. */
const MAX_SEQ = 2n ** 63n - 1n;

export function sourceSeqOf(rec: JournalRecord): bigint {
  return BigInt(rec.source.replace(/^sqlite:/, '') || '0');
}

export class SqliteCapture implements Capture {
  readonly #o: SqliteCaptureOptions;
  readonly #db: Database.Database;
  readonly #layouts = new Map<string, string[]>();
  #cursor = 0n;
  #deletedUpTo = 0n;
  /** The database refuses writes unless the lease runs (guardLease). */
  #guarded = false;
  /** Highest change seq the journal holds durably (may be ahead of #deletedUpTo while writers hold the lock). */
  #durableSeq = 0n;
  /** The journal position holding #durableSeq (stored with each delete: see #checkJournal). */
  #durablePosition = 0;
  /** Deletes the change rows up to a seq and stores the position they reached, in one transaction. */
  #forget: ((upTo: bigint, position: number) => void) | null = null;
  #dataVersion = -1;
  #schemaVersion = -1;
  #timer: NodeJS.Timeout | undefined;
  #busy = false;
  #pending = false;
  #inFlight = 0;
  #stopped = false;
  #failed = false;
  /** (position, last seq) of recent records, for sync waiters; pruned as targets confirm. */
  readonly #marks: { position: number; seq: bigint }[] = [];
  readonly #seqWaiters = new Set<() => void>();
  /** Seeds' cuts (openCut): reads wait while one has no mark; then records end at each mark. */
  readonly #cuts: PendingCut[] = [];

  constructor(o: SqliteCaptureOptions) {
    this.#o = o;
    this.#db = openDatabase(o.path, { field: `groups.${o.group.name}.endpoints.${o.node}`, timeout: 0 });
  }

  /** Prepares the database (internal tables, triggers) and finds where to resume. */
  async open(lastRecord: JournalRecord | null): Promise<void> {
    const fresh = !listTables(this.#db, true).includes('_tandem_changes');
    createSourceTables(this.#db);
    const del = this.#db.prepare('DELETE FROM _tandem_changes WHERE seq <= ?');
    const mark = this.#db.prepare('INSERT OR REPLACE INTO _tandem_journaled (grp, position) VALUES (?, ?)');
    this.#forget = this.#db.transaction((upTo: bigint, position: number) => {
      del.run(upTo);
      mark.run(this.#o.group.name, position);
    });
    // Before the schema check below appends anything to the journal.
    this.#checkJournal();
    this.#cursor = lastRecord ? sourceSeqOf(lastRecord) : 0n;
    // The very first install copies no rows: a new backup is seeded from a snapshot taken after it.
    // Nothing else runs yet, so waiting here for writers to release the lock blocks no one.
    this.#db.pragma('busy_timeout = 10000');
    try {
      this.#syncSchema(!fresh);
    } catch (err) {
      if (!isBusy(err)) throw err;
      throw new TandemError(
        'ENDPOINT_UNAVAILABLE',
        `groups.${this.#o.group.name}.endpoints.${this.#o.node}: ${this.#o.path} stayed locked by another writer for 10 s, so the capture triggers could not be checked`,
        'Find the process holding a long write transaction on the database, then start the node again',
      );
    } finally {
      this.#db.pragma('busy_timeout = 0');
    }
    this.#durableSeq = this.#cursor;
    this.#durablePosition = lastRecord?.position ?? 0;
    this.#deleteCaptured();
  }

  /**
   * The changes of every position up to the stored one are gone from the change table: only the
   * journal holds them. A journal ending before it lost records it had made durable (its files
   * were damaged or restored from an older copy): capturing on would hand out those positions
   * again, with other changes, to backups that hold the old ones.
   */
  #checkJournal(): void {
    const j = this.#o.journal;
    const row = this.#db
      .prepare('SELECT position FROM _tandem_journaled WHERE grp = ?')
      .get(this.#o.group.name) as { position: bigint } | undefined;
    const stored = row ? Number(row.position) : 0;
    if (j.lastPosition >= stored) return;
    throw new TandemError(
      'JOURNAL_CORRUPT',
      `group ${this.#o.group.name}: the journal ${j.dir} ends at position ${j.lastPosition}, but ${this.#o.path} records that positions up to ${stored} were journaled durably (their changes were then deleted from _tandem_changes): the journal lost records, and no backup could give them back`,
      'Start the backups first so that this node takes the records back from them. If none holds them: make a backup the primary (tandem failover) and reseed this node, or start the history over by deleting the row of this group from _tandem_journaled (every backup must then be reseeded)',
    );
  }

  describe(mode: 'async' | 'sync', degraded: boolean): string {
    return mode === 'sync'
      ? `sync for writers using the Tandem library (RPO 0${degraded ? ', DEGRADED to async now' : ''}); other writers are captured by triggers, async`
      : 'async: triggers capture every writer; RPO is the lag shown';
  }

  /** Changes committed at the source but not yet in the journal. */
  pendingChanges(): number {
    const row = this.#db
      .prepare('SELECT count(*) AS n FROM _tandem_changes WHERE seq > ?')
      .get(this.#cursor) as {
      n: bigint;
    };
    return Number(row.n);
  }

  /** Resolves with the journal position holding change `seq` once it has been captured. */
  async positionOf(seq: bigint): Promise<number> {
    for (;;) {
      if (this.#stopped) throw new Error('capture stopped');
      if (seq <= this.#cursor) {
        const m = this.#marks.find((x) => x.seq >= seq);
        return m ? m.position : this.#o.journal.lastPosition;
      }
      // Register before kicking: the kick may capture synchronously and wake waiters at once.
      const captured = new Promise<void>((resolve) => this.#seqWaiters.add(resolve));
      this.kick();
      await captured;
    }
  }

  openCut(): CaptureCut {
    const cut = pendingCut();
    this.#cuts.push(cut);
    const drop = () => {
      const i = this.#cuts.indexOf(cut);
      if (i >= 0) this.#cuts.splice(i, 1);
    };
    return {
      at: (mark) => {
        if (this.#stopped || this.#failed) return Promise.reject(new Error('capture stopped'));
        // Nothing was read since openCut, and the snapshot began after it: #cursor <= mark.
        if (mark <= this.#cursor) {
          drop();
          cut.resolve(this.#o.journal.lastPosition);
        } else {
          cut.mark = mark;
          this.kick();
        }
        return cut.done;
      },
      close: () => {
        drop();
        cut.reject(new Error('cut closed'));
        this.kick();
      },
    };
  }

  /** Forget marks the targets have confirmed. */
  confirmedUpTo(position: number): void {
    while (this.#marks.length > 0 && this.#marks[0]!.position <= position) this.#marks.shift();
  }

  run(): void {
    this.#timer = setInterval(() => this.kick(), this.#o.pollMs ?? 2);
    this.kick();
  }

  /** Look for commits now. */
  kick(): void {
    if (this.#stopped || this.#failed || this.#busy) return;
    // A seed is reading its snapshot's mark: a record must not run past it.
    if (this.#cuts.some((c) => c.mark === null)) return;
    this.#busy = true;
    try {
      this.#deleteCaptured(); // catches up after SQLITE_BUSY
      do this.#step();
      while (this.#pending && !this.#failed && this.#inFlight < (this.#o.maxInFlight ?? 32));
    } catch (err) {
      // A writer holds the lock (schema sync, or a WAL read during a checkpoint): `#pending`
      // stays set and the next tick retries.
      if (!isBusy(err)) this.#fail(err as Error);
    } finally {
      this.#busy = false;
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    while (this.#inFlight > 0) await new Promise((r) => setTimeout(r, 5));
    for (const w of this.#seqWaiters) w();
    for (const c of this.#cuts.splice(0)) c.reject(new Error('capture stopped'));
    this.#db.close();
  }

  // ---- role changes ----

  /** The group's tables the capture triggers watch. */
  #captured(): string[] {
    return listTables(this.#db).filter(
      (t) => tableMatches(this.#o.group.tables, t) && hasTriggers(this.#db, t),
    );
  }

  /**
   * Runs `fn` in a write transaction, waiting for other writers: the lock is tried in short
   * waits with the event loop free in between, until `timeoutMs`.
   */
  async #writeLocked(what: string, timeoutMs: number, fn: () => void): Promise<void> {
    const deadline = monoNow() + timeoutMs;
    for (;;) {
      this.#db.pragma('busy_timeout = 20');
      try {
        this.#db.transaction(fn).immediate();
        return;
      } catch (err) {
        if (!isBusy(err)) throw err;
        if (monoNow() >= deadline) {
          throw new TandemError(
            'SWITCH_FAILED',
            `${this.#o.path}: another writer held the database lock for ${timeoutMs} ms, so the ${what} could not be made`,
            'Find the process holding a long write transaction, or allow more time (groups.<group>.switchover.fence_timeout)',
          );
        }
      } finally {
        this.#db.pragma('busy_timeout = 0');
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** The write fence: every captured table refuses writes from the commit of this on. */
  async fence(reason: FenceReason, timeoutMs: number): Promise<void> {
    const message = fenceText(reason);
    await this.#writeLocked('fence', timeoutMs, () => {
      createTargetTables(this.#db);
      for (const t of this.#captured()) installFenceTriggers(this.#db, t, message, true);
    });
  }

  get #leaseMessage(): string {
    return fenceText({ kind: 'no-quorum', group: this.#o.group.name, node: this.#o.node });
  }

  async guardLease(): Promise<void> {
    await this.#writeLocked('lease guard', 10_000, () => {
      createLeaseTable(this.#db);
      this.#db.prepare('UPDATE _tandem_lease SET until_ms = 0 WHERE id = 1').run();
      for (const t of this.#captured()) installLeaseTriggers(this.#db, t, this.#leaseMessage);
    });
    this.#guarded = true;
  }

  async extendLease(ms: number): Promise<void> {
    // Short waits for the lock; a renewal that finds it busy is retried by the next one.
    this.#db.pragma('busy_timeout = 20');
    try {
      this.#db
        .prepare(`UPDATE _tandem_lease SET until_ms = ${NOW_MS} + ?, set_ms = ${NOW_MS} WHERE id = 1`)
        .run(ms);
    } catch (err) {
      if (!isBusy(err)) throw err;
    } finally {
      this.#db.pragma('busy_timeout = 0');
    }
  }

  async unfence(): Promise<void> {
    await this.#writeLocked('unfence', 10_000, () => {
      for (const t of listTables(this.#db)) dropTandemTriggers(this.#db, t, 'fence');
    });
  }

  async barrier(): Promise<number> {
    for (;;) {
      if (this.#failed || this.#stopped) throw new Error('capture stopped');
      this.kick();
      if (!this.#pending && this.#inFlight === 0 && this.pendingChanges() === 0) break;
      await new Promise((r) => setTimeout(r, 1));
    }
    const last = this.#o.journal.lastPosition;
    await this.#o.journal.whenDurable(last);
    return last;
  }

  /** AUTOINCREMENT counters: the next primary must not hand out a number used here. */
  async handOverSequences(): Promise<number> {
    const journal = this.#o.journal;
    const rows = this.#db.prepare("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'").get()
      ? (this.#db.prepare('SELECT name, seq FROM sqlite_sequence').all() as { name: string; seq: bigint }[])
      : [];
    const changes: Change[] = rows
      .filter((r) => !r.name.startsWith(INTERNAL_PREFIX) && tableMatches(this.#o.group.tables, r.name))
      .map((r) => ({ op: 'sequence', table: r.name, value: BigInt(r.seq) }));
    if (changes.length === 0) return 0;
    await journal.append(
      encodeRecord({
        position: journal.nextPosition,
        epoch: this.#o.epoch(),
        origin: this.#o.node,
        hlc: this.#o.hlc.now(),
        source: `sqlite:${this.#cursor}`,
        txCount: 1,
        changes,
      }),
    );
    return changes.length;
  }

  /** Called after stop, or on a capture never opened: the database is no longer a source. */
  async retire(): Promise<void> {
    if (this.#db.open) this.#db.close();
    const db = openDatabase(this.#o.path, {
      field: `groups.${this.#o.group.name}.endpoints.${this.#o.node}`,
      timeout: 10_000,
    });
    try {
      db.transaction(() => {
        for (const t of listTables(db)) {
          dropTandemTriggers(db, t, 'cap');
          dropTandemTriggers(db, t, 'lease');
        }
        db.exec(
          'DROP TABLE IF EXISTS _tandem_changes; DROP TABLE IF EXISTS _tandem_layout; DROP TABLE IF EXISTS _tandem_journaled; DROP TABLE IF EXISTS _tandem_lease',
        );
      }).immediate();
    } finally {
      db.close();
    }
  }

  #fail(err: Error): void {
    if (this.#failed) return;
    this.#failed = true;
    clearInterval(this.#timer);
    for (const c of this.#cuts.splice(0)) c.reject(err);
    this.#o.onFatal(err);
  }

  /**
   * Reads what is committed and not yet captured into one record. `#pending` says rows may be
   * waiting whatever data_version says: a read cut at the size limit, a read not done because
   * too many appends are in flight, or a read that failed. It is cleared only by a read that
   * saw everything committed.
   */
  #step(): void {
    if (this.#inFlight >= (this.#o.maxInFlight ?? 32)) {
      this.#pending = true; // an append completing kicks again
      return;
    }
    // data_version changes when another connection commits.
    const dv = Number(this.#db.pragma('data_version', { simple: true }) as bigint);
    if (dv === this.#dataVersion && !this.#pending) return;
    this.#pending = true;
    const sv = Number(this.#db.pragma('schema_version', { simple: true }) as bigint);
    if (sv !== this.#schemaVersion) this.#syncSchema();

    const max = this.#o.maxChangesPerRecord ?? 4096;
    // A seed's mark ends a record: the changes up to it are whole commits.
    const bound = this.#cuts.reduce<bigint | null>((m, c) => (m === null || c.mark! < m ? c.mark : m), null);
    const rows = this.#db
      .prepare(
        'SELECT seq, tbl, op, lv, old, new FROM _tandem_changes WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?',
      )
      .all(this.#cursor, bound ?? MAX_SEQ, max + 1) as ChangeRow[];
    this.#dataVersion = dv;
    const complete = rows.length <= max;
    this.#pending = !complete || bound !== null;
    if (rows.length === 0) {
      // No changes up to the mark are left to capture: the journal's end is the cut.
      if (bound !== null) this.#endCuts(bound, this.#o.journal.lastPosition);
      return;
    }
    if (!complete) rows.length = max;
    const changes = rows.map((r) => this.#toChange(r));
    const lastSeq = rows[rows.length - 1]!.seq;
    const journal = this.#o.journal;
    const rec: JournalRecord = {
      position: journal.nextPosition,
      epoch: this.#o.epoch(),
      origin: this.#o.node,
      hlc: this.#o.hlc.now(),
      source: `sqlite:${lastSeq}`,
      txCount: complete ? 1 : 0,
      changes,
    };
    this.#cursor = lastSeq;
    this.#marks.push({ position: rec.position, seq: lastSeq });
    this.#endCuts(lastSeq, rec.position);
    this.#inFlight++;
    journal.append(encodeRecord(rec)).then(
      () => {
        this.#inFlight--;
        if (lastSeq > this.#durableSeq) {
          this.#durableSeq = lastSeq;
          this.#durablePosition = rec.position;
        }
        if (!this.#stopped) this.#deleteCaptured();
        if (this.#pending) this.kick();
      },
      (err: Error) => {
        this.#inFlight--;
        this.#fail(err);
      },
    );
    for (const w of this.#seqWaiters) w();
    this.#seqWaiters.clear();
  }

  /** Cuts whose mark the capture has reached end at `position`. */
  #endCuts(seq: bigint, position: number): void {
    for (const c of [...this.#cuts]) {
      if (c.mark === null || c.mark > seq) continue;
      this.#cuts.splice(this.#cuts.indexOf(c), 1);
      c.resolve(position);
    }
  }

  /** Delete journaled changes; if a writer holds the lock, a later call catches up. */
  #deleteCaptured(): void {
    const upTo = this.#durableSeq;
    if (upTo <= this.#deletedUpTo) return;
    try {
      this.#forget!(upTo, this.#durablePosition);
      this.#deletedUpTo = upTo;
    } catch (err) {
      if (!isBusy(err)) this.#fail(err as Error);
    }
  }

  #columns(tbl: string, lv: bigint): string[] {
    const k = `${tbl}\0${lv}`;
    let cols = this.#layouts.get(k);
    if (!cols) {
      const row = this.#db
        .prepare('SELECT schema FROM _tandem_layout WHERE tbl = ? AND lv = ?')
        .get(tbl, lv) as { schema: string | null } | undefined;
      if (!row?.schema) throw new Error(`change for table "${tbl}" names unknown layout ${lv}`);
      cols = (JSON.parse(row.schema) as TableSchema).columns.map((c) => c.name);
      this.#layouts.set(k, cols);
    }
    return cols;
  }

  #toChange(r: ChangeRow): Change {
    switch (r.op) {
      case 'I':
      case 'U':
      case 'D': {
        const op = r.op === 'I' ? 'insert' : r.op === 'U' ? 'update' : 'delete';
        return {
          op,
          table: r.tbl,
          columns: this.#columns(r.tbl, r.lv),
          before: r.old === null ? null : parseImage(r.old),
          after: r.new === null ? null : parseImage(r.new),
        };
      }
      case 'S':
        return { op: 'schema', table: r.tbl, schema: JSON.parse(r.new!) as TableSchema };
      case 'X':
        return { op: 'drop', table: r.tbl };
      default:
        throw new Error(`unknown change op "${r.op}" at seq ${r.seq}`);
    }
  }

  /**
   * Compares the matching tables with the layouts the triggers write and, under the write
   * lock, turns every difference into change rows; with `copyRows`, new and changed tables are
   * also copied row by row into the change table.
   */
  #syncSchema(copyRows = true): void {
    const db = this.#db;
    const g = this.#o.group;
    const tx = db.transaction(() => {
      const current = new Map<string, { lv: number; schema: TableSchema | null }>();
      const rows = db
        .prepare(
          'SELECT tbl, lv, schema FROM _tandem_layout l WHERE lv = (SELECT max(lv) FROM _tandem_layout WHERE tbl = l.tbl)',
        )
        .all() as { tbl: string; lv: bigint; schema: string | null }[];
      for (const r of rows) {
        current.set(r.tbl, {
          lv: Number(r.lv),
          schema: r.schema ? (JSON.parse(r.schema) as TableSchema) : null,
        });
      }
      const live = listTables(db).filter((t) => tableMatches(g.tables, t));
      const addLayout = db.prepare('INSERT INTO _tandem_layout (tbl, lv, schema) VALUES (?, ?, ?)');
      const addChange = db.prepare(
        'INSERT INTO _tandem_changes (tbl, op, lv, old, new) VALUES (?, ?, ?, NULL, ?)',
      );
      for (const table of live) {
        const schema = readTableSchema(db, table, g.name, g.keys[table]);
        const prev = current.get(table);
        const triggered = hasTriggers(db, table);
        // Only its indexes changed: a schema change row, and no copy of the rows.
        const sameRows = prev?.schema != null && sameSchema(prev.schema, schema) && triggered;
        if (sameRows && sameIndexes(prev!.schema!, schema)) continue;
        const lv = (prev?.lv ?? 0) + 1;
        // Known table without our triggers: it was dropped and made again (or the triggers were
        // removed by hand). Its old rows are gone, so the target must drop it too.
        if (prev?.schema && !triggered) addChange.run(table, 'X', prev.lv, null);
        const json = JSON.stringify(schema);
        addLayout.run(table, lv, json);
        installCaptureTriggers(db, schema, lv);
        if (this.#guarded) installLeaseTriggers(db, table, this.#leaseMessage);
        addChange.run(table, 'S', lv, json);
        if (copyRows && !sameRows) {
          // Rows written before these triggers existed (a new table, or columns the old
          // triggers did not know) reach the target as upserts of every row.
          const cols = schema.columns.map((c) => `quote(${quoteIdent(c.name)})`).join(" || ',' || ");
          db.prepare(
            `INSERT INTO _tandem_changes (tbl, op, lv, old, new) SELECT ?, 'I', ?, NULL, ${cols} FROM ${quoteIdent(table)}`,
          ).run(table, lv);
        }
        this.#o.log.info(
          { group: g.name, table, layout: lv },
          sameRows ? 'indexes changed' : prev ? 'table changed' : 'table captured',
        );
      }
      for (const [table, prev] of current) {
        if (prev.schema === null || live.includes(table)) continue;
        addLayout.run(table, prev.lv + 1, null);
        addChange.run(table, 'X', prev.lv + 1, null);
        dropTandemTriggers(db, table);
        this.#o.log.info({ group: g.name, table }, 'table no longer captured');
      }
    });
    tx.immediate();
    this.#schemaVersion = Number(db.pragma('schema_version', { simple: true }) as bigint);
  }
}

function hasTriggers(db: Database.Database, table: string): boolean {
  const row = db
    .prepare(
      "SELECT count(*) AS n FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ? AND name LIKE '\\_tandem\\_cap\\_%' ESCAPE '\\'",
    )
    .get(table) as { n: bigint };
  return Number(row.n) === 3;
}

function isBusy(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED';
}
