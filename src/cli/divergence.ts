/** `tandem divergence`: an old primary's divergence reports, through its admin API. */
import type { Config } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import { type AdminReply, adminRequest, json, noAnswer } from './admin-client.js';
import { type AdminError, adminAddress, adminError, requireGroup } from './status.js';

interface Summary {
  id: string;
  node: string;
  epoch: number;
  primary: string;
  newEpoch: number;
  fork: number;
  createdAt: string;
  transactions: number;
  changes: number;
  resolved: { how: string; at: string; detail: string } | null;
}

export async function divergence(
  config: Config,
  group: string,
  o: { node: string; show?: string; format?: string; reapply?: string; discard?: string },
): Promise<string> {
  requireGroup(config, group);
  const n = config.nodes[o.node];
  if (!n) {
    throw new TandemError(
      'NODE_UNKNOWN',
      `--node ${o.node}: not a node of ${config.file}`,
      `Name the old primary: one of ${Object.keys(config.nodes).join(', ')}`,
    );
  }
  const base = `http://${adminAddress(n)}/v1/groups/${encodeURIComponent(group)}/divergence`;
  const call = async (path: string, method: 'GET' | 'POST' = 'GET'): Promise<AdminReply> => {
    try {
      return await adminRequest(`${base}${path}`, { method });
    } catch (err) {
      throw new TandemError(
        'NODE_UNREACHABLE',
        `${o.node} does not answer on its admin address (${noAnswer(err)})`,
        `Start it: tandem run --node ${o.node}`,
      );
    }
  };
  const body = (reply: AdminReply) => {
    const answer = json<AdminError | Record<string, unknown>>(reply);
    if (!reply.ok) throw adminError(answer as AdminError, o.node);
    return answer;
  };
  const action = o.reapply ? 'reapply' : o.discard ? 'discard' : null;
  if (action) {
    const id = (o.reapply ?? o.discard)!;
    const r = body(await call(`/${encodeURIComponent(id)}/${action}`, 'POST')) as {
      resolved: Summary['resolved'];
    };
    return `${id}: ${r.resolved!.how}${r.resolved!.detail ? ` (${r.resolved!.detail})` : ''}`;
  }
  if (o.show) {
    const reply = await call(`/${encodeURIComponent(o.show)}${o.format === 'sql' ? '?format=sql' : ''}`);
    if (o.format === 'sql') {
      if (!reply.ok) body(reply);
      return reply.text.trimEnd();
    }
    return JSON.stringify(body(reply), null, 2);
  }
  const { reports } = body(await call('')) as { reports: Summary[] };
  if (reports.length === 0) return `node ${o.node} holds no divergence report for group ${group}`;
  const lines = [`divergence reports of group ${group} on node ${o.node}:`];
  for (const r of reports) {
    lines.push(
      `  ${r.id}  ${r.transactions} transactions (${r.changes} row changes) committed at epoch ${r.epoch} after position ${r.fork}, never on ${r.primary} (epoch ${r.newEpoch}); ${r.resolved ? `${r.resolved.how} ${r.resolved.at}` : 'OPEN'}`,
    );
  }
  lines.push(
    'Show one with --show ID [--format sql], then --reapply ID (writes them on the primary) or --discard ID.',
  );
  return lines.join('\n');
}
