/**
 * One `tandem run` process: the link listener, the admin API and every group the node takes
 * part in (as primary: capture and senders; as backup: receiver and apply).
 */
import type { Logger } from 'pino';
import { type Config, type GroupConfig, groupsOfNode } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import { failpoint } from '../core/failpoint.js';
import { HybridLogicalClock } from '../core/hlc.js';
import { monoNow } from '../core/mono.js';
import { decodeRecord } from '../core/record.js';
import type { Journal } from '../journal/index.js';
import { Channel } from '../link/channel.js';
import { type Control, type ControlReply, type Hello, type Message, MsgType } from '../link/messages.js';
import { ask, probe } from '../link/probe.js';
import type { ControlAnswer } from '../link/receiver.js';
import { type Connection, type SecureContext, tlsFiles } from '../link/transport.js';
import { VERSION } from '../version.js';
import {
  type DivergenceReport,
  fromJsonValue,
  type JsonValue,
  listReports,
  reportedTransactions,
  saveReport,
  toJsonValue,
  toSql,
} from './divergence.js';
import { type Closer, type NodeEnv, realEnv } from './env.js';
import { EtcdQuorum } from './etcd-quorum.js';
import { openGroupJournal } from './group-journal.js';
import { beginRejoin, finishRejoin, forkPoint, realignBackup, recordsOf } from './rejoin.js';
import { runReroute } from './reroute.js';
import { type GroupRole, RoleStore } from './roles.js';
import { SourceGroup } from './source-group.js';
import type { FailoverReport, GroupStatus, NodeStatus, RejoinReport } from './status.js';
import { type TailRequest, tailOf } from './take-back.js';
import { TargetGroup } from './target-group.js';
import { Witness } from './witness.js';

export class TandemNode {
  readonly config: Config;
  readonly name: string;
  readonly log: Logger;
  readonly #ctx: SecureContext;
  readonly sources = new Map<string, SourceGroup>();
  readonly targets = new Map<string, TargetGroup>();
  /** Groups whose switchover from this node lost touch with the new primary (see #resolve). */
  readonly #inDoubt = new Map<string, string>();
  /** Groups rejoining as a backup (the new primary), and the last error of a rejoin. */
  readonly #rejoining = new Map<string, string>();
  readonly #rejoinError = new Map<string, string>();
  /** The primary a rejoin that has not found its fork yet goes to (the newest epoch heard). */
  readonly #rejoinTo = new Map<string, { epoch: number; primary: string }>();
  /** Backups checking their journal against a newer primary's history (realignBackup), by group: the primary. */
  readonly #realigning = new Map<string, string>();
  /** By group, the last journal checked against a primary: `primary@epoch:lastPosition`. */
  readonly #realigned = new Map<string, string>();
  readonly #journals = new Map<string, Journal>();
  #roles!: RoleStore;
  #witness: Witness | null = null;
  /** Failovers under way, by group; and the last one this node made. */
  readonly #failingOver = new Set<string>();
  #lastFailover: FailoverReport | null = null;
  #lastRejoin: RejoinReport | null = null;
  /** Automatic failover: when a backup may ask the witness again, by group. */
  readonly #nextAsk = new Map<string, number>();
  /** etcd quorums of groups with failover.etcd. */
  readonly #etcd = new Map<string, EtcdQuorum>();
  /** Groups stopped by a failure: restarts made since it last ran a minute, and when the next is due. */
  readonly #restarts = new Map<string, { attempts: number; at: number; lastAt: number; busy: boolean }>();
  #watchTimer: NodeJS.Timeout | null = null;
  #server: Closer | null = null;
  /**
   * Peers' first messages that arrived while the groups were starting, handled once they have:
   * the link listens first, so a primary's dial and TLS handshake overlap this node's start.
   */
  #held: { ch: Channel; handle: () => void }[] | null = [];
  #admin: Closer | null = null;
  readonly #started = monoNow();
  #stopping: Promise<void> | null = null;
  #lock: { release(): void } | null = null;
  /** What the node reaches outside its process through (env.ts). */
  readonly env: NodeEnv;

