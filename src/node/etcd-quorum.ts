/**
 * etcd as the failover quorum (`failover.etcd`), for users who already run it: the same
 * requests as the witness node (`renew`, `promote`, `handover`, `read`; witness.ts), answered
 * from two keys through etcd's v3 JSON gateway (plain HTTP, no gRPC library):
 *   <prefix>/<cluster>/<group>/epoch    the current epoch (no lease); `E:handover` while a
 *                                       switchover's new primary has not renewed it yet,
 *                                       `E:promoted:NODE` once a failover granted it to NODE
 *   <prefix>/<cluster>/<group>/leader   {"node", "epoch"} attached to the primary's etcd lease,
 *                                       whose TTL is failover.timeout (at least 2 s: etcd's own
 *                                       minimum): the key vanishes when the primary stops renewing
 * Every change is one etcd transaction that compares what it read, so two nodes never both win.
 */
import type { GroupConfig } from '../config/index.js';

interface KV {
  value: string;
  lease: string;
  mod_revision: string;
}

interface QuorumState {
  leader: KV | null;
  held: { node: string; epoch: number } | null;
  epoch: number;
  /** The epoch was given by a switchover (`handover`) and its primary has not renewed it yet. */
  handedOver: boolean;
  /** The node a failover (`promote`) gave the epoch to, until a primary renews it. */
  promotedTo: string | null;
  epochKv: KV | null;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64').toString('utf8');

export class EtcdQuorum {
  readonly #endpoints: readonly string[];
  readonly #prefix: string;
  readonly #ttl: number;
  readonly #group: string;

  constructor(g: GroupConfig, cluster: string) {
    this.#endpoints = g.failover.etcd!.endpoints;
    this.#prefix = `${g.failover.etcd!.prefix}/${cluster}/${g.name}`;
    this.#ttl = Math.max(2, Math.ceil(g.failover.timeoutMs / 1000));
    this.#group = g.name;
  }

  async #call(path: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    let last: unknown;
    for (const e of this.#endpoints) {
      try {
        const res = await fetch(`${e.replace(/\/$/, '')}/v3${path}`, {
          method: 'POST',
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(1000),
        });
        const out = (await res.json()) as Record<string, unknown>;
        if (!res.ok) throw new Error(`etcd ${path}: ${String(out.error ?? out.message ?? res.status)}`);
        return out;
      } catch (err) {
        last = err;
      }
    }
    throw new Error(`no etcd endpoint answered (${(last as Error).message})`);
  }

