/**
 * PostgreSQL -> PostgreSQL with real `tandem run` processes while pgbench writes: the backup is
 * seeded under load, the primary's node and then the backup's node are SIGKILLed and restarted,
 * and the backup ends equal to the source. Needs dist/, PostgreSQL 15 and pgbench.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, NodeProcess } from '../../src/demo/procs.js';
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
    if (dir) rmSync(dir, { recursive: true, force: true });
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

  it('keeps the backup equal to the source', async () => {
    [src, dst] = await Promise.all([startPg({ settings: { wal_level: 'logical' } }), startPg()]);
    expect(await exit(pgbench(src, ['-i', '-s', '1', '-q']))).toBe(0);
    dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-pgbench-'));
    const p = { el: await freePort(), ea: await freePort(), wl: await freePort(), wa: await freePort() };
    const config = path.join(dir, 'tandem.yaml');
    writeFileSync(
      config,
      `cluster: bench
security: { secret: env:TANDEM_SECRET }
nodes:
  east: { listen: 127.0.0.1:${p.el}, admin: 127.0.0.1:${p.ea}, state: ./state/east }
  west: { listen: 127.0.0.1:${p.wl}, admin: 127.0.0.1:${p.wa}, state: ./state/west }
groups:
  bank:
    kind: sql
    mode: async
    primary: east
    endpoints: { east: "${src.url()}", west: "${dst.url()}" }
    tables: [pgbench_accounts, pgbench_branches, pgbench_tellers]   # pgbench_history has no key
`,
    );
    const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex') };
    const east = new NodeProcess({
      name: 'east',
      config,
      logFile: path.join(dir, 'east.log'),
      admin: `127.0.0.1:${p.ea}`,
      env,
    });
    const west = new NodeProcess({
      name: 'west',
      config,
      logFile: path.join(dir, 'west.log'),
      admin: `127.0.0.1:${p.wa}`,
      env,
    });
    procs.push(east, west);

    const load = pgbench(src, ['-c', '2', '-j', '1', '-T', '10', '-n']);
    let loadErr = '';
    load.stderr!.on('data', (d) => {
      loadErr += String(d);
    });
    await sleep(500);
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);
    await sleep(2500);
    await east.kill('SIGKILL');
    await sleep(500);
    east.start();
    await east.ready();
    await sleep(2000);
    await west.kill('SIGKILL');
    await sleep(500);
    west.start();
    await west.ready();
    expect(await exit(load), loadErr).toBe(0);

    const want = await digest(src);
    await until('the backup to equal the source', async () => (await digest(dst)) === want, 60_000);
    const s = await east.status();
    expect(s!.groups[0]!.state).toBe('running');
    expect(await east.kill('SIGTERM')).toBe(0);
    expect(await west.kill('SIGTERM')).toBe(0);
  }, 120_000);
});
