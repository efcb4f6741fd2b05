/**
 * A group on a backup node: link receiver -> journal -> apply. The database is fenced so that
 * only the apply connection writes.
 */
import type { Logger } from 'pino';
import type { Apply } from '../adapters/index.js';
import type { Config, GroupConfig } from '../config/index.js';
import { HybridLogicalClock } from '../core/hlc.js';
import { monoNow } from '../core/mono.js';
import type { Journal } from '../journal/index.js';
import type { Channel } from '../link/channel.js';
import type { Hello } from '../link/messages.js';
import { type ControlAnswer, LinkReceiver } from '../link/receiver.js';
import { type GroupEnv, realEnv } from './env.js';
import { RateMeter } from './rate.js';
import type { GroupRole } from './roles.js';
import type { GroupStatus } from './status.js';

/** What a backup's group needs from its node. */
export interface TargetHooks {
  role: () => GroupRole;
  /** A primary of a newer epoch connected: record it as the group's primary. */
  adopt: (epoch: number, primary: string) => void;
  /** Answers a CONTROL request of the primary (switchover steps, node.ts). */
  control: (request: Record<string, unknown>) => Promise<ControlAnswer>;
}

export class TargetGroup {
  readonly group: GroupConfig;
  readonly #config: Config;
  readonly #node: string;
  readonly #log: Logger;
  readonly #journal: Journal;
  readonly #hooks: TargetHooks;
  readonly #env: GroupEnv;
  #apply!: Apply;
  #applyStopped = false;
  #halted = false;
  readonly #startedAt = monoNow();
  #receiver!: LinkReceiver;
  #state: 'running' | 'failed' | 'stopped' = 'running';
  #error: string | null = null;
  #timer: NodeJS.Timeout | undefined;
  #offFailure: (() => void) | null = null;
  readonly #rates = { received: new RateMeter(), applied: new RateMeter(), wire: new RateMeter() };

  constructor(
    config: Config,
    node: string,
    group: GroupConfig,
    log: Logger,
    journal: Journal,
    hooks: TargetHooks,
    env: GroupEnv = realEnv,
  ) {
    this.#config = config;
    this.#node = node;
    this.group = group;
    this.#log = log.child({ group: group.name, role: 'backup' });
    this.#journal = journal;
    this.#hooks = hooks;
    this.#env = env;
  }

