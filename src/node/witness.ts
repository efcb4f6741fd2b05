/**
 * The witness: a node that holds no data of a group and keeps its primary's **lease**, the third
 * vote of the quorum that decides failover (docs/failover.md). Requests come as CONTROL messages
 * on a fresh link connection, from the group's nodes only (the link's authenticated identity must
 * be the node named).
 *
 * - `renew {group, node, epoch}`: the primary renews its lease. Granted when `epoch` is the
 *   witness's epoch and the node holds it (or nobody does), or when `epoch` is newer (a
 *   switchover the witness had not heard of). Denied, with the current epoch and leader, for an
 *   older epoch or another node's: that node must fence itself.
 * - `promote {group, node, epoch}`: a backup at `epoch` asks to become primary at `epoch + 1`.
 *   Granted only when the lease has expired (nothing renewed it for `failover.timeout`) and
 *   `epoch` is current. The new epoch and leader are written to disk before the answer.
 * - `handover {group, node, to, epoch}`: the primary, in a switchover, gives its lease to `to`
 *   at `epoch + 1` before it promotes it. Granted only while `node` holds the lease at `epoch`,
 *   so no promotion was granted meanwhile; the lease then runs for `to` as if it had renewed
 *   it. Should `to` never renew it (the switchover failed after this), a backup still at `epoch`
 *   may be promoted once it lapses, at `epoch + 2`.
 * - `read {group}`: the lease as the witness sees it.
 *
 * Invariants
 * - Every epoch has one primary: the witness grants each epoch once, to one node (a switchover's
 *   through `handover`, a failover's through `promote`).
 * - The epoch of a group never goes down; a grant is durable before it is answered.
 * - After a restart the witness knows the epoch and leader but not when the lease was last
 *   renewed: it grants no promotion for a full timeout (the primary may still be renewing).
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import type { Disk } from '../journal/index.js';

interface Lease {
  epoch: number;
  leader: string;
  /** Given by a switchover (`handover`) and not renewed by its leader yet. */
  handedOver: boolean;
  /** performance.now() at which the lease lapses. */
  expiresAt: number;
  /** performance.now() of the last renewal (or of the witness's start). */
  renewedAt: number;
}

export class Witness {
  readonly #config: Config;
  readonly #name: string;
  readonly #file: string;
  readonly #log: Logger;
  readonly #leases = new Map<string, Lease>();
  readonly #disk: Disk;

