/**
 * The library API for sync mode on SQLite. Trigger capture sees a commit only after it has
 * happened, so RPO 0 needs the writer's cooperation: `transaction()` commits locally, then
 * resolves only once every backup's journal holds the commit durably (the primary node's admin
 * API answers when that is so). Writers that do not use this API are still captured, async.
 *
 *   const w = TandemSqliteWriter.open({ config: 'tandem.yaml', node: 'east', group: 'shop' });
 *   await w.transaction((db) => db.prepare('INSERT INTO orders ...').run(...));
 */
import Database from 'better-sqlite3';
import { loadConfig } from './config/index.js';
import { TandemError } from './core/errors.js';

export interface SyncWriterOptions {
  /** Path to tandem.yaml. */
  config: string;
  /** The node this process writes on: the group's primary now (after a switchover, the new one). */
  node: string;
  group: string;
  /** Extra time allowed beyond the group's sync timeout for the HTTP round trip. */
  slackMs?: number;
}

export interface CommitInfo {
  /** The commit was acknowledged after the group degraded to async (not RPO 0). */
  degraded: boolean;
  /** Journal position that holds the commit (0 when the transaction changed no replicated row). */
  position: number;
}

export class TandemSqliteWriter {
  readonly db: Database.Database;
  readonly #url: string;
  readonly #sync: boolean;
  readonly #timeoutMs: number;
  readonly #seq: Database.Statement;
  /** Details of the last commit. */
  lastCommit: CommitInfo = { degraded: false, position: 0 };

  private constructor(db: Database.Database, url: string, sync: boolean, timeoutMs: number) {
    this.db = db;
    this.#url = url;
    this.#sync = sync;
    this.#timeoutMs = timeoutMs;
    this.#seq = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = '_tandem_changes'");
  }

  static open(o: SyncWriterOptions): TandemSqliteWriter {
    const config = loadConfig(o.config);
    const g = config.groups[o.group];
    if (!g) {
      throw new TandemError(
        'GROUP_UNKNOWN',
        `${config.file}: there is no group "${o.group}"`,
        `Groups: ${Object.keys(config.groups).join(', ')}`,
      );
    }
    // Which node is primary is the nodes' business (it moves with switchovers): on a backup
    // the fence refuses the write, and the node refuses the wait.
    const ep = g.endpoints[o.node];
    if (ep?.engine !== 'sqlite') {
      throw new TandemError(
        'ENDPOINT_UNSUPPORTED',
        `groups.${o.group}.endpoints.${o.node} is not a sqlite endpoint`,
        'Use a sqlite: endpoint',
      );
    }
    const db = new Database(ep.path);
    db.pragma('journal_mode = WAL');
    db.pragma('busy_timeout = 5000');
    db.defaultSafeIntegers(true);
    const a = config.nodes[o.node]!.admin;
    const host = a.host.includes(':') ? `[${a.host}]` : a.host;
    return new TandemSqliteWriter(
      db,
      `http://${host}:${a.port}/v1/groups/${encodeURIComponent(o.group)}/sync`,
      g.mode === 'sync',
      g.sync.timeoutMs + (o.slackMs ?? 2000),
    );
  }

  /**
   * Runs `fn` in an IMMEDIATE transaction and commits. In a sync group, resolves only once every
   * backup holds the commit durably; rejects with SYNC_TIMEOUT (the commit is then durable here
   * but not confirmed at the backup) or with the node's error.
   */
  async transaction<T>(fn: (db: Database.Database) => T): Promise<T> {
    const tx = this.db.transaction(() => {
      const result = fn(this.db);
      const row = this.#seq.get() as { seq: bigint } | undefined;
      return { result, seq: row?.seq ?? 0n };
    });
    const { result, seq } = tx.immediate();
    if (!this.#sync) return result;
    let res: Response;
    try {
      res = await fetch(`${this.#url}?seq=${seq}`, {
        method: 'POST',
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      throw new TandemError(
        'SYNC_TIMEOUT',
        `the commit (change ${seq}) is durable locally but the Tandem node at ${this.#url} did not confirm it: ${(err as Error).message}`,
        'Check that `tandem run` is running for this node and that the backup is connected (`tandem status`)',
      );
    }
    const body = (await res.json()) as {
      degraded?: boolean;
      position?: number;
      error?: string;
      code?: string;
    };
    if (!res.ok) {
      throw new TandemError(
        res.status === 504 ? 'SYNC_TIMEOUT' : 'NODE_UNREACHABLE',
        `the commit (change ${seq}) is durable locally but not confirmed by the backups: ${body.error ?? res.status}`,
        'Check the backups with `tandem status`',
      );
    }
    this.lastCommit = { degraded: body.degraded === true, position: body.position ?? 0 };
    return result;
  }

  close(): void {
    this.db.close();
  }
}
