/**
 * Switchover write-unavailability under a steady load (`npm run bench -- --only switchover`).
 *
 * - SQLite: two `tandem run` processes; a writer commits one row every 2 ms on whichever node
 *   takes writes (a fenced database refuses it, and it moves). `rounds` switchovers, there and
 *   back, through the primary's admin API (what `tandem switchover` calls).
 * - PostgreSQL: the same with 4 writer connections (role `app`, one small transaction every
 *   10 ms each) on two clusters (fsync on), side by side with PostgreSQL's own logical
 *   replication switched by a script the way pg_easy_replicate does it (revoke the app role's
 *   writes and end its sessions, wait until the subscriber has replayed the fence LSN, copy the
 *   sequence, then open the subscriber: with the reverse slot made before, so nothing written on
 *   the new side is missed).
 * For each switchover: the window Tandem reports (fence to new primary writable; for the script,
 * revoke to grant) and the writers' longest wait between two commits around it. The data of both
 * sides is compared at the end.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { requestSwitchover } from '../cli/switchover.js';
import { loadConfig } from '../config/index.js';
import { percentile } from '../demo/procs.js';
import { writeClusterConfig } from '../testing/cluster-config.js';
import { type PgCluster, startPg } from '../testing/pg-cluster.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface SwitchFigures {
  rounds: number;
  window_p50_ms: number;
  window_p99_ms: number;
  window_max_ms: number;
  writer_gap_p50_ms: number;
  writer_gap_max_ms: number;
  commits: number;
  equal: string;
}

function figures(windows: number[], gaps: number[], commits: number, equal: boolean): SwitchFigures {
  const w = [...windows].sort((a, b) => a - b);
  const g = [...gaps].sort((a, b) => a - b);
  return {
    rounds: w.length,
    window_p50_ms: percentile(w, 50),
    window_p99_ms: percentile(w, 99),
    window_max_ms: w.at(-1) ?? 0,
    writer_gap_p50_ms: Math.round(percentile(g, 50)),
    writer_gap_max_ms: Math.round(g.at(-1) ?? 0),
    commits,
    equal: equal ? 'yes' : 'NO',
  };
}

/** Longest wait between two commits of any writer, over commits logged since `from`. */
class GapMeter {
  #last = performance.now();
  #gap = 0;
  commits = 0;
  commit(): void {
    const now = performance.now();
    this.#gap = Math.max(this.#gap, now - this.#last);
    this.#last = now;
    this.commits++;
  }
  /** The longest wait since the last take(). */
  take(): number {
    const g = Math.max(this.#gap, performance.now() - this.#last);
    this.#gap = 0;
    return g;
  }
}

export async function benchSwitchSqlite(rounds: number): Promise<SwitchFigures> {
  const cfg = await writeClusterConfig({
    cluster: 'bench',
    group: 'shop',
    endpoints: { east: 'sqlite:./data/east.db', west: 'sqlite:./data/west.db' },
    prefix: 'tandem-bench-switch-',
  });
  const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex'), TANDEM_LOG_LEVEL: 'warn' };
  const nodes = { east: cfg.proc('east', env), west: cfg.proc('west', env) };
  const files = { east: path.join(cfg.dir, 'data', 'east.db'), west: path.join(cfg.dir, 'data', 'west.db') };
  const setup = new Database(files.east);
  setup.pragma('journal_mode = WAL');
  setup.exec(
    'CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, amount INTEGER NOT NULL, at INTEGER)',
  );
  setup.close();
  const windows: number[] = [];
  const gaps: number[] = [];
  const meter = new GapMeter();
  let stop = false;
  let writer: Promise<void> = Promise.resolve();
  const dbs: Database.Database[] = [];
  try {
    nodes.east.start();
    nodes.west.start();
    await Promise.all([nodes.east.ready(), nodes.west.ready()]);
    const conns = {
      east: new Database(files.east),
      west: new Database(files.west),
    };
    dbs.push(conns.east, conns.west);
    for (const d of dbs) d.pragma('busy_timeout = 5000');
    let at: 'east' | 'west' = 'east';
    writer = (async () => {
      let i = 0;
      while (!stop) {
        try {
          conns[at].prepare('INSERT INTO orders (amount, at) VALUES (?, ?)').run(i++, Date.now());
          meter.commit();
        } catch (err) {
          if (!/FENCED|no such table/.test((err as Error).message)) throw err;
          at = at === 'east' ? 'west' : 'east';
        }
        await sleep(2);
      }
    })();
    const config = loadConfig(cfg.file);
    await sleep(2000);
    for (let r = 0; r < rounds; r++) {
      meter.take();
      const report = await requestSwitchover(config, 'shop', { to: r % 2 === 0 ? 'west' : 'east' });
      if (!report.ok) throw new Error(`switchover ${r + 1} failed: ${report.error}`);
      await sleep(1000);
      windows.push(report.unavailableMs ?? 0);
      gaps.push(meter.take());
    }
    stop = true;
    await writer;
    await sleep(1000);
    const dump = (f: string) => {
      const d = new Database(f, { readonly: true });
      try {
        return JSON.stringify(d.prepare('SELECT * FROM orders ORDER BY id').raw(true).all());
      } finally {
        d.close();
      }
    };
    return figures(windows, gaps, meter.commits, dump(files.east) === dump(files.west));
  } finally {
    stop = true;
    await writer.catch(() => {});
    for (const d of dbs) d.close();
    await Promise.all(Object.values(nodes).map((n) => (n.running ? n.kill('SIGTERM') : null)));
    rmSync(cfg.dir, { recursive: true, force: true });
  }
}

const SCHEMA = `CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL);
  CREATE TABLE hist (id serial PRIMARY KEY, acct int NOT NULL, delta int NOT NULL, at timestamptz DEFAULT now());
  INSERT INTO acct SELECT g, 0 FROM generate_series(1, 10000) g;`;
const APP_ROLE =
  'CREATE ROLE app LOGIN; GRANT USAGE ON SCHEMA public TO app; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app';

/**
 * `n` writer connections as role app, each a small transaction every 10 ms. A refused or ended
 * session reconnects to the other server: writers follow the primary as rerouted clients would.
 */
function pgWriters(urls: string[], n: number, meter: GapMeter) {
  let stop = false;
  const one = async (k: number) => {
    let client: pg.Client | null = null;
    let at = 0;
    while (!stop) {
      try {
        if (!client) {
          client = new pg.Client({ connectionString: urls[at] });
          client.on('error', () => {});
          await client.connect();
        }
        const a = 1 + Math.floor(Math.random() * 10000);
        await client.query(
          `BEGIN; UPDATE acct SET balance = balance + 1 WHERE id = ${a}; INSERT INTO hist (acct, delta) VALUES (${a}, ${k}); COMMIT`,
        );
        meter.commit();
      } catch {
        await client?.end().catch(() => {});
        client = null;
        at = 1 - at;
        await sleep(1);
      }
      await sleep(10);
    }
    await client?.end().catch(() => {});
  };
  const all = Promise.all(Array.from({ length: n }, (_, k) => one(k)));
  return {
    async stop() {
      stop = true;
      await all;
    },
  };
}

/** Waits until subscription `name`'s walsender on `publisher` has replayed everything written so far. */
async function caughtUpNative(publisher: PgCluster, name: string, db: string): Promise<void> {
  const lsn = (await publisher.sql('SELECT pg_current_wal_lsn()::text AS l', db)).rows[0].l as string;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const r = await publisher.sql(
      `SELECT coalesce(bool_and(replay_lsn >= '${lsn}'), false) AS ok FROM pg_stat_replication WHERE application_name = '${name}'`,
      db,
    );
    if (r.rows[0].ok) return;
    await sleep(5);
  }
  throw new Error(`subscription ${name} did not catch up within 60 s`);
}