  constructor(config: Config, name: string, log: Logger, disk: Disk) {
    this.#config = config;
    this.#disk = disk;
    this.#name = name;
    this.#log = log.child({ witness: name });
    this.#file = path.join(config.nodes[name]!.state, 'witness.json');
    const now = performance.now();
    const text = disk.readText(this.#file);
    if (text !== null) {
      let saved: Record<string, { epoch: number; leader: string; handedOver?: boolean }>;
      try {
        saved = JSON.parse(text) as typeof saved;
      } catch (err) {
        throw new TandemError(
          'STATE_CORRUPT',
          `${this.#file} cannot be read: ${(err as Error).message}`,
          'Restore it from a backup of the state folder; deleting it lets the witness forget which epoch is current',
        );
      }
      for (const [g, l] of Object.entries(saved)) {
        const ttl = config.groups[g]?.failover.timeoutMs ?? 0;
        this.#leases.set(g, {
          ...l,
          handedOver: l.handedOver === true,
          expiresAt: now + ttl,
          renewedAt: now,
        });
      }
    }
  }

  /** The groups this node is the witness of. */
  get groups(): string[] {
    return Object.values(this.#config.groups)
      .filter((g) => g.failover.witness === this.#name)
      .map((g) => g.name);
  }

  /** Answers a request of `peer` (the authenticated node; null on a plaintext link). */
  handle(request: Record<string, unknown>, peer: string | null): Record<string, unknown> {
    const group = String(request.group);
    const g = this.#config.groups[group];
    if (!g || g.failover.witness !== this.#name)
      throw new Error(`node ${this.#name} is not the witness of group "${group}"`);
    if (request.op === 'read') return this.#view(group);
    const node = String(request.node);
    if (!Object.hasOwn(g.endpoints, node)) throw new Error(`${node} is not a node of group ${group}`);
    if (peer !== null && peer !== node) throw new Error(`authenticated as ${peer} but asks for ${node}`);
    const epoch = Number(request.epoch);
    const now = performance.now();
    const ttl = g.failover.timeoutMs;
    const lease = this.#leases.get(group) ?? {
      epoch: 0,
      leader: '',
      handedOver: false,
      expiresAt: 0,
      renewedAt: now,
    };
    if (request.op === 'renew') {
      const mine =
        epoch > lease.epoch || (epoch === lease.epoch && (lease.leader === node || lease.leader === ''));
      if (!mine) return { granted: false, ...this.#view(group) };
      if (epoch !== lease.epoch || lease.leader !== node || lease.handedOver) {
        this.#save(group, { epoch, leader: node, handedOver: false }, now, ttl);
        this.#log.info({ group, epoch, leader: node }, 'lease taken');
      } else Object.assign(lease, { expiresAt: now + ttl, renewedAt: now });
      return { granted: true, validMs: ttl };
    }
    if (request.op === 'handover') {
      const to = String(request.to);
      if (!Object.hasOwn(g.endpoints, to) || to === node)
        throw new Error(`cannot hand ${group} over to ${to}`);
      if (epoch !== lease.epoch || lease.leader !== node || now >= lease.expiresAt) {
        return {
          granted: false,
          reason:
            epoch !== lease.epoch || lease.leader !== node
              ? `${node} is not the primary at epoch ${epoch} here (${lease.leader || 'nobody'} is, at epoch ${lease.epoch})`
              : `${node}'s lease lapsed ${Math.round(now - lease.expiresAt)} ms ago`,
          ...this.#view(group),
        };
      }
      this.#save(group, { epoch: epoch + 1, leader: to, handedOver: true }, now, ttl);
      this.#log.info({ group, epoch: epoch + 1, leader: to, was: node }, 'lease handed over');
      return { granted: true, epoch: epoch + 1 };
    }
    if (request.op === 'promote') {
      // An epoch nobody took up is skipped: a switchover's new primary that never renewed it,
      // or a failover's that asks again from the epoch before (it stopped before recording its
      // new role, so it never took writes; without this the group had no primary for good).
      const unused = epoch === lease.epoch - 1 && (lease.handedOver || lease.leader === node);
      const current = unused ? lease.epoch : epoch;
      if (lease.epoch !== 0 && current !== lease.epoch) {
        return {
          granted: false,
          reason: `epoch ${epoch} is not the current epoch ${lease.epoch}`,
          ...this.#view(group),
        };
      }
      if (lease.leader !== '' && lease.leader !== node && now < lease.expiresAt) {
        return {
          granted: false,
          reason: `${lease.leader} renewed its lease ${Math.round(now - lease.renewedAt)} ms ago; it lapses in ${Math.round(lease.expiresAt - now)} ms`,
          ...this.#view(group),
        };
      }
      this.#save(group, { epoch: current + 1, leader: node, handedOver: false }, now, ttl);
      this.#log.warn({ group, epoch: current + 1, leader: node, was: lease.leader }, 'failover granted');
      return { granted: true, epoch: current + 1 };
    }
    throw new Error(`unknown witness request ${String(request.op)}`);
  }

  #view(group: string): Record<string, unknown> {
    const l = this.#leases.get(group);
    const now = performance.now();
    return l
      ? {
          epoch: l.epoch,
          leader: l.leader,
          renewedMsAgo: Math.round(now - l.renewedAt),
          lapsesInMs: Math.max(0, Math.round(l.expiresAt - now)),
        }
      : { epoch: 0, leader: '', renewedMsAgo: null, lapsesInMs: 0 };
  }

  /** Grants `group`'s lease (running for `ttl` from `now`) and persists every group's. */
  #save(
    group: string,
    grant: Pick<Lease, 'epoch' | 'leader' | 'handedOver'>,
    now: number,
    ttl: number,
  ): void {
    const lease: Lease = { ...grant, expiresAt: now + ttl, renewedAt: now };
    const all: Record<string, { epoch: number; leader: string; handedOver?: boolean }> = {};
    const saved = (l: Lease) => ({
      epoch: l.epoch,
      leader: l.leader,
      ...(l.handedOver ? { handedOver: true } : {}),
    });
    for (const [g, l] of this.#leases) all[g] = saved(l);
    all[group] = saved(lease);
    this.#disk.writeTextDurably(this.#file, `${JSON.stringify(all, null, 2)}\n`);
    this.#leases.set(group, lease);
  }

  status(): Record<string, unknown> {
    return Object.fromEntries(this.groups.map((g) => [g, this.#view(g)]));
  }
}
