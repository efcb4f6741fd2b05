/**
 * PostgreSQL -> PostgreSQL, Tandem side by side with PostgreSQL's own logical replication, in
 * one run, each on a fresh pair of throwaway clusters, same schema and pgbench workload
 * (method: shared/brief/measure.md):
 *   seed time of an empty target; lag p50/p99 under steady pgbench load (probe rows carrying
 *   their send time, a reader polling the target every 1 ms); bytes on the wire per change;
 *   catch-up after a backlog of pgbench transactions; pgbench TPS in sync mode.
 * Lag and sync TPS are steady-state figures: each system first runs the same load for
 * `warmSeconds` unmeasured (after a seed or a restart, the servers' caches and autovacuum and
 * Tandem's JIT are still settling; the first seconds measured 3-8x the steady lag).
 * Native replication's wire bytes are counted by a TCP proxy between subscriber and publisher;
 * Tandem's by its link (after compression and TLS). The clusters run with fsync on, as Tandem's
 * journal does: a durable copy on both sides.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { freePort, percentile } from '../demo/procs.js';
import { writeClusterConfig } from '../testing/cluster-config.js';
import { type PgCluster, startPg } from '../testing/pg-cluster.js';

const exec = promisify(execFile);
const BIN = '/usr/lib/postgresql/15/bin';
const TABLES = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'probe'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Options {
  scale: number;
  /** Unmeasured load before the lag and sync-mode measurements. */
  warmSeconds: number;
  lagSeconds: number;
  rate: number;
  backlog: number;
  syncSeconds: number;
}

async function pgbench(c: PgCluster, args: string[]): Promise<{ tps: number; txns: number }> {
  const { stdout } = await exec(
    `${BIN}/pgbench`,
    ['-h', '127.0.0.1', '-p', String(c.port), '-U', 'postgres', '-n', ...args, 'postgres'],
    {
      maxBuffer: 1 << 24,
    },
  );
  const tps = Number(/tps = ([\d.]+)/.exec(stdout)?.[1] ?? 0);
  const txns = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1] ?? 0);
  return { tps, txns };
}