  async #get(key: string): Promise<KV | null> {
    const r = await this.#call('/kv/range', { key: b64(key) });
    const kv = (r.kvs as KV[] | undefined)?.[0];
    return kv ? { ...kv, value: unb64(kv.value) } : null;
  }

  async #state(): Promise<QuorumState> {
    const [leader, epoch] = await Promise.all([
      this.#get(`${this.#prefix}/leader`),
      this.#get(`${this.#prefix}/epoch`),
    ]);
    const held = leader ? (JSON.parse(leader.value) as { node: string; epoch: number }) : null;
    const [n, mark, ...to] = (epoch?.value ?? '0').split(':');
    return {
      leader,
      held,
      epoch: Number(n),
      handedOver: mark === 'handover',
      promotedTo: mark === 'promoted' ? to.join(':') : null,
      epochKv: epoch,
    };
  }

  /**
   * Puts the leader key (new lease) and the epoch in one transaction guarded by `compare`; the
   * epoch is marked as given by a switchover (`handover`) or a failover (`promoted`).
   */
  async #take(
    node: string,
    epoch: number,
    compare: Record<string, unknown>[],
    mark: 'handover' | 'promoted' | null = null,
  ): Promise<boolean> {
    const grant = await this.#call('/lease/grant', { TTL: this.#ttl });
    const lease = String(grant.ID);
    const r = await this.#call('/kv/txn', {
      compare,
      success: [
        {
          request_put: {
            key: b64(`${this.#prefix}/leader`),
            value: b64(JSON.stringify({ node, epoch })),
            lease,
          },
        },
        {
          request_put: {
            key: b64(`${this.#prefix}/epoch`),
            value: b64(
              mark === 'handover'
                ? `${epoch}:handover`
                : mark === 'promoted'
                  ? `${epoch}:promoted:${node}`
                  : String(epoch),
            ),
          },
        },
      ],
    });
    if (r.succeeded !== true) {
      await this.#call('/lease/revoke', { ID: lease }).catch(() => {});
      return false;
    }
    return true;
  }

  /** The leader key is absent (its lease lapsed), and the epoch key is as read. */
  #unchanged(s: QuorumState): Record<string, unknown>[] {
    const leaderKey = b64(`${this.#prefix}/leader`);
    const epochKey = b64(`${this.#prefix}/epoch`);
    return [
      s.leader
        ? { key: leaderKey, target: 'MOD', mod_revision: s.leader.mod_revision }
        : { key: leaderKey, target: 'CREATE', create_revision: '0' },
      s.epochKv
        ? { key: epochKey, target: 'MOD', mod_revision: s.epochKv.mod_revision }
        : { key: epochKey, target: 'CREATE', create_revision: '0' },
    ];
  }

  async handle(request: Record<string, unknown>): Promise<Record<string, unknown>> {
    const node = String(request.node);
    const epoch = Number(request.epoch);
    const s = await this.#state();
    const view = { epoch: s.epoch, leader: s.held?.node ?? '' };
    if (request.op === 'read') return view;
    if (request.op === 'renew') {
      if (s.held && s.held.node === node && s.held.epoch === epoch) {
        const lease = s.leader!.lease;
        const r = await this.#call('/lease/keepalive', { ID: lease });
        const ttl = Number((r.result as { TTL?: string } | undefined)?.TTL ?? 0);
        if (ttl > 0) {
          // The new primary renews: its epoch is taken.
          if ((s.handedOver || s.promotedTo) && s.epochKv) {
            const key = b64(`${this.#prefix}/epoch`);
            await this.#call('/kv/txn', {
              compare: [{ key, target: 'MOD', mod_revision: s.epochKv.mod_revision }],
              success: [{ request_put: { key, value: b64(String(epoch)) } }],
            });
          }
          return { granted: true, validMs: ttl * 1000 };
        }
      }
      // Free, or held at an older epoch (a switchover the key has not seen): take it.
      const mine = epoch > s.epoch || (epoch === s.epoch && (!s.held || s.held.node === node));
      if (mine && (!s.held || s.held.epoch < epoch || s.held.node === node)) {
        if (await this.#take(node, epoch, this.#unchanged(s)))
          return { granted: true, validMs: this.#ttl * 1000 };
      }
      return { granted: false, ...view };
    }
    if (request.op === 'handover') {
      const to = String(request.to);
      if (!s.held || s.held.node !== node || s.held.epoch !== epoch || s.epoch !== epoch) {
        return {
          granted: false,
          reason: s.held
            ? `${node} does not hold the leader key at epoch ${epoch} in etcd (${s.held.node} does, at epoch ${s.held.epoch})`
            : `${node}'s leader key in etcd lapsed`,
          ...view,
        };
      }
      if (await this.#take(to, epoch + 1, this.#unchanged(s), 'handover'))
        return { granted: true, epoch: epoch + 1 };
      return { granted: false, reason: 'another node changed the leader key at the same time', ...view };
    }
    if (request.op === 'promote') {
      // An epoch nobody took up is skipped (as the witness does): a switchover's new primary
      // that never renewed it, or a failover's that asks again from the epoch before.
      const unused = epoch === s.epoch - 1 && (s.handedOver || s.promotedTo === node);
      const current = unused ? s.epoch : epoch;
      if (s.epoch !== 0 && current !== s.epoch) {
        return {
          granted: false,
          reason: `epoch ${epoch} is not the current epoch ${s.epoch} in etcd`,
          ...view,
        };
      }
      if (s.held && s.held.node !== node) {
        const ttl = await this.#call('/lease/timetolive', { ID: s.leader!.lease });
        return {
          granted: false,
          reason: `${s.held.node} holds the leader key in etcd; its lease lapses in ${Number(ttl.TTL ?? 0)} s`,
          ...view,
        };
      }
      if (await this.#take(node, current + 1, this.#unchanged(s), 'promoted'))
        return { granted: true, epoch: current + 1 };
      return { granted: false, reason: 'another node changed the leader key at the same time', ...view };
    }
    throw new Error(`unknown quorum request ${String(request.op)} for group ${this.#group}`);
  }
}
