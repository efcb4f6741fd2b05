/** `tandem virtual-switch start|end`: a backup made writable for a test, then reverted. */
import type { Config } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import { type AdminReply, adminRequest, json, noAnswer } from './admin-client.js';
import { type AdminError, adminAddress, adminError, fetchStatus, requireGroup } from './status.js';

export async function virtualSwitch(
  config: Config,
  group: string,
  op: 'start' | 'end',
  on: string | undefined,
): Promise<string> {
  const g = requireGroup(config, group);
  let node = on;
  if (!node && op === 'end') {
    // The backup whose status says a virtual switch is on.
    const answers = await fetchStatus(config);
    node = answers.find((a) => a.status?.groups.some((s) => s.group === group && s.virtual))?.node;
    if (!node)
      throw new TandemError(
        'SWITCH_FAILED',
        `no node reports a virtual switch of group ${group}`,
        'Name it: --on NODE',
      );
  }
  if (!node || !Object.hasOwn(g.endpoints, node)) {
    throw new TandemError(
      'NODE_UNKNOWN',
      `--on ${node ?? '(missing)'}: not a node of group ${group} (nodes: ${Object.keys(g.endpoints).join(', ')})`,
      'Name the backup to test on: --on NODE',
    );
  }
  const n = config.nodes[node]!;
  const admin = adminAddress(n);
  let reply: AdminReply;
  try {
    reply = await adminRequest(
      `http://${admin}/v1/groups/${encodeURIComponent(group)}/virtual-switch/${op}`,
      { method: 'POST' },
    );
  } catch (err) {
    throw new TandemError('NODE_UNREACHABLE', `${node} does not answer (${noAnswer(err)})`, `Start it`);
  }
  const body = json<AdminError | Record<string, unknown>>(reply);
  if (!reply.ok) throw adminError(body as AdminError, node);
  const r = body as { since?: number; reverted?: number; held?: number; ms: number };
  return op === 'start'
    ? `virtual switch of group ${group} on ${node}: it takes test writes now (apply holds at position ${r.since}; the primary goes on). End it with: tandem virtual-switch end ${group}`
    : `virtual switch of group ${group} on ${node} ended in ${r.ms} ms: ${r.reverted} test row changes reverted, ${r.held} held records applied from now on; the backup follows the primary again`;
}
