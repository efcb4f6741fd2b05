/**
 * PostgreSQL -> PostgreSQL with real `tandem run` processes while pgbench writes: the backup's
 * node is SIGKILLed while it is being seeded and resumes the seed, then the primary's node and
 * the backup's node are SIGKILLed mid-stream and restarted, and the backup ends equal to the
 * source. Needs dist/, PostgreSQL 15 and pgbench.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { NodeProcess } from '../../src/demo/procs.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { sleep, until } from '../helpers/cluster.js';
import { type PgCluster, startPg } from '../helpers/pg.js';

const PGBENCH = '/usr/lib/postgresql/15/bin/pgbench';

describe('pgbench load, SIGKILL of either node', () => {
  let src: PgCluster;
  let dst: PgCluster;
  let dir: string;
  const procs: NodeProcess[] = [];
  afterAll(async () => {
    for (const p of procs) if (p.running) p.child?.kill('SIGKILL');
    await Promise.all([src?.stop(), dst?.stop()]);
    if (dir && !process.env.KEEP) rmSync(dir, { recursive: true, force: true });
  });

  function pgbench(c: PgCluster, args: string[]): ChildProcess {
    return spawn(PGBENCH, ['-h', '127.0.0.1', '-p', String(c.port), '-U', 'postgres', ...args, 'postgres'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  }
  const exit = (p: ChildProcess) => new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  const digest = async (c: PgCluster) => {
    const r = await c.sql(`SELECT
      (SELECT md5(string_agg(t::text, ',' ORDER BY aid)) FROM pgbench_accounts t) AS a,
      (SELECT md5(string_agg(t::text, ',' ORDER BY bid)) FROM pgbench_branches t) AS b,
      (SELECT md5(string_agg(t::text, ',' ORDER BY tid)) FROM pgbench_tellers t) AS t`);
    return JSON.stringify(r.rows[0]);
  };

  it('resumes a seed after SIGKILL and keeps the backup equal to the source', async () => {
    [src, dst] = await Promise.all([startPg({ settings: { wal_level: 'logical' } }), startPg()]);
    // 300,000 accounts: about ten chunks of 4 MiB, copied one at a time (seed.workers: 1).
    expect(await exit(pgbench(src, ['-i', '-s', '3', '-q']))).toBe(0);
    const cfg = await writeClusterConfig({
      cluster: 'bench',
      group: 'bank',
      endpoints: { east: src.url(), west: dst.url() },
      tables: '[pgbench_accounts, pgbench_branches, pgbench_tellers]', // pgbench_history has no key
      groupExtra: '    seed: { workers: 1 }',
    });
    dir = cfg.dir;
    const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex') };
    const east = cfg.proc('east', env);
    const west = cfg.proc('west', env);
    procs.push(east, west);

    const load = pgbench(src, ['-c', '2', '-j', '1', '-T', '12', '-n']);
    const loaded = exit(load); // it may end before the steps below do
    let loadErr = '';
    load.stderr!.on('data', (d) => {
      loadErr += String(d);
    });
    await sleep(500);
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);
    // Killed once some chunks are committed, the backup's node resumes with the others.
    const committed = async () =>
      Number(
        (await dst.sql('SELECT count(*) AS n FROM tandem.seed_chunks').catch(() => null))?.rows[0]?.n ?? 0,
      );
    await until('a committed seed chunk', async () => (await committed()) >= 2, 30_000);
    await west.kill('SIGKILL');
    const kept = await committed();
    west.start();
    await west.ready();
    await until(
      'the seed to finish',
      async () => (await east.status())?.groups[0]?.links[0]?.state === 'streaming',
      60_000,
    );
    // The second seed resumed the first: it left out the chunks already committed.
    const seeds = readFileSync(path.join(cfg.dir, 'east.log'), 'utf8')
      .split('\n')
      .filter((l) => /"msg":"(seeding backup|resuming the backup's seed)"/.test(l))
      .map((l) => JSON.parse(l) as { resume: boolean; chunks: number });
    expect(kept).toBeGreaterThanOrEqual(2);
    expect(seeds.map((x) => x.resume)).toEqual([false, true]);
    expect(seeds[1]!.chunks).toBeLessThanOrEqual(seeds[0]!.chunks - kept);
    await sleep(1000);
    await east.kill('SIGKILL');
    await sleep(500);
    east.start();
    await east.ready();
    await sleep(2000);
    await west.kill('SIGKILL');
    await sleep(500);
    west.start();
    await west.ready();
    expect(await loaded, loadErr).toBe(0);

    const want = await digest(src);
    await until('the backup to equal the source', async () => (await digest(dst)) === want, 60_000);
    const s = await east.status();
    expect(s!.groups[0]!.state).toBe('running');
    expect(await east.kill('SIGTERM')).toBe(0);
    expect(await west.kill('SIGTERM')).toBe(0);
  }, 120_000);
});
