/**
 * `npm run bench`: SQLite -> SQLite with two real `tandem run` processes on loopback.
 *   1. lag under a steady load (probe rows carry their send time; a reader polls the backup every 1 ms)
 *   2. sustained change rate (a writer as fast as it can for a while; applied changes per second)
 *   3. catch-up after a backlog (backup stopped, backlog written, backup started; changes per second)
 *   4. bytes on the wire per change, and peak memory (VmHWM) of both node processes
 * Prints a table and writes JSON to bench-results/sqlite.json. Then PostgreSQL side by side with
 * its own logical replication (postgres.ts), switchover, failover and rewind (switchover.ts).
 * Options: --quick (smaller), --only sqlite|postgres|switchover, --rounds N (PostgreSQL).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { percentile } from '../demo/procs.js';
import { writeClusterConfig } from '../testing/cluster-config.js';
import { benchPostgres, r2 } from './postgres.js';
import {
  benchFailover,
  benchRewind,
  benchSwitchPg,
  benchSwitchSqlite,
  type FailoverFigures,
  type RewindFigures,
  type SwitchFigures,
} from './switchover.js';

const quick = process.argv.includes('--quick');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function cluster() {
  const cfg = await writeClusterConfig({
    cluster: 'bench',
    group: 'shop',
    endpoints: { east: 'sqlite:./data/east.db', west: 'sqlite:./data/west.db' },
    prefix: 'tandem-bench-',
  });
  const { dir } = cfg;
  const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex'), TANDEM_LOG_LEVEL: 'warn' };
  const east = cfg.proc('east', env);
  const west = cfg.proc('west', env);
  const db = new Database(path.join(dir, 'data', 'east.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.exec(`CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER NOT NULL, amount INTEGER NOT NULL,
             note TEXT NOT NULL, sent_us INTEGER NOT NULL)`);
  return { dir, east, west, db, westDb: path.join(dir, 'data', 'west.db') };
}

function procKiB(pid: number | undefined, field: 'VmHWM' | 'VmRSS'): number {
  if (!pid) return 0;
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
const peakKiB = (pid: number | undefined) => procKiB(pid, 'VmHWM');
const rssKiB = (pid: number | undefined) => procKiB(pid, 'VmRSS');

/** Waits until the backup's orders table holds `rows` rows (what the source has). */
async function caughtUp(westDb: string, rows: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let db: Database.Database | null = null;
  try {
    while (Date.now() < deadline) {
      try {
        db ??= new Database(westDb, { readonly: true, fileMustExist: true });
        const r = db.prepare('SELECT count(*) AS n FROM orders').get() as { n: number };
        if (r.n >= rows) return true;
      } catch {
        // not created yet
      }
      await sleep(2);
    }
    return false;
  } finally {
    db?.close();
  }
}

const nowUs = () => Number(process.hrtime.bigint() / 1000n) + 0;

