import type { SeedProgressView } from '../link/seed-progress.js';

/** The shape of `GET /status` and `tandem status --json`: one entry per group the node serves. */

export interface LinkStatus {
  peer: string;
  /** connecting | handshake | seeding | streaming | down (source side); connected | waiting (backup side) */
  state: string;
  lastError: string | null;
  /** Positions as the backup last reported them. */
  durable: number;
  applied: number;
  lag: { records: number; bytes: number; ms: number };
  wire: { bytesOut: number; bytesIn: number };
  rttMs: number;
  /** Seeding in progress: rows copied of the total, per table, rate and time left. */
  seed: SeedProgressView | null;
  /** Times this node seeded the backup since it started (primary side; 0 on a backup). */
  seeds: number;
  /** The last seed this node finished to the backup (primary side), with rows an earlier one had copied. */
  lastSeed: { position: number; rows: number; resumed: number; ms: number } | null;
}

/** A switchover under way (on the primary that runs it). */
export interface SwitchStatus {
  to: string;
  /** The step running now (see docs/switchover.md). */
  step: string;
  startedAt: string;
  /** The primary's database refuses application writes. */
  fenced: boolean;
}

export interface GroupStatus {
  group: string;
  kind: 'sql';
  mode: 'async' | 'sync';
  /** `in-doubt`: a switchover from this node lost touch with the new primary at the promotion. */
  role: 'primary' | 'backup' | 'in-doubt';
  epoch: number;
  /** The node this node takes for the group's primary now. */
  primary: string;
  state: 'running' | 'failed' | 'fenced' | 'stopped';
  error: string | null;
  /** This node's database refuses application writes (a backup always does). */
  fenced: boolean;
  switching: SwitchStatus | null;
  /** How changes are captured here and what the mode means for them. */
  capture: string | null;
  positions: {
    /** Last record in this node's journal. */
    captured: number;
    /** Last record this node's journal holds durably. */
    journalDurable: number;
    /** Primary: lowest position every backup holds durably. Backup: its own durable position. */
    durableAtTarget: number;
    /** Primary: lowest applied position over the backups. Backup: its own. */
    applied: number;
  };
  rates: { capturedPerSec: number; appliedPerSec: number; wireBytesPerSec: number };
  journal: { first: number; last: number; bytes: number; segments: number };
  links: LinkStatus[];
}

export interface NodeStatus {
  cluster: string;
  node: string;
  version: string;
  pid: number;
  uptimeMs: number;
  groups: GroupStatus[];
}
