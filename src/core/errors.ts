/**
 * The one catalogue of user-facing errors. Every error has a stable code, says what happened
 * (naming the thing) and what to do about it. Messages read `[CODE] what happened. fix`.
 * `usage` errors (bad flags, bad config) make the CLI exit 2; every other error exits 1.
 */

export const ERROR_CODES = {
  CONFIG_NOT_FOUND: { usage: true, summary: 'the config file cannot be read' },
  CONFIG_INVALID: { usage: true, summary: 'the config file does not validate' },
  SECRET_UNRESOLVED: { usage: true, summary: 'a secret reference points at nothing' },
  NODE_UNKNOWN: { usage: true, summary: 'a node name is not in the config' },
  NODE_LOCKED: { usage: false, summary: 'another process runs this node' },
  GROUP_UNKNOWN: { usage: true, summary: 'a group name is not in the config' },
  TABLE_NO_KEY: { usage: true, summary: 'a replicated table has no primary key' },
  ENDPOINT_UNSUPPORTED: { usage: true, summary: 'an endpoint URL names an engine this build cannot use' },
  ENDPOINT_UNAVAILABLE: { usage: false, summary: 'an endpoint database cannot be opened or used' },
  SCHEMA_CHANGE_UNSUPPORTED: { usage: false, summary: 'a schema change cannot be replicated' },
  TYPE_UNMAPPABLE: { usage: false, summary: 'a column type has no equivalent on the target engine' },
  JOURNAL_CORRUPT: { usage: false, summary: 'a journal segment is damaged in the middle' },
  JOURNAL_GAP: { usage: false, summary: 'a record does not follow the journal tail' },
  JOURNAL_FAILED: { usage: false, summary: 'a journal write or fsync failed and the journal stopped' },
  LINK_AUTH: { usage: false, summary: 'a peer failed authentication' },
  LINK_PROTOCOL: { usage: false, summary: 'a peer broke the link protocol' },
  LINK_EPOCH: { usage: false, summary: 'a peer speaks for an older epoch' },
  BACKUP_FENCED: { usage: false, summary: 'an application wrote to a backup' },
  APPLY_FAILED: { usage: false, summary: 'a record could not be applied on the target' },
  SEED_FAILED: { usage: false, summary: 'seeding the backup failed' },
  SYNC_TIMEOUT: { usage: false, summary: 'a sync commit was not confirmed by the target in time' },
  STATE_CORRUPT: { usage: false, summary: "a file in a node's state folder cannot be read" },
  SWITCH_FAILED: { usage: false, summary: 'a switchover could not be done; the old primary serves on' },
  SWITCH_UNKNOWN: { usage: false, summary: 'a switchover lost touch with the new primary at the promotion' },
  FAILOVER_REFUSED: { usage: false, summary: 'a failover was refused: no quorum says the primary is gone' },
  FENCED: { usage: false, summary: 'an application wrote to a fenced primary' },
  NODE_UNREACHABLE: { usage: false, summary: 'a node does not answer on its admin address' },
  DEMO_FAILED: { usage: false, summary: 'the demo found a problem' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class TandemError extends Error {
  override name = 'TandemError';
  readonly code: ErrorCode;
  readonly what: string;
  readonly fix: string;

  constructor(code: ErrorCode, what: string, fix: string, options?: { cause?: unknown }) {
    super(`[${code}] ${what}. ${fix}`, options);
    this.code = code;
    this.what = what;
    this.fix = fix;
  }

  /** 2 for bad usage or bad config, 1 otherwise (the CLI's exit code). */
  get exitCode(): number {
    return ERROR_CODES[this.code].usage ? 2 : 1;
  }
}
