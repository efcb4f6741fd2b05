/**
 * One simulated run of whole nodes (docs/simulation.md): the real TandemNode (roles, witness,
 * lease, automatic failover, switchover, rejoin with divergence reports, group restarts) for a
 * primary, one or two backups and a witness, each on its own virtual machine (disk, wall clock,
 * database), on one virtual network and clock. Clients write to every database all along; a
 * database takes a write unless it is fenced or its lease has run out (engine.ts), as SQLite's
 * triggers do. A seed picks the mode, the failover timeout, the latencies and a schedule of
 * faults: process kills, power losses, cuts between any two machines or around one, wall-clock
 * jumps, I/O errors, and switchovers asked of whoever is primary. Then the network heals, every
 * machine runs, and the group must settle on one primary with every node identical.
 *
 * Invariants checked (violations are returned, with the seed):
 * - no crash: no exception escapes an event, no promise rejection goes unhandled;
 * - a node never refuses to start on its own state (JOURNAL_CORRUPT, STATE_CORRUPT);
 * - one primary at a time: writes accepted by the databases, in time order, never go back to an
 *   older epoch, each epoch has one writer, and a database takes writes only where its node's
 *   roles record says it is the primary;
 * - atomicity and order at every commit of every apply (engine.ts), and of every undo;
 * - sync mode: every acknowledged transaction is on every node at the end;
 * - divergence reports are exact: each write a database took is, at the end, either in the
 *   group's data or in exactly one divergence report of that node, never both;
 * - convergence: one primary, every node's rows and journal identical.
 */
import type { Apply, Capture } from '../../src/adapters/index.js';
import type { Config } from '../../src/config/index.js';
import { validateConfig } from '../../src/config/schema.js';
import { listReports } from '../../src/node/divergence.js';
import type { NodeEnv } from '../../src/node/env.js';
import { TandemNode } from '../../src/node/node.js';
import type { GroupRole } from '../../src/node/roles.js';
import { switchover } from '../../src/node/switchover.js';
import { VirtualDisk } from './disk.js';
import { randomTransfer, SimApply, SimCapture, SimDb, simLogger } from './engine.js';
import { Network } from './net.js';
import { Livelock, type Proc, World } from './world.js';

export interface RoleSimOptions {
  seed: number;
  /** Virtual time of the faulty phase, ms. */
  durationMs?: number;
  /** Keep every log line (a replay), not only the last ones. */
  fullLog?: boolean;
}

export interface RoleSimResult {
  seed: number;
  mode: 'async' | 'sync';
  violations: string[];
  digest: string;
  events: number;
  virtualMs: number;
  /** Writes the databases took, and of them acknowledged (sync), kept and reported divergent. */
  accepted: number;
  acknowledged: number;
  divergent: number;
  /** Primaries the group had (epochs reached) and failovers, switchovers, rejoins seen in the logs. */
  epochs: number;
  faults: Record<string, number>;
  log: string[];
}

const GROUP = 'bank';
const WITNESS = 'wit';
type Member = 'west' | 'east' | 'south';

function simConfig(mode: 'async' | 'sync', members: Member[], rng: World['rng']): Config {
  const host = (i: number) => `10.0.0.${i}`;
  const all = [...members, WITNESS];
  const v = validateConfig(
    {
      cluster: 'sim',
      security: { plaintext: true },
      nodes: Object.fromEntries(
        all.map((n, i) => [
          n,
          { listen: `${host(i + 1)}:7000`, admin: `${host(i + 1)}:8000`, state: `/${n}` },
        ]),
      ),
      groups: {
        [GROUP]: {
          kind: 'sql',
          mode,
          primary: 'west',
          endpoints: Object.fromEntries(members.map((n) => [n, `sqlite:/${n}/bank.db`])),
          tables: ['*'],
          compression: rng.pick(['deflate', 'none']),
          batch: { max_records: rng.int(1, 64), max_bytes: rng.pick(['4KiB', '64KiB']) },
          sync: { timeout: '2s', degrade: false },
          failover: { witness: WITNESS, auto: true, timeout: rng.pick(['500ms', '1s', '3s']) },
          switchover: { fence_timeout: '2s', drain_timeout: '3s' },
        },
      },
    },
    'sim.yaml',
  );
  if (!v.ok) throw new Error(`simulation config: ${JSON.stringify(v.problems)}`);
  return v.config;
}

