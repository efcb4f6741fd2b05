/**
 * Test clusters: a temp folder with tandem.yaml for two nodes on free loopback ports, and
 * helpers to run nodes as real processes (the built CLI in dist/) or in this process.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { afterEach, expect } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { CLI, type NodeProcess } from '../../src/demo/procs.js';
import { Journal } from '../../src/journal/index.js';
import { type Hello, MsgType, PROTOCOL_VERSION } from '../../src/link/messages.js';
import type { NodeEnv } from '../../src/node/env.js';
import { TandemNode } from '../../src/node/node.js';
import type { NodeStatus } from '../../src/node/status.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';

export interface TestCluster {
  dir: string;
  config: string;
  secret: string;
  env: NodeJS.ProcessEnv;
  ports: Record<string, { listen: number; admin: number }>;
  db: (node: string) => string;
  proc: (node: string) => NodeProcess;
  cleanup: () => void;
}

export async function makeCluster(
  opts: {
    nodes?: string[];
    mode?: 'async' | 'sync';
    groupExtra?: string;
    security?: string;
    /** Nodes without an endpoint (a witness). */
    extraNodes?: string[];
  } = {},
): Promise<TestCluster> {
  const nodes = opts.nodes ?? ['east', 'west'];
  const cfg = await writeClusterConfig({
    extraNodes: opts.extraNodes,
    cluster: 'test',
    group: 'shop',
    mode: opts.mode,
    endpoints: Object.fromEntries(nodes.map((n) => [n, `sqlite:./data/${n}.db`])),
    security: opts.security,
    groupExtra: opts.groupExtra,
    prefix: 'tandem-test-',
  });
  const { dir, ports } = cfg;
  const secret = randomBytes(24).toString('hex');
  const env = { ...process.env, TANDEM_SECRET: secret };
  const procs = new Map<string, NodeProcess>();
  return {
    dir,
    config: cfg.file,
    secret,
    env,
    ports,
    db: (n) => path.join(dir, 'data', `${n}.db`),
    proc: (n) => {
      let p = procs.get(n);
      if (!p) {
        p = cfg.proc(n, env);
        procs.set(n, p);
      }
      return p;
    },
    cleanup: () => {
      for (const p of procs.values()) if (p.running) p.child?.kill('SIGKILL');
      if (!process.env.KEEP) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `fn` returns a truthy value or the time is up. */
export async function until<T>(
  what: string,
  fn: () => T | Promise<T>,
  timeoutMs = 20000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    await sleep(25);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** Every row of every user table, in key order, as comparable JSON. */
export function dump(file: string, tables: string[]): Record<string, unknown[]> {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  db.defaultSafeIntegers(true);
  try {
    const out: Record<string, unknown[]> = {};
    for (const t of tables) {
      out[t] = db
        .prepare(`SELECT * FROM "${t}" ORDER BY 1`)
        .raw(true)
        .all()
        .map((r) =>
          JSON.stringify(r, (_k, v) =>
            typeof v === 'bigint' ? `${v}n` : Buffer.isBuffer(v) ? v.toString('hex') : v,
          ),
        );
    }
    return out;
  } finally {
    db.close();
  }
}

/** Waits until the primary reports every captured record applied at every backup, twice in a row. */
export async function waitCaughtUp(primary: NodeProcess, timeoutMs = 30000): Promise<NodeStatus> {
  let prev = -1;
  return until(
    'the backup to catch up',
    async () => {
      const s = await primary.status();
      const g = s?.groups[0];
      if (g?.state !== 'running') return null;
      const done =
        g.positions.applied >= g.positions.captured &&
        g.links.every((l) => l.applied >= g.positions.captured);
      if (done && prev === g.positions.captured) return s;
      prev = done ? g.positions.captured : -1;
      await sleep(100);
      return null;
    },
    timeoutMs,
  );
}

/** Nodes run in the test's own process; `stopAll()` belongs in afterEach/afterAll. */
export class Nodes {
  readonly #list: TandemNode[] = [];
  readonly #log = pino({ level: process.env.TEST_LOG ?? 'silent' });

  async start(config: string, name: string, env?: NodeEnv): Promise<TandemNode> {
    const n = new TandemNode(loadConfig(config), name, this.#log, env);
    this.#list.push(n); // stopped by stopAll even if start fails half-way
    await n.start();
    return n;
  }

  find(name: string): TandemNode {
    const n = this.#list.find((x) => x.name === name);
    if (!n) throw new Error(`no running node ${name}`);
    return n;
  }

  /** Stops one node now (drain `drainMs`) and forgets it. */
  async stop(n: TandemNode, drainMs = 0): Promise<void> {
    this.#list.splice(this.#list.indexOf(n), 1);
    await n.stop(drainMs);
  }

  async stopAll(drainMs = 500): Promise<void> {
    await Promise.all(this.#list.splice(0).map((n) => n.stop(drainMs)));
  }
}

/**
 * For a describe block with one SQLite test cluster at a time and its nodes in this process:
 * `make()` a cluster, `start(node)` its nodes. After each test the nodes stop (draining for
 * `drainMs`) and the cluster's folder is removed.
 */
export function localCluster(drainMs = 500) {
  const nodes = new Nodes();
  let current: TestCluster | null = null;
  afterEach(async () => {
    await nodes.stopAll(drainMs);
    current?.cleanup();
    current = null;
  });
  return {
    nodes,
    make: async (opts?: Parameters<typeof makeCluster>[0]): Promise<TestCluster> => {
      current = await makeCluster(opts);
      return current;
    },
    /** `env`: what the node reaches outside its process through (node.ts's real one by default). */
    start: (name: string, env?: NodeEnv): Promise<TandemNode> => {
      if (!current) throw new Error('make() the cluster first');
      process.env.TANDEM_SECRET = current.secret;
      return nodes.start(current.config, name, env);
    },
    /**
     * Opens east's database (WAL) and runs `ddl` there, starts east then west, and waits until
     * east streams to west. The caller closes `db`.
     */
    streaming: async (
      ddl: string,
    ): Promise<{ db: Database.Database; east: TandemNode; west: TandemNode }> => {
      if (!current) throw new Error('make() the cluster first');
      const db = new Database(current.db('east'));
      db.pragma('journal_mode = WAL');
      db.exec(ddl);
      process.env.TANDEM_SECRET = current.secret;
      const east = await nodes.start(current.config, 'east');
      const west = await nodes.start(current.config, 'west');
      await until('streaming', () => east.status().groups[0]!.links[0]?.state === 'streaming');
      return { db, east, west };
    },
  };
}

/** Runs the built `tandem` command (dist/) and collects its output. */
export function tandem(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b;
    });
    child.stderr.on('data', (b: Buffer) => {
      err += b;
    });
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

/**
 * Creates east's database with `ddl` (WAL), then starts `nodes` as real processes and waits
 * until each answers; returns them by name.
 */
export async function startOnTable(
  c: TestCluster,
  ddl: string,
  nodes: string[] = ['east', 'west'],
  env: Record<string, NodeJS.ProcessEnv> = {},
): Promise<Record<string, NodeProcess> & { east: NodeProcess; west: NodeProcess }> {
  const db = new Database(c.db('east'));
  db.pragma('journal_mode = WAL');
  db.exec(ddl);
  db.close();
  const procs = Object.fromEntries(nodes.map((n) => [n, c.proc(n)]));
  for (const n of nodes) procs[n]!.start(env[n]);
  await Promise.all(Object.values(procs).map((p) => p.ready()));
  return procs as Record<string, NodeProcess> & { east: NodeProcess; west: NodeProcess };
}

/** The journal of group `shop` on stopped node `node`. */
export function openJournal(c: TestCluster, node: string): Promise<Journal> {
  return Journal.open({ dir: path.join(c.dir, 'state', node, 'journal', 'shop') });
}

/**
 * The journals of group `shop` on stopped nodes `a` and `b` hold the same records wherever both
 * hold one (a backup's starts at its seed) and end at the same position: one history.
 */
export async function expectSameRecords(c: TestCluster, a = 'east', b = 'west'): Promise<void> {
  const [ja, jb] = await Promise.all([openJournal(c, a), openJournal(c, b)]);
  try {
    expect(ja.lastPosition).toBe(jb.lastPosition);
    const hash = (j: Journal, p: number) =>
      createHash('sha256')
        .update(j.read(p, { maxBytes: 1, maxRecords: 1 })[0]!)
        .digest('hex');
    for (let p = Math.max(ja.firstPosition, jb.firstPosition); p <= ja.lastPosition; p++) {
      expect(hash(ja, p), `record ${p}`).toBe(hash(jb, p));
    }
  } finally {
    await Promise.all([ja.close(), jb.close()]);
  }
}

/** A HELLO as east, primary of group `shop` at epoch 1 of cluster `test`, sends it; `over` bends it. */
export function eastHello(over: Partial<Hello> = {}): Hello {
  return {
    type: MsgType.Hello,
    version: PROTOCOL_VERSION,
    cluster: 'test',
    group: 'shop',
    node: 'east',
    epoch: 1,
    firstPosition: 1,
    durablePosition: 0,
    ...over,
  };
}

/**
 * A copy of the cluster's config in which east dials west at `port` (a fault proxy in front of
 * west's listen address); west keeps listening where it did. Returns the copy's path.
 */
export function eastConfigVia(c: TestCluster, port: number): string {
  const file = path.join(c.dir, 'tandem-east.yaml');
  writeFileSync(file, readFileSync(c.config, 'utf8').replace(`:${c.ports.west!.listen},`, `:${port},`));
  return file;
}
