/**
 * A group on its primary node: capture -> journal -> one link sender per backup.
 * Also answers sync waiters (the library's commit waits here until every backup's journal holds
 * the commit durably) and releases journal segments every backup holds.
 */
import type { Logger } from 'pino';
import type { Capture, Snapshot } from '../adapters/index.js';
import { checkMappable } from '../adapters/typemap.js';
import type { Config, Endpoint, GroupConfig } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import { HybridLogicalClock } from '../core/hlc.js';
import { monoNow } from '../core/mono.js';
import { decodeRecord } from '../core/record.js';
import type { Journal } from '../journal/index.js';
import { LinkSender } from '../link/sender.js';
import type { SecureContext } from '../link/transport.js';
import { type GroupEnv, realEnv } from './env.js';
import { LeaseKeeper } from './lease.js';
import { RateMeter } from './rate.js';
import type { GroupRole } from './roles.js';
import type { GroupStatus, LinkStatus, SwitchStatus } from './status.js';
import { type TailRequest, takeBack } from './take-back.js';

interface SyncWaiter {
  position: number;
  resolve: (r: { degraded: boolean }) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** What a primary's group needs from its node. */
export interface SourceHooks {
  role: () => GroupRole;
  /** A backup refused this node for a newer epoch: another node is primary now. */
  onNewerEpoch: (epoch: number, primary: string) => void;
  /** Sends a request to the group's witness (null: the group has none). */
  witness: ((request: Record<string, unknown>) => Promise<Record<string, unknown>>) | null;
  /** One request to another node (take-back.ts), answered within `timeoutMs`. */
  ask: (node: string, request: TailRequest, timeoutMs: number) => Promise<Record<string, unknown>>;
}

export class SourceGroup {
  readonly group: GroupConfig;
  readonly #config: Config;
  readonly #node: string;
  readonly #log: Logger;
  readonly #ctx: SecureContext;
  readonly #journal: Journal;
  readonly #hooks: SourceHooks;
  readonly #env: GroupEnv;
  #capture!: Capture;
  /** The start in progress or done (a newer epoch heard meanwhile fences once it has opened). */
  #starting: Promise<void> | null = null;
  #lease: LeaseKeeper | null = null;
  readonly #senders: LinkSender[] = [];
  #state: 'running' | 'failed' | 'fenced' | 'stopped' = 'running';
  /** A switchover in progress from this node (set by switchover.ts), for status. */
  switching: SwitchStatus | null = null;
  #error: string | null = null;
  #timer: NodeJS.Timeout | undefined;
  #offDurable: (() => void) | null = null;
  #offFailure: (() => void) | null = null;
  /** The shutdown a failure began; stop() waits for it. */
  #down: Promise<void> | null = null;
  readonly #waiters = new Set<SyncWaiter>();
  #degraded = false;
  readonly #rates = { captured: new RateMeter(), applied: new RateMeter(), wire: new RateMeter() };

  constructor(
    config: Config,
    node: string,
    group: GroupConfig,
    ctx: SecureContext,
    log: Logger,
    journal: Journal,
    hooks: SourceHooks,
    env: GroupEnv = realEnv,
  ) {
    this.#config = config;
    this.#node = node;
    this.group = group;
    this.#ctx = ctx;
    this.#log = log.child({ group: group.name, role: 'primary' });
    this.#journal = journal;
    this.#hooks = hooks;
    this.#env = env;
  }

  get journal(): Journal {
    return this.#journal;
  }
  get capture(): Capture {
    return this.#capture;
  }
  get state(): string {
    return this.#state;
  }
  /** The link to backup `peer`. */
  sender(peer: string): LinkSender | undefined {
    return this.#senders.find((s) => s.peer === peer);
  }
  get peers(): string[] {
    return this.#senders.map((s) => s.peer);
  }

