/**
 * A tandem.yaml for nodes on free loopback ports, in a new temporary folder: the one way the
 * demo, the benchmarks and the tests write their configs.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, NodeProcess } from '../demo/procs.js';

export interface ClusterConfigOptions {
  cluster: string;
  group: string;
  /** Node name to endpoint (`sqlite:./data/x.db` or a postgres URL); the first node is the primary. */
  endpoints: Record<string, string>;
  mode?: 'async' | 'sync';
  /** YAML flow sequence of table patterns. */
  tables?: string;
  /** The `security:` block; default: the shared secret from TANDEM_SECRET. */
  security?: string;
  /** More lines of the group, each indented by four spaces. */
  groupExtra?: string;
  /** Prefix of the temporary folder's name. */
  prefix?: string;
  /** Nodes with no endpoint (a witness). */
  extraNodes?: string[];
  /** Per node, the address it listens and serves its admin API on (default 127.0.0.1). */
  hosts?: Record<string, string>;
  /** Per node, a command prefix for `proc` (a network namespace). */
  wrap?: Record<string, string[]>;
}

export interface ClusterConfig {
  dir: string;
  file: string;
  ports: Record<string, { listen: number; admin: number }>;
  /** `host:port` of a node's admin API. */
  admin(node: string): string;
  /** A `tandem run` child process for `node` (not started), logging to `<dir>/<node>.log`. */
  proc(node: string, env: NodeJS.ProcessEnv): NodeProcess;
}

export async function writeClusterConfig(o: ClusterConfigOptions): Promise<ClusterConfig> {
  const dir = mkdtempSync(path.join(os.tmpdir(), o.prefix ?? 'tandem-'));
  mkdirSync(path.join(dir, 'data'));
  const names = Object.keys(o.endpoints);
  const all = [...names, ...(o.extraNodes ?? [])];
  const ports: ClusterConfig['ports'] = {};
  for (const n of all) ports[n] = { listen: await freePort(), admin: await freePort() };
  const host = (n: string) => o.hosts?.[n] ?? '127.0.0.1';
  const file = path.join(dir, 'tandem.yaml');
  writeFileSync(
    file,
    `cluster: ${o.cluster}
${o.security ?? 'security:\n  secret: env:TANDEM_SECRET'}
nodes:
${all.map((n) => `  ${n}: { listen: ${host(n)}:${ports[n]!.listen}, admin: ${host(n)}:${ports[n]!.admin}, state: ./state/${n} }`).join('\n')}
groups:
  ${o.group}:
    kind: sql
    mode: ${o.mode ?? 'async'}
    primary: ${names[0]}
    endpoints:
${names.map((n) => `      ${n}: "${o.endpoints[n]}"`).join('\n')}
    tables: ${o.tables ?? '["*"]'}
${o.groupExtra ?? ''}
`,
  );
  const admin = (n: string) => `${host(n)}:${ports[n]!.admin}`;
  return {
    dir,
    file,
    ports,
    admin,
    proc: (n, env) =>
      new NodeProcess({
        name: n,
        config: file,
        logFile: path.join(dir, `${n}.log`),
        admin: admin(n),
        env,
        wrap: o.wrap?.[n],
      }),
  };
}