async function until(
  what: string,
  fn: () => Promise<boolean>,
  timeoutMs: number,
  everyMs = 5,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn().catch(() => false)) return;
    await sleep(everyMs);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Counts bytes from `target` to its clients (the replication stream's direction). It runs in a
 * child process: in the benchmark's own event loop, busy with the lag probe, it would delay the
 * peer's stream and make the peer look slower than it is.
 */
async function countingProxy(
  targetPort: number,
): Promise<{ port: number; bytes: () => Promise<number>; close: () => void }> {
  const port = await freePort();
  const code = `
    const net = require('node:net');
    let down = 0;
    net.createServer((client) => {
      const up = net.connect(${targetPort}, '127.0.0.1');
      client.setNoDelay(true); up.setNoDelay(true);
      up.on('data', (d) => { down += d.length; });
      client.pipe(up); up.pipe(client);
      const end = () => { client.destroy(); up.destroy(); };
      client.on('error', end).on('close', end); up.on('error', end).on('close', end);
    }).listen(${port}, '127.0.0.1', () => process.stdout.write('ready\\n'));
    process.stdin.on('data', () => process.stdout.write(down + '\\n'));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: ((line: string) => void)[] = [];
  let buf = '';
  child.stdout!.on('data', (d) => {
    buf += String(d);
    for (let k = buf.indexOf('\n'); k >= 0; k = buf.indexOf('\n')) {
      const line = buf.slice(0, k);
      buf = buf.slice(k + 1);
      lines.shift()?.(line);
    }
  });
  const next = () => new Promise<string>((r) => lines.push(r));
  await next();
  return {
    port,
    bytes: async () => {
      const answer = next();
      child.stdin!.write('?\n');
      return Number(await answer);
    },
    close: () => child.kill(),
  };
}

/**
 * Lag under steady load: probe rows every 10 ms while pgbench runs at `rate` TPS; probes sent
 * during the first `warmSeconds` are not counted as lag (they are as changes on the wire).
 */
async function measureLag(src: PgCluster, dst: PgCluster, o: Options) {
  const { default: pg } = await import('pg');
  const w = new pg.Client({ connectionString: src.url() });
  const r = new pg.Client({ connectionString: dst.url() });
  await Promise.all([w.connect(), r.connect()]);
  const now = () => performance.timeOrigin + performance.now();
  const measureFrom = now() + o.warmSeconds * 1000;
  const lags: number[] = [];
  let probes = 0;
  let seen = 0;
  let stop = false;
  const reader = (async () => {
    while (!stop) {
      const res = await r.query(
        'SELECT id::int AS id, sent_ms::float8 AS sent FROM probe WHERE id > $1 ORDER BY id',
        [seen],
      );
      const at = now();
      for (const row of res.rows as { id: number; sent: number }[]) {
        if (row.sent >= measureFrom) lags.push(at - row.sent);
      }
      if (res.rows.length) seen = (res.rows.at(-1) as { id: number }).id;
      await sleep(1);
    }
  })();
  const writer = (async () => {
    while (!stop) {
      await w.query('INSERT INTO probe (sent_ms) VALUES ($1)', [now()]);
      probes++;
      await sleep(10);
    }
  })();
  const seconds = o.warmSeconds + o.lagSeconds;
  const load = await pgbench(src, ['-c', '2', '-j', '1', '-R', String(o.rate), '-T', String(seconds)]);
  await sleep(300);
  stop = true;
  await Promise.all([reader, writer]);
  await Promise.all([w.end(), r.end()]);
  lags.sort((a, b) => a - b);
  return { txns: load.txns, probes, p50: percentile(lags, 50), p99: percentile(lags, 99) };
}

/** pgbench TPS with 4 clients for `syncSeconds`, after `warmSeconds` of the same unmeasured. */
async function syncTps(src: PgCluster, o: Options): Promise<number> {
  const clients = ['-c', '4', '-j', '2'];
  await pgbench(src, [...clients, '-T', String(o.warmSeconds)]);
  return Math.round((await pgbench(src, [...clients, '-T', String(o.syncSeconds)])).tps);
}

/**
 * Waits for a marker row written now to reach the target, polling on one connection (a new
 * connection per poll, every 5 ms, cost the target a backend start each: CPU the catch-up it
 * measures needs).
 */
async function markerArrives(src: PgCluster, dst: PgCluster, timeoutMs: number): Promise<void> {
  const id = (await src.sql('INSERT INTO probe (sent_ms) VALUES (0) RETURNING id::int AS id')).rows[0]
    .id as number;
  const { default: pg } = await import('pg');
  const r = new pg.Client({ connectionString: dst.url() });
  await r.connect();
  try {
    await until(
      'the marker row at the target',
      async () => (await r.query('SELECT 1 FROM probe WHERE id = $1', [id])).rowCount === 1,
      timeoutMs,
    );
  } finally {
    await r.end();
  }
}

async function prepareSource(src: PgCluster, scale: number): Promise<void> {
  await exec(`${BIN}/pgbench`, [
    '-h',
    '127.0.0.1',
    '-p',
    String(src.port),
    '-U',
    'postgres',
    '-i',
    '-q',
    '-s',
    String(scale),
    'postgres',
  ]);
  await src.sql('CREATE TABLE probe (id bigserial PRIMARY KEY, sent_ms float8 NOT NULL)');
}

/** Two decimals. */
export const r2 = (x: number) => Math.round(x * 100) / 100;

async function runNative(o: Options): Promise<Record<string, number | string>> {
  const [src, dst] = await Promise.all([
    startPg({ settings: { wal_level: 'logical', fsync: 'on' } }),
    startPg({ settings: { fsync: 'on' } }),
  ]);
  const proxy = await countingProxy(src.port);
  const out: Record<string, number | string> = {};
  try {
    await prepareSource(src, o.scale);
    const { stdout: ddl } = await exec(
      `${BIN}/pg_dump`,
      [
        '-h',
        '127.0.0.1',
        '-p',
        String(src.port),
        '-U',
        'postgres',
        '-s',
        ...TABLES.flatMap((t) => ['-t', t]),
        'postgres',
      ],
      { maxBuffer: 1 << 24 },
    );
    // psql meta-commands (\\restrict ...) are not SQL.
    await dst.sql(ddl.replace(/^\\.*$/gm, ''));
    await src.sql(`CREATE PUBLICATION bench FOR TABLE ${TABLES.join(', ')}`);
    const t0 = Date.now();
    await dst.sql(
      `CREATE SUBSCRIPTION bench CONNECTION 'host=127.0.0.1 port=${proxy.port} user=postgres dbname=postgres' PUBLICATION bench`,
    );
    await until(
      'initial copy',
      async () =>
        (await dst.sql("SELECT count(*)::int AS n FROM pg_subscription_rel WHERE srsubstate <> 'r'")).rows[0]
          .n === 0,
      600_000,
      20,
    );
    out.seed_s = r2((Date.now() - t0) / 1000);
    out.seed_after_start_s = out.seed_s; // the servers were running
    const b0 = await proxy.bytes();
    const lag = await measureLag(src, dst, o);
    out.lag_p50_ms = r2(lag.p50);
    out.lag_p99_ms = r2(lag.p99);
    out.bytes_per_change = r2(((await proxy.bytes()) - b0) / (lag.txns * 3 + lag.probes));
    await dst.sql('ALTER SUBSCRIPTION bench DISABLE');
    await pgbench(src, ['-c', '2', '-j', '1', '-t', String(o.backlog / 2)]);
    const t1 = Date.now();
    await dst.sql('ALTER SUBSCRIPTION bench ENABLE');
    await markerArrives(src, dst, 600_000);
    out.catchup_s = r2((Date.now() - t1) / 1000);
    out.catchup_after_start_s = out.catchup_s;
    out.catchup_changes_per_s = Math.round((o.backlog * 3) / ((Date.now() - t1) / 1000));
    await dst.sql('ALTER SUBSCRIPTION bench SET (synchronous_commit = on)');
    await src.sql("ALTER SYSTEM SET synchronous_standby_names = 'bench'");
    await src.sql('SELECT pg_reload_conf()');
    await sleep(500);
    out.sync_tps = await syncTps(src, o);
  } finally {
    await dst.sql('DROP SUBSCRIPTION IF EXISTS bench').catch(() => {});
    proxy.close();
    await Promise.all([src.stop(), dst.stop()]);
  }
  return out;
}

async function runTandem(o: Options): Promise<Record<string, number | string>> {
  const [src, dst] = await Promise.all([
    startPg({ settings: { wal_level: 'logical', fsync: 'on' } }),
    startPg({ settings: { fsync: 'on' } }),
  ]);
  const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex'), TANDEM_LOG_LEVEL: 'warn' };
  const options = (mode: 'async' | 'sync') => ({
    cluster: 'bench',
    group: 'bank',
    mode,
    endpoints: { east: src.url(), west: dst.url() },
    tables: `[${TABLES.join(', ')}]`,
    groupExtra: '    sync: { configure_server: true }',
    prefix: 'tandem-pgbench-',
  });
  const cfg = await writeClusterConfig(options('async'));
  const { dir } = cfg;
  const east = cfg.proc('east', env);
  const west = cfg.proc('west', env);
  // Sync mode: the same folder and ports, the group's mode changed.
  const write = (mode: 'async' | 'sync') =>
    writeFileSync(cfg.file, readFileSync(cfg.file, 'utf8').replace(/mode: (async|sync)/, `mode: ${mode}`));

  const out: Record<string, number | string> = {};
  const wire = async () => (await east.status())?.groups[0]?.links[0]?.wire.bytesOut ?? 0;
  /** Starts both nodes and waits until the link streams (after seeding, the first time). */
  const startBoth = async (timeoutMs: number) => {
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);
    await until(
      'streaming',
      async () => (await east.status())?.groups[0]?.links[0]?.state === 'streaming',
      timeoutMs,
      20,
    );
  };
  try {
    await prepareSource(src, o.scale);
    const t0 = Date.now();
    await startBoth(600_000);
    out.seed_s = r2((Date.now() - t0) / 1000);
    // The copy alone, as the primary timed it (without the two processes' start-up).
    const seeded = (await east.status())?.groups[0]?.links[0]?.lastSeed;
    out.seed_after_start_s = seeded ? r2(seeded.ms / 1000) : 'n/a';
    const b0 = await wire();
    const lag = await measureLag(src, dst, o);
    out.lag_p50_ms = r2(lag.p50);
    out.lag_p99_ms = r2(lag.p99);
    out.bytes_per_change = r2(((await wire()) - b0) / (lag.txns * 3 + lag.probes));
    await west.kill('SIGTERM');
    await pgbench(src, ['-c', '2', '-j', '1', '-t', String(o.backlog / 2)]);
    await sleep(500); // let capture journal the backlog: catch-up is measured from the link
    const t1 = Date.now();
    west.start();
    await west.ready();
    const t2 = Date.now();
    await markerArrives(src, dst, 600_000);
    // Parallel apply may commit the marker before earlier transactions on other rows: caught up
    // is when the primary reports everything it captured applied.
    await until(
      'the backup to apply everything captured',
      async () => {
        const g = (await east.status())?.groups[0];
        return g !== undefined && g.links[0]!.applied >= g.positions.captured;
      },
      600_000,
      5,
    );
    out.catchup_s = r2((Date.now() - t1) / 1000);
    // Without the backup process's start-up (node boot, checks, TLS): the replication itself.
    out.catchup_after_start_s = r2((Date.now() - t2) / 1000);
    out.catchup_changes_per_s = Math.round((o.backlog * 3) / ((Date.now() - t2) / 1000));
    await Promise.all([east.kill('SIGTERM'), west.kill('SIGTERM')]);
    write('sync');
    await startBoth(60_000);
    out.sync_tps = await syncTps(src, o);
  } finally {
    await Promise.all([east, west].map((n) => (n.running ? n.kill('SIGTERM') : null)));
    await Promise.all([src.stop(), dst.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

export type Figures = Record<string, number | string>;

/**
 * Both systems in one run, alternated on fresh clusters (native, Tandem, native, Tandem ...):
 * `rounds` of each, so ratios can be taken round by round (measure.md: A B A B, median of
 * several).
 */
export async function benchPostgres(
  quick: boolean,
  rounds: number,
): Promise<{ rounds: { native: Figures; tandem: Figures }[]; options: Options }> {
  const o: Options = quick
    ? { scale: 2, warmSeconds: 2, lagSeconds: 5, rate: 500, backlog: 10_000, syncSeconds: 5 }
    : { scale: 10, warmSeconds: 5, lagSeconds: 15, rate: 500, backlog: 40_000, syncSeconds: 10 };
  const out: { native: Figures; tandem: Figures }[] = [];
  for (let i = 0; i < rounds; i++) out.push({ native: await runNative(o), tandem: await runTandem(o) });
  return { rounds: out, options: o };
}