async function sameData(a: PgCluster, b: PgCluster, db: string): Promise<boolean> {
  const q =
    "SELECT (SELECT md5(string_agg(id || ':' || balance, ',' ORDER BY id)) FROM acct) || (SELECT md5(string_agg(id || ':' || acct || ':' || delta, ',' ORDER BY id)) FROM hist) AS h";
  const [x, y] = await Promise.all([a.sql(q, db), b.sql(q, db)]);
  return x.rows[0].h === y.rows[0].h;
}

export async function benchSwitchPg(
  rounds: number,
): Promise<{ tandem: SwitchFigures; native: SwitchFigures }> {
  return { tandem: await tandemPg(rounds), native: await nativePg(rounds) };
}

async function tandemPg(rounds: number): Promise<SwitchFigures> {
  const pgs = await Promise.all([
    startPg({ settings: { wal_level: 'logical', fsync: 'on' } }),
    startPg({ settings: { wal_level: 'logical', fsync: 'on' } }),
  ]);
  const [a, b] = pgs;
  const db = 'bench';
  const cfgDir: string[] = [];
  const meter = new GapMeter();
  let load: ReturnType<typeof pgWriters> | null = null;
  const nodes: { kill: (s: NodeJS.Signals) => Promise<unknown>; running: boolean }[] = [];
  try {
    await Promise.all(pgs.map((c) => c.sql(`CREATE DATABASE ${db}`)));
    await a.sql(SCHEMA, db);
    const cfg = await writeClusterConfig({
      cluster: 'bench',
      group: db,
      endpoints: { east: a!.url(db), west: b!.url(db) },
      prefix: 'tandem-bench-switch-',
    });
    cfgDir.push(cfg.dir);
    const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex'), TANDEM_LOG_LEVEL: 'warn' };
    const east = cfg.proc('east', env);
    const west = cfg.proc('west', env);
    nodes.push(east, west);
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);
    const config = loadConfig(cfg.file);
    // Seeded and streaming; then the app role on both sides (the backup's tables exist now).
    for (;;) {
      if ((await east.status())?.groups[0]?.links[0]?.state === 'streaming') break;
      await sleep(50);
    }
    await a.sql(APP_ROLE, db);
    await b.sql(APP_ROLE, db);
    let primary = 'east';
    load = pgWriters([a!.url(db, 'app'), b!.url(db, 'app')], 4, meter);
    await sleep(2000);
    const windows: number[] = [];
    const gaps: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const to = primary === 'east' ? 'west' : 'east';
      meter.take();
      const report = await requestSwitchover(config, db, { to });
      if (!report.ok) throw new Error(`switchover ${r + 1} failed: ${report.error}`);
      primary = to;
      await sleep(1000);
      windows.push(report.unavailableMs ?? 0);
      gaps.push(meter.take());
    }
    await load.stop();
    load = null;
    await sleep(1500);
    return figures(windows, gaps, meter.commits, await sameData(a, b, db));
  } finally {
    await load?.stop();
    await Promise.all(nodes.map((n) => (n.running ? n.kill('SIGTERM') : null)));
    await Promise.all(pgs.map((c) => c.stop()));
    for (const d of cfgDir) rmSync(d, { recursive: true, force: true });
  }
}