async function benchSqlite(): Promise<void> {
  const c = await cluster();
  const results: Record<string, number | string> = {};
  let sent = 0;
  let rows = 0;
  const peaks = { east: 0, west: 0 };
  const watchPeaks = setInterval(() => {
    peaks.east = Math.max(peaks.east, peakKiB(c.east.child?.pid));
    peaks.west = Math.max(peaks.west, peakKiB(c.west.child?.pid));
  }, 200);
  try {
    c.east.start();
    c.west.start();
    await Promise.all([c.east.ready(), c.west.ready()]);
    const ins = c.db.prepare('INSERT INTO orders (customer, amount, note, sent_us) VALUES (?, ?, ?, ?)');
    const note = 'standard delivery, leave at the door';

    // 1. Lag under a steady 1,000 transactions per second (one row each).
    const rate = 1000;
    const seconds = quick ? 5 : 15;
    if (!(await caughtUp(c.westDb, 0, 30000))) throw new Error('the backup was not seeded within 30 s');
    const reader = new Database(c.westDb, { readonly: true, fileMustExist: true });
    const lags: number[] = [];
    let seen = 0;
    const q = reader.prepare('SELECT id, sent_us FROM orders WHERE id > ? ORDER BY id');
    const poll = setInterval(() => {
      try {
        const rows = q.all(seen) as { id: number; sent_us: number }[];
        const t = nowUs();
        for (const r of rows) lags.push((t - r.sent_us) / 1000);
        if (rows.length) seen = rows[rows.length - 1]!.id;
      } catch {
        // the table may not exist on the backup yet
      }
    }, 1);
    const start = Date.now();
    while (Date.now() - start < seconds * 1000) {
      const due = Math.floor(((Date.now() - start) * rate) / 1000);
      while (sent < due) {
        ins.run(sent % 1000, sent, note, nowUs());
        sent++;
      }
      await sleep(1);
    }
    await caughtUp(c.westDb, sent, 10000);
    await sleep(50);
    clearInterval(poll);
    reader.close();
    lags.sort((a, b) => a - b);
    results.steady_tx_per_s = Math.round((sent * 1000) / (Date.now() - start));
    results.lag_p50_ms = +percentile(lags, 50).toFixed(2);
    results.lag_p99_ms = +percentile(lags, 99).toFixed(2);
    results.lag_max_ms = +(lags.at(-1) ?? 0).toFixed(2);
    results.lag_samples = lags.length;

    // 2. Sustained change rate: 100-row transactions as fast as one writer can for a while.
    const burst = c.db.transaction((n: number, base: number) => {
      for (let i = 0; i < n; i++) ins.run(i, base + i, note, 0);
    });
    const s0 = (await c.east.status())!.groups[0]!;
    const t0 = Date.now();
    rows = 0;
    while (Date.now() - t0 < (quick ? 3000 : 10000)) {
      burst(100, rows);
      rows += 100;
      if (rows % 2000 === 0) await sleep(0);
    }
    const writeMs = Date.now() - t0;
    const ok2 = await caughtUp(c.westDb, sent + rows, 120000);
    const allMs = Date.now() - t0;
    const s1 = (await c.east.status())!.groups[0]!;
    results.sustained_rows_written = rows;
    results.sustained_write_rows_per_s = Math.round((rows * 1000) / writeMs);
    results.sustained_applied_rows_per_s = ok2 ? Math.round((rows * 1000) / allMs) : 'did not finish';
    results.wire_bytes_per_change = +(
      (s1.links[0]!.wire.bytesOut - s0.links[0]!.wire.bytesOut) /
      rows
    ).toFixed(1);

    results.peak_rss_east_mib_so_far = +(peaks.east / 1024).toFixed(1);
    results.peak_rss_west_mib_so_far = +(peaks.west / 1024).toFixed(1);

    // 3. Catch-up: backup stopped, backlog written, backup started; twice, the second backlog
    // four times the first, to show memory does not follow the backlog (VmRSS sampled every
    // 200 ms on both processes during each catch-up; the backup is a fresh process each time).
    let total = sent + rows;
    const backlogs =
      process.env.BENCH_BACKLOGS?.split(',').map(Number) ?? (quick ? [25000, 100000] : [100000, 400000]);
    for (const backlog of backlogs) {
      const label = String(backlog);
      await c.west.kill('SIGTERM');
      for (let i = 0; i < backlog; i += 500) burst(500, total + i);
      total += backlog;
      await sleep(1000); // let capture journal the backlog
      const b0 = (await c.east.status())!.groups[0]!;
      const rss = { east: 0, west: 0 };
      const sampler = setInterval(() => {
        rss.east = Math.max(rss.east, rssKiB(c.east.child?.pid));
        rss.west = Math.max(rss.west, rssKiB(c.west.child?.pid));
      }, 200);
      const tc = Date.now();
      c.west.start();
      await c.west.ready();
      const tl = Date.now();
      const ok = await caughtUp(c.westDb, total, 300000);
      const upMs = Date.now() - tl;
      clearInterval(sampler);
      results[`catchup_${label}_backlog_changes`] = backlog;
      results[`catchup_${label}_backlog_records`] = b0.positions.captured - b0.links[0]!.applied;
      results[`catchup_${label}_ms_including_restart`] = Date.now() - tc;
      results[`catchup_${label}_changes_per_s`] = ok ? Math.round((backlog * 1000) / upMs) : 'did not finish';
      results[`catchup_${label}_rss_max_east_mib`] = +(rss.east / 1024).toFixed(1);
      results[`catchup_${label}_rss_max_west_mib`] = +(rss.west / 1024).toFixed(1);
    }
  } finally {
    clearInterval(watchPeaks);
    c.db.close();
    await Promise.all([c.east, c.west].map((n) => (n.running ? n.kill('SIGTERM') : null)));
    rmSync(c.dir, { recursive: true, force: true });
  }
  const out = {
    machine: {
      cpus: os.cpus().length,
      model: os.cpus()[0]?.model,
      memGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
    },
    quick,
    results,
  };
  mkdirSync('bench-results', { recursive: true });
  writeFileSync('bench-results/sqlite.json', `${JSON.stringify(out, null, 2)}\n`);
  const w = Math.max(...Object.keys(results).map((k) => k.length));
  console.log('SQLite -> SQLite (two tandem processes, loopback, TLS-PSK, deflate)');
  for (const [k, v] of Object.entries(results)) console.log(`  ${k.padEnd(w)}  ${v}`);
  console.log('JSON: bench-results/sqlite.json');
}

