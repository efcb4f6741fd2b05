/**
 * What the node runtime needs from a data kind's adapter. One adapter folder per kind
 * (sqlite/, postgres/, ...) holds the same pieces: capture, apply, snapshot.
 */
import type { Logger } from 'pino';
import type { GroupConfig } from '../config/index.js';
import type { HybridLogicalClock } from '../core/hlc.js';
import type { JournalRecord, TableSchema, Value } from '../core/record.js';
import type { Journal } from '../journal/index.js';

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
}

/** A consistent copy of the group's data at a journal position (for seeding a backup). */
export interface Snapshot {
  readonly position: number;
  readonly schemas: TableSchema[];
  /** Rows per table (exact, or an estimate), for progress. */
  readonly tables: { table: string; total: number }[];
  chunks():
    | AsyncIterable<{ table: string; columns: string[]; rows: Value[][] }>
    | Iterable<{
        table: string;
        columns: string[];
        rows: Value[][];
      }>;
  close(): Promise<void> | void;
}

export interface ApplyOptions {
  group: GroupConfig;
  /** This (backup) node. */
  node: string;
  journal: Journal;
  log: Logger;
  onFatal: (err: Error) => void;
  /** Called after each commit that moved the applied position. */
  onApplied?: () => void;
  /** Most records per apply step (one target transaction unless a source transaction continues). */
  maxRecords?: number;
  /** Most row changes per apply step. */
  maxChanges?: number;
}

/** Target side: applies journal records exactly once, keeps the database fenced, takes seeds. */
export interface Apply {
  open(): Promise<void>;
  run(): void;
  kick(): void;
  stop(): Promise<void>;
  readonly appliedPosition: number;
  /** HLC timestamp of the last applied record (0 before any). */
  readonly appliedHlc: bigint;
  readonly seeded: boolean;
  beginSeed(position: number, schemas: TableSchema[]): Promise<void> | void;
  seedRows(table: string, columns: string[], rows: Value[][]): Promise<void> | void;
  /** Commits the seed; returns its position. */
  endSeed(epoch: number): Promise<number> | number;
  abortSeed(): Promise<void> | void;
}
