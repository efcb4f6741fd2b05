/**
 * Unplanned failover of a PostgreSQL group in sync mode, real `tandem run` processes and a
 * witness: the primary's node is SIGKILLed under a writer; its PostgreSQL keeps running but
 * refuses application writes once the lease it was given runs out (the fence function reads
 * tandem.lease); the backup takes over automatically with every acknowledged commit; the old
 * primary's node, restarted, fences itself and rejoins as a backup (its unacknowledged commits
 * undone from the new primary's rows). Needs dist/ and PostgreSQL 15.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { NodeProcess } from '../../src/demo/procs.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { sleep, until } from '../helpers/cluster.js';
import { type PgCluster, startPg } from '../helpers/pg.js';

describe('PostgreSQL failover (processes)', () => {
  let east: PgCluster;
  let west: PgCluster;
  let dir: string;
  const procs: NodeProcess[] = [];
  afterAll(async () => {
    for (const p of procs) if (p.running) p.child?.kill('SIGKILL');
    await Promise.all([east?.stop(), west?.stop()]);
    if (dir && !process.env.KEEP) rmSync(dir, { recursive: true, force: true });
  });

  it('SIGKILL of the primary node in sync mode: its database fences itself, the backup takes over with every acknowledged commit', async () => {
    [east, west] = await Promise.all([
      startPg({ settings: { wal_level: 'logical' } }),
      startPg({ settings: { wal_level: 'logical' } }),
    ]);
    await east.sql('CREATE TABLE acct (id serial PRIMARY KEY, v int NOT NULL)');
    await east.sql(
      'CREATE ROLE app LOGIN; GRANT INSERT, SELECT ON acct TO app; GRANT USAGE ON SEQUENCE acct_id_seq TO app',
    );
    await west.sql('CREATE ROLE app LOGIN');
    const cfg = await writeClusterConfig({
      cluster: 'fo',
      group: 'bank',
      mode: 'sync',
      endpoints: { east: east.url(), west: west.url() },
      extraNodes: ['arbiter'],
      groupExtra:
        '    sync: { timeout: 2s, degrade: true, configure_server: true }\n    failover: { witness: arbiter, timeout: 1s }',
    });
    dir = cfg.dir;
    const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex') };
    const nodes = {
      east: cfg.proc('east', env),
      west: cfg.proc('west', env),
      arbiter: cfg.proc('arbiter', env),
    };
    procs.push(...Object.values(nodes));
    for (const n of Object.values(nodes)) n.start();
    await Promise.all(Object.values(nodes).map((n) => n.ready()));
    await until(
      'streaming with the lease held',
      async () => {
        const g = (await nodes.east.status())?.groups[0];
        return g?.links[0]?.state === 'streaming' && g.lease?.held === true;
      },
      30_000,
    );
    await west.sql('GRANT INSERT, SELECT ON acct TO app; GRANT USAGE ON SEQUENCE acct_id_seq TO app');

    // A writer as role app, acknowledged commits recorded.
    const acked: number[] = [];
    let stop = false;
    const client = new pg.Client({ connectionString: east.url('postgres', 'app') });
    client.on('error', () => {});
    await client.connect();
    const writing = (async () => {
      while (!stop) {
        try {
          const r = await client.query<{ id: number }>('INSERT INTO acct (v) VALUES (1) RETURNING id');
          acked.push(r.rows[0]!.id);
        } catch {
          // refused or cut off: not acknowledged
        }
        await sleep(2);
      }
    })();
    await until('acknowledged commits', () => acked.length > 100, 20_000);
    await nodes.east.kill('SIGKILL');
    // East's PostgreSQL runs on; its fence refuses writes once the lease has run out.
    const probe = new pg.Client({ connectionString: east.url('postgres', 'app') });
    probe.on('error', () => {});
    await probe.connect();
    // (Its commits would wait for the synchronous standby that is gone; only the fence matters here.)
    await probe.query('SET synchronous_commit = local');
    await until(
      'east refuses writes by itself',
      async () =>
        probe.query('INSERT INTO acct (v) VALUES (2)').then(
          () => false,
          (err: Error) => /lost its quorum/.test(err.message),
        ),
      5000,
    );
    await probe.end();
    // The writer's last commit waits for a synchronous standby that is gone (as PostgreSQL's own
    // sync replication does): end its session; that commit was never acknowledged.
    stop = true;
    await east.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'");
    await writing;
    await client.end().catch(() => {});
    await until('west took over', async () => (await nodes.west.status())?.lastFailover, 15_000);
    const report = (await nodes.west.status())!.lastFailover!;
    expect(report).toMatchObject({ from: 'east', to: 'west', how: 'automatic', epoch: { from: 1, to: 2 } });
    const ids = new Set((await west.sql('SELECT id FROM acct')).rows.map((r) => (r as { id: number }).id));
    expect(acked.filter((id) => !ids.has(id))).toEqual([]);
    // West takes writes (sync mode degrades after 2 s: its backup is gone), numbering after
    // every id that reached it.
    const w = new pg.Client({ connectionString: west.url('postgres', 'app') });
    await w.connect();
    const next = await w.query<{ id: number }>('INSERT INTO acct (v) VALUES (3) RETURNING id');
    await w.end();
    expect(next.rows[0]!.id).toBeGreaterThan(Math.max(...acked));
    // The old primary's node, back, fences itself for the newer epoch and rejoins as a backup:
    // the rows it committed and never had acknowledged are undone from west's rows.
    nodes.east.start();
    await nodes.east.ready();
    await until(
      'east rejoined',
      async () => (await nodes.east.status())?.groups[0]?.role === 'backup',
      20_000,
    );
    const app = new pg.Client({ connectionString: east.url('postgres', 'app') });
    await app.connect();
    await expect(app.query('INSERT INTO acct (v) VALUES (5)')).rejects.toThrow(/BACKUP_FENCED.*node west/);
    await app.end();
    // It follows west: both hold the same rows.
    const all = async (c: PgCluster) =>
      JSON.stringify((await c.sql('SELECT id, v FROM acct ORDER BY id')).rows);
    await until('east equals west', async () => (await all(east)) === (await all(west)), 20_000);
  }, 120_000);
});
