/**
 * A planned switchover, run by the group's primary (docs/switchover.md):
 *
 *   prepare    the new primary checks it can take over (seeded, its database can be a source)
 *              and catches up with the journal, still unfenced
 *   fence      this database refuses application writes (writers ended or refused)
 *   drain      everything committed is journaled; the new primary applies up to it
 *   verify     (optional) row counts and checksums of every table compared on both sides
 *   sequences  sequence values journaled; the new primary applies them: the fence position
 *   lease      (with a witness or etcd) the quorum gives the new primary the lease at epoch + 1
 *   promote    the new primary records epoch + 1, starts capturing, lifts its fence
 *   reverse    this node becomes its backup: capture removed, apply from the fence position
 *   reroute    hooks tell clients where the primary is
 *
 * Invariants
 * - Before `promote` is sent, any failure lifts this node's fence: it serves as before.
 * - `promote` is recorded here (roles.json, `pending`) before it is sent. An answer that says
 *   the new primary recorded its epoch makes this node a backup; an error answer means it did
 *   not, and this node serves on; no answer leaves this node fenced until the new primary can
 *   be asked (node.ts #resolve). Never two primaries that take writes.
 * - The write-unavailable window is measured here, from the start of the fence to the answer of
 *   the promotion (the new primary answers once it takes writes): no clocks are compared.
 */
import type { TableSums } from '../adapters/index.js';
import { TandemError } from '../core/errors.js';
import { failpoint } from '../core/failpoint.js';
import { monoNow } from '../core/mono.js';
import { ControlRefused, type LinkSender } from '../link/sender.js';
import { quorumOf, type TandemNode } from './node.js';
import { type HookResult, runReroute } from './reroute.js';

export interface SwitchStep {
  step: string;
  ms: number;
  detail: string;
}

export interface SwitchReport {
  group: string;
  from: string;
  to: string;
  epoch: { from: number; to: number };
  /** The fence position: the last record of the old primary's epoch. */
  position: number;
  ok: boolean;
  error: string | null;
  steps: SwitchStep[];
  /** From the start of the fence until the new primary took writes (null if it never did). */
  unavailableMs: number | null;
  hooks: HookResult[];
}

