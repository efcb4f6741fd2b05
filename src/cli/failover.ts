/** `tandem failover`: asks the backup named by --to to take over a group whose primary is gone. */
import type { Config } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import type { FailoverReport } from '../node/status.js';
import { type AdminReply, adminRequest, json, noAnswer } from './admin-client.js';
import { type AdminError, adminAddress, adminError, requireGroup } from './status.js';

export async function requestFailover(
  config: Config,
  group: string,
  o: { to: string; force?: boolean },
): Promise<FailoverReport> {
  const g = requireGroup(config, group);
  if (!Object.hasOwn(g.endpoints, o.to)) {
    throw new TandemError(
      'NODE_UNKNOWN',
      `--to ${o.to}: not a node of group ${group} (nodes: ${Object.keys(g.endpoints).join(', ')})`,
      'Name the backup to promote',
    );
  }
  const n = config.nodes[o.to]!;
  const admin = adminAddress(n);
  let reply: AdminReply;
  try {
    reply = await adminRequest(`http://${admin}/v1/groups/${encodeURIComponent(group)}/failover`, {
      method: 'POST',
      body: { force: o.force === true },
    });
  } catch (err) {
    throw new TandemError(
      'NODE_UNREACHABLE',
      `${o.to} does not answer on its admin address ${admin} (${noAnswer(err)})`,
      `Start it (tandem run --node ${o.to}) or name another backup`,
    );
  }
  const body = json<FailoverReport | AdminError>(reply);
  if ('error' in body) throw adminError(body, o.to);
  return body;
}

export function renderFailover(r: FailoverReport): string {
  const lines = [
    `failover of group ${r.group}: ${r.from} -> ${r.to} (epoch ${r.epoch.from} -> ${r.epoch.to}), ${r.how}, allowed by ${r.quorum}`,
    `  ${r.from} last heard ${r.heardMsAgo} ms before the failover began`,
    `  promotion ${r.promoteMs} ms: ${r.to} took over at position ${r.position} and takes writes`,
    `writes unavailable: about ${r.unavailableMs} ms (from ${r.from}'s last sign of life until ${r.to} took writes)`,
  ];
  for (const h of r.hooks)
    lines.push(`  reroute ${h.hook}: ${h.ok ? 'ok' : 'FAILED'} (${h.detail}, ${h.ms} ms)`);
  lines.push(
    `${r.from} refuses writes once it learns of epoch ${r.epoch.to}; it must rejoin as a backup (see docs/failover.md)`,
  );
  return lines.join('\n');
}
