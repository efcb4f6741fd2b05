/** Status shapes for tests of what renders them (`tandem status`, the dashboard). */
import type { NodeAnswer } from '../../src/cli/status.js';
import type { GroupStatus } from '../../src/node/status.js';

/** A running primary of group "shop" at epoch 1, with `over` on top. */
export function groupStatus(over: Partial<GroupStatus> = {}): GroupStatus {
  return {
    group: 'shop',
    kind: 'sql',
    mode: 'async',
    role: 'primary',
    epoch: 1,
    primary: 'east',
    state: 'running',
    error: null,
    fenced: false,
    switching: null,
    capture: null,
    degraded: false,
    positions: { captured: 7, journalDurable: 7, durableAtTarget: 0, applied: 0 },
    rates: { capturedPerSec: 0, appliedPerSec: 0, wireBytesPerSec: 0 },
    journal: { first: 1, last: 7, bytes: 100, segments: 1 },
    links: [],
    ...over,
  };
}

/** A node that answered with `groups`. */
export function nodeAnswer(node: string, groups: GroupStatus[]): NodeAnswer {
  return {
    node,
    admin: `127.0.0.1:7${node.length}00`,
    reachable: true,
    error: null,
    status: { cluster: 'c', node, version: '0.1.0', pid: 42, uptimeMs: 61_000, groups },
  };
}