  /** Starts the group; on failure, closes whatever it had opened and rethrows. */
  async start(): Promise<void> {
    try {
      this.#starting = this.#start();
      await this.#starting;
    } catch (err) {
      this.#state = 'failed';
      clearInterval(this.#timer);
      this.#offDurable?.();
      this.#offFailure?.();
      // Fields are unset when start failed before reaching them.
      await (this.#capture as Capture | undefined)?.stop().catch(() => {});
      await Promise.all(this.#senders.map((s) => s.stop()));
      this.#error = (err as Error).message;
      throw err;
    }
  }

  async #start(): Promise<void> {
    const g = this.group;
    const endpoint = g.endpoints[this.#node]!;
    const j = this.#journal;
    const epoch = () => this.#hooks.role().epoch;
    // Records this journal lost in a crash while a backup already held them come back first.
    await takeBack({
      journal: j,
      group: g.name,
      node: this.#node,
      epoch: epoch(),
      peers: Object.keys(g.endpoints).filter((n) => n !== this.#node),
      ask: (peer, request) => this.#hooks.ask(peer, request, 1000),
      log: this.#log,
    });
    // Capture resumes after the journal's last record when this node wrote it in this epoch; a
    // record of the primary before (a switchover to this node) says nothing of this source.
    let last =
      j.lastPosition >= j.firstPosition
        ? decodeRecord(j.read(j.lastPosition, { maxBytes: 1, maxRecords: 1 })[0]!)
        : null;
    // Timestamps go on from the journal's last (this node's before a restart, or the previous
    // primary's after a failover or switchover), whatever this machine's wall clock says.
    const hlc = new HybridLogicalClock();
    if (last) hlc.observe(last.hlc);
    if (last && (last.origin !== this.#node || last.epoch !== epoch())) last = null;
    this.#capture = await this.#env.createCapture(endpoint, {
      group: g,
      node: this.#node,
      journal: j,
      hlc,
      epoch,
      log: this.#log,
      onFatal: (err) => this.#fail(err),
    });
    await this.#capture.open(last);
    // With a witness the database takes writes only while its lease runs (#startLease).
    if (this.#hooks.witness) await this.#capture.guardLease();
    // A database that was a backup (or fenced by a switchover that did not happen) takes writes.
    await this.#capture.unfence();
    // Heterogeneous backups: every column must have a type there, checked before anything
    // streams; all that have none are named at once.
    const engines = new Set(Object.values(g.endpoints).map((e) => e.engine));
    if (engines.size > 1) checkMappable(await this.#env.readSchemas(endpoint, g), engines, g.name);
    this.#capture.run();
    // Backups may confirm before this journal's own fsync: what both hold moves with either.
    this.#offDurable = j.onDurable(() => this.#progress());
    // A journal that stops (a full disk, an I/O error) stops the group; the node restarts it.
    this.#offFailure = j.onFailure((err) => this.#fail(err));
    for (const peer of Object.keys(g.endpoints)) {
      if (peer === this.#node) continue;
      const sender = new LinkSender({
        group: g,
        cluster: this.#config.cluster,
        node: this.#node,
        peer,
        addr: this.#config.nodes[peer]!.listen,
        ctx: this.#ctx,
        connect: this.#env.connect,
        journal: j,
        epoch,
        log: this.#log,
        // An idle link still shows the primary alive well within failover.timeout.
        heartbeatMs: Math.min(1000, Math.max(50, Math.floor(g.failover.timeoutMs / 4))),
        snapshot: () => this.#snapshot(endpoint),
        onProgress: () => this.#progress(),
        onNewerEpoch: (e, primary) => this.#hooks.onNewerEpoch(e, primary),
      });
      this.#senders.push(sender);
      sender.run();
    }
    if (this.#hooks.witness) await this.#startLease(this.#hooks.witness);
    this.#timer = setInterval(() => this.#tick(), 1000);
    this.#timer.unref();
    this.#sample();
    this.#log.info({ journal: { first: j.firstPosition, last: j.lastPosition } }, 'group started as primary');
  }

  /**
   * A snapshot for a seed, at the journal position its copy holds up to (the capture's cut);
   * resolves once that position is durable, so a restart can never hand it out again.
   */
  async #snapshot(endpoint: Endpoint): Promise<Snapshot> {
    const cut = this.#capture.openCut();
    let snap: Snapshot;
    try {
      snap = await this.#env.createSnapshot(endpoint, this.group, cut, this.#log);
    } finally {
      cut.close();
    }
    try {
      await this.#journal.whenDurable(snap.position);
    } catch (err) {
      await snap.close();
      throw err;
    }
    return snap;
  }

  /**
   * The lease (lease.ts, docs/failover.md): the database refuses writes by itself once its lease
   * runs out, and the keeper extends it while the quorum hears this node. A node that dies or is
   * cut off stops extending it; a node restarted after a failover elsewhere is denied by the
   * witness and fences itself.
   */
  async #startLease(witness: (request: Record<string, unknown>) => Promise<Record<string, unknown>>) {
    const g = this.group;
    this.#lease = new LeaseKeeper({
      group: g.name,
      timeoutMs: g.failover.timeoutMs,
      renew: () => witness({ op: 'renew', group: g.name, node: this.#node, epoch: this.#hooks.role().epoch }),
      answeredPings: () => this.#senders.map((s) => s.answeredPingAt),
      ping: () => {
        for (const s of this.#senders) s.ping();
      },
      extend: (ms) =>
        this.#capture
          .extendLease(ms)
          .catch((err: Error) => this.#log.warn({ err: err.message }, 'extending the lease failed')),
      onChange: (held, why) =>
        held
          ? this.#log.info(`quorum held: ${why}`)
          : this.#log.error(`QUORUM LOST: ${why}; the database refuses writes until it is back`),
      onNewerEpoch: (e, leader) => this.#hooks.onNewerEpoch(e, leader),
      log: this.#log,
    });
    this.#lease.run();
    // Answer the first writes soon after a start: wait briefly for the first hold.
    const deadline = monoNow() + g.failover.timeoutMs / 4;
    while (!this.#lease.held && monoNow() < deadline && this.#state === 'running')
      await new Promise((r) => setTimeout(r, 5));
  }

  #fail(err: Error): void {
    if (this.#state !== 'running') return;
    this.#state = 'failed';
    this.#error = err.message;
    this.#log.error({ err: err.message }, 'group stopped');
    for (const w of this.#waiters) this.#settle(w, err);
    this.#down = this.#shutdown().catch((e: Error) =>
      this.#log.warn({ err: e.message }, 'stopping the failed group'),
    );
  }

  /**
   * Durable here and at every backup (a backup may hold records before this journal's fsync).
   * For commits, a backup being seeded without a usable copy does not count (seedingUnseeded):
   * it cannot take over before the seed ends, and PostgreSQL's seed snapshot (a new logical
   * slot) waits for the transactions running when it is made, sync commits waiting for this
   * among them. Retention counts it (`countSeeding`): it needs the records after its seed.
   */
  #minDurable(countSeeding = false): number {
    let min = this.#journal.durablePosition;
    for (const s of this.#senders) if (countSeeding || !s.seedingUnseeded) min = Math.min(min, s.durable);
    return min;
  }
  #minApplied(): number {
    return this.#senders.length
      ? Math.min(...this.#senders.map((s) => s.applied))
      : this.#journal.durablePosition;
  }

  #progress(): void {
    const durable = this.#minDurable();
    this.#capture.confirmedUpTo(durable);
    for (const w of this.#waiters) if (w.position <= durable) this.#settle(w, null);
    if (this.#degraded && durable >= this.#journal.durablePosition) {
      this.#degraded = false;
      this.#log.warn('sync mode restored: every backup has caught up');
    }
  }

  #settle(w: SyncWaiter, err: Error | null, degraded = false): void {
    clearTimeout(w.timer);
    this.#waiters.delete(w);
    if (err) w.reject(err);
    else w.resolve({ degraded });
  }

  #tick(): void {
    this.#sample();
    void this.#retain();
  }

  #sample(): void {
    this.#rates.captured.sample(this.#journal.lastPosition);
    this.#rates.applied.sample(this.#minApplied());
    this.#rates.wire.sample(this.#senders.reduce((a, s) => a + s.wireBytesOut, 0));
  }

  async #retain(): Promise<void> {
    const j = this.#journal;
    try {
      await j.retain(this.#minDurable(true));
      const { maxBytes } = this.group.retention;
      if (maxBytes > 0 && j.sizeBytes > maxBytes) {
        const first = await j.releaseOldest(maxBytes);
        const lost = this.#senders.filter((s) => s.durable + 1 < first).map((s) => s.peer);
        if (lost.length > 0) {
          this.#log.warn(
            { maxBytes, first, backups: lost },
            'journal reached retention.max_bytes: released records these backups still need; they will be reseeded',
          );
        }
      }
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'retention failed');
    }
  }

  /**
   * Resolves once every backup's journal durably holds change `seq` of the source database
   * (sync mode). Times out per `groups.<g>.sync.timeout`: with `degrade: true` it then resolves
   * `{ degraded: true }` and the group runs async until the backups catch up.
   */
  async waitDurable(seq: bigint): Promise<{ degraded: boolean; position: number }> {
    if (this.#state !== 'running')
      throw new Error(`group ${this.group.name} is ${this.#state}: ${this.#error}`);
    if (!this.#capture.positionOf) {
      throw new Error(
        `group ${this.group.name}: this source's capture does not take sync waits from the library`,
      );
    }
    const position = await this.#capture.positionOf(seq);
    if (position <= this.#minDurable()) return { degraded: false, position };
    if (this.#degraded) return { degraded: true, position };
    const { timeoutMs, degrade } = this.group.sync;
    const r = await new Promise<{ degraded: boolean }>((resolve, reject) => {
      const w: SyncWaiter = {
        position,
        resolve,
        reject,
        timer: setTimeout(() => {
          if (degrade) {
            if (!this.#degraded) {
              this.#degraded = true;
              this.#log.error(
                { timeoutMs },
                'SYNC DEGRADED TO ASYNC: a backup did not confirm within the timeout; commits are no longer RPO 0',
              );
            }
            this.#settle(w, null, true);
          } else {
            this.#settle(
              w,
              new TandemError(
                'SYNC_TIMEOUT',
                `group ${this.group.name}: position ${position} was not confirmed by every backup within ${timeoutMs} ms`,
                'The commit is durable here but not yet at the backup; check the link with `tandem status`, or set sync.degrade: true',
              ),
            );
          }
        }, timeoutMs),
      };
      this.#waiters.add(w);
    });
    return { ...r, position };
  }

  get degraded(): boolean {
    return this.#degraded || (this.#capture as Capture | undefined)?.degraded === true;
  }

  /**
   * Captures what is committed now and waits for the backups to confirm it, up to `timeoutMs`;
   * a backup whose link is down is not waited for (nothing it could confirm would arrive).
   */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = monoNow() + timeoutMs;
    this.#capture.kick();
    while (monoNow() < deadline && this.#state === 'running') {
      const j = this.#journal;
      const behind = (s: LinkSender) =>
        !s.seedingUnseeded && s.state !== 'down' && s.durable < j.durablePosition;
      if (
        (this.#capture.pendingChanges() ?? 0) === 0 &&
        j.durablePosition === j.lastPosition &&
        !this.#senders.some(behind)
      )
        return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  status(): GroupStatus {
    const j = this.#journal;
    // Lag in time compares HLC timestamps with this machine's wall clock.
    const now = Date.now();
    const avg = j.lastPosition >= j.firstPosition ? j.sizeBytes / (j.lastPosition - j.firstPosition + 1) : 0;
    const links: LinkStatus[] = this.#senders.map((s) => {
      const lagRecords = Math.max(0, j.lastPosition - s.applied);
      let ms = 0;
      if (lagRecords > 0 && s.applied + 1 >= j.firstPosition && s.applied + 1 <= j.durablePosition) {
        const p = j.read(s.applied + 1, { maxBytes: 1, maxRecords: 1 })[0];
        if (p) ms = Math.max(0, now - HybridLogicalClock.millis(decodeRecord(p).hlc));
      }
      return {
        peer: s.peer,
        state: s.state,
        lastError: s.lastError,
        durable: s.durable,
        applied: s.applied,
        lag: { records: lagRecords, bytes: Math.round(lagRecords * avg), ms },
        wire: { bytesOut: s.wireBytesOut, bytesIn: s.wireBytesIn },
        rttMs: s.rttMs,
        seed: s.state === 'seeding' && s.seed ? s.seed.view() : null,
        seeds: s.seeds,
        lastSeed: s.lastSeed,
      };
    });
    return {
      group: this.group.name,
      kind: this.group.kind,
      mode: this.group.mode,
      role: 'primary',
      epoch: this.#hooks.role().epoch,
      primary: this.#node,
      state: this.#state,
      error: this.#error,
      fenced: this.#state === 'fenced' || this.switching?.fenced === true || this.#lease?.held === false,
      lease: this.#lease?.view() ?? null,
      switching: this.switching,
      capture: (this.#capture as Capture | undefined)?.describe(this.group.mode, this.degraded) ?? null,
      degraded: this.group.mode === 'sync' && this.degraded,
      positions: {
        captured: j.lastPosition,
        journalDurable: j.durablePosition,
        durableAtTarget: this.#minDurable(),
        applied: this.#minApplied(),
      },
      rates: {
        capturedPerSec: this.#rates.captured.perSecond,
        appliedPerSec: this.#rates.applied.perSecond,
        wireBytesPerSec: this.#rates.wire.perSecond,
      },
      journal: { first: j.firstPosition, last: j.lastPosition, bytes: j.sizeBytes, segments: j.segmentCount },
      links,
    };
  }

  async #shutdown(): Promise<void> {
    clearInterval(this.#timer);
    this.#offDurable?.();
    this.#offFailure?.();
    this.#lease?.stop();
    await this.#capture.stop();
    await Promise.all(this.#senders.map((s) => s.stop()));
  }

  async stop(drainMs = 5000): Promise<void> {
    if (this.#state === 'running') {
      await this.drain(drainMs);
      this.#state = 'stopped';
      for (const w of this.#waiters) this.#settle(w, new Error('node stopping'));
      await this.#shutdown();
    } else await this.#down;
  }

  /**
   * Another node is primary at a newer epoch: refuse writes here at once and stop capturing.
   * The database stays fenced until this node rejoins as a backup.
   */
  async fenceForNewerEpoch(epoch: number, primary: string): Promise<void> {
    await this.#starting?.catch(() => {});
    if (this.#state !== 'running') return;
    this.#state = 'fenced';
    this.#error = `node ${primary} is primary of group ${this.group.name} at epoch ${epoch}, newer than this node's ${this.#hooks.role().epoch}: this database is fenced`;
    this.#log.error({ epoch, primary }, 'NEWER EPOCH: another node is primary; fencing this database');
    for (const w of this.#waiters) this.#settle(w, new Error(this.#error));
    await this.#capture
      .fence(
        { kind: 'newer-epoch', group: this.group.name, primary, epoch },
        this.group.switchover.fenceTimeoutMs,
      )
      .catch((err: Error) => this.#log.error({ err: err.message }, 'fencing after a newer epoch failed'));
    // Everything committed here goes to the journal: the divergent tail a rejoin reports.
    await Promise.race([this.#capture.barrier(), new Promise((r) => setTimeout(r, 10_000))]).catch(
      (err: Error) => this.#log.error({ err: err.message }, 'journaling the last commits failed'),
    );
    await this.#shutdown();
  }
}