  get apply(): Apply {
    return this.#apply;
  }
  get journal(): Journal {
    return this.#journal;
  }
  get running(): boolean {
    return this.#state === 'running';
  }
  get state(): 'running' | 'failed' | 'stopped' {
    return this.#state;
  }
  /** When (monoNow) the primary was last heard: anything on the link, or this group's start. */
  get heardAt(): number {
    return Math.max(this.#startedAt, this.#receiver.lastHeardAt);
  }

  /**
   * Refuses and closes every link from now on (a failover takes over). Apply may then take all
   * the journal holds: the records the old primary sent ahead of its fsync are committed
   * transactions of its database, and this node's history from now on.
   */
  halt(reason: string): void {
    this.#halted = true;
    this.#receiver.fail(reason);
    this.#apply.kick();
  }

  /** A source is connected and streaming to this backup. */
  get connected(): boolean {
    return (this.#receiver as LinkReceiver | undefined)?.connected === true;
  }

  /** Starts the group; on failure, closes whatever it had opened and rethrows. */
  async start(): Promise<void> {
    try {
      await this.#start();
    } catch (err) {
      this.#state = 'failed';
      this.#error = (err as Error).message;
      clearInterval(this.#timer);
      this.#offFailure?.();
      (this.#receiver as LinkReceiver | undefined)?.close();
      this.#applyStopped = true;
      await (this.#apply as Apply | undefined)?.stop().catch(() => {});
      throw err;
    }
  }

  async #start(): Promise<void> {
    const g = this.group;
    const endpoint = g.endpoints[this.#node]!;
    const role = this.#hooks.role();
    this.#apply = await this.#env.createApply(endpoint, {
      group: g,
      node: this.#node,
      primary: role.primary,
      testing: role.virtual !== undefined,
      journal: this.#journal,
      log: this.#log,
      onFatal: (err) => this.#fail(err),
      onApplied: () => this.#receiver.notifyApplied(),
      // Nothing the source may still lose (docs/link.md); the receiver is made below.
      limit: () =>
        this.#halted
          ? Number.MAX_SAFE_INTEGER
          : ((this.#receiver as LinkReceiver | undefined)?.sourceDurable ?? 0),
    });
    await this.#apply.open();
    // A primary until a switchover: its database holds everything up to the switch position.
    if (role.since > 0 && (!this.#apply.seeded || this.#apply.appliedPosition < role.since)) {
      await this.#apply.adopt(role.since, role.epoch);
      this.#log.info({ position: role.since, epoch: role.epoch }, 'database taken over as a backup');
    }
    // The journal must continue right after what the database holds. If it ends before that
    // (e.g. a crash after a seed committed but before the journal was reset) or starts after it,
    // restart it at applied + 1; the source resends or reseeds as needed.
    const j = this.#journal;
    const applied = this.#apply.appliedPosition;
    if (this.#apply.seeded && (j.nextPosition <= applied || j.firstPosition > applied + 1)) {
      this.#log.info(
        { applied, journal: { first: j.firstPosition, next: j.nextPosition } },
        'journal realigned to the database',
      );
      await j.reset(applied + 1);
    }
    this.#receiver = new LinkReceiver({
      group: g,
      cluster: this.#config.cluster,
      node: this.#node,
      journal: j,
      target: this.#apply,
      role: () => this.#hooks.role(),
      adopt: (epoch, primary) => this.#hooks.adopt(epoch, primary),
      control: (request) => this.#hooks.control(request),
      log: this.#log,
      onSourceDurable: () => this.#apply.kick(),
    });
    // A journal that stops (a full disk, an I/O error) stops the group; the node restarts it.
    this.#offFailure = j.onFailure((err) => this.#fail(err));
    this.#apply.run();
    // A virtual switch survives restarts: the database stays open to the test.
    if (role.virtual) await this.#apply.beginTest();
    const sample = () => {
      this.#rates.received.sample(this.#journal.lastPosition);
      this.#rates.applied.sample(this.#apply.appliedPosition);
      this.#rates.wire.sample(this.#receiver.wireBytesIn);
    };
    sample();
    this.#timer = setInterval(() => {
      sample();
      this.#journal
        .retain(this.#apply.durableAppliedPosition)
        .catch((err: Error) => this.#log.warn({ err: err.message }, 'retention failed'));
    }, 1000);
    this.#timer.unref();
    this.#log.info({ applied, seeded: this.#apply.seeded }, 'group started as backup');
  }

  check(hello: Hello, peer: string | null): { code: string; message: string } | null {
    if (this.#state !== 'running')
      return { code: 'APPLY_FAILED', message: `group is ${this.#state}: ${this.#error}` };
    return this.#receiver.check(hello, peer);
  }

  attach(ch: Channel, hello: Hello): void {
    this.#receiver.attach(ch, hello);
  }

  #fail(err: Error): void {
    if (this.#state !== 'running') return;
    this.#state = 'failed';
    this.#error = err.message;
    this.#log.error({ err: err.message }, 'group stopped');
    this.#receiver.fail(err.message);
  }

  status(): GroupStatus {
    const j = this.#journal;
    const a = this.#apply;
    const r = this.#receiver;
    const lagRecords = Math.max(0, j.lastPosition - a.appliedPosition);
    const avg = j.lastPosition >= j.firstPosition ? j.sizeBytes / (j.lastPosition - j.firstPosition + 1) : 0;
    return {
      group: this.group.name,
      kind: this.group.kind,
      mode: this.group.mode,
      role: 'backup',
      epoch: this.#hooks.role().epoch,
      primary: this.#hooks.role().primary,
      state: this.#state,
      error: this.#error,
      fenced: !this.#hooks.role().virtual,
      switching: null,
      virtual: this.#hooks.role().virtual ?? null,
      heardMsAgo: Math.round(monoNow() - this.heardAt),
      capture: null,
      degraded: false,
      positions: {
        captured: j.lastPosition,
        journalDurable: j.durablePosition,
        durableAtTarget: j.durablePosition,
        applied: a.appliedPosition,
      },
      rates: {
        capturedPerSec: this.#rates.received.perSecond,
        appliedPerSec: this.#rates.applied.perSecond,
        wireBytesPerSec: this.#rates.wire.perSecond,
      },
      journal: { first: j.firstPosition, last: j.lastPosition, bytes: j.sizeBytes, segments: j.segmentCount },
      links: [
        {
          peer: r.source ?? this.#hooks.role().primary,
          state: r.seeding ? 'seeding' : r.connected ? 'connected' : 'waiting',
          lastError: null,
          durable: j.durablePosition,
          applied: a.appliedPosition,
          lag: {
            records: lagRecords,
            bytes: Math.round(lagRecords * avg),
            ms:
              lagRecords > 0 && a.appliedHlc > 0n
                ? Math.max(0, Date.now() - HybridLogicalClock.millis(a.appliedHlc))
                : 0,
          },
          wire: { bytesOut: r.wireBytesOut, bytesIn: r.wireBytesIn },
          rttMs: 0,
          seed: r.seeding,
          seeds: 0,
          lastSeed: null,
        },
      ],
    };
  }

  /**
   * Waits until the journal holds `position` durably and apply has applied it (a switchover
   * promoting this node); rejects after `timeoutMs` or if the group fails.
   */
  async waitApplied(position: number, timeoutMs: number): Promise<void> {
    const deadline = monoNow() + timeoutMs;
    while (this.#journal.durablePosition < position || this.#apply.appliedPosition < position) {
      if (this.#state !== 'running') throw new Error(`group is ${this.#state}: ${this.#error}`);
      if (monoNow() > deadline) {
        throw new Error(
          `applied ${this.#apply.appliedPosition} and holds ${this.#journal.durablePosition} of ${position} after ${timeoutMs} ms`,
        );
      }
      this.#apply.kick();
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** Virtual switch: apply holds, the database opens to test writes (logged for the end). */
  async virtualStart(): Promise<void> {
    await this.#apply.pause();
    await this.#apply.beginTest();
  }

  /** Ends a virtual switch: test writes reverted, apply resumes. Returns the changes reverted. */
  async virtualEnd(timeoutMs: number): Promise<number> {
    const n = await this.#apply.endTest(timeoutMs);
    this.#apply.resume();
    return n;
  }

  /** Stops applying (every commit durable); the link stays up. The first step of a promotion. */
  async stopApply(): Promise<void> {
    if (this.#applyStopped) return;
    this.#applyStopped = true;
    await this.#apply.stop();
  }

  async stop(): Promise<void> {
    if (this.#state === 'stopped') return;
    // A failed group stays failed: the node restarts failed groups (node.ts, #restartFailed).
    if (this.#state === 'running') this.#state = 'stopped';
    clearInterval(this.#timer);
    this.#offFailure?.();
    (this.#receiver as LinkReceiver | undefined)?.close();
    await this.stopApply();
  }
}
