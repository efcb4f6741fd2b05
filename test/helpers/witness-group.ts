/**
 * A group of real processes with a witness (east primary, west backup, arbiter witness) and the
 * roles checker the failover tests share: clients write to both databases all along, and the old
 * primary's last accepted write must come before the new primary's first.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { expect } from 'vitest';
import type { NodeProcess } from '../../src/demo/procs.js';
import type { ClusterConfig } from '../../src/testing/cluster-config.js';
import { sleep, until } from './cluster.js';

/** A group config line: failover through witness `arbiter` after 1 s. */
export const WITNESS_FAILOVER = '    failover: { witness: arbiter, timeout: 1s }';

export const dbFile = (cfg: ClusterConfig, node: string) => path.join(cfg.dir, 'data', `${node}.db`);

/**
 * Creates east's database (WAL) with `ddl`, starts arbiter, east and west (pushed to `procs`, for
 * the caller to kill), and waits until east streams to west and holds its lease.
 */
export async function startWitnessGroup(
  cfg: ClusterConfig,
  ddl: string,
  procs: NodeProcess[],
  env: (node: string) => NodeJS.ProcessEnv,
): Promise<{ east: NodeProcess; west: NodeProcess }> {
  const db = new Database(dbFile(cfg, 'east'));
  db.pragma('journal_mode = WAL');
  db.exec(ddl);
  db.close();
  const byName = Object.fromEntries(['arbiter', 'east', 'west'].map((n) => [n, cfg.proc(n, env(n))]));
  procs.push(...Object.values(byName));
  for (const p of Object.values(byName)) p.start();
  await Promise.all(Object.values(byName).map((p) => p.ready()));
  const east = byName.east!;
  await until('streaming and holding the lease', async () => {
    const g = (await east.status())?.groups[0];
    return g?.links[0]?.state === 'streaming' && g.lease?.held === true;
  });
  return { east, west: byName.west! };
}

/** One write the probe's client saw accepted: its row id, the database, and when it started and committed. */
export interface AcceptedWrite {
  id: number;
  side: 'east' | 'west';
  before: number;
  after: number;
}

/**
 * Clients inserting into `t (id, side)` of both databases every 2 ms, one write at a time. East's
 * accepted writes are timed after they commit, west's before they start: the comparison in
 * expectOnePrimary errs on the safe side with east as the old primary. `history` holds every
 * accepted write, in the order they were made.
 */
export function probeBothSides(cfg: ClusterConfig) {
  const accepted: { east: number[]; west: number[] } = { east: [], west: [] };
  const history: AcceptedWrite[] = [];
  const conns = { east: new Database(dbFile(cfg, 'east')), west: new Database(dbFile(cfg, 'west')) };
  for (const c of Object.values(conns)) c.pragma('busy_timeout = 200');
  let stop = false;
  let id = 0;
  const probing = (async () => {
    while (!stop) {
      for (const side of ['east', 'west'] as const) {
        const before = performance.now();
        try {
          const row = ++id + (side === 'west' ? 1e9 : 0);
          conns[side].prepare('INSERT INTO t VALUES (?, ?)').run(row, side);
          const after = performance.now();
          accepted[side].push(side === 'east' ? after : before);
          history.push({ id: row, side, before, after });
        } catch {
          // refused: a fence, a lapsed lease
        }
      }
      await sleep(2);
    }
  })();
  return {
    accepted,
    history,
    async stop(): Promise<void> {
      stop = true;
      await probing;
      for (const c of Object.values(conns)) c.close();
    },
  };
}

/** Never two primaries taking writes: the old primary's last accepted write precedes the new one's first. */
export function expectOnePrimary(old: number[], next: number[]): void {
  expect(old.length).toBeGreaterThan(0);
  expect(next.length).toBeGreaterThan(0);
  expect(Math.max(...old)).toBeLessThan(Math.min(...next));
}

/**
 * Never two primaries over a whole history with role changes both ways: the probe writes to both
 * databases in turn, so two databases taking writes in the same window show as writes alternating
 * between them. Each change of the database that takes writes needs a role change of its own:
 * there are at most `roleChanges` of them (the epochs the group went through).
 */
export function expectRoleHistory(history: AcceptedWrite[], roleChanges: number): void {
  const changes: string[] = [];
  for (let i = 1; i < history.length; i++) {
    const [a, b] = [history[i - 1]!, history[i]!];
    if (a.side !== b.side)
      changes.push(`${a.side} (${a.after.toFixed(1)} ms) -> ${b.side} (${b.before.toFixed(1)} ms)`);
  }
  expect(
    changes.length,
    `the database taking writes changed ${changes.length} times in ${roleChanges} role changes: ${changes.slice(0, 20).join(', ')}`,
  ).toBeLessThanOrEqual(roleChanges);
}

/**
 * The row ids in every divergence report a node keeps for group `shop` (admin API), for a table
 * whose first column is an integer key that the workload only inserts.
 */
export async function divergentIds(cfg: ClusterConfig, node: string): Promise<number[]> {
  const base = `http://${cfg.admin(node)}/v1/groups/shop/divergence`;
  const { reports } = (await (await fetch(base)).json()) as { reports: { id: string }[] };
  const ids: number[] = [];
  for (const r of reports) {
    const full = (await (await fetch(`${base}/${r.id}`)).json()) as {
      transactions: { changes: { op: string; after: { int: string }[] | null }[] }[];
    };
    for (const t of full.transactions)
      for (const c of t.changes) {
        expect(c.op, 'the workload only inserts').toBe('insert');
        // Integers travel as { int: "..." } (src/node/divergence.ts).
        ids.push(Number(c.after![0]!.int));
      }
  }
  return ids;
}

/** Waits until both databases hold the same rows of `t`. */
export async function untilSameRows(cfg: ClusterConfig, timeoutMs: number): Promise<void> {
  const rows = (n: string) => {
    const d = new Database(dbFile(cfg, n), { readonly: true });
    try {
      return JSON.stringify(d.prepare('SELECT * FROM t ORDER BY id').all());
    } finally {
      d.close();
    }
  };
  await until('both hold the same rows', () => rows('east') === rows('west'), timeoutMs);
}
