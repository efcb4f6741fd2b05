/**
 * What a write refused by a fence says, the same on every engine (SQLite triggers, PostgreSQL's
 * fence function): why this database refuses, and where writes go instead.
 */
export type FenceReason =
  | { kind: 'backup'; group: string; primary: string }
  | { kind: 'switching'; group: string; to: string }
  | { kind: 'newer-epoch'; group: string; primary: string; epoch: number }
  | { kind: 'no-quorum'; group: string; node: string };

export function fenceText(r: FenceReason): string {
  switch (r.kind) {
    case 'backup':
      return `[BACKUP_FENCED] tandem: this database is a backup in group ${r.group}; write to the primary, node ${r.primary}`;
    case 'switching':
      return `[FENCED] tandem: group ${r.group} is switching its primary to node ${r.to}; write to node ${r.to}`;
    case 'newer-epoch':
      return `[FENCED] tandem: node ${r.primary} is the primary of group ${r.group} now (epoch ${r.epoch}); write to node ${r.primary}`;
    case 'no-quorum':
      return `[FENCED] tandem: node ${r.node} lost its quorum in group ${r.group} (neither the witness nor all its backups hear it); writes are refused until they do`;
  }
}
