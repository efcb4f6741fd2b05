/**
 * Partitions one after another on one running group (each node in its own network namespace;
 * needs root, iproute2 and nftables), with a witness and automatic failover, while clients write
 * to both databases all along: a pair of hosts apart, one host cut from the other two (or its
 * link down, the test's own access too), all three apart; each held 50 ms - 5 s, then healed, and
 * the group left to settle (one primary holding its lease and streaming to the other) before the
 * next. The quick tier makes a few, the long tier hundreds. Checked over the whole history:
 * - never two primaries: the database taking writes changes no more often than the epoch does;
 * - after healing, both databases hold the same rows;
 * - every accepted write is either in those rows or in exactly one divergence report (async
 *   mode loses writes at a failover, and reports each of them: an old primary reports the whole
 *   tail it undoes, also writes the other node took that reached only it); nothing else is in
 *   either.
 * The schedule comes from a seed, printed with the command that replays it
 * (`TANDEM_PARTITION_SEED`); `TANDEM_PARTITIONS` sets how many partitions. Needs dist/.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { NodeProcess } from '../../src/demo/procs.js';
import type { GroupStatus } from '../../src/node/status.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { makeNetwork, type Network } from '../../src/testing/netns.js';
import { sleep, until } from '../helpers/cluster.js';
import { runs } from '../helpers/tiers.js';
import {
  dbFile,
  divergentIds,
  expectRoleHistory,
  probeBothSides,
  startWitnessGroup,
  untilSameRows,
  WITNESS_FAILOVER,
} from '../helpers/witness-group.js';
import { Rng } from '../sim/world.js';

const HOSTS = ['east', 'west', 'arbiter'] as const;
type Host = (typeof HOSTS)[number];

interface Partition {
  kind: string;
  name: string;
  make(net: Network): void;
  heal(net: Network): void;
}

/** One random partition: what is cut, named for the log. */
function pickPartition(rng: Rng): Partition {
  const kind = rng.pick(['pair', 'isolate', 'link-down', 'all-apart'] as const);
  const h = rng.pick(HOSTS);
  const others = HOSTS.filter((x) => x !== h) as Host[];
  const pairs: [Host, Host][] =
    kind === 'pair'
      ? [[h, rng.pick(others)]]
      : kind === 'isolate'
        ? others.map((o) => [h, o] as [Host, Host])
        : kind === 'all-apart'
          ? [
              ['east', 'west'],
              ['east', 'arbiter'],
              ['west', 'arbiter'],
            ]
          : [];
  if (kind === 'link-down')
    return { kind, name: `${h}'s link down`, make: (n) => n.cut(h), heal: (n) => n.heal(h) };
  return {
    kind,
    name: pairs.map(([a, b]) => `${a}|${b}`).join(' '),
    make: (n) => {
      for (const [a, b] of pairs) n.cutPair(a, b);
    },
    heal: (n) => n.healPairs(),
  };
}

