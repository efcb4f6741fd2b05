/**
 * What the node runtime needs from a data kind's adapter. One adapter folder per kind
 * (sqlite/, postgres/, ...) holds the same pieces: capture, apply, snapshot.
 */
import type { Logger } from 'pino';
import type { GroupConfig } from '../config/index.js';
import type { HybridLogicalClock } from '../core/hlc.js';
import type { JournalRecord, RowChange, TableSchema, Value } from '../core/record.js';
import type { Journal } from '../journal/index.js';
import type { FenceReason } from './fence-text.js';
import type { Engine } from './typemap.js';

/** The fix of every APPLY_FAILED of an apply's step: the node starts the failed group again. */
export const APPLY_FAILED_FIX =
  'The backup stopped applying and keeps its journal; it tries again by itself (after 1 s, doubling to 30 s) and goes on once the cause is fixed';

export interface CaptureOptions {
  group: GroupConfig;
  node: string;
  journal: Journal;
  hlc: HybridLogicalClock;
  epoch: () => number;
  log: Logger;
  /** Called once when capture cannot go on; the group stops. */
  onFatal: (err: Error) => void;
}

/** Source side: turns committed changes into journal records; acknowledges only what is durable. */
export interface Capture {
  /** Prepares the source and finds where to resume (after the journal's last record). */
  open(lastRecord: JournalRecord | null): Promise<void>;
  run(): void;
  /** Look for changes now. */
  kick(): void;
  /** Every backup holds the journal up to `position` durably. */
  confirmedUpTo(position: number): void;
  /** Changes committed at the source but not yet journaled, when the source can tell. */
  pendingChanges(): number | null;
  /** How this capture relates to the group's mode, for status. */
  describe(mode: 'async' | 'sync', degraded: boolean): string;
  stop(): Promise<void>;
  /** Sync mode currently degraded to async by the capture itself (PostgreSQL). */
  readonly degraded?: boolean;
  /** SQLite trigger capture: the journal position holding source change `seq` (sync writers). */
  positionOf?(seq: bigint): Promise<number>;
  /**
   * Opened just before a seed's snapshot is taken, closed once it is: ties the snapshot to the
   * journal (see CaptureCut).
   */
  openCut(): CaptureCut;

  // ---- role changes (docs/switchover.md) ----
  /**
   * Fences the source database (for a switchover, a newer epoch, a lost quorum): every application writer is
   * refused or ended (SQLite: fence triggers taken under the write lock; PostgreSQL: the fence
   * function and trigger, then the sessions of other roles that hold a transaction id are
   * terminated). Once it resolves, nothing but Tandem can commit a change to the group's tables.
   * Gives up with an error after `timeoutMs`, leaving the database unfenced.
   */
  fence(reason: FenceReason, timeoutMs: number): Promise<void>;
  /** Lifts the fence (a switchover that did not happen). */
  unfence(): Promise<void>;
  /**
   * With a witness (docs/failover.md): from now on the database itself refuses application
   * writes unless its lease, extended by `extendLease`, is running. A primary cut off from its
   * quorum, or whose node died, stops taking writes when the lease runs out, with no help from
   * this process. Starts expired.
   */
  guardLease(): Promise<void>;
  /** The database may take writes for `ms` more, counted on its own clock from now. */
  extendLease(ms: number): Promise<void>;
  /**
   * Journals everything the source committed before the call and resolves with the position of
   * the last record once it is durable. With the database fenced, nothing follows it.
   */
  barrier(): Promise<number>;
  /**
   * Journals the current value of every sequence of the group's tables (PostgreSQL sequences,
   * SQLite AUTOINCREMENT counters) so the next primary continues exactly after them; resolves
   * with how many once the record is durable.
   */
  handOverSequences(): Promise<number>;
  /**
   * This database stops being a source (the node becomes a backup): capture's own objects are
   * removed (SQLite: triggers and change tables; PostgreSQL: the replication slot). Called after
   * `stop`.
   */
  retire(): Promise<void>;
}

/**
 * Where a seed's snapshot falls in the journal. The snapshot adapter reads its mark inside the
 * snapshot (PostgreSQL: the consistent point of the slot that exported it; SQLite: the change
 * table's last seq) and `at(mark)` resolves with the position P of the last record whose changes
 * the snapshot holds: it holds every record up to P and nothing of a later one, so the backup
 * streams from P + 1 and no record is applied over a copy that already holds it. SQLite's
 * capture holds its reads from `openCut` until `at` (a millisecond), so a record never straddles
 * the mark; PostgreSQL's notes each commit's position meanwhile. P may not be durable yet.
 */
