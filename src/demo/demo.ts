/**
 * `tandem demo`: in a temporary folder, two `tandem run` processes on loopback replicate a live
 * SQLite shop. A writer creates orders continuously on whichever node is primary; the backup is
 * SIGKILLed and restarted mid-stream; then the primary is switched over to the backup and back,
 * under load, printing each switch's timeline and write-unavailable window; at the end the
 * backup must hold exactly the primary's rows.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { formatBytes } from '../cli/status.js';
import { renderSwitch, requestSwitchover } from '../cli/switchover.js';
import { loadConfig } from '../config/index.js';
import type { GroupStatus } from '../node/status.js';
import { writeClusterConfig } from '../testing/cluster-config.js';
import { percentile } from './procs.js';

export interface DemoOptions {
  seconds: number;
  rate: number;
  keep: boolean;
  out?: NodeJS.WritableStream;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runDemo(o: DemoOptions): Promise<boolean> {
  const out = o.out ?? process.stdout;
  const say = (s: string) => out.write(`${s}\n`);
  const tty = (out as NodeJS.WriteStream).isTTY === true;
  const cfg = await writeClusterConfig({
    cluster: 'demo',
    group: 'shop',
    endpoints: { east: 'sqlite:./data/east.db', west: 'sqlite:./data/west.db' },
    prefix: 'tandem-demo-',
  });
  const { dir } = cfg;
  const env = { ...process.env, TANDEM_SECRET: randomBytes(24).toString('hex') };
  const eastDb = path.join(dir, 'data', 'east.db');
  const westDb = path.join(dir, 'data', 'west.db');
  const db = new Database(eastDb);
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  db.exec(`
    CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT);
    CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, amount_cents INTEGER NOT NULL,
                         status TEXT NOT NULL, created_ms INTEGER NOT NULL);
  `);
  const cities = ['Lyon', 'Osaka', 'Lagos', 'Lima', 'Oslo'];
  const addCustomer = db.prepare('INSERT INTO customers (name, city) VALUES (?, ?)');
  db.transaction(() => {
    for (let i = 0; i < 500; i++) addCustomer.run(`customer ${i}`, cities[i % cities.length]);
  })();

  const east = cfg.proc('east', env);
  const west = cfg.proc('west', env);
  const writerDbs = { east: db, west: null as Database.Database | null };
  let ok = false;
  let reason = '';
  const lags: { id: number; lag: number }[] = [];
  // Orders by id: those after the last one west had applied when it was killed, up to the last
  // one written when it had caught up again, waited for the outage.
  const outage = { fromId: 0, toId: 0 };
  let lastId = 0;
  let orders = 0;
  try {
    say(`Tandem demo in ${dir}`);
    say(`  east (primary) and west (backup) replicate group "shop" (SQLite) over an authenticated TLS link.`);
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);
    say('  both nodes are up; a writer creates orders on east');
    say(`  dashboard while it runs: http://${cfg.admin('east')}/ (or any node's admin address)`);

    // Writer: `rate` orders per second in small transactions, with some updates and deletes, on
    // whichever node takes writes: a fenced database refuses, and the writer moves to the other.
    const writerFor = (d: Database.Database) => {
      const insert = d.prepare(
        'INSERT INTO orders (customer_id, amount_cents, status, created_ms) VALUES (?, ?, ?, ?)',
      );
      const update = d.prepare("UPDATE orders SET status = 'shipped' WHERE id = ?");
      const del = d.prepare('DELETE FROM orders WHERE id = ?');
      return d.transaction((n: number) => {
        for (let i = 0; i < n; i++) {
          const r = insert.run(
            1 + Math.floor(Math.random() * 500),
            100 + Math.floor(Math.random() * 99900),
            'new',
            Date.now(),
          );
          orders++;
          const id = Number(r.lastInsertRowid);
          lastId = id;
          if (id % 5 === 0) update.run(id - 3);
          if (id % 17 === 0) del.run(id - 11);
        }
      });
    };
    const writes = { east: writerFor(db), west: null as ((n: number) => void) | null };
    let at: 'east' | 'west' = 'east';
    let lastWrite = performance.now();
    let longestGap = 0;
    const perTick = Math.max(1, Math.round(o.rate / 100));
    const writer = setInterval(() => {
      try {
        writes[at]!(perTick);
        const now = performance.now();
        longestGap = Math.max(longestGap, now - lastWrite);
        lastWrite = now;
      } catch (err) {
        if (!/FENCED/.test((err as Error).message)) throw err;
        at = at === 'east' ? 'west' : 'east';
        if (!writes[at]) {
          writerDbs.west = new Database(westDb);
          writerDbs.west.pragma('busy_timeout = 5000');
          writes.west = writerFor(writerDbs.west);
        }
      }
    }, 10);

    // Lag probe: a reader on the backup (whichever node that is) sees each order's creation time.
    const probeState: { reader: Database.Database | null; of: string } = { reader: null, of: '' };
    let seen = 0;
    const probe = setInterval(() => {
      try {
        const backup = at === 'east' ? westDb : eastDb;
        if (probeState.of !== backup) {
          probeState.reader?.close();
          probeState.reader = null;
          probeState.of = backup;
        }
        probeState.reader ??= new Database(backup, { readonly: true, fileMustExist: true });
        const rows = probeState.reader
          .prepare('SELECT id, created_ms FROM orders WHERE id > ? ORDER BY id')
          .all(seen) as {
          id: number;
          created_ms: number;
        }[];
        const now = Date.now();
        for (const r of rows) lags.push({ id: r.id, lag: now - r.created_ms });
        if (rows.length) seen = rows[rows.length - 1]!.id;
      } catch {
        probeState.reader = null; // the backup database may not exist yet
      }
    }, 5);

    const line = async (label: string) => {
      const primary = at === 'east' ? east : west;
      const s = (await primary.status())?.groups[0];
      const text = s ? statusLine(s, orders) : `orders ${orders}  (${primary.name} not answering)`;
      if (tty) out.write(`\r\x1b[2K  ${label.padEnd(12)} ${text}`);
      else say(`  ${label.padEnd(12)} ${text}`);
    };
    const liveEvery = tty ? 250 : 2000;
    const live = async (ms: number, label: string, each?: () => Promise<void>) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        await line(label);
        await each?.();
        await sleep(Math.min(liveEvery, Math.max(0, end - Date.now())));
      }
    };
    const total = o.seconds * 1000;
    await live(total * 0.25, 'streaming');
    if (tty) out.write('\n');
    say('  SIGKILL west (the backup) while orders keep coming');
    outage.fromId = seen;
    await west.kill('SIGKILL');
    await live(Math.min(2000, total * 0.2), 'west down');
    if (tty) out.write('\n');
    say('  restarting west: it resumes from its own journal, no reseed');
    west.start();
    await west.ready();
    // The outage ends once west has caught up with what was written while it was away.
    await live(total * 0.25, 'streaming', async () => {
      const l = (await east.status())?.groups[0]?.links[0];
      if (outage.toId === 0 && l?.state === 'streaming' && l.lag.records <= 2) outage.toId = lastId;
    });
    if (outage.toId === 0) outage.toId = lastId;
    if (tty) out.write('\n');

    // Planned switchover to west under load, then back, as `tandem switchover` does it.
    const config = loadConfig(cfg.file);
    const windows: { label: string; tandem: number | null; writer: number }[] = [];
    for (const [to, label] of [
      ['west', 'switchover east -> west'],
      ['east', 'switch back west -> east'],
    ] as const) {
      say(`  ${label} while orders keep coming`);
      longestGap = 0;
      const report = await requestSwitchover(config, 'shop', { to, verify: true });
      for (const l of renderSwitch(report).split('\n')) say(`    ${l}`);
      if (!report.ok) throw new Error(`${label} failed: ${report.error}`);
      await live(total * 0.15, 'streaming');
      if (tty) out.write('\n');
      windows.push({ label, tandem: report.unavailableMs, writer: Math.round(longestGap) });
    }
    clearInterval(writer);
    say(`  writer stopped after ${orders} orders; waiting for west to apply everything`);

    const deadline = Date.now() + 30000;
    let caught = false;
    while (Date.now() < deadline) {
      const s = (await east.status())?.groups[0];
      if (s && s.positions.applied >= s.positions.captured && s.links[0]?.lag.records === 0) {
        // One more look after capture had time to see the last commit.
        await sleep(100);
        const s2 = (await east.status())?.groups[0];
        if (
          s2 &&
          s2.positions.applied >= s2.positions.captured &&
          s2.positions.captured === s.positions.captured
        ) {
          caught = true;
          break;
        }
      }
      await sleep(50);
    }
    clearInterval(probe);
    probeState.reader?.close();
    if (!caught) throw new Error('west did not catch up within 30 s');

    const verify = compare(db, westDb);
    const s = (await east.status())!.groups[0]!;
    const inOutage = (x: { id: number }) => x.id > outage.fromId && x.id <= outage.toId;
    const steady = lags
      .filter((x) => !inOutage(x))
      .map((x) => x.lag)
      .sort((a, b) => a - b);
    const waited = Math.max(0, ...lags.filter(inOutage).map((x) => x.lag));
    const link = s.links[0]!;
    say('');
    say('Report');
    say(`  orders written        ${orders}`);
    say(`  journal records       ${s.positions.captured} (${formatBytes(s.journal.bytes)} of journal)`);
    say(`  bytes on the wire     ${formatBytes(link.wire.bytesOut)} east -> west (compressed, TLS)`);
    say(
      `  lag (probe, ms)       p50 ${percentile(steady, 50)}  p99 ${percentile(steady, 99)}  max ${steady.at(-1) ?? 0}  over ${steady.length} orders written while both nodes ran`,
    );
    say(
      `  during the outage     ${lags.length - steady.length} orders written while west was down or catching up waited at most ${waited} ms`,
    );
    for (const w of windows) {
      say(
        `  ${w.label.padEnd(26)}writes unavailable ${w.tandem} ms (fence to new primary writable); the writer's longest wait between commits ${w.writer} ms`,
      );
    }
    say(`  verification          ${verify.ok ? 'OK' : 'MISMATCH'}: ${verify.detail}`);
    ok = verify.ok;
    if (!ok) reason = verify.detail;
  } catch (err) {
    reason = (err as Error).message;
  } finally {
    db.close();
    writerDbs.west?.close();
    const codes = await Promise.all(
      [east, west].map((n) => (n.running ? n.kill('SIGTERM') : Promise.resolve(0))),
    );
    if (ok && codes.some((c) => c !== 0)) {
      ok = false;
      reason = `a node did not stop cleanly on SIGTERM (exit codes ${codes.join(', ')})`;
    }
    if (!ok)
      say(`\nDEMO FAILED: ${reason}\n  logs: ${path.join(dir, 'east.log')}, ${path.join(dir, 'west.log')}`);
    else if (!o.keep) rmSync(dir, { recursive: true, force: true });
    else say(`  kept ${dir}`);
  }
  if (ok) say('\nDemo passed: the backup holds exactly the primary rows.');
  return ok;
}

function statusLine(g: GroupStatus, orders: number): string {
  const l = g.links[0];
  const lag = l ? `lag ${l.lag.records} rec / ${l.lag.ms} ms` : '';
  const rate = (r: number | null) => (r === null ? '-' : r.toFixed(0));
  return `orders ${orders}  captured ${g.positions.captured} (${rate(g.rates.capturedPerSec)}/s)  applied ${g.positions.applied} (${rate(g.rates.appliedPerSec)}/s)  ${lag}  link ${l?.state ?? '-'}  wire ${formatBytes(l?.wire.bytesOut ?? 0)}`;
}

/** Row-by-row comparison of every table. */
function compare(primary: Database.Database, backupPath: string): { ok: boolean; detail: string } {
  const backup = new Database(backupPath, { readonly: true });
  try {
    const details: string[] = [];
    let ok = true;
    for (const t of ['customers', 'orders']) {
      const a = primary.prepare(`SELECT * FROM ${t} ORDER BY id`).raw(true).all();
      const b = backup.prepare(`SELECT * FROM ${t} ORDER BY id`).raw(true).all();
      const same = JSON.stringify(a) === JSON.stringify(b);
      if (!same) ok = false;
      details.push(
        `${t}: ${a.length} rows on east, ${b.length} on west${same ? ', identical' : ', DIFFERENT'}`,
      );
    }
    return { ok, detail: details.join('; ') };
  } finally {
    backup.close();
  }
}
