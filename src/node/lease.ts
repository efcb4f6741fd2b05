/**
 * The primary's lease (docs/failover.md): a primary of a group with a witness takes writes only
 * while a quorum lets it, that is while it has been heard, within the last 3/4 of
 * `failover.timeout`, by the witness (a granted renewal) or by every backup (answered PINGs). The
 * database enforces it itself (its fence refuses writes once the lease given to it has run out),
 * so a node that is cut off, frozen or dead stops its primary's writes all the same.
 * A backup takes over only after it has heard nothing from the primary for a whole timeout and
 * the witness's lease has lapsed, so by then this primary has fenced itself: two majorities of
 * {primary, backups, witness} always share a member (the witness, or the backup taking over).
 *
 * Times are this node's own (sent times of the renewal and of the PING), so only the rates of
 * the clocks matter, not their settings; the quarter of the timeout is the margin.
 */
import type { Logger } from 'pino';
import { monoNow } from '../core/mono.js';

export interface LeaseOptions {
  group: string;
  timeoutMs: number;
  /** Asks the witness to renew; resolves with its answer, rejects when it cannot be reached. */
  renew: () => Promise<Record<string, unknown>>;
  /** When each backup last answered a PING sent at that time (monoNow), 0 if never. */
  answeredPings: () => number[];
  /** Sends a PING to every backup. */
  ping: () => void;
  /** The database may take writes for `ms` more (from now): the lease it enforces itself. */
  extend: (ms: number) => void;
  /** The quorum let go or holds again (for the log). */
  onChange: (held: boolean, why: string) => void;
  /** The witness answered with a newer epoch: another node is primary. */
  onNewerEpoch: (epoch: number, leader: string) => void;
  log: Logger;
}

export class LeaseKeeper {
  readonly #o: LeaseOptions;
  #witnessUntil = 0;
  #witness: 'unknown' | 'ok' | 'unreachable' | 'denied' = 'unknown';
  #held = false;
  #timer: NodeJS.Timeout | null = null;
  #renewing = false;
  /** The end of the lease last given to the database, and both clocks then. */
  #extended = 0;
  #wallAt = Date.now();
  #monoAt = monoNow();
  #stopped = false;

  constructor(o: LeaseOptions) {
    this.#o = o;
  }

  get held(): boolean {
    return this.#held;
  }

  /** For status: whether the lease is held, by which votes, and for how long yet. */
  view(): { held: boolean; witness: string; backups: number; validMs: number } {
    const now = monoNow();
    const margin = this.#margin();
    const backups = this.#o.answeredPings().filter((t) => t + margin > now).length;
    return {
      held: this.#held,
      witness: this.#witness,
      backups,
      validMs: Math.max(0, Math.round(this.#until() - now)),
    };
  }

  run(): void {
    const tick = Math.max(20, Math.floor(this.#o.timeoutMs / 8));
    let n = 0;
    this.#timer = setInterval(() => {
      if (n++ % 2 === 0) {
        this.#o.ping();
        void this.#renew();
      }
      this.#check();
    }, tick);
    this.#timer.unref();
    this.#o.ping();
    void this.#renew();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
  }

  #margin(): number {
    return Math.floor(this.#o.timeoutMs * 0.75);
  }

  /**
   * Until when a quorum hears this node: the witness's renewal, or every backup's PING (with two
   * backups or more, one backup and the witness may be a majority promoting the other).
   */
  #until(): number {
    const pings = this.#o.answeredPings();
    const backups = pings.length > 0 ? Math.min(...pings.map((t) => (t > 0 ? t + this.#margin() : 0))) : 0;
    return Math.max(this.#witnessUntil, backups);
  }

  async #renew(): Promise<void> {
    if (this.#renewing || this.#stopped) return;
    this.#renewing = true;
    const sent = monoNow();
    try {
      const r = await this.#o.renew();
      if (r.granted === true) {
        this.#witnessUntil = sent + this.#margin();
        this.#witness = 'ok';
      } else {
        this.#witness = 'denied';
        const epoch = Number(r.epoch);
        if (Number.isFinite(epoch)) this.#o.onNewerEpoch(epoch, String(r.leader));
      }
    } catch (err) {
      if (this.#witness !== 'unreachable')
        this.#o.log.warn({ group: this.#o.group, err: (err as Error).message }, 'witness not reachable');
      this.#witness = 'unreachable';
    } finally {
      this.#renewing = false;
    }
    this.#check();
  }

  #check(): void {
    if (this.#stopped) return;
    const left = this.#until() - monoNow();
    // The database counts its lease on the wall clock: when that was set (a jump either way
    // against the monotonic clock) the lease it holds is written again, or revoked.
    const jumped = Math.abs(Date.now() - this.#wallAt - (monoNow() - this.#monoAt)) > 100;
    // Extended while held, so the database's own lease runs out when the quorum's does.
    if ((left > 0 && this.#until() > this.#extended) || jumped) {
      this.#extended = this.#until();
      this.#wallAt = Date.now();
      this.#monoAt = monoNow();
      if (jumped)
        this.#o.log.warn(
          { group: this.#o.group },
          'the wall clock jumped: the database lease is written again',
        );
      this.#o.extend(Math.max(0, left));
    }
    const held = left > 0;
    if (held === this.#held) return;
    this.#held = held;
    const why = held
      ? `quorum: witness ${this.#witness}, ${this.view().backups} backup(s) hear this node`
      : `no quorum for ${this.#margin()} ms: the witness (${this.#witness}) and at least one backup are out of reach`;
    this.#o.onChange(held, why);
  }
}
