/**
 * Who is primary of each group, as this node last learned it: `<state>/roles.json`.
 *
 * `tandem.yaml`'s `primary` names the first primary only. A switchover or failover raises the
 * group's epoch and moves the primary; every node taking part records the new role here before
 * acting on it, so a restart (or a SIGKILL at any instant) comes back in the role it had. The file
 * is replaced atomically (written beside, fsynced, renamed, folder fsynced).
 *
 * Invariants
 * - The epoch of a group never goes down on a node.
 * - A node whose stored primary is itself captures and takes writes; any other node applies.
 */
import path from 'node:path';
import { TandemError } from '../core/errors.js';
import type { Disk } from '../journal/index.js';

export interface GroupRole {
  /** Raised by every role change; records and link handshakes carry it. */
  epoch: number;
  /** The node that takes writes. */
  primary: string;
  /**
   * The journal position this node's database held when it took its current role (0 when it
   * never changed role): a demoted primary is a backup that has applied exactly this much.
   */
  since: number;
  /**
   * A switchover from this node sent its promotion to `to` and has not heard back: the
   * database stays fenced until `to` says whether it took over (epoch `epoch`, position).
   */
  pending?: { to: string; epoch: number; position: number };
  /**
   * This node, an old primary, is rejoining as a backup: its divergent tail after `fork` is still
   * to be undone (docs/failover.md). `report`: the divergence report written for it, if any.
   */
  rejoin?: { fork: number; report: string | null };
  /**
   * A virtual switch is on (this node is a backup): its database takes test writes, apply holds
   * from `since`, and the test writes are reverted when it ends (docs/virtual-switch.md).
   */
  virtual?: { since: number; at: string };
  /** When the role was recorded (ISO time), for status. */
  at: string;
}

export class RoleStore {
  readonly file: string;
  readonly #roles: Record<string, GroupRole>;
  readonly #disk: Disk;

  private constructor(file: string, roles: Record<string, GroupRole>, disk: Disk) {
    this.file = file;
    this.#roles = roles;
    this.#disk = disk;
  }

  static open(stateDir: string, disk: Disk): RoleStore {
    const file = path.join(stateDir, 'roles.json');
    const text = disk.readText(file);
    if (text === null) return new RoleStore(file, {}, disk);
    let roles: Record<string, GroupRole>;
    try {
      roles = JSON.parse(text) as Record<string, GroupRole>;
      for (const [g, r] of Object.entries(roles)) {
        if (!Number.isInteger(r.epoch) || r.epoch < 1 || typeof r.primary !== 'string')
          throw new Error(`group ${g}: bad entry`);
      }
    } catch (err) {
      throw new TandemError(
        'STATE_CORRUPT',
        `${file} cannot be read: ${(err as Error).message}`,
        'Restore it from a backup of the state folder, or delete it: the node then starts in the roles tandem.yaml names, at epoch 1, and may be refused by peers at a newer epoch',
      );
    }
    return new RoleStore(file, roles, disk);
  }

  get(group: string): GroupRole | null {
    return this.#roles[group] ?? null;
  }

  /** Records a group's new role durably. Refuses to lower the epoch. */
  set(group: string, role: Omit<GroupRole, 'at'>): GroupRole {
    const old = this.#roles[group];
    if (old && role.epoch < old.epoch) {
      throw new Error(`group ${group}: epoch ${role.epoch} is older than the recorded ${old.epoch}`);
    }
    const next = { ...role, at: new Date().toISOString() };
    const all = { ...this.#roles, [group]: next };
    this.#disk.writeTextDurably(this.file, `${JSON.stringify(all, null, 2)}\n`);
    this.#roles[group] = next;
    return next;
  }
}
