/**
 * The journal records one apply step takes, shared by every adapter's apply: in position order
 * from `from`, at most `maxRecords` records and about `maxChanges` row changes, so a step stays
 * short (heartbeats, acks and the admin API keep running while a backlog is applied); only
 * records this journal holds durably, and none beyond `limit()` (what the source's journal
 * holds durably). So a database never holds a change its own journal could lose: a failover
 * that leaves this node a divergent tail can always undo it from the journal's before images.
 */
import { decodeRecord, type JournalRecord } from '../core/record.js';
import type { Journal } from '../journal/index.js';

export class StepRecords {
  readonly #journal: Journal;
  readonly #maxRecords: number;
  readonly #maxChanges: number;
  readonly #limit: () => number;
  #next: number;
  #records = 0;
  #changes = 0;
  /** The last record taken (the step may commit only if it ends a source transaction). */
  last: JournalRecord | null = null;

  constructor(
    journal: Journal,
    from: number,
    limits: { maxRecords?: number; maxChanges?: number; limit?: () => number },
  ) {
    this.#journal = journal;
    this.#next = from;
    this.#maxRecords = limits.maxRecords ?? 2000;
    this.#maxChanges = limits.maxChanges ?? 50_000;
    this.#limit = limits.limit ?? (() => Number.MAX_SAFE_INTEGER);
  }

  /** The budget ran out: more may be waiting. */
  get full(): boolean {
    return this.#records >= this.#maxRecords || this.#changes >= this.#maxChanges;
  }

  /** Whether the last record taken ends a source transaction, so the step may commit. */
  get atBoundary(): boolean {
    return this.last !== null && this.last.txCount > 0;
  }

  *[Symbol.iterator](): Generator<JournalRecord> {
    while (!this.full) {
      const allowed = Math.min(this.#maxRecords - this.#records, this.#limit() - this.#next + 1);
      if (allowed <= 0) return;
      const payloads = this.#journal.read(this.#next, { maxBytes: 4 << 20, maxRecords: allowed });
      if (payloads.length === 0) return;
      for (const p of payloads) {
        const rec = decodeRecord(p);
        if (rec.position !== this.#next) {
          throw new Error(`journal returned position ${rec.position} where ${this.#next} was expected`);
        }
        this.#next++;
        this.#records++;
        this.#changes += rec.changes.length;
        this.last = rec;
        yield rec;
      }
    }
  }
}