  constructor(config: Config, name: string, log: Logger, env: NodeEnv = realEnv) {
    if (!config.nodes[name]) {
      throw new TandemError(
        'NODE_UNKNOWN',
        `${config.file}: there is no node "${name}" (nodes: ${Object.keys(config.nodes).join(', ')})`,
        `Pass one of them, for example: --node ${Object.keys(config.nodes)[0]}`,
      );
    }
    this.config = config;
    this.name = name;
    this.log = log;
    this.env = env;
    this.#ctx = {
      security: config.security,
      cluster: config.cluster,
      node: name,
      nodes: new Set(Object.keys(config.nodes)),
    };
  }

  get ctx(): SecureContext {
    return this.#ctx;
  }

  async start(): Promise<void> {
    const me = this.config.nodes[this.name]!;
    this.#lock = this.env.lock(me.state, this.name);
    this.#roles = RoleStore.open(me.state, this.env.disk);
    // Fail now, not at the first link.
    if (this.config.security.mode === 'psk') this.config.security.secret.resolve();
    if (this.config.security.mode === 'tls') tlsFiles(this.config.security, this.name);
    if (Object.values(this.config.groups).some((g) => g.failover.witness === this.name))
      this.#witness = new Witness(this.config, this.name, this.log, this.env.disk);
    this.#server = await this.env.listen(
      me.listen,
      `nodes.${this.name}.listen`,
      this.#ctx,
      this.log,
      (conn, where) => this.#accept(conn, where),
    );
    for (const g of groupsOfNode(this.config, this.name)) {
      this.#journals.set(g.name, await this.#openJournal(g));
      const role = this.role(g.name);
      if (role.pending) this.#resolve(g, role);
      else if (role.rejoin) this.#rejoin(g.name, null);
      else if (role.primary === this.name) this.sources.set(g.name, await this.#startSource(g));
      else this.targets.set(g.name, await this.#startTarget(g));
    }
    const held = this.#held ?? [];
    this.#held = null;
    for (const h of held) if (!h.ch.closed) h.handle();
    this.#admin = await this.env.serveAdmin(this, this.log, me.admin);
    this.#watchTimer = setInterval(() => {
      this.#watchPrimaries();
      this.#restartFailed();
    }, 100);
    this.#watchTimer.unref();
    this.log.info(
      {
        listen: `${me.listen.host}:${me.listen.port}`,
        admin: `${me.admin.host}:${me.admin.port}`,
        groups: [...this.sources.keys(), ...this.targets.keys()],
      },
      'node running',
    );
  }

  /** The group's role as this node knows it: recorded by a role change, else the config's. */
  role(group: string): GroupRole {
    const g = this.config.groups[group]!;
    return this.#roles.get(group) ?? { epoch: 1, primary: g.primary, since: 0, at: '' };
  }

  /** Records a new role for the group (durably, before it is acted on). */
  setRole(group: string, role: Omit<GroupRole, 'at'>): GroupRole {
    const r = this.#roles.set(group, role);
    this.log.info(
      { group, epoch: r.epoch, primary: r.primary, since: r.since, pending: r.pending },
      'role recorded',
    );
    return r;
  }

  #openJournal(g: GroupConfig): Promise<Journal> {
    return openGroupJournal(this.config, this.name, g, this.log, this.env.disk);
  }

  journal(group: string): Journal {
    return this.#journals.get(group)!;
  }

  /**
   * A journal stopped by a failed write is reopened before a group runs on it again: recovery
   * keeps every record found whole on disk, and nothing past its last successful write was ever
   * acknowledged. The caller has stopped the group that used it.
   */
  async #reopenIfFailed(g: GroupConfig): Promise<void> {
    const j = this.journal(g.name);
    if (!j.failure) return;
    await j.close().catch(() => {});
    this.#journals.set(g.name, await this.#openJournal(g));
  }

  async #startSource(g: GroupConfig): Promise<SourceGroup> {
    const sg = this.#newSource(g);
    await sg.start();
    return sg;
  }

  #newSource(g: GroupConfig): SourceGroup {
    return new SourceGroup(
      this.config,
      this.name,
      g,
      this.#ctx,
      this.log,
      this.journal(g.name),
      {
        role: () => this.role(g.name),
        onNewerEpoch: (epoch, primary) => void this.#newerEpoch(g.name, epoch, primary),
        witness: quorumOf(g) ? (request) => this.askWitness(g, request) : null,
        ask: (node, request, timeoutMs) => this.askNode(node, request, timeoutMs),
      },
      this.env,
    );
  }

  /** One request to the group's witness on a fresh link connection. */
  askWitness(g: GroupConfig, request: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (g.failover.etcd) {
      let q = this.#etcd.get(g.name);
      if (!q) {
        q = new EtcdQuorum(g, this.config.cluster);
        this.#etcd.set(g.name, q);
      }
      return q.handle(request);
    }
    return this.askNode(g.failover.witness!, request, 1000);
  }

  /** One request to another node on a fresh link connection (#nodeRequest answers it there). */
  askNode(
    node: string,
    request: Record<string, unknown>,
    timeoutMs = 30_000,
  ): Promise<Record<string, unknown>> {
    return ask(
      {
        addr: this.config.nodes[node]!.listen,
        peer: node,
        ctx: this.#ctx,
        timeoutMs,
        connect: this.env.connect,
      },
      request,
    );
  }

  async #startTarget(g: GroupConfig): Promise<TargetGroup> {
    const tg = this.#newTarget(g);
    await tg.start();
    return tg;
  }

  #newTarget(g: GroupConfig): TargetGroup {
    return new TargetGroup(
      this.config,
      this.name,
      g,
      this.log,
      this.journal(g.name),
      {
        role: () => this.role(g.name),
        adopt: (epoch, primary) => {
          this.setRole(g.name, { epoch, primary, since: 0 });
        },
        control: (request) => this.#control(g, request),
      },
      this.env,
    );
  }

  /**
   * Another node is primary at a newer epoch: a primary here fences itself at once, then rejoins
   * as that node's backup (rejoin.ts).
   */
  async #newerEpoch(group: string, epoch: number, primary: string): Promise<void> {
    if (primary === this.name) {
      this.log.error({ group, epoch }, 'a peer says this node is primary at a newer epoch; ignored');
      return;
    }
    const sg = this.sources.get(group);
    if (!sg || sg.switching || epoch <= this.role(group).epoch || sg.state !== 'running') return;
    await sg.fenceForNewerEpoch(epoch, primary);
    this.#rejoin(group, { epoch, primary });
  }

  /**
   * Rejoins the group as a backup, retrying every 2 s while the new primary cannot be reached;
   * `to` is null when roles.json already records the rejoin (a restart in the middle of one).
   */
  #rejoin(group: string, to: { epoch: number; primary: string } | null): void {
    if (this.#rejoining.has(group)) return;
    const g = this.config.groups[group]!;
    this.#rejoining.set(group, to?.primary ?? this.role(group).primary);
    if (to) this.#rejoinTo.set(group, to);
    void (async () => {
      while (!this.#stopping) {
        try {
          const started = performance.now();
          // The newest primary heard of: a later one may have taken over from the first (#hello).
          const target = this.#rejoinTo.get(group);
          const report = this.role(group).rejoin
            ? null
            : await beginRejoin(this, g, target!.epoch, target!.primary);
          this.#rejoinTo.delete(group);
          const found = performance.now();
          const sg = this.sources.get(group);
          this.sources.delete(group);
          await sg?.stop(0);
          await this.#reopenIfFailed(g);
          const undone = await finishRejoin(this, g);
          this.targets.set(group, await this.#startTarget(g));
          this.#rejoining.delete(group);
          this.#lastRejoin = {
            group,
            primary: this.role(group).primary,
            fork: this.role(group).since,
            report: report?.id ?? null,
            transactions: report?.transactions.length ?? 0,
            changesUndone: undone,
            findMs: Math.round(found - started),
            rewindMs: Math.round(performance.now() - found),
          };
          return;
        } catch (err) {
          this.log.error({ group, err: (err as Error).message }, 'rejoin failed; retrying in 2 s');
          this.#rejoinError.set(group, (err as Error).message);
        }
        await new Promise((r) => setTimeout(r, 2000));
      }
    })();
  }

  /**
   * This backup's journal ends with records of an older epoch than the primary that connected:
   * before it follows, it asks that primary where their histories fork and drops a divergent
   * tail an old primary left here (realignBackup). The group stops meanwhile, so no stream
   * extends the journal; the new role is recorded once the journal agrees.
   */
  #realign(g: GroupConfig, primary: string, epoch: number): void {
    if (this.#realigning.has(g.name)) return;
    this.#realigning.set(g.name, primary);
    void (async () => {
      const tg = this.targets.get(g.name);
      try {
        if (!tg) return;
        this.targets.delete(g.name);
        await tg.stop();
        await this.#reopenIfFailed(g);
        const cut = await realignBackup(this, g, primary, epoch);
        this.#realigned.set(g.name, `${primary}@${epoch}:${this.journal(g.name).lastPosition}`);
        const role = this.role(g.name);
        // A database undone back to the fork no longer holds what a switchover left it (`since`):
        // left so, the backup would be taken over at that position again and skip the new
        // primary's records before it (seed 1935 of the role simulation).
        const since = cut ? Math.min(role.since, cut.fork) : role.since;
        if (epoch > role.epoch) this.setRole(g.name, { epoch, primary, since });
        else if (since !== role.since) this.setRole(g.name, { ...role, since });
      } catch (err) {
        this.log.error(
          { group: g.name, primary, err: (err as Error).message },
          'checking the journal against the new primary failed; the next connection tries again',
        );
      } finally {
        this.#realigning.delete(g.name);
        // Unless a role change took the group meanwhile (a failover to this node).
        if (tg && !this.#stopping && !this.sources.has(g.name) && !this.targets.has(g.name)) {
          // A start that fails leaves a failed group, which #restartFailed starts again.
          const next = this.#newTarget(g);
          await next.start().finally(() => this.targets.set(g.name, next));
        }
      }
    })().catch((err: Error) =>
      this.log.error({ group: g.name, err: err.message }, 'the backup failed to start again after its check'),
    );
  }

  /**
   * Requests of the primary on the link (switchover steps, docs/switchover.md): `prepare` (can
   * this node become primary?), `verify` (row counts and checksums), `promote` (take over at a
   * position and epoch).
   */
  async #control(g: GroupConfig, request: Record<string, unknown>): Promise<ControlAnswer> {
    const tg = this.targets.get(g.name);
    const role = this.role(g.name);
    if (!tg?.running) throw new Error(`node ${this.name} is not running as a backup of group ${g.name}`);
    const endpoint = g.endpoints[this.name]!;
    switch (request.op) {
      case 'prepare': {
        if (role.virtual)
          throw new Error(`a virtual switch is on at ${this.name} since ${role.virtual.at}: end it first`);
        if (request.epoch !== role.epoch)
          throw new Error(`epoch ${String(request.epoch)} is not this node's epoch ${role.epoch}`);
        if (!tg.apply.seeded) throw new Error(`node ${this.name} has not been seeded yet`);
        await this.env.checkPromotable(endpoint, g, this.name, this.log);
        return { body: { applied: tg.apply.appliedPosition } };
      }
      case 'verify':
        return { body: { ...(await this.env.tableChecksums(endpoint, g)) } };
      case 'promote':
        return this.#promote(g, tg, Number(request.epoch), Number(request.position));
      default:
        throw new Error(`unknown request ${String(request.op)}`);
    }
  }

  /**
   * Becomes the group's primary at `epoch`, holding everything up to `position`: apply stops
   * once it has applied the position (every commit durable), the new role is recorded, then
   * capture starts and the fence is lifted. The answer says the role was recorded; the old
   * link is closed after it has been sent.
   */
  async #promote(g: GroupConfig, tg: TargetGroup, epoch: number, position: number): Promise<ControlAnswer> {
    const role = this.role(g.name);
    if (epoch !== role.epoch + 1)
      throw new Error(`cannot promote to epoch ${epoch}: this node's epoch is ${role.epoch}`);
    const started = performance.now();
    await tg.waitApplied(position, g.switchover.drainTimeoutMs);
    if (tg.journal.lastPosition !== position) {
      throw new Error(
        `the journal ends at ${tg.journal.lastPosition}, not at the switch position ${position}`,
      );
    }
    await tg.stopApply();
    failpoint('promote-before-record');
    this.setRole(g.name, { epoch, primary: this.name, since: position });
    this.targets.delete(g.name);
    let error: string | null = null;
    const sg = this.#newSource(g);
    this.sources.set(g.name, sg);
    try {
      await sg.start();
    } catch (err) {
      error = (err as Error).message;
      this.log.error({ group: g.name, err: error }, 'promoted, but the group failed to start as primary');
    }
    failpoint('promote-before-answer');
    return {
      body: { promoted: true, ms: Math.round(performance.now() - started), error },
      after: () => void tg.stop(),
    };
  }

  /**
   * Becomes a backup of `primary` after a switchover from this node: capture stops and its
   * objects go, the new role is recorded, apply starts with the database taken as holding
   * everything up to `position`.
   */
  async demote(group: string, epoch: number, primary: string, position: number): Promise<void> {
    const g = this.config.groups[group]!;
    const sg = this.sources.get(group);
    if (sg) {
      this.sources.delete(group);
      await sg.stop(0);
    }
    await this.#retire(g);
    this.setRole(group, { epoch, primary, since: position });
    this.#inDoubt.delete(group);
    this.targets.set(group, await this.#startTarget(g));
  }

  /** Removes what capture installed in this node's database (the node stops being a source). */
  async #retire(g: GroupConfig): Promise<void> {
    const capture = await this.env.createCapture(g.endpoints[this.name]!, {
      group: g,
      node: this.name,
      journal: this.journal(g.name),
      hlc: new HybridLogicalClock(),
      epoch: () => this.role(g.name).epoch,
      log: this.log,
      onFatal: () => {},
    });
    await capture.retire();
  }

  /**
   * A switchover from this node sent its promotion and heard nothing back (a crash, a cut
   * link): the database stays fenced until the new primary says whether it took over. Asks it
   * (one HELLO) every second: a refusal at the newer epoch means it did, and this node becomes
   * its backup; a welcome at the old epoch means it did not, and this node serves on.
   */
  #resolve(g: GroupConfig, role: GroupRole): void {
    const pending = role.pending!;
    this.#inDoubt.set(g.name, pending.to);
    this.log.error(
      { group: g.name, to: pending.to, epoch: pending.epoch },
      'SWITCHOVER IN DOUBT: the promotion of the new primary was not confirmed; the database stays fenced until it answers',
    );
    void (async () => {
      const j = this.journal(g.name);
      while (!this.#stopping && this.#inDoubt.has(g.name)) {
        try {
          const answer = await probe(
            {
              addr: this.config.nodes[pending.to]!.listen,
              peer: pending.to,
              ctx: this.#ctx,
              connect: this.env.connect,
            },
            {
              cluster: this.config.cluster,
              group: g.name,
              node: this.name,
              epoch: role.epoch,
              firstPosition: j.firstPosition,
              durablePosition: j.durablePosition,
            },
          );
          if (answer.type === MsgType.Refuse && answer.epoch >= pending.epoch) {
            await this.demote(g.name, answer.epoch, answer.primary, pending.position);
            this.log.warn({ group: g.name, primary: answer.primary }, 'switchover confirmed: now a backup');
            return;
          }
          if (answer.type === MsgType.Welcome && answer.epoch === role.epoch) {
            this.setRole(g.name, { epoch: role.epoch, primary: this.name, since: role.since });
            this.#inDoubt.delete(g.name);
            this.sources.set(g.name, await this.#startSource(g));
            this.log.warn(
              { group: g.name, to: pending.to },
              'switchover did not happen: serving as primary again',
            );
            return;
          }
        } catch (err) {
          this.log.debug({ group: g.name, err: (err as Error).message }, 'new primary not reachable yet');
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    })().catch((err: Error) =>
      this.log.error({ group: g.name, err: err.message }, 'resolving the switchover failed'),
    );
  }

  // ---- virtual switch (docs/virtual-switch.md) ----

  /**
   * Makes this backup writable for testing while production goes on (`start`), or reverts every
   * test write and applies what the journal held meanwhile (`end`). The primary is not involved.
   */
  async virtualSwitch(group: string, op: 'start' | 'end'): Promise<Record<string, unknown>> {
    const g = this.config.groups[group];
    const tg = this.targets.get(group);
    if (!g || !tg?.running || !tg.apply.seeded) {
      throw new TandemError(
        'SWITCH_FAILED',
        `node ${this.name} is not a running, seeded backup of group "${group}"`,
        'Run the virtual switch on a backup: tandem virtual-switch start GROUP --on NODE',
      );
    }
    const role = this.role(group);
    const started = performance.now();
    if (op === 'start') {
      if (role.virtual)
        throw new TandemError(
          'SWITCH_FAILED',
          `a virtual switch of group ${group} is on since ${role.virtual.at}`,
          'End it first',
        );
      this.setRole(group, {
        ...role,
        virtual: { since: tg.apply.appliedPosition, at: new Date().toISOString() },
      });
      await tg.virtualStart();
      this.log.warn(
        { group, since: tg.apply.appliedPosition },
        'VIRTUAL SWITCH: this backup takes test writes; apply holds',
      );
      return {
        group,
        node: this.name,
        op,
        since: tg.apply.appliedPosition,
        ms: Math.round(performance.now() - started),
      };
    }
    if (!role.virtual)
      throw new TandemError(
        'SWITCH_FAILED',
        `no virtual switch of group ${group} is on at node ${this.name}`,
        'Nothing to end',
      );
    const reverted = await tg.virtualEnd(g.switchover.fenceTimeoutMs);
    const { virtual: _, ...rest } = role;
    this.setRole(group, rest);
    const held = tg.journal.lastPosition - role.virtual.since;
    this.log.warn({ group, reverted, held }, 'virtual switch ended: test writes reverted, apply resumes');
    return { group, node: this.name, op, reverted, held, ms: Math.round(performance.now() - started) };
  }

  // ---- divergence reports (divergence.ts) ----

  divergence(group: string): DivergenceReport[] {
    return listReports(this.env.disk, this.config.nodes[this.name]!.state, group);
  }

  /** Re-applies a report's transactions on the group's primary, or discards it; records which. */
  async resolveDivergence(
    group: string,
    id: string,
    how: 'reapplied' | 'discarded',
  ): Promise<DivergenceReport> {
    const r = this.divergence(group).find((x) => x.id === id);
    if (!r) {
      throw new TandemError(
        'GROUP_UNKNOWN',
        `node ${this.name} has no divergence report "${id}" for group ${group}`,
        'List them: tandem divergence GROUP --node NODE',
      );
    }
    if (r.resolved) {
      throw new TandemError(
        'FAILOVER_REFUSED',
        `divergence report ${id} was already ${r.resolved.how} at ${r.resolved.at}`,
        'Nothing to do',
      );
    }
    let detail = '';
    if (how === 'reapplied') {
      const primary = this.role(group).primary;
      const a = await this.askNode(primary, {
        op: 'reapply',
        group,
        report: r,
        keys: await this.tableKeys(group),
      });
      detail = `${String(a.transactions)} transactions written on ${primary}`;
    }
    r.resolved = { how, at: new Date().toISOString(), detail };
    saveReport(this.env.disk, this.config.nodes[this.name]!.state, r);
    this.log.warn({ group, report: id, how, detail }, 'divergence report resolved');
    return r;
  }

  /** Marks a switchover from this node in doubt (its promotion went unanswered). */
  inDoubt(group: string): void {
    const g = this.config.groups[group]!;
    const sg = this.sources.get(group);
    this.sources.delete(group);
    void (async () => {
      await sg?.stop(0);
      this.#resolve(g, this.role(group));
    })();
  }

  // ---- failover (docs/failover.md) ----

  /**
   * Automatic failover: a backup of a group with `failover.auto` that has heard nothing from its
   * primary for a whole `failover.timeout` asks the witness to let it take over.
   */
  #watchPrimaries(): void {
    for (const tg of this.targets.values()) {
      const g = tg.group;
      if (!g.failover.auto || !quorumOf(g) || this.#failingOver.has(g.name)) continue;
      if (!tg.running || !tg.apply.seeded || monoNow() - tg.heardAt < g.failover.timeoutMs) continue;
      if (monoNow() < (this.#nextAsk.get(g.name) ?? 0)) continue;
      this.#nextAsk.set(g.name, monoNow() + 250);
      this.failover(g.name, { auto: true }).then(
        (r) => {
          if (r.ok) this.log.warn({ ...r }, 'AUTOMATIC FAILOVER: this node is the primary now');
        },
        (err: Error) => this.log.debug({ group: g.name, err: err.message }, 'failover not granted yet'),
      );
    }
  }

  /**
   * A group stopped by a failure (a full disk, an I/O error, a database that went away) starts
   * again in its role by itself: after 1 s, then 2 s, 4 s ... at most 30 s apart, the way
   * PostgreSQL restarts a failed apply worker. A failed journal is reopened first. The count
   * starts over once a restarted group has run for a minute.
   */
  #restartFailed(): void {
    const now = monoNow();
    for (const [name, group] of [...this.sources, ...this.targets]) {
      const r = this.#restarts.get(name);
      if (group.state !== 'failed') {
        if (r && !r.busy && now - r.lastAt > 60_000) this.#restarts.delete(name);
        continue;
      }
      if (this.#stopping || this.#failingOver.has(name) || this.#rejoining.has(name)) continue;
      if (group instanceof SourceGroup && group.switching) continue;
      if (!r) {
        this.#restarts.set(name, { attempts: 0, at: now + 1000, lastAt: 0, busy: false });
        this.log.warn({ group: name }, 'group failed; restarting it in 1 s');
        continue;
      }
      if (r.busy || now < r.at) continue;
      r.busy = true;
      r.attempts++;
      this.#restart(group)
        .catch((err: Error) =>
          this.log.error({ group: name, err: err.message }, 'restarting the group failed'),
        )
        .finally(() => {
          r.busy = false;
          r.lastAt = monoNow();
          r.at = r.lastAt + Math.min(30_000, 1000 * 2 ** r.attempts);
        });
    }
  }

  async #restart(old: SourceGroup | TargetGroup): Promise<void> {
    const g = old.group;
    const primary = old instanceof SourceGroup;
    await (primary ? old.stop(0) : old.stop());
    await this.#reopenIfFailed(g);
    // A role change meanwhile owns the group now.
    if ((primary ? this.sources : this.targets).get(g.name) !== old || this.#stopping) return;
    this.log.warn(
      { group: g.name, attempt: this.#restarts.get(g.name)?.attempts },
      'restarting the failed group',
    );
    // The failed group answers (refuses) peers until its successor has started or failed.
    if (primary) {
      const sg = this.#newSource(g);
      await sg.start().finally(() => this.sources.set(g.name, sg));
    } else {
      const tg = this.#newTarget(g);
      await tg.start().finally(() => this.targets.set(g.name, tg));
    }
    this.log.warn({ group: g.name }, 'group restarted after a failure');
  }

  /**
   * Takes over as the group's primary because the primary is gone (`tandem failover`, or
   * automatically). Refused while the primary was heard within `failover.timeout`; with a
   * witness, only when the witness grants it (the primary's lease lapsed); without one, only
   * with `force`. The new primary holds everything its journal held durably up to the last
   * whole source transaction.
   */
  async failover(group: string, o: { force?: boolean; auto?: boolean }): Promise<FailoverReport> {
    const g = this.config.groups[group];
    const tg = this.targets.get(group);
    const role = g ? this.role(group) : null;
    if (!g || !tg || !role) {
      throw new TandemError(
        'FAILOVER_REFUSED',
        `node ${this.name} is not a backup of group "${group}"${role ? ` (the primary is ${role.primary})` : ''}`,
        'Run the failover on the backup to promote: tandem failover GROUP --to NODE',
      );
    }
    if (this.#failingOver.has(group))
      throw new TandemError(
        'FAILOVER_REFUSED',
        `a failover of group ${group} is under way here`,
        'Wait for it',
      );
    if (role.virtual) {
      throw new TandemError(
        'FAILOVER_REFUSED',
        `a virtual switch is on at ${this.name} since ${role.virtual.at}: its database holds test writes`,
        `End it first (tandem virtual-switch end ${group} --on ${this.name}), then fail over`,
      );
    }
    const heardMsAgo = Math.round(monoNow() - tg.heardAt);
    if (heardMsAgo < g.failover.timeoutMs) {
      throw new TandemError(
        'FAILOVER_REFUSED',
        `${role.primary} was heard ${heardMsAgo} ms ago (failover.timeout is ${g.failover.timeoutMs} ms): it is not gone`,
        `To move the primary while it runs, use tandem switchover ${group}; otherwise wait until ${role.primary} has been silent for the timeout`,
      );
    }
    if (!tg.apply.seeded)
      throw new TandemError(
        'FAILOVER_REFUSED',
        `node ${this.name} was never completely seeded`,
        'Promote a seeded backup',
      );
    this.#failingOver.add(group);
    const started = performance.now();
    try {
      let epoch = role.epoch + 1;
      let quorum = 'forced';
      const quorumName = quorumOf(g);
      if (quorumName) {
        let r: Record<string, unknown>;
        try {
          r = await this.askWitness(g, { op: 'promote', group, node: this.name, epoch: role.epoch });
        } catch (err) {
          throw new TandemError(
            'FAILOVER_REFUSED',
            `the ${quorumName} cannot be reached (${(err as Error).message}), so no quorum says ${role.primary} is gone`,
            `Bring the ${quorumName} back, or check the network between this node and it`,
          );
        }
        if (r.granted !== true) {
          throw new TandemError(
            'FAILOVER_REFUSED',
            `the ${quorumName} refuses: ${String(r.reason)}`,
            `${role.primary} may be alive and cut off from this node only; check it (tandem status), or wait for its lease to lapse`,
          );
        }
        epoch = Number(r.epoch);
        quorum = quorumName;
      } else if (!o.force) {
        throw new TandemError(
          'FAILOVER_REFUSED',
          `group ${group} has no quorum (failover.witness or failover.etcd), so nothing tells ${role.primary} gone from ${role.primary} cut off from this node; if it runs, it keeps taking writes`,
          `Make sure ${role.primary} is down or cut off from its clients, then run the failover again with --force`,
        );
      }
      const position = await this.#takeOver(g, tg, epoch);
      const report: FailoverReport = {
        group,
        from: role.primary,
        to: this.name,
        epoch: { from: role.epoch, to: epoch },
        position,
        quorum,
        ok: true,
        heardMsAgo,
        promoteMs: Math.round(performance.now() - started),
        unavailableMs: heardMsAgo + Math.round(performance.now() - started),
        how: o.auto ? 'automatic' : 'manual',
        hooks: [],
      };
      this.#lastFailover = report;
      report.hooks = await runReroute(
        this.config,
        g,
        { group, primary: this.name, previous: role.primary, epoch, reason: 'failover' },
        this.log,
      );
      return report;
    } finally {
      this.#failingOver.delete(group);
    }
  }

  /**
   * The backup becomes primary at `epoch`: it stops taking records from the old primary, keeps
   * what its journal holds durably up to the last whole source transaction (a transaction the
   * old primary never finished sending is cut off), applies all of it, records its new role and
   * starts capturing. Returns the position it took over at.
   */
  async #takeOver(g: GroupConfig, tg: TargetGroup, epoch: number): Promise<number> {
    tg.halt(`failover to ${this.name} under way`);
    const j = tg.journal;
    await j.whenDurable(j.lastPosition);
    let position = j.lastPosition;
    while (position >= j.firstPosition && position > tg.apply.appliedPosition) {
      const rec = decodeRecord(j.read(position, { maxBytes: 1, maxRecords: 1 })[0]!);
      if (rec.txCount > 0) break;
      position--;
    }
    position = Math.max(position, tg.apply.appliedPosition);
    if (position < j.lastPosition) {
      this.log.warn(
        { group: g.name, position, dropped: j.lastPosition - position },
        'an unfinished source transaction is dropped',
      );
      await j.truncateAfter(position);
    }
    await tg.waitApplied(position, 10 * 60_000);
    await tg.stopApply();
    this.setRole(g.name, { epoch, primary: this.name, since: position });
    this.targets.delete(g.name);
    const sg = this.#newSource(g);
    this.sources.set(g.name, sg);
    try {
      await sg.start();
    } finally {
      await tg.stop();
    }
    return position;
  }

  /**
   * A request outside any stream: to the witness of a group, to its primary from an old
   * primary rejoining (`fork`, `rows`) or re-applying its divergent tail (`reapply`), or to any
   * node holding its journal from a primary taking back what it lost (`tail`).
   */
  #nodeRequest(ch: Channel, m: Control): void {
    void (async (): Promise<ControlReply> => {
      try {
        const request = JSON.parse(m.body) as Record<string, unknown>;
        const body =
          request.op === 'tail'
            ? this.#tailRequest(request as unknown as TailRequest, ch.conn.peer)
            : request.op === 'reported'
              ? this.#reportedRequest(String(request.group), ch.conn.peer)
              : ['fork', 'records', 'rows', 'reapply'].includes(String(request.op))
                ? await this.#primaryRequest(request, ch.conn.peer)
                : this.#witnessRequest(request, ch.conn.peer);
        return { type: MsgType.ControlReply, id: m.id, ok: true, body: JSON.stringify(body) };
      } catch (err) {
        return { type: MsgType.ControlReply, id: m.id, ok: false, body: (err as Error).message };
      }
    })().then((reply) => ch.send(reply).then(() => ch.close(null)));
  }

  /** A primary taking back the records it lost (take-back.ts): answered from this node's journal. */
  #tailRequest(request: TailRequest, peer: string | null): Record<string, unknown> {
    const j = this.#journals.get(String(request.group));
    if (!j) throw new Error(`node ${this.name} holds no journal of group "${request.group}"`);
    if (peer !== null && peer !== request.origin)
      throw new Error(`${peer} asked for the records of ${request.origin}`);
    return tailOf(j, request);
  }

  /** An old primary rejoining (rejoin.ts): the transactions this node's divergence reports name. */
  #reportedRequest(group: string, peer: string | null): Record<string, unknown> {
    const g = this.config.groups[group];
    if (!g || !Object.hasOwn(g.endpoints, this.name))
      throw new Error(`node ${this.name} is not a node of group "${group}"`);
    if (peer !== null && !Object.hasOwn(g.endpoints, peer))
      throw new Error(`${peer} is not a node of group ${group}`);
    return { transactions: reportedTransactions(this.env.disk, this.config.nodes[this.name]!.state, group) };
  }

  #witnessRequest(request: Record<string, unknown>, peer: string | null): Record<string, unknown> {
    if (!this.#witness) throw new Error(`node ${this.name} is the witness of no group`);
    return this.#witness.handle(request, peer);
  }

  async #primaryRequest(
    request: Record<string, unknown>,
    peer: string | null,
  ): Promise<Record<string, unknown>> {
    const group = String(request.group);
    const g = this.config.groups[group];
    const sg = this.sources.get(group);
    if (!g || !sg) throw new Error(`node ${this.name} is not the primary of group "${group}"`);
    if (peer !== null && !Object.hasOwn(g.endpoints, peer))
      throw new Error(`${peer} is not a node of group ${group}`);
    const endpoint = g.endpoints[this.name]!;
    switch (request.op) {
      case 'fork':
        return forkPoint(sg.journal, Number(request.epoch));
      case 'records':
        return recordsOf(sg.journal, Number(request.after), Number(request.upTo));
      case 'rows': {
        const keys = (request.keys as JsonValue[][]).map((k) => k.map(fromJsonValue));
        const r = await this.env.readRowsByKey(
          endpoint,
          g,
          String(request.table),
          request.key as string[],
          keys,
        );
        return { columns: r.columns, rows: r.rows.map((row) => row.map(toJsonValue)) };
      }
      default: {
        // reapply: a divergence report's transactions, written here as application writes.
        const report = request.report as DivergenceReport;
        await this.env.writeSql(
          endpoint,
          g,
          toSql(report, (t) => (request.keys as Record<string, string[]>)[t] ?? []),
        );
        return { transactions: report.transactions.length };
      }
    }
  }

  /** An authenticated peer connected: read its HELLO, hand it to the group it names. */
  #accept(conn: Connection, where: string): void {
    const ch = new Channel(conn, {
      onClose: (reason) => {
        if (reason) this.log.warn({ peer: where, reason }, 'link closed before handshake');
      },
    });
    const timer = setTimeout(() => ch.close('no HELLO within 5 s'), 5000);
    ch.setHandler((m) => {
      clearTimeout(timer);
      if (this.#held) {
        this.#held.push({ ch, handle: () => this.#first(ch, m, where) });
        return;
      }
      this.#first(ch, m, where);
    });
  }

  /** A peer's first message: a node-level CONTROL request, or the HELLO of a source's link. */
  #first(ch: Channel, m: Message, where: string): void {
    if (m.type === MsgType.Control) {
      this.#nodeRequest(ch, m);
      return;
    }
    if (m.type !== MsgType.Hello) {
      ch.close(`first message must be HELLO, got type ${m.type}`);
      return;
    }
    this.#hello(ch, m, where);
  }

  #hello(ch: Channel, hello: Hello, where: string): void {
    const tg = this.targets.get(hello.group);
    let refusal = tg ? tg.check(hello, ch.conn.peer) : null;
    if (tg && !refusal && this.#failingOver.has(hello.group))
      refusal = { code: 'LINK_PROTOCOL', message: `node ${this.name} is taking over group "${hello.group}"` };
    // A primary of a newer epoch than this journal's last record: check the histories first.
    if (
      tg &&
      !refusal &&
      tg.journal.lastEpoch < hello.epoch &&
      tg.journal.lastPosition >= tg.journal.firstPosition &&
      this.#realigned.get(hello.group) !== `${hello.node}@${hello.epoch}:${tg.journal.lastPosition}`
    ) {
      this.#realign(tg.group, hello.node, hello.epoch);
      refusal = {
        code: 'LINK_PROTOCOL',
        message: `node ${this.name} checks its journal against ${hello.node}'s history before it follows it`,
      };
    }
    if (!tg) {
      const known = Object.hasOwn(this.config.groups, hello.group) && this.#journals.has(hello.group);
      const role = known ? this.role(hello.group) : null;
      if (!role) {
        refusal = { code: 'GROUP_UNKNOWN', message: `node ${this.name} has no group "${hello.group}"` };
      } else if (hello.epoch < role.epoch) {
        refusal = {
          code: 'LINK_EPOCH',
          message: `epoch ${hello.epoch} is older than this node's epoch ${role.epoch} (primary: ${role.primary})`,
        };
      } else {
        refusal = {
          code: 'LINK_PROTOCOL',
          message: this.#rejoining.has(hello.group)
            ? `node ${this.name} is rejoining group "${hello.group}" as a backup; it takes the stream once its divergent tail is undone`
            : this.#realigning.has(hello.group)
              ? `node ${this.name} checks its journal of group "${hello.group}" against the new primary's history`
              : `node ${this.name} is ${this.#inDoubt.has(hello.group) ? 'waiting to learn whether a switchover happened' : 'the primary'} of group "${hello.group}" at epoch ${role.epoch}`,
        };
        if (hello.epoch > role.epoch) void this.#newerEpoch(hello.group, hello.epoch, hello.node);
        const to = this.#rejoinTo.get(hello.group);
        if (to && hello.epoch > to.epoch && hello.node !== this.name) {
          this.#rejoinTo.set(hello.group, { epoch: hello.epoch, primary: hello.node });
          this.#rejoining.set(hello.group, hello.node);
        }
      }
    }
    if (refusal) {
      this.log.warn({ peer: where, node: hello.node, group: hello.group, ...refusal }, 'link refused');
      const role = Object.hasOwn(this.config.groups, hello.group) ? this.role(hello.group) : null;
      ch.refuse({ ...refusal, epoch: role?.epoch ?? 0, primary: role?.primary ?? '' });
      return;
    }
    tg!.attach(ch, hello);
  }

  status(): NodeStatus {
    const waiting: GroupStatus[] = [
      ...[...this.#inDoubt].map(([group, to]) =>
        this.#waitingStatus(
          group,
          'in-doubt',
          this.role(group).primary,
          `the switchover to ${to} sent its promotion and heard no answer; this database stays fenced until ${to} says whether it took over`,
        ),
      ),
      ...[...this.#rejoining]
        .filter(([group]) => !this.sources.has(group))
        .map(([group, primary]) =>
          this.#waitingStatus(
            group,
            'rejoining',
            primary,
            this.#rejoinError.get(group) ?? `rejoining as a backup of ${primary}`,
          ),
        ),
      ...[...this.#realigning].map(([group, primary]) =>
        this.#waitingStatus(group, 'rejoining', primary, `checking its journal against ${primary}'s history`),
      ),
    ];
    return {
      cluster: this.config.cluster,
      node: this.name,
      version: VERSION,
      pid: process.pid,
      uptimeMs: Math.round(monoNow() - this.#started),
      witness: this.#witness?.status() ?? null,
      lastFailover: this.#lastFailover,
      lastRejoin: this.#lastRejoin,
      groups: [
        ...[...this.sources.values()].map((s) => s.status()),
        ...[...this.targets.values()].map((t) => t.status()),
        ...waiting,
      ].map((g) => {
        const r = this.#restarts.get(g.group);
        return r
          ? {
              ...g,
              restart: {
                attempts: r.attempts,
                nextInMs: r.busy ? null : Math.max(0, Math.round(r.at - monoNow())),
              },
            }
          : g;
      }),
    };
  }

  /** Status of a group that has neither a primary's nor a backup's group object: fenced, waiting. */
  #waitingStatus(group: string, role: 'in-doubt' | 'rejoining', primary: string, error: string): GroupStatus {
    const j = this.journal(group);
    return {
      group,
      kind: 'sql',
      mode: this.config.groups[group]!.mode,
      role,
      epoch: this.role(group).epoch,
      primary,
      state: 'fenced',
      error,
      fenced: true,
      switching: null,
      capture: null,
      degraded: false,
      positions: {
        captured: j.lastPosition,
        journalDurable: j.durablePosition,
        durableAtTarget: 0,
        applied: 0,
      },
      rates: { capturedPerSec: null, appliedPerSec: null, wireBytesPerSec: null },
      journal: { first: j.firstPosition, last: j.lastPosition, bytes: j.sizeBytes, segments: j.segmentCount },
      links: [],
    };
  }

  /** Each table's key as this node's database has it (divergence SQL names rows by it). */
  async tableKeys(group: string): Promise<Record<string, string[]>> {
    const g = this.config.groups[group]!;
    return Object.fromEntries(
      (await this.env.readSchemas(g.endpoints[this.name]!, g)).map((s) => [s.name, s.primaryKey]),
    );
  }

  /** Drain (capture what is committed, let backups confirm it, up to `drainMs`) and close. */
  stop(drainMs = 5000): Promise<void> {
    this.#stopping ??= (async () => {
      this.log.info('node stopping');
      if (this.#watchTimer) clearInterval(this.#watchTimer);
      for (const h of this.#held ?? []) h.ch.close('node stopping');
      this.#held = null;
      await Promise.all([...this.sources.values()].map((s) => s.stop(drainMs)));
      await Promise.all([...this.targets.values()].map((t) => t.stop()));
      await Promise.all([...this.#journals.values()].map((j) => j.close().catch(() => {})));
      await this.#server?.close();
      await this.#admin?.close();
      this.#lock?.release();
      this.log.info('node stopped');
    })();
    return this.#stopping;
  }
}

/** What decides failover for the group: `witness NAME`, `etcd`, or null (manual only). */
export function quorumOf(g: GroupConfig): string | null {
  if (g.failover.witness) return `witness ${g.failover.witness}`;
  return g.failover.etcd ? 'etcd' : null;
}
