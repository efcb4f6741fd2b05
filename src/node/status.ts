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
  role: 'primary' | 'backup' | 'in-doubt' | 'rejoining';
  epoch: number;
  /** The node this node takes for the group's primary now. */
  primary: string;
  state: 'running' | 'failed' | 'fenced' | 'stopped';
  error: string | null;
  /** A group that failed is restarted by the node (node.ts, #restartFailed): attempts so far, ms to the next. */
  restart?: { attempts: number; nextInMs: number | null } | null;
  /** This node's database refuses application writes (a backup always does). */
  fenced: boolean;
  switching: SwitchStatus | null;
  /** Primary of a group with a witness: whether the quorum lets it take writes (docs/failover.md). */
  lease?: { held: boolean; witness: string; backups: number; validMs: number } | null;
  /** Backup: ms since anything came from the primary. */
  heardMsAgo?: number | null;
  /** Backup: a virtual switch is on since `at`, apply holding at `since` (docs/virtual-switch.md). */
  virtual?: { since: number; at: string } | null;
  /** How changes are captured here and what the mode means for them. */
  capture: string | null;
  /** Primary of a sync group: commits no longer wait for the backups (sync.degrade, until they catch up). */
  degraded: boolean;
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
  /** Over the last 5 s; null until the group has run a second in its role. */
  rates: { capturedPerSec: number | null; appliedPerSec: number | null; wireBytesPerSec: number | null };
  journal: { first: number; last: number; bytes: number; segments: number };
  links: LinkStatus[];
}

/** A failover this node made (the new primary's view). */
export interface FailoverReport {
  group: string;
  from: string;
  to: string;
  epoch: { from: number; to: number };
  /** The position the new primary took over at. */
  position: number;
  /** What allowed it: `witness NAME`, or `forced`. */
  quorum: string;
  ok: boolean;
  how: 'automatic' | 'manual';
  /** Since the old primary was last heard, when the failover began (detection). */
  heardMsAgo: number;
  /** From the decision to taking writes. */
  promoteMs: number;
  /** From the old primary's last sign of life to this node taking writes. */
  unavailableMs: number;
  hooks: { hook: string; ok: boolean; ms: number; detail: string }[];
}

/** The last rejoin of this node as a backup after a failover elsewhere. */
export interface RejoinReport {
  group: string;
  primary: string;
  fork: number;
  /** The divergence report written, and its transactions (0: nothing diverged). */
  report: string | null;
  transactions: number;
  changesUndone: number;
  /** Finding the fork and writing the report; undoing, cutting the journal, starting as backup. */
  findMs: number;
  rewindMs: number;
}

export interface NodeStatus {
  cluster: string;
  node: string;
  version: string;
  pid: number;
  uptimeMs: number;
  /** The leases this node keeps as a witness, by group (null: a witness of nothing). */
  witness?: Record<string, unknown> | null;
  lastFailover?: FailoverReport | null;
  lastRejoin?: RejoinReport | null;
  groups: GroupStatus[];
}
