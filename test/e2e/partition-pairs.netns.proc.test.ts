/**
 * Partitions that are not a host cut off from everything: nftables rules drop the traffic
 * between two chosen hosts only (each node in its own network namespace; needs root, iproute2
 * and nftables), with a witness as the quorum. Clients write to both databases all along.
 * - primary | backup, both still reaching the witness: the witness keeps the primary's lease,
 *   the backup's request to take over is refused; the primary takes writes throughout.
 * - primary | witness: the backup's PINGs keep the lease; no failover, writes go on.
 * - backup cut from both: nothing changes for the primary.
 * - primary cut from both (the clients still reach it): the backup takes over, and the primary's
 *   database stopped taking writes before the backup took its first.
 * Healed, the nodes converge on the same rows. Needs dist/.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { NodeProcess } from '../../src/demo/procs.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { makeNetwork } from '../../src/testing/netns.js';
import { sleep, until } from '../helpers/cluster.js';
import {
  expectOnePrimary,
  probeBothSides,
  startWitnessGroup,
  untilSameRows,
  WITNESS_FAILOVER,
} from '../helpers/witness-group.js';

const SCENARIOS: { name: string; pairs: [string, string][]; failover: boolean }[] = [
  { name: 'primary | backup, both reach the witness', pairs: [['east', 'west']], failover: false },
  { name: 'primary | witness', pairs: [['east', 'arbiter']], failover: false },
  {
    name: 'backup cut from primary and witness',
    pairs: [
      ['west', 'east'],
      ['west', 'arbiter'],
    ],
    failover: false,
  },
  {
    name: 'primary cut from backup and witness, clients still reach it',
    pairs: [
      ['east', 'west'],
      ['east', 'arbiter'],
    ],
    failover: true,
  },
];

describe('partitions between pairs of hosts (nftables)', () => {
  for (const sc of SCENARIOS) {
    it(`${sc.name}: ${sc.failover ? 'one failover, never two primaries' : 'no failover, the primary takes writes'}`, async () => {
      const hosts = ['east', 'west', 'arbiter'];
      const net = makeNetwork(hosts);
      const procs: NodeProcess[] = [];
      let dir = '';
      try {
        const cfg = await writeClusterConfig({
          cluster: 'pairs',
          group: 'shop',
          endpoints: { east: 'sqlite:./data/east.db', west: 'sqlite:./data/west.db' },
          extraNodes: ['arbiter'],
          hosts: Object.fromEntries(hosts.map((h) => [h, net.ip(h)])),
          wrap: Object.fromEntries(hosts.map((h) => [h, net.wrap(h)])),
          groupExtra: WITNESS_FAILOVER,
          prefix: 'tandem-test-',
        });
        dir = cfg.dir;
        const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex') };
        const { east, west } = await startWitnessGroup(
          cfg,
          'CREATE TABLE t (id INTEGER PRIMARY KEY, side TEXT)',
          procs,
          () => env,
        );
        const probe = probeBothSides(cfg);
        const { accepted } = probe;
        await sleep(300);
        const cutAt = performance.now();
        for (const [a, b] of sc.pairs) net.cutPair(a, b);
        if (sc.failover) {
          await until('west took over', async () => (await west.status())?.lastFailover, 20_000);
          await sleep(500);
        } else {
          // The rules take effect: what they cut shows in the primary's status (a link is given
          // up after 5 s of silence), while the lease holds on what is left.
          const cut = (x: string, y: string) =>
            sc.pairs.some(([a, b]) => (a === x && b === y) || (a === y && b === x));
          await until(
            'the partition to show',
            async () => {
              const g = (await east.status())?.groups[0];
              return (
                (!cut('east', 'west') || g?.links[0]?.state !== 'streaming') &&
                (!cut('east', 'arbiter') || g?.lease?.witness !== 'ok')
              );
            },
            15_000,
          );
          // Three failover timeouts more: time enough for the backup to ask, and be refused.
          await sleep(3000);
          expect((await east.status())?.groups[0]?.lease?.held).toBe(true);
          expect((await west.status())?.lastFailover).toBeNull();
          expect((await west.status())?.groups[0]?.role).toBe('backup');
          const during = accepted.east.filter((t) => t > cutAt + 1000).length;
          expect(during, 'the primary took writes during the partition').toBeGreaterThan(100);
        }
        await probe.stop();
        expect(accepted.east.length).toBeGreaterThan(0);
        if (sc.failover) expectOnePrimary(accepted.east, accepted.west);
        else expect(accepted.west).toEqual([]);

        net.healPairs();
        if (sc.failover)
          await until(
            'east rejoined as a backup',
            async () => (await east.status())?.groups[0]?.role === 'backup',
            20_000,
          );
        await untilSameRows(cfg, 30_000);
      } finally {
        for (const p of procs) if (p.running) p.child?.kill('SIGKILL');
        await Promise.all(procs.map((p) => p.exit));
        net.destroy();
        if (dir && !process.env.KEEP) rmSync(dir, { recursive: true, force: true });
      }
    }, 90_000);
  }
});
