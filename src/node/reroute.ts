/**
 * Reroute hooks: after a switchover or failover, tell whatever routes clients (a load
 * balancer, DNS, a service registry) where the primary is now. `groups.<g>.reroute.command` runs
 * in a shell with the new primary in TANDEM_* variables; `reroute.webhook` gets a POST with the
 * same facts as JSON. Both are bounded by `reroute.timeout`; a failing hook is reported, never
 * undoes the role change.
 */
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';
import type { Config, Endpoint, GroupConfig } from '../config/index.js';

export interface RerouteFacts {
  group: string;
  /** The node that is primary now, and the one before. */
  primary: string;
  previous: string;
  epoch: number;
  /** `switchover` or `failover`. */
  reason: string;
}

export interface HookResult {
  hook: 'command' | 'webhook';
  ok: boolean;
  ms: number;
  detail: string;
}

/** The endpoint as written in the config (never holds a password: the config refuses those). */
export function endpointText(e: Endpoint): string {
  return e.engine === 'sqlite' ? `sqlite:${e.path}` : e.url;
}

export async function runReroute(
  config: Config,
  g: GroupConfig,
  facts: RerouteFacts,
  log: Logger,
): Promise<HookResult[]> {
  const node = config.nodes[facts.primary]!;
  const payload = {
    cluster: config.cluster,
    ...facts,
    endpoint: endpointText(g.endpoints[facts.primary]!),
    listen: `${node.listen.host}:${node.listen.port}`,
    admin: `${node.admin.host}:${node.admin.port}`,
  };
  const runs: Promise<HookResult>[] = [];
  if (g.reroute.command) runs.push(runCommand(g.reroute.command, payload, g.reroute.timeoutMs, config.dir));
  if (g.reroute.webhook) runs.push(postWebhook(g.reroute.webhook, payload, g.reroute.timeoutMs));
  const results = await Promise.all(runs);
  for (const r of results) {
    if (r.ok) log.info({ group: g.name, ...r }, 'reroute hook done');
    else log.error({ group: g.name, ...r }, 'REROUTE HOOK FAILED: clients may still use the old primary');
  }
  return results;
}

function runCommand(
  command: string,
  payload: Record<string, string | number>,
  timeoutMs: number,
  cwd: string,
): Promise<HookResult> {
  const started = performance.now();
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(payload)) env[`TANDEM_${k.toUpperCase()}`] = String(v);
  return new Promise((resolve) => {
    const child = spawn(command, { shell: true, cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (b: Buffer) => {
      output = (output + b.toString()).slice(-2000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ hook: 'command', ok: false, ms: ms(started), detail: err.message });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const last = output.trim().split('\n').pop() ?? '';
      resolve({
        hook: 'command',
        ok: code === 0,
        ms: ms(started),
        detail:
          code === 0
            ? last || 'exit 0'
            : signal
              ? `killed after ${timeoutMs} ms (reroute.timeout)`
              : `exit ${code}${last ? `: ${last}` : ''}`,
      });
    });
  });
}

async function postWebhook(
  url: string,
  payload: Record<string, string | number>,
  timeoutMs: number,
): Promise<HookResult> {
  const started = performance.now();
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(payload),
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.arrayBuffer();
    return { hook: 'webhook', ok: res.ok, ms: ms(started), detail: `HTTP ${res.status}` };
  } catch (err) {
    return { hook: 'webhook', ok: false, ms: ms(started), detail: (err as Error).message };
  }
}

function ms(since: number): number {
  return Math.round(performance.now() - since);
}