export async function switchover(
  node: TandemNode,
  group: string,
  o: { to?: string; verify?: boolean },
): Promise<SwitchReport> {
  const g = node.config.groups[group];
  if (!g || !Object.hasOwn(g.endpoints, node.name)) {
    throw new TandemError(
      'GROUP_UNKNOWN',
      `node ${node.name} takes no part in a group "${group}"`,
      `Name one of: ${Object.keys(node.config.groups).join(', ')}`,
    );
  }
  const sg = node.sources.get(group);
  const role = node.role(group);
  if (!sg) {
    throw new TandemError(
      'SWITCH_FAILED',
      `node ${node.name} is not the primary of group ${group} (the primary is ${role.primary}, epoch ${role.epoch})`,
      'Run the switchover against the primary: `tandem switchover` finds it from the config',
    );
  }
  if (sg.state !== 'running') {
    throw new TandemError(
      'SWITCH_FAILED',
      `group ${group} is ${sg.state} on ${node.name}`,
      'See `tandem status`',
    );
  }
  if (sg.switching) {
    throw new TandemError(
      'SWITCH_FAILED',
      `a switchover of group ${group} to ${sg.switching.to} is already running`,
      'Wait for it to end',
    );
  }
  const peers = sg.peers;
  const to = o.to ?? (peers.length === 1 ? peers[0]! : undefined);
  if (!to) {
    throw new TandemError(
      'SWITCH_FAILED',
      `group ${group} has ${peers.length} backups (${peers.join(', ')})`,
      `Name the new primary: --to ${peers[0]}`,
    );
  }
  const sender = sg.sender(to);
  if (!sender) {
    throw new TandemError(
      'SWITCH_FAILED',
      `${to} is not a backup of group ${group} (backups: ${peers.join(', ')})`,
      `Name one of them: --to ${peers[0]}`,
    );
  }
  if (sender.state !== 'streaming') {
    throw new TandemError(
      'SWITCH_FAILED',
      `the link to ${to} is ${sender.state}${sender.lastError ? ` (${sender.lastError})` : ''}, not streaming`,
      `Start ${to} or fix the link, then run the switchover again (\`tandem status\` shows the link)`,
    );
  }

  const engines = new Set([g.endpoints[node.name]!.engine, g.endpoints[to]!.engine]);
  if (engines.size > 1) {
    throw new TandemError(
      'SWITCH_FAILED',
      `group ${group} replicates ${g.endpoints[node.name]!.engine} on ${node.name} to ${g.endpoints[to]!.engine} on ${to}; a switchover between engines is not supported yet`,
      'Keep the primary where it is, or use a group whose nodes run the same engine',
    );
  }
  const log = node.log.child({ group, switchover: to });
  const settings = g.switchover;
  const epoch = role.epoch;
  const report: SwitchReport = {
    group,
    from: node.name,
    to,
    epoch: { from: epoch, to: epoch + 1 },
    position: 0,
    ok: false,
    error: null,
    steps: [],
    unavailableMs: null,
    hooks: [],
  };
  sg.switching = { to, step: 'prepare', startedAt: new Date().toISOString(), fenced: false };
  const step = async (name: string, run: () => Promise<string>) => {
    if (sg.switching) sg.switching.step = name;
    const t0 = performance.now();
    const detail = await run();
    const ms = Math.round(performance.now() - t0);
    report.steps.push({ step: name, ms, detail });
    log.info({ step: name, ms, detail }, 'switchover step');
  };
  log.warn({ from: node.name, epoch }, 'switchover starting');
  let fenceStart = 0;
  let promoteSent = false;
  try {
    await step('prepare', async () => {
      const r = await sender.control({ op: 'prepare', epoch }, 10_000);
      // Catch up before fencing: what is fenced waits only for what was written meanwhile.
      const behind = sg.journal.lastPosition - Number(r.applied);
      await appliedUpTo(sender, sg.journal.lastPosition, settings.drainTimeoutMs);
      return `${to} can take over; it was ${behind} record${behind === 1 ? '' : 's'} behind and has caught up`;
    });
    fenceStart = performance.now();
    await step('fence', async () => {
      sg.switching!.fenced = true;
      await sg.capture.fence({ kind: 'switching', group, to }, settings.fenceTimeoutMs);
      return `${node.name} refuses application writes`;
    });
    await step('drain', async () => {
      const position = await sg.capture.barrier();
      await appliedUpTo(sender, position, settings.drainTimeoutMs);
      return `${to} applied everything up to position ${position}`;
    });
    if (o.verify ?? settings.verify) {
      await step('verify', async () => {
        const [mine, theirs] = await Promise.all([
          node.env.tableChecksums(g.endpoints[node.name]!, g),
          sender.control({ op: 'verify' }, 600_000) as Promise<unknown> as Promise<TableSums>,
        ]);
        return compareSums(mine, theirs, node.name, to);
      });
    }
    await step('sequences', async () => {
      const n = await sg.capture.handOverSequences();
      report.position = sg.journal.lastPosition;
      await appliedUpTo(sender, report.position, settings.drainTimeoutMs);
      return `${n} sequence value${n === 1 ? '' : 's'} handed over; fence position ${report.position}`;
    });
    const quorum = quorumOf(g);
    if (quorum) {
      // The quorum hands this node's lease to the new primary at epoch + 1 first: otherwise a
      // failover it granted meanwhile (this node's lease lapsing) would make a second primary
      // of that epoch.
      await step('lease', async () => {
        const r = await node.askWitness(g, { op: 'handover', group, node: node.name, to, epoch });
        if (r.granted !== true)
          throw new Error(`the ${quorum} refuses to hand the lease over: ${String(r.reason)}`);
        return `the ${quorum} gives ${to} the lease at epoch ${epoch + 1}`;
      });
    }
    node.setRole(group, { ...role, pending: { to, epoch: epoch + 1, position: report.position } });
    failpoint('switchover-after-pending');
    promoteSent = true;
    await step('promote', async () => {
      const r = await sender.control(
        { op: 'promote', epoch: epoch + 1, position: report.position },
        settings.drainTimeoutMs + 60_000,
      );
      report.unavailableMs = Math.round(performance.now() - fenceStart);
      return r.error
        ? `${to} recorded epoch ${epoch + 1} but failed to start as primary: ${String(r.error)}`
        : `${to} is primary at epoch ${epoch + 1} and takes writes`;
    });
  } catch (err) {
    const failed = sg.switching?.step ?? '?';
    sg.switching = null;
    report.error = (err as Error).message;
    if (promoteSent && !(err instanceof ControlRefused)) {
      // No answer: the new primary may or may not have taken over. Stay fenced; ask it.
      report.error = `[SWITCH_UNKNOWN] the promotion of ${to} went unanswered (${report.error}). ${node.name} stays fenced until ${to} says whether it took over; \`tandem status\` shows the outcome`;
      log.error({ err: report.error }, 'switchover in doubt');
      node.inDoubt(group);
      return report;
    }
    // The new primary did not take over: this node serves on.
    if (promoteSent) node.setRole(group, { epoch: role.epoch, primary: role.primary, since: role.since });
    await sg.capture
      .unfence()
      .catch((e: Error) =>
        log.error({ err: e.message }, 'LIFTING THE FENCE FAILED after an aborted switchover'),
      );
    log.error({ err: report.error, step: failed }, 'switchover aborted; the old primary serves on');
    report.error = `[SWITCH_FAILED] ${failed} failed: ${report.error}. ${node.name} serves as primary again (fence lifted)`;
    return report;
  }
  sg.switching = null;
  await step('reverse', async () => {
    await node.demote(group, epoch + 1, to, report.position);
    const deadline = monoNow() + 15_000;
    while (!node.targets.get(group)?.connected && monoNow() < deadline)
      await new Promise((r) => setTimeout(r, 5));
    return node.targets.get(group)?.connected
      ? `${node.name} is a backup of ${to}, streaming from position ${report.position + 1}`
      : `${node.name} is a backup of ${to}; ${to} has not connected yet`;
  });
  await step('reroute', async () => {
    if (!g.reroute.command && !g.reroute.webhook) return 'no hooks configured (groups.<group>.reroute)';
    report.hooks = await runReroute(
      node.config,
      g,
      { group, primary: to, previous: node.name, epoch: epoch + 1, reason: 'switchover' },
      log,
    );
    return report.hooks.map((h) => `${h.hook} ${h.ok ? 'ok' : 'FAILED'} (${h.detail})`).join('; ');
  });
  report.ok = true;
  log.warn({ unavailableMs: report.unavailableMs, position: report.position }, 'switchover done');
  return report;
}