class Machine {
  readonly disk: VirtualDisk;
  /** The machine's wall clock is this many ms off (clock faults; survives restarts). */
  wallOffset = 0;
  readonly db: SimDb;
  proc: Proc | null = null;
  node: TandemNode | null = null;
  starts = 0;

  constructor(
    readonly name: string,
    world: World,
  ) {
    this.disk = new VirtualDisk(world);
    this.db = new SimDb(() => world.wall(this.wallOffset));
  }

  get up(): boolean {
    return this.proc?.alive === true;
  }

  /** The group's role as this machine's roles file records it (what the node acts on). */
  role(): Pick<GroupRole, 'epoch' | 'primary'> {
    const text = this.disk.readText(`/${this.name}/roles.json`);
    const r = text ? (JSON.parse(text) as Record<string, GroupRole>)[GROUP] : undefined;
    return r ?? { epoch: 1, primary: 'west' };
  }
}

export async function runRoleSim(o: RoleSimOptions): Promise<RoleSimResult> {
  const world = new World(o.seed);
  const rng = world.rng;
  const mode = rng.chance(0.5) ? 'sync' : 'async';
  const members: Member[] = rng.chance(0.3) ? ['west', 'east', 'south'] : ['west', 'east'];
  const config = simConfig(mode, members, rng);
  const net = new Network(world);
  net.latency = rng.pick([
    [0.05, 0.5],
    [0.1, 3],
    [1, 20],
  ] as [number, number][]);
  const lines: string[] = [];
  const violations: string[] = [];
  const violate = (what: string) => {
    if (!violations.some((v) => v.endsWith(what)))
      violations.push(`${(world.now / 1000).toFixed(3)} s: ${what}`);
  };
  const machines = new Map<string, Machine>(
    [...members, WITNESS].map((n) => [n, new Machine(n, world)] as const),
  );
  const dbs = members.map((n) => machines.get(n)!);
  // As after an initial seed: the backups' databases fenced, the primary's lease guard installed.
  for (const m of dbs) {
    if (m.name === 'west') m.db.guarded = true;
    else m.db.fenced = true;
  }
  const faults: Record<string, number> = {};
  const count = (k: string) => {
    faults[k] = (faults[k] ?? 0) + 1;
  };
  const seen: Record<string, number> = {};

  const env = (m: Machine, proc: Proc): NodeEnv => ({
    createCapture: async (_e, co) => new SimCapture(m.db, co, rng) as Capture,
    createApply: async (_e, ao) => new SimApply(m.db, ao) as Apply,
    createSnapshot: () => Promise.reject(new Error('the simulation does not seed')),
    readSchemas: async () => [
      { name: 'account', columns: [], primaryKey: ['id'] },
      { name: 'ledger', columns: [], primaryKey: ['id'] },
    ],
    connect: (_addr, peer, _ctx, timeoutMs) => net.connect(m.name, peer, timeoutMs),
    disk: m.disk,
    lock: () => ({ release() {} }),
    listen: async (_addr, _field, _ctx, _log, onPeer) => {
      net.listen(m.name, proc, (conn) => onPeer(conn, conn.peer ?? '?'));
      return { close: async () => net.unlisten(m.name) };
    },
    serveAdmin: async () => ({ close: async () => {} }),
    checkPromotable: async () => {},
    tableChecksums: async () => ({
      engine: 'sqlite',
      tables: [
        { table: 'account', rows: m.db.balances.length, sum: m.db.balances.join(',') },
        { table: 'ledger', rows: m.db.ledger.length, sum: [...m.db.ledger].sort((a, b) => a - b).join(',') },
      ],
    }),
    readRowsByKey: () => Promise.reject(new Error('the simulation keeps whole before images')),
    fullBeforeImages: async () => true,
    writeSql: () => Promise.reject(new Error('the simulation does not re-apply reports')),
  });

  const start = (m: Machine) => {
    if (m.up) return;
    const proc = world.spawn(`${m.name}#${++m.starts}`, () => m.wallOffset);
    m.proc = proc;
    const log = simLogger(
      lines,
      proc.name,
      () => world.now,
      o.fullLog ? Number.POSITIVE_INFINITY : 4000,
      (msg) => {
        for (const k of [
          'AUTOMATIC FAILOVER',
          'rejoined as a backup',
          'DIVERGENT TAIL',
          "left out of this node's divergence report",
          'switchover done',
          'SWITCHOVER IN DOUBT',
          'restarting the failed group',
          'backup realigned',
        ])
          if (msg.startsWith(k)) seen[k] = (seen[k] ?? 0) + 1;
      },
    );
    proc.run(async () => {
      const node = new TandemNode(config, m.name, log, env(m, proc));
      try {
        await node.start();
        if (proc.alive) m.node = node;
      } catch (err) {
        const e = err as Error & { code?: string };
        log.warn({ err: e.message }, 'start failed');
        if (e.code === 'JOURNAL_CORRUPT' || e.code === 'STATE_CORRUPT')
          violate(`${m.name} refused to start: [${e.code}] ${e.message}`);
        restart(m, 1000, false);
      }
    });
  };

  const stopProc = (m: Machine, machine: boolean) => {
    const proc = m.proc;
    if (!proc?.alive) return;
    proc.alive = false;
    net.killed(proc, machine);
    net.unlisten(m.name);
    if (machine) m.disk.powerLoss();
    m.node = null;
  };

  const restart = (m: Machine, afterMs: number, machine: boolean) => {
    stopProc(m, machine);
    world.schedule(afterMs, `restart:${m.name}`, () => start(m), null);
  };

  // ---- clients: each database is offered writes all along; the databases decide ----
  let nextId = 0;
  const accepted: { id: number; node: string; at: number; epoch: number }[] = [];
  const acked = new Set<number>();
  let writing = true;
  const workload = () => {
    if (!writing) return;
    for (const m of dbs) {
      if (!rng.chance(0.6)) continue;
      const t = randomTransfer(rng, ++nextId);
      const seq = m.db.write(t);
      if (typeof seq !== 'number') continue;
      const role = m.role();
      if (role.primary !== m.name)
        violate(
          `${m.name}'s database took write ${t.id} while its roles record says ${role.primary} is primary at epoch ${role.epoch}`,
        );
      accepted.push({ id: t.id, node: m.name, at: world.now, epoch: role.epoch });
      const sg = m.node?.sources.get(GROUP);
      if (mode === 'sync' && m.up && sg?.state === 'running' && (sg.capture as Capture | undefined)) {
        m.proc!.run(() => {
          sg.capture.kick();
          sg.waitDurable(BigInt(seq)).then(
            () => acked.add(t.id),
            () => {},
          );
        });
      }
    }
    world.schedule(rng.real(1, 30), 'app:commit', workload, null);
  };

  /** The member running as primary (several at once is for the checkers to find). */
  const primaries = () => dbs.filter((m) => m.node?.sources.get(GROUP)?.state === 'running');

  // ---- the faults ----
  const durationMs = o.durationMs ?? 20_000;
  const nFaults = rng.int(3, 10);
  const everyone = [...machines.values()];
  for (let i = 0; i < nFaults; i++) {
    const at = rng.real(1000, durationMs - 1000);
    const kind = rng.pick(['kill', 'power', 'cut', 'isolate', 'clock', 'switchover', 'eio'] as const);
    const m = rng.pick(everyone);
    const other = rng.pick(everyone.filter((x) => x !== m));
    world.schedule(
      at,
      `fault:${kind}`,
      () => {
        if (kind === 'kill' || kind === 'power') {
          if (!m.up) return;
          count(`${kind}s`);
          restart(m, rng.real(10, 5000), kind === 'power');
        } else if (kind === 'cut' || kind === 'isolate') {
          count(`${kind}s`);
          const pairs = kind === 'cut' ? [other] : everyone.filter((x) => x !== m);
          for (const x of pairs) net.cut(m.name, x.name);
          world.schedule(
            rng.real(100, 8000),
            'fault:heal',
            () => {
              for (const x of pairs) net.heal(m.name, x.name);
            },
            null,
          );
        } else if (kind === 'clock') {
          count('clock jumps');
          m.wallOffset += rng.pick([-1, 1]) * rng.real(1000, 2 * 3600_000);
        } else if (kind === 'switchover') {
          const [p] = primaries();
          const to = rng.pick(dbs.filter((x) => x !== p));
          if (!p?.node) return;
          count('switchovers asked');
          const node = p.node;
          p.proc!.run(() =>
            switchover(node, GROUP, { to: to.name, verify: rng.chance(0.5) }).then(
              () => count('switchovers done'),
              () => count('switchovers refused'),
            ),
          );
        } else {
          count('I/O errors');
          (m.name === WITNESS ? rng.pick(dbs) : m).disk.failNext(rng.chance(0.5) ? 'write' : 'sync');
        }
      },
      null,
    );
  }

  world.install();
  try {
    await phases();
  } catch (err) {
    if (!(err instanceof Livelock)) throw err;
    violate(`livelock: ${err.message}`);
  } finally {
    for (const m of machines.values()) stopProc(m, false);
    world.uninstall();
  }

  async function phases(): Promise<void> {
    start(machines.get(WITNESS)!);
    for (const m of dbs) start(m);
    world.schedule(500, 'app:start', workload, null);
    await world.runUntil(durationMs);
    writing = false;
    net.healAll();
    for (const m of machines.values()) if (!m.up) start(m);
    const settled = () => {
      const ps = primaries();
      if (ps.length !== 1 || !machines.get(WITNESS)!.node) return false;
      const p = ps[0]!;
      const pj = p.node!.journal(GROUP);
      // A group just made primary reads as running before its capture exists.
      const capture = p.node!.sources.get(GROUP)!.capture as Capture | undefined;
      if (capture?.pendingChanges() !== 0) return false;
      if (pj.durablePosition !== pj.lastPosition) return false;
      return dbs.every((m) => {
        if (m === p) return true;
        const tg = m.node?.targets.get(GROUP);
        const j = m.node?.journal(GROUP);
        return (
          tg?.state === 'running' &&
          j!.lastPosition === pj.lastPosition &&
          j!.durablePosition === j!.lastPosition &&
          m.db.applied === pj.lastPosition
        );
      });
    };
    if (!(await world.runWhile(() => !settled(), 120_000))) {
      const state = (m: Machine) => {
        const n = m.node;
        const st = n?.status().groups.find((x) => x.group === GROUP);
        return `${m.name} ${n ? (st ? `${st.role} ${st.state} epoch ${st.epoch}${st.error ? ` (${st.error})` : ''}` : 'no group') : 'down'} journal ${n?.journal(GROUP)?.lastPosition ?? '-'} applied ${m.db.applied}`;
      };
      violate(`did not settle within 120 s of healing: ${dbs.map(state).join('; ')}`);
    }
    check();
  }

  function check(): void {
    for (const c of world.crashes) violate(`crash: ${c}`);
    for (const m of dbs) for (const v of m.db.violations) violate(`${m.name}: ${v}`);
    onePrimaryAtATime();
    if (violations.length > 0) return;
    const [p] = primaries();
    const final = new Set(p!.db.ledger);
    for (const m of dbs) {
      if (
        m.db.ledger.join(',') !== p!.db.ledger.join(',') ||
        m.db.balances.join(',') !== p!.db.balances.join(',')
      )
        violate(
          `${m.name}'s rows differ from the primary ${p!.name}'s (${m.db.ledger.length} vs ${p!.db.ledger.length} ledger rows)`,
        );
    }
    for (const id of acked)
      if (!final.has(id)) violate(`sync mode: transaction ${id} was acknowledged and is gone`);
    // Divergence reports are exact: every write the group lost is named by one report, on any
    // node (an old primary reports the whole tail it undoes, also writes another node took that
    // reached only it), and nothing else is.
    const reported = new Map<number, string[]>();
    for (const m of dbs)
      for (const r of listReports(m.disk, `/${m.name}`, GROUP))
        for (const t of r.transactions)
          for (const c of t.changes)
            if (c.table === 'ledger' && c.op === 'insert') {
              const id = Number(c.after![0]);
              reported.set(id, [...(reported.get(id) ?? []), m.name]);
            }
    for (const a of accepted) {
      const by = reported.get(a.id) ?? [];
      if (final.has(a.id) && by.length > 0)
        violate(
          `${by.join(', ')} report${by.length === 1 ? 's' : ''} transaction ${a.id} divergent, but the group kept it`,
        );
      else if (!final.has(a.id) && by.length !== 1)
        violate(
          `${a.node} took transaction ${a.id} (epoch ${a.epoch}), the group lost it, and ${by.length} divergence reports name it${by.length ? ` (${by.join(', ')})` : ''}`,
        );
      reported.delete(a.id);
    }
    for (const [id, by] of reported)
      violate(`${by.join(', ')} report${by.length === 1 ? 's' : ''} transaction ${id}, which no node took`);
    journalsIdentical(p!);
  }

  /** Writes in time order never go back to an older epoch, and one node writes per epoch. */
  function onePrimaryAtATime(): void {
    const writer = new Map<number, string>();
    let top = { epoch: 0, node: '', id: 0 };
    for (const a of accepted) {
      const w = writer.get(a.epoch);
      if (w && w !== a.node) violate(`two primaries at epoch ${a.epoch}: ${w} and ${a.node} (write ${a.id})`);
      writer.set(a.epoch, a.node);
      if (a.epoch < top.epoch)
        violate(
          `two primaries: ${a.node} took write ${a.id} at epoch ${a.epoch} after ${top.node} took write ${top.id} at epoch ${top.epoch}`,
        );
      else top = a;
    }
  }

  function journalsIdentical(p: Machine): void {
    const pj = p.node!.journal(GROUP);
    for (const m of dbs) {
      if (m === p) continue;
      const j = m.node!.journal(GROUP);
      for (let pos = Math.max(pj.firstPosition, j.firstPosition); pos <= pj.lastPosition; pos++) {
        const a = pj.read(pos, { maxBytes: 1, maxRecords: 1 })[0]!;
        const b = j.read(pos, { maxBytes: 1, maxRecords: 1 })[0];
        if (!b || !a.equals(b)) {
          violate(`journals of ${p.name} and ${m.name} differ at position ${pos}`);
          break;
        }
      }
    }
  }

  const epochs = Math.max(1, ...dbs.map((m) => m.role().epoch));
  for (const [k, v] of Object.entries(seen)) faults[k] = v;
  faults['disk faults hit'] = dbs.reduce((a, m) => a + m.disk.faultsHit, 0);
  faults.connections = net.connections;
  return {
    seed: o.seed,
    mode,
    violations,
    digest: world.digest,
    events: world.events,
    virtualMs: Math.round(world.now),
    accepted: accepted.length,
    acknowledged: acked.size,
    divergent: accepted.filter((a) => !dbs.some((m) => m.db.ledger.includes(a.id))).length,
    epochs,
    faults,
    log: o.fullLog ? lines : lines.slice(-300),
  };
}