async function nativePg(rounds: number): Promise<SwitchFigures> {
  const pgs = await Promise.all([
    startPg({ settings: { wal_level: 'logical', fsync: 'on' } }),
    startPg({ settings: { wal_level: 'logical', fsync: 'on' } }),
  ]);
  const db = 'bench';
  const meter = new GapMeter();
  let load: ReturnType<typeof pgWriters> | null = null;
  try {
    await Promise.all(pgs.map((c) => c.sql(`CREATE DATABASE ${db}`)));
    const [a, b] = pgs as [PgCluster, PgCluster];
    await a.sql(SCHEMA, db);
    await b.sql(SCHEMA.replace(/INSERT INTO acct[^;]*;/, ''), db);
    for (const c of pgs) {
      await c.sql(APP_ROLE, db);
      await c.sql('CREATE PUBLICATION pub FOR ALL TABLES', db);
    }
    // The backup side refuses the app role's writes, as a fenced backup would.
    await b.sql('REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public FROM app', db);
    const conn = (c: PgCluster) => c.url(db).replace('postgres://', 'postgresql://');
    await b.sql(`CREATE SUBSCRIPTION sub_0 CONNECTION '${conn(a)}' PUBLICATION pub`, db);
    const synced = async () =>
      (await b.sql("SELECT count(*)::int AS n FROM pg_subscription_rel WHERE srsubstate <> 'r'", db)).rows[0]
        .n === 0;
    while (!(await synced())) await sleep(50);
    let primary = 0;
    load = pgWriters([a.url(db, 'app'), b.url(db, 'app')], 4, meter);
    await sleep(2000);
    const windows: number[] = [];
    const gaps: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const from = pgs[primary]!;
      const to = pgs[1 - primary]!;
      meter.take();
      const t0 = performance.now();
      await from.sql(
        "REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public FROM app; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
        db,
      );
      // Sessions that were mid-transaction: gone once terminated; then the fence LSN.
      while (
        (
          await from.sql(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'app' AND backend_xid IS NOT NULL",
            db,
          )
        ).rows[0].n > 0
      )
        await sleep(1);
      const lsn = (await from.sql('SELECT pg_current_wal_lsn()::text AS l', db)).rows[0].l as string;
      while (
        !(
          await from.sql(
            `SELECT coalesce(bool_and(replay_lsn >= '${lsn}'), false) AS ok FROM pg_stat_replication WHERE application_name = 'sub_${r}'`,
            db,
          )
        ).rows[0].ok
      )
        await sleep(1);
      const seq = (await from.sql('SELECT last_value::text AS v FROM hist_id_seq', db)).rows[0].v as string;
      await to.sql(`SELECT setval('hist_id_seq', ${seq}, true)`, db);
      await to.sql(`SELECT pg_create_logical_replication_slot('sub_${r + 1}', 'pgoutput')`, db);
      await to.sql('GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app', db);
      primary = 1 - primary;
      windows.push(Math.round(performance.now() - t0));
      await to.sql(`DROP SUBSCRIPTION sub_${r}`, db);
      await from.sql(
        `CREATE SUBSCRIPTION sub_${r + 1} CONNECTION '${conn(to)}' PUBLICATION pub WITH (create_slot = false, slot_name = 'sub_${r + 1}', copy_data = false)`,
        db,
      );
      // The next switch starts once the reverse subscription streams (its worker starts late).
      await caughtUpNative(to, `sub_${r + 1}`, db);
      await sleep(1000);
      gaps.push(meter.take());
    }
    await load.stop();
    load = null;
    await caughtUpNative(pgs[primary]!, `sub_${rounds}`, db);
    return figures(windows, gaps, meter.commits, await sameData(pgs[0]!, pgs[1]!, db));
  } finally {
    await load?.stop();
    await Promise.all(pgs.map((c) => c.stop()));
  }
}

