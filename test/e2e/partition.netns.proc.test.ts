/**
 * A network partition, for real: each node runs in its own network namespace (needs root and
 * iproute2), and the primary's link is taken down while everything keeps running. Clients keep
 * trying to write to both databases; the cut-off primary must have stopped taking writes before
 * the new primary takes its first one, with a witness node and with etcd as the quorum. Healed,
 * the old primary rejoins as a backup and both hold the same rows. Needs dist/.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { NodeProcess } from '../../src/demo/procs.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { type Etcd, startEtcd } from '../../src/testing/etcd.js';
import { makeNetwork } from '../../src/testing/netns.js';
import { sleep, until } from '../helpers/cluster.js';

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
        const file = (n: string) => path.join(dir, 'data', `${n}.db`);
        const db = new Database(file('east'));
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
        const accepted: Record<string, number[]> = { east: [], west: [] };
        const conns = { east: new Database(file('east')), west: new Database(file('west')) };
        for (const c of Object.values(conns)) c.pragma('busy_timeout = 200');
        let stop = false;
        let id = 0;
        const probing = (async () => {
          while (!stop) {
            for (const side of ['east', 'west'] as const) {
              try {
                conns[side]
                  .prepare('INSERT INTO t VALUES (?, ?)')
                  .run(++id + (side === 'west' ? 1e9 : 0), side);
                accepted[side]!.push(performance.now());
              } catch {
                // refused: a fence, a lapsed lease
              }
            }
            await sleep(2);
          }
        })();
        await sleep(300);
        net.cut('east');
        await until('west took over', async () => (await west.status())?.lastFailover, 20_000);
        await sleep(500);
        stop = true;
        await probing;
        for (const c of Object.values(conns)) c.close();
        expect(accepted.east!.length).toBeGreaterThan(0);
        expect(accepted.west!.length).toBeGreaterThan(0);
        // Never two primaries taking writes: east's last accepted write precedes west's first.
        expect(Math.max(...accepted.east!)).toBeLessThan(Math.min(...accepted.west!));

        net.heal('east');
        await until(
          'east rejoined as a backup',
          async () => (await east.status())?.groups[0]?.role === 'backup',
          20_000,
        );
        const rows = (n: string) => {
          const d = new Database(file(n), { readonly: true });
          try {
            return JSON.stringify(d.prepare('SELECT * FROM t ORDER BY id').all());
          } finally {
            d.close();
          }
        };
        await until('both hold the same rows', () => rows('east') === rows('west'), 20_000);
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
