/**
 * A network partition, for real: each node runs in its own network namespace (needs root and
 * iproute2), and the primary's link is taken down while everything keeps running. Clients keep
 * trying to write to both databases; the cut-off primary must have stopped taking writes before
 * the new primary takes its first one, with a witness node and with etcd as the quorum. Healed,
 * the old primary rejoins as a backup and both hold the same rows. Needs dist/.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { describe, it } from 'vitest';
import type { NodeProcess } from '../../src/demo/procs.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { type Etcd, startEtcd } from '../../src/testing/etcd.js';
import { makeNetwork } from '../../src/testing/netns.js';
import { sleep, until } from '../helpers/cluster.js';
import { dbFile, expectOnePrimary, probeBothSides, untilSameRows } from '../helpers/witness-group.js';

describe('partition (network namespaces)', () => {
  for (const quorum of ['witness', 'etcd'] as const) {
    it(`a primary cut off from the network never takes writes alongside the new primary (${quorum})`, async () => {
      const net = makeNetwork(['east', 'west', 'arbiter']);
      let etcd: Etcd | null = null;
      let dir = '';
      const procs: NodeProcess[] = [];
      try {
        if (quorum === 'etcd') etcd = await startEtcd(net.gateway);
        const hosts = ['east', 'west', 'arbiter'];
        const cfg = await writeClusterConfig({
          cluster: 'part',
          group: 'shop',
          endpoints: { east: 'sqlite:./data/east.db', west: 'sqlite:./data/west.db' },
          extraNodes: quorum === 'witness' ? ['arbiter'] : [],
          hosts: Object.fromEntries(hosts.map((h) => [h, net.ip(h)])),
          wrap: Object.fromEntries(hosts.map((h) => [h, net.wrap(h)])),
          groupExtra:
            quorum === 'witness'
              ? '    failover: { witness: arbiter, timeout: 1s }'
              : `    failover: { etcd: { endpoints: [${etcd!.url}] }, timeout: 1s }`,
        });
        dir = cfg.dir;
        const db = new Database(dbFile(cfg, 'east'));
        db.pragma('journal_mode = WAL');
        db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, side TEXT)');
        db.close();
        const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex') };
        for (const n of quorum === 'witness' ? hosts : ['east', 'west']) procs.push(cfg.proc(n, env));
        for (const p of procs) p.start();
        await Promise.all(procs.map((p) => p.ready()));
        const [east, west] = procs as [NodeProcess, NodeProcess];
        await until('streaming and holding the lease', async () => {
          const g = (await east.status())?.groups[0];
          return g?.links[0]?.state === 'streaming' && g.lease?.held === true;
        });

        // Clients write to both databases all along; every accepted write is timed.
        const probe = probeBothSides(cfg);
        await sleep(300);
        net.cut('east');
        // This wait failed once in CI (not reproduced in 100 runs since): say what each node saw.
        await until('west took over', async () => (await west.status())?.lastFailover, 20_000).catch(
          (err: Error) => {
            const logs = procs.map((p) => `--- ${p.name}'s log, last lines ---\n${p.logTail(40)}`);
            throw new Error([err.message, ...logs].join('\n'));
          },
        );
        await sleep(500);
        await probe.stop();
        expectOnePrimary(probe.accepted.east, probe.accepted.west);

        net.heal('east');
        await until(
          'east rejoined as a backup',
          async () => (await east.status())?.groups[0]?.role === 'backup',
          20_000,
        );
        await untilSameRows(cfg, 20_000);
      } finally {
        for (const p of procs) if (p.running) p.child?.kill('SIGKILL');
        await Promise.all(procs.map((p) => p.exit));
        await etcd?.stop();
        net.destroy();
        if (dir && !process.env.KEEP) rmSync(dir, { recursive: true, force: true });
      }
    }, 90_000);
  }
});