/**
 * Three `tandem run` processes (not started) for a failover bench: east primary and west backup
 * (two fresh PostgreSQL clusters, fsync on, or two SQLite files) and a witness node `arbiter`;
 * `failover` is the group's failover line. `destroy` kills them and removes everything.
 */
async function witnessCluster(engine: 'sqlite' | 'postgres', failover: string, prefix: string) {
  const pgs =
    engine === 'postgres'
      ? await Promise.all([
          startPg({ settings: { wal_level: 'logical', fsync: 'on' } }),
          startPg({ settings: { wal_level: 'logical', fsync: 'on' } }),
        ])
      : [];
  const cfg = await writeClusterConfig({
    cluster: 'bench',
    group: 'shop',
    endpoints:
      engine === 'postgres'
        ? { east: pgs[0]!.url('postgres'), west: pgs[1]!.url('postgres') }
        : { east: 'sqlite:./data/east.db', west: 'sqlite:./data/west.db' },
    extraNodes: ['arbiter'],
    groupExtra: failover,
    prefix,
  });
  const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex'), TANDEM_LOG_LEVEL: 'warn' };
  const nodes = {
    east: cfg.proc('east', env),
    west: cfg.proc('west', env),
    arbiter: cfg.proc('arbiter', env),
  };
  const files = { east: path.join(cfg.dir, 'data', 'east.db'), west: path.join(cfg.dir, 'data', 'west.db') };
  const destroy = async () => {
    await Promise.all(Object.values(nodes).map((x) => (x.running ? x.kill('SIGKILL') : null)));
    await Promise.all(pgs.map((c) => c.stop()));
    rmSync(cfg.dir, { recursive: true, force: true });
  };
  return { pgs, nodes, files, destroy };
}

