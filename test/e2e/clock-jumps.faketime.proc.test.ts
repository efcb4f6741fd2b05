/**
 * Wall-clock jumps, for real: every node (and the application writing to the primary's database,
 * which shares its machine's clock) runs under libfaketime with its own offset file, changed
 * while they run; the monotonic clock is left alone, as when NTP or an operator sets the clock.
 * While all is well, jumps of hours either way on any node cause no failover, no lost lease and
 * no pause in replication. Then the primary is frozen (SIGSTOP) and its machine's clock set back:
 * its database must stop taking writes before the backup, promoted by the witness, takes its
 * first. Hybrid logical clock timestamps never go back along either journal. Needs
 * libfaketime, dist/.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { decodeRecord } from '../../src/core/record.js';
import type { NodeProcess } from '../../src/demo/procs.js';
import { Journal } from '../../src/journal/index.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { sleep, until } from '../helpers/cluster.js';
import { dbFile, expectOnePrimary, startWitnessGroup, WITNESS_FAILOVER } from '../helpers/witness-group.js';

const LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1';

/** Environment that puts a process on the fake wall clock read from `file` (an offset like -1h). */
function fakeClock(file: string): NodeJS.ProcessEnv {
  if (!existsSync(LIB)) throw new Error(`libfaketime is missing (${LIB}): apt-get install libfaketime`);
  return {
    LD_PRELOAD: LIB,
    FAKETIME_TIMESTAMP_FILE: file,
    FAKETIME_DONT_FAKE_MONOTONIC: '1',
    FAKETIME_CACHE_DURATION: '1',
  };
}

/**
 * An application on the primary's machine: a process on that machine's (fake) clock inserting a
 * row per line it reads; the test times each "ok" it prints on its own monotonic clock.
 */
function startApp(db: string, env: NodeJS.ProcessEnv) {
  const script = `
    const D = require(${JSON.stringify(createRequire(import.meta.url).resolve('better-sqlite3'))});
    const db = new D(${JSON.stringify(db)}); db.pragma('busy_timeout = 200');
    const ins = db.prepare('INSERT INTO t (id, side) VALUES (?, ?)');
    require('node:readline').createInterface({ input: process.stdin }).on('line', (id) => {
      try { ins.run(Number(id), 'east'); process.stdout.write('ok\\n'); } catch { process.stdout.write('no\\n'); }
    });`;
  const child: ChildProcess = spawn(process.execPath, ['-e', script], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const accepted: number[] = [];
  let answered = 0;
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += String(d);
    let i = buf.indexOf('\n');
    while (i >= 0) {
      if (buf.slice(0, i) === 'ok') accepted.push(performance.now());
      answered++;
      buf = buf.slice(i + 1);
      i = buf.indexOf('\n');
    }
  });
  return {
    accepted,
    get answered() {
      return answered;
    },
    write: (id: number) => child.stdin!.write(`${id}\n`),
    stop: () => {
      child.stdin!.end();
      return new Promise((r) => child.once('exit', r));
    },
  };
}

/** Every record's HLC in a stopped node's journal, in position order. */
async function hlcs(dir: string, node: string): Promise<bigint[]> {
  const j = await Journal.open({ dir: path.join(dir, 'state', node, 'journal', 'shop') });
  try {
    const out: bigint[] = [];
    for (let p = j.firstPosition; p <= j.lastPosition; p++)
      out.push(decodeRecord(j.read(p, { maxBytes: 1, maxRecords: 1 })[0]!).hlc);
    return out;
  } finally {
    await j.close();
  }
}