/** Waits until the backup reports `position` applied. */
async function appliedUpTo(sender: LinkSender, position: number, timeoutMs: number): Promise<void> {
  const deadline = monoNow() + timeoutMs;
  while (sender.applied < position) {
    if (sender.state !== 'streaming') throw new Error(`the link to ${sender.peer} is ${sender.state}`);
    if (monoNow() > deadline) {
      throw new Error(
        `${sender.peer} applied up to ${sender.applied} of ${position} within ${timeoutMs} ms (groups.<group>.switchover.drain_timeout)`,
      );
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Row counts (and checksums, between the same engines) of every table; throws on a difference. */
export function compareSums(mine: TableSums, theirs: TableSums, me: string, them: string): string {
  const sameEngine = mine.engine === theirs.engine;
  const other = new Map(theirs.tables.map((t) => [t.table, t]));
  const bad: string[] = [];
  for (const t of mine.tables) {
    const o = other.get(t.table);
    if (!o) bad.push(`${t.table}: missing on ${them}`);
    else if (o.rows !== t.rows) bad.push(`${t.table}: ${t.rows} rows on ${me}, ${o.rows} on ${them}`);
    else if (sameEngine && o.sum !== t.sum) bad.push(`${t.table}: same row count, different contents`);
    other.delete(t.table);
  }
  for (const t of other.keys()) bad.push(`${t}: on ${them} only`);
  if (bad.length > 0) throw new Error(`verification found differences: ${bad.join('; ')}`);
  const rows = mine.tables.reduce((a, t) => a + t.rows, 0);
  return `${mine.tables.length} tables, ${rows} rows equal${sameEngine ? ' (counts and checksums)' : ' (row counts; engines differ, so no checksums)'}`;
}