export interface FailoverFigures {
  rounds: number;
  /** The primary's node SIGKILLed -> the first commit on the new primary (the writers' view). */
  death_to_writable_p50_ms: number;
  death_to_writable_max_ms: number;
  /** The new primary's report: last sign of life -> taking writes. */
  reported_p50_ms: number;
  /** The backup's takeover itself (witness grant to taking writes). */
  promote_p50_ms: number;
}

/**
 * Failover with default settings (failover.timeout 3 s, a witness node): a fresh cluster per
 * round, writers following the primary, the primary's node SIGKILLed; the time until a writer's
 * commit succeeds on the new primary.
 */
export async function benchFailover(engine: 'sqlite' | 'postgres', rounds: number): Promise<FailoverFigures> {
  const deaths: number[] = [];
  const reported: number[] = [];
  const promotes: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const { pgs, nodes, files, destroy } = await witnessCluster(
      engine,
      '    failover: { witness: arbiter }',
      'tandem-bench-failover-',
    );
    const meter = new GapMeter();
    let stopSqlite = false;
    let sqliteWriter: Promise<void> = Promise.resolve();
    let load: ReturnType<typeof pgWriters> | null = null;
    try {
      if (engine === 'postgres') {
        await pgs[0]!.sql(SCHEMA);
      } else {
        const d = new Database(files.east);
        d.pragma('journal_mode = WAL');
        d.exec('CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)');
        d.close();
      }
      for (const n of Object.values(nodes)) n.start();
      await Promise.all(Object.values(nodes).map((n) => n.ready()));
      for (;;) {
        const g = (await nodes.east.status())?.groups[0];
        if (g?.links[0]?.state === 'streaming' && g.lease?.held) break;
        await sleep(50);
      }
      let firstOnWest = 0;
      if (engine === 'postgres') {
        for (const c of pgs) await c.sql(APP_ROLE);
        load = pgWriters([pgs[0]!.url('postgres', 'app'), pgs[1]!.url('postgres', 'app')], 4, meter);
      } else {
        const conns = { east: new Database(files.east), west: new Database(files.west) };
        for (const d of Object.values(conns)) d.pragma('busy_timeout = 100');
        let at: 'east' | 'west' = 'east';
        sqliteWriter = (async () => {
          let i = 0;
          while (!stopSqlite) {
            try {
              conns[at]
                .prepare('INSERT INTO orders (id, amount) VALUES (?, ?)')
                .run(++i + (at === 'west' ? 1e9 : 0), i);
              meter.commit();
              if (at === 'west' && firstOnWest === 0) firstOnWest = Date.now();
            } catch {
              at = at === 'east' ? 'west' : 'east';
            }
            await sleep(2);
          }
          for (const d of Object.values(conns)) d.close();
        })();
      }
      await sleep(2000);
      const killed = Date.now();
      await nodes.east.kill('SIGKILL');
      let report: Record<string, unknown> | null | undefined = null;
      for (let waited = 0; waited < 30_000 && !report; waited += 20) {
        report = (await nodes.west.status())?.lastFailover as Record<string, unknown> | null | undefined;
        await sleep(20);
      }
      if (!report) throw new Error(`round ${r + 1}: no failover within 30 s`);
      if (engine === 'postgres') {
        // The first writer commit on the new primary.
        const before = meter.commits;
        while (meter.commits === before) await sleep(1);
        firstOnWest = Date.now();
      } else {
        while (firstOnWest === 0) await sleep(1);
      }
      deaths.push(firstOnWest - killed);
      reported.push(Number(report.unavailableMs));
      promotes.push(Number(report.promoteMs));
    } finally {
      stopSqlite = true;
      await sqliteWriter.catch(() => {});
      await load?.stop();
      await destroy();
    }
  }
  const sorted = (x: number[]) => [...x].sort((a, b) => a - b);
  return {
    rounds,
    death_to_writable_p50_ms: percentile(sorted(deaths), 50),
    death_to_writable_max_ms: Math.max(...deaths),
    reported_p50_ms: percentile(sorted(reported), 50),
    promote_p50_ms: percentile(sorted(promotes), 50),
  };
}