async function benchPg(): Promise<void> {
  const arg = process.argv.indexOf('--rounds');
  const rounds = arg > 0 ? Number(process.argv[arg + 1]) : quick ? 1 : 3;
  if (!Number.isInteger(rounds) || rounds < 1)
    throw new Error('--rounds: a whole number of rounds, 1 or more');
  const r = await benchPostgres(quick, rounds);
  const keys = Object.keys(r.rounds[0]!.tandem);
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  const rows = keys.map((k) => {
    const t = r.rounds.map((x) => Number(x.tandem[k]));
    const n = r.rounds.map((x) => Number(x.native[k]));
    // Ratios round by round (each pair ran back to back), then their median.
    const ratios = t.map((v, i) => v / n[i]!).filter(Number.isFinite);
    return {
      measure: k,
      tandem: median(t),
      native: median(n),
      ratio: ratios.length ? median(ratios) : null,
      ratios,
    };
  });
  const w = Math.max(...keys.map((k) => k.length));
  console.log(
    `PostgreSQL -> PostgreSQL, pgbench, side by side (native = PostgreSQL logical replication), ${rounds} round(s) alternated, medians`,
  );
  console.log(
    `  ${'measure'.padEnd(w)}  ${'tandem'.padStart(10)}  ${'native'.padStart(10)}  tandem/native${rounds > 1 ? '  (each round)' : ''}`,
  );
  for (const x of rows) {
    const each = rounds > 1 ? `  (${x.ratios.map((v) => v.toFixed(2)).join(' ')})` : '';
    console.log(
      `  ${x.measure.padEnd(w)}  ${String(r2(x.tandem)).padStart(10)}  ${String(r2(x.native)).padStart(10)}  ${x.ratio === null ? '' : x.ratio.toFixed(2).padStart(13)}${each}`,
    );
  }
  mkdirSync('bench-results', { recursive: true });
  writeFileSync(
    'bench-results/postgres.json',
    `${JSON.stringify({ quick, ...r, medians: rows }, null, 2)}\n`,
  );
  console.log('JSON: bench-results/postgres.json');
}

async function benchSwitch(): Promise<void> {
  const rounds = quick ? 4 : 10;
  const sqlite = await benchSwitchSqlite(rounds);
  const pgr = await benchSwitchPg(rounds);
  const rows: [string, SwitchFigures][] = [
    ['sqlite tandem', sqlite],
    ['postgres tandem', pgr.tandem],
    ['postgres native', pgr.native],
  ];
  const keys = Object.keys(sqlite) as (keyof SwitchFigures)[];
  console.log(
    "Switchover under steady load (window: fence to new primary writable; gap: writers' longest wait)",
  );
  console.log(`  ${'measure'.padEnd(18)}${rows.map(([n]) => n.padStart(17)).join('')}`);
  for (const k of keys)
    console.log(`  ${k.padEnd(18)}${rows.map(([, f]) => String(f[k]).padStart(17)).join('')}`);
  const failover = {
    sqlite: await benchFailover('sqlite', quick ? 2 : 5),
    postgres: await benchFailover('postgres', quick ? 2 : 5),
  };
  console.log('Failover with default settings (witness, failover.timeout 3 s), the primary node SIGKILLed');
  console.log(`  ${'measure'.padEnd(26)}${'sqlite'.padStart(10)}${'postgres'.padStart(10)}`);
  for (const k of Object.keys(failover.sqlite) as (keyof FailoverFigures)[])
    console.log(
      `  ${k.padEnd(26)}${String(failover.sqlite[k]).padStart(10)}${String(failover.postgres[k]).padStart(10)}`,
    );
  const rewind = {
    sqlite: await benchRewind('sqlite', 10_000),
    postgres: await benchRewind('postgres', 10_000),
  };
  console.log('Rejoin of an old primary with a divergent tail of 10,000 transactions');
  console.log(`  ${'measure'.padEnd(26)}${'sqlite'.padStart(10)}${'postgres'.padStart(10)}`);
  for (const k of Object.keys(rewind.sqlite) as (keyof RewindFigures)[])
    console.log(
      `  ${k.padEnd(26)}${String(rewind.sqlite[k]).padStart(10)}${String(rewind.postgres[k]).padStart(10)}`,
    );
  mkdirSync('bench-results', { recursive: true });
  writeFileSync(
    'bench-results/switchover.json',
    `${JSON.stringify({ quick, sqlite, postgres: pgr, failover, rewind }, null, 2)}\n`,
  );
  console.log('JSON: bench-results/switchover.json');
}

const only = process.argv[process.argv.indexOf('--only') + 1];
if (!process.argv.includes('--only') || only === 'sqlite') await benchSqlite();
if (!process.argv.includes('--only') || only === 'postgres') await benchPg();
if (!process.argv.includes('--only') || only === 'switchover') await benchSwitch();
if (only === 'rewind') {
  for (const e of ['sqlite', 'postgres'] as const) console.log(e, await benchRewind(e, 10_000));
}
