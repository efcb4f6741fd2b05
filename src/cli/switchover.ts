/** `tandem switchover`: finds the group's primary through the admin APIs and asks it to switch. */
import type { Config } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import type { SwitchReport } from '../node/switchover.js';
import { type AdminReply, adminRequest, json, noAnswer } from './admin-client.js';
import { type AdminError, adminError, fetchStatus, requireGroup } from './status.js';

export async function requestSwitchover(
  config: Config,
  group: string,
  o: { to?: string; verify?: boolean },
): Promise<SwitchReport> {
  const g = requireGroup(config, group);
  if (o.to !== undefined && !Object.hasOwn(g.endpoints, o.to)) {
    throw new TandemError(
      'NODE_UNKNOWN',
      `--to ${o.to}: not a node of group ${group} (nodes: ${Object.keys(g.endpoints).join(', ')})`,
      'Name a backup of the group',
    );
  }
  const answers = await fetchStatus(config);
  const primaries = answers
    .flatMap((a) => (a.status?.groups ?? []).filter((s) => s.group === group).map((s) => ({ a, s })))
    .filter(({ s }) => s.role === 'primary' && s.state === 'running')
    .sort((x, y) => y.s.epoch - x.s.epoch);
  const primary = primaries[0];
  if (!primary) {
    const down = answers.filter((a) => !a.reachable).map((a) => `${a.node} (${a.error})`);
    throw new TandemError(
      'NODE_UNREACHABLE',
      `no node runs group ${group} as primary${down.length ? `; not reachable: ${down.join(', ')}` : ''}`,
      'Start the primary (`tandem run`) and check `tandem status`; when the primary is lost, use failover',
    );
  }
  let reply: AdminReply;
  try {
    reply = await adminRequest(
      `http://${primary.a.admin}/v1/groups/${encodeURIComponent(group)}/switchover`,
      {
        method: 'POST',
        body: { to: o.to, verify: o.verify },
      },
    );
  } catch (err) {
    throw new TandemError(
      'NODE_UNREACHABLE',
      `the primary ${primary.a.node} stopped answering during the switchover (${noAnswer(err)})`,
      'Check `tandem status`: a primary that restarts in the middle of a switchover asks the backup whether it took over before it serves again',
    );
  }
  const body = json<SwitchReport | AdminError>(reply);
  // Refused before anything was done (the primary checks first).
  if ('error' in body && !('steps' in body)) throw adminError(body, primary.a.node);
  return body as SwitchReport;
}

export function renderSwitch(r: SwitchReport): string {
  const lines = [
    `switchover of group ${r.group}: ${r.from} -> ${r.to} (epoch ${r.epoch.from} -> ${r.epoch.to})`,
  ];
  const width = Math.max(...r.steps.map((s) => s.step.length), 4);
  for (const s of r.steps)
    lines.push(`  ${s.step.padEnd(width)}  ${String(s.ms).padStart(6)} ms  ${s.detail}`);
  if (r.unavailableMs !== null)
    lines.push(
      `writes unavailable: ${r.unavailableMs} ms (from the fence on ${r.from} until ${r.to} took writes)`,
    );
  lines.push(r.ok ? `done: ${r.to} is the primary; ${r.from} streams from it` : `NOT DONE: ${r.error}`);
  return lines.join('\n');
}