export interface CaptureCut {
  at(mark: bigint): Promise<number>;
  close(): void;
}

/**
 * How a backup is seeded: the group's tables at the first snapshot, and for each table the
 * chunks it is copied in. Chunk i holds the rows whose key is above `bounds[i - 1]` and at most
 * `bounds[i]`; the last chunk (index `bounds.length`) is open-ended. Bounds are opaque to all but
 * the source adapter that planned them. The backup stores the plan, so a seed interrupted by a
 * crash resumes with the chunks it lacks (see docs/link.md).
 */
export interface SeedPlan {
  /** Journal position of the first snapshot (CaptureCut): streaming resumes after it. */
  position: number;
  /** The node and engine that planned it: only they can resume it. */
  source: string;
  engine: Engine;
  schemas: TableSchema[];
  tables: SeedTablePlan[];
  /**
   * A resumed seed: the position of its newest snapshot. Its later chunks hold records up to
   * there, which the backup applies again over them after the seed; until it has passed this
   * position its rows mix older and newer states, so unique indexes and UNIQUE / EXCLUDE
   * constraints wait (one row's older state next to another's newer one can break them).
   */
  consistentAt?: number;
}
export interface SeedTablePlan {
  table: string;
  /** Rows expected (exact for SQLite, the planner's estimate for PostgreSQL), for progress. */
  total: number;
  bounds: string[];
}
/** A seed a backup has begun: its plan and the chunks it has committed. */
export interface SeedState {
  plan: SeedPlan;
  done: { table: string; chunk: number; rows: number }[];
}
/**
 * Rows of a chunk part: journal values, or (PostgreSQL to PostgreSQL) COPY's text format as the
 * source wrote it, which the target takes without converting a value.
 */
export type SeedData =
  | { format: 'values'; columns: string[]; rows: Value[][] }
  | { format: 'pgcopy'; columns: string[]; text: Buffer; rows: number };
export type SeedFormat = SeedData['format'];

/** Rows in a chunk part. */
export function seedRowCount(d: SeedData): number {
  return d.format === 'pgcopy' ? d.rows : d.rows.length;
}

/** A chunk's identity within a seed, for sets and maps. */
export function chunkKey(table: string, chunk: number): string {
  return `${table}\0${chunk}`;
}

/** A consistent copy of the group's data at a journal position (for seeding a backup). */
export interface Snapshot {
  /** The last record whose changes the copy holds (CaptureCut); it holds nothing later. */
  readonly position: number;
  readonly engine: Engine;
  readonly schemas: TableSchema[];
  /** Chunks for every table, a few MiB each. */
  plan(): Promise<SeedTablePlan[]>;
  /**
   * The rows of chunk `index` of `table`, in parts of a few MiB; at least one part, empty if
   * the chunk is. Several chunks may be read at once. `values` is always available.
   */
  readChunk(table: SeedTablePlan, index: number, format: SeedFormat): AsyncIterable<SeedData>;
  close(): Promise<void> | void;
}

export interface ApplyOptions {
  group: GroupConfig;
  /** This (backup) node. */
  node: string;
  /** The group's primary now, named to writers the fence refuses. */
  primary: string;
  journal: Journal;
  log: Logger;
  onFatal: (err: Error) => void;
  /** Called after each commit that moved the applied position. */
  onApplied?: () => void;
  /** Most records per apply step (one target transaction unless a source transaction continues). */
  maxRecords?: number;
  /** Most row changes per apply step. */
  maxChanges?: number;
  /**
   * The highest position apply may take (default: all the journal holds). A backup applies
   * only what its source's journal holds durably: a record beyond it may still be cut
   * (docs/link.md).
   */
  limit?: () => number;
  /** A virtual switch is on (docs/virtual-switch.md): open without fencing, apply paused. */
  testing?: boolean;
}

