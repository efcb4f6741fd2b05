/** `tandem status`: asks every node's admin API and prints one line per group and node. */
import type { Config, GroupConfig, NodeConfig } from '../config/index.js';
import { type ErrorCode, TandemError } from '../core/errors.js';
import { rateText, tableBars } from '../link/seed-progress.js';
import type { NodeStatus } from '../node/status.js';
import { adminRequest, json, noAnswer } from './admin-client.js';

export interface NodeAnswer {
  node: string;
  admin: string;
  reachable: boolean;
  error: string | null;
  status: NodeStatus | null;
}

/**
 * Every node's status from its admin API; `own`: the asking node's, known without a request
 * (the dashboard's server).
 */
export async function fetchStatus(config: Config, timeoutMs = 2000, own?: NodeStatus): Promise<NodeAnswer[]> {
  return Promise.all(
    Object.values(config.nodes).map(async (n: NodeConfig) => {
      const admin = adminAddress(n);
      if (own?.node === n.name) return { node: n.name, admin, reachable: true, error: null, status: own };
      try {
        const reply = await adminRequest(`http://${admin}/status`, { timeoutMs });
        if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
        return { node: n.name, admin, reachable: true, error: null, status: json<NodeStatus>(reply) };
      } catch (err) {
        return { node: n.name, admin, reachable: false, error: noAnswer(err, timeoutMs), status: null };
      }
    }),
  );
}

/** The group named on the command line, or GROUP_UNKNOWN. */
export function requireGroup(config: Config, group: string): GroupConfig {
  const g = config.groups[group];
  if (!g) {
    throw new TandemError(
      'GROUP_UNKNOWN',
      `${config.file} has no group "${group}"`,
      `Name one of: ${Object.keys(config.groups).join(', ')}`,
    );
  }
  return g;
}

/** `host:port` of a node's admin API (IPv6 in brackets). */
export function adminAddress(n: NodeConfig): string {
  return `${n.admin.host.includes(':') ? `[${n.admin.host}]` : n.admin.host}:${n.admin.port}`;
}

/** A refusal of an admin API: a TandemError's parts. */
export interface AdminError {
  error: string;
  code?: string;
  what?: string;
  fix?: string;
}

/** The TandemError an admin API answered with, as the CLI reports it. */
export function adminError(e: AdminError, node: string): TandemError {
  return e.code && e.what && e.fix
    ? new TandemError(e.code as ErrorCode, `${node}: ${e.what}`, e.fix)
    : new TandemError('NODE_UNREACHABLE', `${node} answered: ${e.error}`, 'See its log');
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** What `tandem status` and the dashboard show: a row per group and node, then notes. */
export interface StatusTable {
  head: string[];
  rows: string[][];
  notes: string[];
}

export function statusTable(answers: NodeAnswer[]): StatusTable {
  const head = [
    'GROUP',
    'NODE',
    'ROLE',
    'EPOCH',
    'STATE',
    'LINK',
    'CAPTURED',
    'DURABLE@TARGET',
    'APPLIED',
    'LAG rec',
    'LAG bytes',
    'LAG ms',
    'MODE',
  ];
  const rows: string[][] = [];
  const notes: string[] = [];
  for (const a of answers) {
    if (!a.reachable || !a.status) {
      rows.push([
        '*',
        a.node,
        '?',
        '?',
        'UNREACHABLE',
        `admin ${a.admin}: ${a.error}`,
        '',
        '',
        '',
        '',
        '',
        '',
        '',
      ]);
      continue;
    }
    for (const g of a.status.groups) {
      const links = g.links
        .map(
          (l) =>
            `${l.peer}:${l.state}${l.seed ? ` ${Math.round((100 * l.seed.rows) / Math.max(1, l.seed.total))}%` : ''}`,
        )
        .join(',');
      const lag = g.links.reduce(
        (m, l) => ({
          records: Math.max(m.records, l.lag.records),
          bytes: Math.max(m.bytes, l.lag.bytes),
          ms: Math.max(m.ms, l.lag.ms),
        }),
        { records: 0, bytes: 0, ms: 0 },
      );
      // A primary that refuses writes (switchover under way, newer epoch elsewhere) says so.
      const role = g.role === 'primary' && g.fenced ? 'primary FENCED' : g.role;
      rows.push([
        g.group,
        a.node,
        role,
        String(g.epoch),
        g.state,
        links || '-',
        String(g.positions.captured),
        String(g.positions.durableAtTarget),
        String(g.positions.applied),
        String(lag.records),
        formatBytes(lag.bytes),
        String(lag.ms),
        g.degraded ? `${g.mode} DEGRADED` : g.mode,
      ]);
      if (g.error) notes.push(`${g.group}@${a.node}: ${g.error}`);
      if (g.restart && g.state === 'failed')
        notes.push(
          `${g.group}@${a.node}: restarted ${g.restart.attempts} time(s) after failing; ${g.restart.nextInMs === null ? 'restarting now' : `next attempt in ${Math.ceil(g.restart.nextInMs / 1000)} s`}`,
        );
      if (g.role === 'primary' && g.lease?.witness === 'unreachable')
        notes.push(
          `${g.group}@${a.node}: the quorum (witness or etcd) does not answer: no automatic failover until it does; this primary keeps taking writes while every backup hears it`,
        );
      if (g.switching)
        notes.push(
          `${g.group}@${a.node}: switchover to ${g.switching.to} under way since ${g.switching.startedAt}, step ${g.switching.step}`,
        );
      if (
        g.role === 'backup' &&
        g.primary &&
        !g.links.some((l) => l.peer === g.primary && l.state === 'connected')
      )
        notes.push(
          `${g.group}@${a.node}: backup of ${g.primary} (epoch ${g.epoch}), which is not streaming to it`,
        );
      if (g.capture) notes.push(`${g.group}@${a.node}: capture ${g.capture}`);
      for (const l of g.links)
        if (l.lastError) notes.push(`${g.group}@${a.node} -> ${l.peer}: ${l.lastError}`);
      for (const l of g.links) {
        if (!l.seed) {
          // Between WELCOME and the plan: the snapshot is being taken, no figures yet.
          if (g.role === 'primary' && l.state === 'seeding')
            notes.push(
              `${g.group}@${a.node} -> ${l.peer}: preparing a seed (taking the snapshot, planning chunks)`,
            );
          continue;
        }
        const sd = l.seed;
        notes.push(
          `${g.group}@${a.node} ${g.role === 'primary' ? '->' : '<-'} ${l.peer}: seeding at position ${sd.position}${sd.resumed > 0 ? ` (resumed at ${sd.resumed.toLocaleString('en-US')} rows)` : ''}, ${rateText(sd)}`,
        );
        for (const line of tableBars(sd)) notes.push(`  ${line}`);
      }
    }
  }
  return { head, rows, notes };
}

export function renderStatus(config: Config, answers: NodeAnswer[]): string {
  const { head, rows, notes } = statusTable(answers);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (c ?? '').padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [`cluster ${config.cluster}`, line(head), ...rows.map(line), ...notes.map((n) => `  ${n}`)].join(
    '\n',
  );
}