describe('partitions one after another (nftables)', () => {
  const count = Number(process.env.TANDEM_PARTITIONS ?? runs(4, 200));
  const seed = Number(process.env.TANDEM_PARTITION_SEED ?? randomBytes(4).readUInt32LE(0));
  it(
    `${count} random partitions with failovers: never two primaries, every accepted write kept or reported (seed ${seed})`,
    async () => {
      const rng = new Rng(seed);
      const net = makeNetwork([...HOSTS]);
      const procs: NodeProcess[] = [];
      let dir = '';
      const replay = `TANDEM_PARTITION_SEED=${seed} TANDEM_PARTITIONS=${count} npx vitest run test/e2e/partition-storm.netns.proc.test.ts`;
      try {
        const cfg = await writeClusterConfig({
          cluster: 'storm',
          group: 'shop',
          endpoints: { east: 'sqlite:./data/east.db', west: 'sqlite:./data/west.db' },
          extraNodes: ['arbiter'],
          hosts: Object.fromEntries(HOSTS.map((h) => [h, net.ip(h)])),
          wrap: Object.fromEntries(HOSTS.map((h) => [h, net.wrap(h)])),
          groupExtra: WITNESS_FAILOVER,
          prefix: 'tandem-test-',
        });
        dir = cfg.dir;
        const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex') };
        const nodes = await startWitnessGroup(
          cfg,
          'CREATE TABLE t (id INTEGER PRIMARY KEY, side TEXT)',
          procs,
          () => env,
        );
        const group = async (n: 'east' | 'west'): Promise<GroupStatus | undefined> =>
          (await nodes[n].status(500))?.groups[0];
        /** One primary holding its lease and streaming to the other, which runs as its backup: the epoch. */
        const settled = async (): Promise<number | null> => {
          const [e, w] = [await group('east'), await group('west')];
          if (!e || !w || e.epoch !== w.epoch || e.state !== 'running' || w.state !== 'running') return null;
          const p = e.role === 'primary' ? e : w.role === 'primary' ? w : null;
          const b = p === e ? w : e;
          if (!p || b.role !== 'backup' || !p.lease?.held || p.links[0]?.state !== 'streaming') return null;
          return p.epoch;
        };
        const firstEpoch = await until('the group to settle', settled);
        const probe = probeBothSides(cfg);
        const tally = new Map<string, number>();
        let epoch = firstEpoch;
        let failovers = 0;
        try {
          for (let i = 0; i < count; i++) {
            const p = pickPartition(rng);
            const hold = rng.chance(0.3) ? rng.int(50, 900) : rng.int(1000, 5000);
            p.make(net);
            await sleep(hold);
            p.heal(net);
            let now: number;
            try {
              now = await until('the group to settle', settled, 40_000);
            } catch (err) {
              const states = JSON.stringify([await group('east'), await group('west')]);
              throw new Error(
                `partition ${i + 1} (${p.name}, ${hold} ms): ${(err as Error).message}; ${states}; replay: ${replay}`,
              );
            }
            tally.set(p.kind, (tally.get(p.kind) ?? 0) + 1);
            if (now !== epoch) failovers++;
            epoch = now;
            if ((i + 1) % 25 === 0)
              console.log(`partition storm: ${i + 1} of ${count}, ${failovers} failovers`);
            await sleep(rng.int(0, 300));
          }
        } finally {
          await probe.stop();
        }

        expectRoleHistory(probe.history, epoch - firstEpoch);
        await untilSameRows(cfg, 60_000);
        const final = new Database(dbFile(cfg, 'east'), { readonly: true });
        const rows = new Set((final.prepare('SELECT id FROM t').all() as { id: number }[]).map((r) => r.id));
        final.close();
        const reported = { east: await divergentIds(cfg, 'east'), west: await divergentIds(cfg, 'west') };
        const side = new Map(probe.history.map((w) => [w.id, w.side]));
        for (const id of rows) expect(side.has(id), `row ${id} was never accepted; ${replay}`).toBe(true);
        const seen = new Set<number>();
        for (const [n, ids] of Object.entries(reported))
          for (const id of ids) {
            expect(side.has(id), `row ${id} in a report of ${n} was never accepted; ${replay}`).toBe(true);
            expect(
              rows.has(id) || seen.has(id),
              `row ${id} both kept and reported, or reported twice; ${replay}`,
            ).toBe(false);
            seen.add(id);
          }
        const missing = probe.history.filter((w) => !rows.has(w.id) && !seen.has(w.id));
        expect(
          missing.map((w) => `${w.side}:${w.id}`),
          `accepted, neither kept nor reported; ${replay}`,
        ).toEqual([]);
        // A figure for RELIABILITY.md.
        console.log(
          `partition storm (seed ${seed}): ${count} partitions (${[...tally].map(([k, v]) => `${v} ${k}`).join(', ')}), ${failovers} failovers (epoch ${firstEpoch} -> ${epoch}), ${probe.history.length} writes accepted, ${seen.size} lost at failovers and reported, 0 violations`,
        );
      } finally {
        for (const p of procs) if (p.running) p.child?.kill('SIGKILL');
        await Promise.all(procs.map((p) => p.exit));
        net.destroy();
        if (dir && !process.env.KEEP) rmSync(dir, { recursive: true, force: true });
      }
    },
    120_000 + count * 30_000,
  );
});