export interface RewindFigures {
  transactions: number;
  /** Divergent source transactions in the report (capture may group commits of one read). */
  reported: number;
  changes_undone: number;
  find_ms: number;
  rewind_ms: number;
  /** Thawed (SIGCONT) until it streams as a backup, including learning of the newer epoch. */
  thaw_to_backup_ms: number;
  equal: string;
}

/**
 * A divergent tail of `n` transactions: the primary's node is frozen (SIGSTOP) while `n`
 * one-row transactions still commit in its database before its lease runs out (failover.timeout
 * 20 s here), the backup takes over, the node is thawed; it finds the fork, reports and undoes
 * the tail, and follows the new primary.
 */
export async function benchRewind(engine: 'sqlite' | 'postgres', n: number): Promise<RewindFigures> {
  const { pgs, nodes, files, destroy } = await witnessCluster(
    engine,
    '    failover: { witness: arbiter, timeout: 20s }',
    'tandem-bench-rewind-',
  );
  try {
    if (engine === 'postgres') await pgs[0]!.sql(SCHEMA);
    else {
      const d = new Database(files.east);
      d.pragma('journal_mode = WAL');
      d.exec(
        'CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL); WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 10000) INSERT INTO acct SELECT x, 0 FROM s',
      );
      d.close();
    }
    for (const x of Object.values(nodes)) x.start();
    await Promise.all(Object.values(nodes).map((x) => x.ready()));
    for (;;) {
      const g = (await nodes.east.status())?.groups[0];
      if (g?.links[0]?.state === 'streaming' && g.lease?.held && g.links[0].applied >= g.positions.captured)
        break;
      await sleep(50);
    }
    nodes.east.child!.kill('SIGSTOP');
    // The tail: n one-row transactions (updates and inserts) in the frozen primary's database.
    if (engine === 'postgres') {
      const c = new pg.Client({ connectionString: pgs[0]!.url('postgres') });
      await c.connect();
      await c.query('SET synchronous_commit = off');
      for (let i = 0; i < n; i++) {
        if (i % 2) await c.query(`UPDATE acct SET balance = balance + 1 WHERE id = ${1 + (i % 10000)}`);
        else await c.query(`INSERT INTO hist (acct, delta) VALUES (${1 + (i % 10000)}, 1)`);
      }
      await c.end();
    } else {
      const d = new Database(files.east);
      const up = d.prepare('UPDATE acct SET balance = balance + 1 WHERE id = ?');
      const ins = d.prepare('INSERT INTO acct (id, balance) VALUES (?, 1)');
      for (let i = 0; i < n; i++) {
        if (i % 2) up.run(1 + (i % 10000));
        else ins.run(100_000 + i);
      }
      d.close();
    }
    for (;;) {
      if ((await nodes.west.status())?.lastFailover) break;
      await sleep(100);
    }
    const thawed = performance.now();
    nodes.east.child!.kill('SIGCONT');
    let rejoin: Record<string, unknown> | null | undefined = null;
    for (;;) {
      const s = await nodes.east.status();
      rejoin = s?.lastRejoin as Record<string, unknown> | null | undefined;
      if (rejoin && s?.groups[0]?.role === 'backup') break;
      await sleep(20);
    }
    const thawToBackup = Math.round(performance.now() - thawed);
    // Equal once east has applied what west had.
    let equal = false;
    for (let i = 0; i < 300 && !equal; i++) {
      if (engine === 'postgres') equal = await sameData(pgs[0]!, pgs[1]!, 'postgres');
      else {
        const sum = (f: string) => {
          const d = new Database(f, { readonly: true });
          try {
            return JSON.stringify(d.prepare('SELECT count(*), sum(balance), sum(id) FROM acct').raw().get());
          } finally {
            d.close();
          }
        };
        equal = sum(files.east) === sum(files.west);
      }
      if (!equal) await sleep(100);
    }
    return {
      transactions: n,
      reported: Number(rejoin.transactions),
      changes_undone: Number(rejoin.changesUndone),
      find_ms: Number(rejoin.findMs),
      rewind_ms: Number(rejoin.rewindMs),
      thaw_to_backup_ms: thawToBackup,
      equal: equal ? 'yes' : 'NO',
    };
  } finally {
    if (nodes.east.child) nodes.east.child.kill('SIGCONT');
    await destroy();
  }
}