/** Target side: applies journal records exactly once, keeps the database fenced, takes seeds. */
export interface Apply {
  open(): Promise<void>;
  run(): void;
  kick(): void;
  /** Stops applying; every commit made is durable when it resolves. */
  stop(): Promise<void>;
  readonly appliedPosition: number;
  /**
   * The applied position the target database holds durably, at most appliedPosition: the
   * backup's journal keeps every record above it (PostgreSQL apply commits asynchronously and
   * makes a commit synchronous about once a second).
   */
  readonly durableAppliedPosition: number;
  /** HLC timestamp of the last applied record (0 before any). */
  readonly appliedHlc: bigint;
  readonly seeded: boolean;
  /**
   * A seed begun and not finished (interrupted by a crash or a disconnect) that a source may
   * resume, or null. One that verifies tables which held rows before it is not offered: resumed,
   * it would apply records again over rows newer than them, against the tables' own unique
   * indexes (not Tandem's, so not deferred: seed-checks.ts uniqueAfter); it starts over.
   */
  readonly seedState: SeedState | null;
  /** Chunks the target takes at once (`seedChunk` lanes). */
  readonly seedLanes: number;
  /**
   * Gives up the seeded copy before a new seed (the source released records it needs): stops
   * applying and stores `seeded = false` durably, so the backup can no longer take over. Sync
   * commits stop waiting for it only then (docs/link.md, "Seeding").
   */
  unseed(): Promise<void> | void;
  /**
   * Starts a seed: a new one replaces the group's tables (after verifying rows Tandem did not
   * put there), a resumed one (`resume`, the plan of `seedState`) keeps the chunks committed.
   */
  beginSeed(plan: SeedPlan, resume: boolean): Promise<void> | void;
  /**
   * One part of chunk `chunk` of `table`, on connection `lane` (parts of one chunk arrive on one
   * lane, in order). The final part commits the chunk with its record in the seed state.
   */
  seedChunk(lane: number, table: string, chunk: number, data: SeedData, final: boolean): Promise<void> | void;
  /** Commits the seed; returns its position. */
  endSeed(epoch: number): Promise<number> | number;
  /** The link closed mid-seed: rolls back open chunks; committed ones stay for a resume. */
  abortSeed(): Promise<void> | void;

  // ---- role changes (docs/switchover.md) ----
  /**
   * Takes the database, a primary until now, as a backup that has applied up to `position`:
   * records the position as applied and seeded, and fences every table. Called after `open`.
   */
  adopt(position: number, epoch: number): Promise<void>;
  /**
   * Applies row changes in one target transaction, with the apply's rights and idempotent rules
   * (an old primary undoing its divergent tail before it rejoins). Called after `open`, before
   * `run`.
   */
  applyChanges(changes: RowChange[]): Promise<void>;

  // ---- virtual switch (docs/virtual-switch.md) ----
  /** Stops applying (the journal keeps receiving) and rolls back a transaction in progress. */
  pause(): Promise<void>;
  /** Applies again, from the applied position on. */
  resume(): void;
  /**
   * Opens the database to application writes for a test, every row they change logged with its
   * before image. Apply must be paused.
   */
  beginTest(): Promise<void>;
  /**
   * Fences the database again (ending test writers), reverts every test write from the log, in
   * one transaction, and removes the log. Returns the row changes reverted.
   */
  endTest(timeoutMs: number): Promise<number>;
}

/** One table's rows and order-independent checksum (`tandem switchover --verify`). */
export interface TableSum {
  table: string;
  rows: number;
  sum: string;
}

/**
 * What one engine's adapter offers (postgres/engine.ts, sqlite/engine.ts); `where` is the
 * endpoint's URL or database file. adapters/index.ts loads an engine when an endpoint needs it.
 */
export interface EngineAdapter {
  createCapture(where: string, o: CaptureOptions): Capture;
  createApply(where: string, o: ApplyOptions): Apply;
  /** A snapshot for seeding; `cut` (the capture's, opened just before) places it in the journal. */
  createSnapshot(where: string, group: GroupConfig, cut: CaptureCut, log: Logger): Promise<Snapshot>;
  readSchemas(where: string, group: GroupConfig): Promise<TableSchema[]>;
  checkPromotable(where: string, group: GroupConfig, node: string, log: Logger): Promise<void>;
  tableSums(where: string, group: GroupConfig): Promise<TableSum[]>;
  readRowsByKey(
    where: string,
    group: GroupConfig,
    table: string,
    key: string[],
    keys: Value[][],
  ): Promise<{ columns: string[]; rows: Value[][] }>;
  fullBeforeImages(where: string, group: GroupConfig, table: string): Promise<boolean>;
  writeSql(where: string, group: GroupConfig, sql: string): Promise<void>;
}