describe('wall-clock jumps (libfaketime)', () => {
  it('jumps of hours cause no failover; a frozen primary whose clock is set back stops taking writes in time', async () => {
    const cfg = await writeClusterConfig({
      cluster: 'clock',
      group: 'shop',
      endpoints: { east: 'sqlite:./data/east.db', west: 'sqlite:./data/west.db' },
      extraNodes: ['arbiter'],
      groupExtra: WITNESS_FAILOVER,
      prefix: 'tandem-test-',
    });
    const dir = cfg.dir;
    const clock = (n: string) => path.join(dir, `clock-${n}`);
    const setClock = (n: string, offset: string) => writeFileSync(clock(n), `${offset}\n`);
    const procs: NodeProcess[] = [];
    let app: ReturnType<typeof startApp> | null = null;
    try {
      const secret = randomBytes(24).toString('hex');
      for (const n of ['arbiter', 'east', 'west']) setClock(n, '+0');
      const { east, west } = await startWitnessGroup(
        cfg,
        'CREATE TABLE t (id INTEGER PRIMARY KEY, side TEXT)',
        procs,
        (n) => ({ ...process.env, TANDEM_SECRET: secret, ...fakeClock(clock(n)) }),
      );

      // The application writes to east (on east's clock); a client tries west all along.
      app = startApp(dbFile(cfg, 'east'), fakeClock(clock('east')));
      const westAccepted: number[] = [];
      const westDb = new Database(dbFile(cfg, 'west'));
      westDb.pragma('busy_timeout = 200');
      let stop = false;
      let id = 0;
      const probing = (async () => {
        while (!stop) {
          app!.write(++id);
          const before = performance.now();
          try {
            westDb.prepare('INSERT INTO t VALUES (?, ?)').run(1e9 + ++id, 'west');
            westAccepted.push(before);
          } catch {
            // fenced: west is a backup
          }
          await sleep(5);
        }
      })();

      // Jumps while everything runs: nothing may fail over, and east keeps taking writes.
      for (const [n, offset] of [
        ['east', '-1h'],
        ['east', '+2h'],
        ['west', '+1h'],
        ['arbiter', '-30m'],
        ['west', '-2h'],
      ] as const) {
        setClock(n, offset);
        await sleep(2500);
        const s = await west.status();
        expect(s?.lastFailover, `after ${n} ${offset}`).toBeNull();
        expect(s?.groups[0]?.role, `after ${n} ${offset}`).toBe('backup');
        const g = (await east.status())?.groups[0];
        expect(g?.lease?.held, `east's lease after ${n} ${offset}`).toBe(true);
        const n0 = app.accepted.length;
        await sleep(300);
        expect(app.accepted.length, `east takes writes after ${n} ${offset}`).toBeGreaterThan(n0);
        setClock(n, '+0');
      }
      expect(westAccepted).toEqual([]);
      await sleep(1500);

      // Frozen, and its machine's clock set back 30 s: the database must not wait for the clock.
      east.child!.kill('SIGSTOP');
      setClock('east', '-30s');
      await until('west took over', async () => (await west.status())?.lastFailover, 20_000);
      await sleep(1000);
      stop = true;
      await probing;
      westDb.close();
      expectOnePrimary(app.accepted, westAccepted);
      await app.stop();
      app = null;

      east.child!.kill('SIGCONT');
      await until(
        'east rejoined as a backup',
        async () => (await east.status())?.groups[0]?.role === 'backup',
        30_000,
      );
      for (const p of procs) {
        // Bounded, so that a stop that hangs says where (once, in a full run: the test's limit).
        const code = await Promise.race([p.kill('SIGTERM'), sleep(20_000).then(() => 'still running')]);
        expect(code, `${p.name} after SIGTERM; its log ends:\n${p.logTail(20)}`).toBe(0);
      }
      for (const n of ['east', 'west']) {
        const ts = await hlcs(dir, n);
        for (let i = 1; i < ts.length; i++)
          expect(ts[i]! > ts[i - 1]!, `${n}: HLC at record ${i}`).toBe(true);
      }
    } finally {
      await app?.stop();
      for (const p of procs) {
        if (p.running) {
          p.child?.kill('SIGCONT');
          p.child?.kill('SIGKILL');
        }
      }
      await Promise.all(procs.map((p) => p.exit));
      if (!process.env.KEEP) rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
