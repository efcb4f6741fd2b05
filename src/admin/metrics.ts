/**
 * Prometheus metrics of a node, computed from its status at scrape time (no global registry).
 */
import { Gauge, Registry } from 'prom-client';
import type { NodeStatus } from '../node/status.js';

export function createMetrics(status: () => NodeStatus): Registry {
  const registry = new Registry();
  let snap: NodeStatus | null = null;
  // One status snapshot per scrape, shared by every metric.
  const get = (): NodeStatus => {
    snap ??= status();
    queueMicrotask(() => {
      snap = null;
    });
    return snap;
  };
  /** A primary's links (LinkSender) and a backup's (the receiver: target-group.ts). */
  const LINK_STATES = ['connecting', 'handshake', 'seeding', 'streaming', 'down', 'connected', 'waiting'];
  const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge, s: NodeStatus) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        fill(this, get());
      },
    });

  gauge(
    'tandem_up',
    'Group state on this node (1 running, 0 failed or stopped)',
    ['group', 'role'],
    (g, s) => {
      for (const x of s.groups) g.set({ group: x.group, role: x.role }, x.state === 'running' ? 1 : 0);
    },
  );
  gauge(
    'tandem_group_restarts',
    'Restarts the node made of a failed group since it last ran a minute (0 when running steadily)',
    ['group'],
    (g, s) => {
      for (const x of s.groups) g.set({ group: x.group }, x.restart?.attempts ?? 0);
    },
  );
  gauge('tandem_epoch', 'Role epoch of the group', ['group'], (g, s) => {
    for (const x of s.groups) g.set({ group: x.group }, x.epoch);
  });
  gauge(
    'tandem_position',
    'Journal positions: captured (last in the journal), journal_durable, durable_at_target, applied',
    ['group', 'stage'],
    (g, s) => {
      for (const x of s.groups) {
        g.set({ group: x.group, stage: 'captured' }, x.positions.captured);
        g.set({ group: x.group, stage: 'journal_durable' }, x.positions.journalDurable);
        g.set({ group: x.group, stage: 'durable_at_target' }, x.positions.durableAtTarget);
        g.set({ group: x.group, stage: 'applied' }, x.positions.applied);
      }
    },
  );
  gauge(
    'tandem_lag_records',
    'Records captured but not yet applied at the peer',
    ['group', 'peer'],
    (g, s) => {
      for (const x of s.groups)
        for (const l of x.links) g.set({ group: x.group, peer: l.peer }, l.lag.records);
    },
  );
  gauge(
    'tandem_lag_bytes',
    'Journal bytes captured but not yet applied at the peer (estimate)',
    ['group', 'peer'],
    (g, s) => {
      for (const x of s.groups) for (const l of x.links) g.set({ group: x.group, peer: l.peer }, l.lag.bytes);
    },
  );
  gauge(
    'tandem_lag_seconds',
    'Age of the oldest record not yet applied at the peer',
    ['group', 'peer'],
    (g, s) => {
      for (const x of s.groups)
        for (const l of x.links) g.set({ group: x.group, peer: l.peer }, l.lag.ms / 1000);
    },
  );
  // One series per link whatever its state (a state label would start a new series at each
  // change), and the state as a set: 1 for the link's state, 0 for each other.
  gauge('tandem_link_up', 'Link up (1 streaming or connected, 0 otherwise)', ['group', 'peer'], (g, s) => {
    for (const x of s.groups)
      for (const l of x.links)
        g.set({ group: x.group, peer: l.peer }, l.state === 'streaming' || l.state === 'connected' ? 1 : 0);
  });
  gauge(
    'tandem_link_state',
    `Link state: 1 for the one it is in (${LINK_STATES.join(', ')}), 0 for the others`,
    ['group', 'peer', 'state'],
    (g, s) => {
      for (const x of s.groups)
        for (const l of x.links)
          for (const state of LINK_STATES)
            g.set({ group: x.group, peer: l.peer, state }, l.state === state ? 1 : 0);
    },
  );
  gauge(
    'tandem_wire_bytes_total',
    'Bytes on the wire (after compression and TLS)',
    ['group', 'peer', 'direction'],
    (g, s) => {
      for (const x of s.groups)
        for (const l of x.links) {
          g.set({ group: x.group, peer: l.peer, direction: 'out' }, l.wire.bytesOut);
          g.set({ group: x.group, peer: l.peer, direction: 'in' }, l.wire.bytesIn);
        }
    },
  );
  gauge(
    'tandem_records_per_second',
    'Records per second over the last 5 s (captured or received; applied)',
    ['group', 'stage'],
    (g, s) => {
      // A rate not known yet (a group that just took its role) has no sample, not a 0.
      for (const x of s.groups) {
        const stage = x.role === 'primary' ? 'captured' : 'received';
        if (x.rates.capturedPerSec !== null) g.set({ group: x.group, stage }, x.rates.capturedPerSec);
        if (x.rates.appliedPerSec !== null)
          g.set({ group: x.group, stage: 'applied' }, x.rates.appliedPerSec);
      }
    },
  );
  gauge('tandem_wire_bytes_per_second', 'Wire bytes per second over the last 5 s', ['group'], (g, s) => {
    for (const x of s.groups)
      if (x.rates.wireBytesPerSec !== null) g.set({ group: x.group }, x.rates.wireBytesPerSec);
  });
  gauge('tandem_journal_bytes', 'Bytes of journal segments on disk', ['group'], (g, s) => {
    for (const x of s.groups) g.set({ group: x.group }, x.journal.bytes);
  });
  gauge('tandem_journal_segments', 'Journal segment files on disk', ['group'], (g, s) => {
    for (const x of s.groups) g.set({ group: x.group }, x.journal.segments);
  });
  gauge(
    'tandem_fenced',
    "The group's database on this node refuses application writes (1) or takes them (0)",
    ['group', 'role'],
    (g, s) => {
      for (const x of s.groups) g.set({ group: x.group, role: x.role }, x.fenced ? 1 : 0);
    },
  );
  gauge(
    'tandem_lease_valid_seconds',
    'Primary with a witness: how long its database may take writes without hearing the quorum again',
    ['group'],
    (g, s) => {
      for (const x of s.groups) if (x.lease) g.set({ group: x.group }, x.lease.validMs / 1000);
    },
  );
  gauge(
    'tandem_primary_heard_seconds',
    'Backup: seconds since anything came from its primary',
    ['group'],
    (g, s) => {
      for (const x of s.groups)
        if (x.heardMsAgo !== undefined && x.heardMsAgo !== null)
          g.set({ group: x.group }, x.heardMsAgo / 1000);
    },
  );
  gauge(
    'tandem_virtual_switch',
    'A virtual switch is on at this backup (1) or not (0)',
    ['group'],
    (g, s) => {
      for (const x of s.groups) if (x.role === 'backup') g.set({ group: x.group }, x.virtual ? 1 : 0);
    },
  );
  gauge('tandem_sync_degraded', 'Sync group running degraded to async (1) or not (0)', ['group'], (g, s) => {
    for (const x of s.groups)
      if (x.mode === 'sync' && x.role === 'primary') g.set({ group: x.group }, x.degraded ? 1 : 0);
  });
  return registry;
}
