/**
 * One simulated run of a primary and one or two backups (docs/simulation.md): the real SourceGroup,
 * TargetGroup, LinkSender, LinkReceiver, Channel, take-back and Journal, on virtual disks, a
 * virtual network and a virtual clock, with in-memory databases (engine.ts). A seed picks the
 * mode's workload, the latencies and a schedule of faults: process kills, machine power losses
 * (unsynced writes lost, torn), network cuts, connection resets, I/O errors on a write or an
 * fsync. Then the network heals, the nodes come back, and the run must converge.
 *
 * Invariants checked (violations are returned, with the seed):
 * - no crash: no exception escapes an event, no promise rejection goes unhandled;
 * - a power loss never leaves a journal that refuses to open;
 * - atomicity and order at the backup: at every commit the accounts' total holds and the
 *   ledger is exactly transactions 1..n (no gap, no duplicate, no partial transaction);
 * - sync mode, no acknowledged loss: at random instants the backup's disaster image (its
 *   database plus the records of its journal that survive a power loss that keeps nothing
 *   unsynced) holds every transaction acknowledged before that instant;
 * - convergence: after healing, the backup holds every committed transaction, exactly once,
 *   and both journals are identical record for record.
 */
import type { Apply, Capture } from '../../src/adapters/index.js';
import type { Config, GroupConfig } from '../../src/config/index.js';
import { validateConfig } from '../../src/config/schema.js';
import { decodeRecord, encodeRecord } from '../../src/core/record.js';
import { Journal } from '../../src/journal/index.js';
import { Channel } from '../../src/link/channel.js';
import { MsgType } from '../../src/link/messages.js';
import { LinkSender } from '../../src/link/sender.js';
import type { SecureContext } from '../../src/link/transport.js';
import type { GroupEnv } from '../../src/node/env.js';
import type { GroupRole } from '../../src/node/roles.js';
import { SourceGroup } from '../../src/node/source-group.js';
import { type TailRequest, tailOf } from '../../src/node/take-back.js';
import { TargetGroup } from '../../src/node/target-group.js';
import { VirtualDisk } from './disk.js';
import { randomTransfer, SimApply, SimCapture, SimDb, simLogger } from './engine.js';
import { Network } from './net.js';
import { Livelock, type Proc, World } from './world.js';

export interface SimOptions {
  seed: number;
  /** Virtual time of the faulty phase, ms. */
  durationMs?: number;
  /** Keep every log line (a replay), not only the last ones. */
  fullLog?: boolean;
}

export interface SimResult {
  seed: number;
  mode: 'async' | 'sync';
  violations: string[];
  /** Hash over every event: the same seed gives the same digest. */
  digest: string;
  events: number;
  virtualMs: number;
  committed: number;
  acknowledged: number;
  faults: Record<string, number>;
  /** The last log lines of both nodes, for a failing seed. */
  log: string[];
}

const NODES = ['west', 'east', 'south'] as const;
type NodeName = (typeof NODES)[number];
type Backup = Exclude<NodeName, 'west'>;
const ROLE: GroupRole = { epoch: 1, primary: 'west', since: 0, at: '2026-01-01T00:00:00.000Z' };

function simConfig(mode: 'async' | 'sync', backups: Backup[], rng: World['rng']): Config {
  const v = validateConfig(
    {
      cluster: 'sim',
      security: { plaintext: true },
      nodes: {
        west: { listen: '10.0.0.1:7000', admin: '10.0.0.1:8000', state: '/west' },
        east: { listen: '10.0.0.2:7000', admin: '10.0.0.2:8000', state: '/east' },
        south: { listen: '10.0.0.3:7000', admin: '10.0.0.3:8000', state: '/south' },
        north: { listen: '10.0.0.4:7000', admin: '10.0.0.4:8000', state: '/north' },
      },
      groups: {
        bank: {
          kind: 'sql',
          mode,
          primary: 'west',
          endpoints: Object.fromEntries(['west', ...backups].map((n) => [n, `sqlite:/${n}/bank.db`])),
          tables: ['*'],
          compression: rng.pick(['deflate', 'none']),
          batch: { max_records: rng.int(1, 64), max_bytes: rng.pick(['4KiB', '64KiB']) },
          sync: { timeout: '2s', degrade: false },
          // Retention that deletes segments during the run (or, in a third of seeds, never).
          retention: rng.pick([
            { keep_bytes: '0B', keep_time: '1ms' },
            { keep_bytes: '8KiB', keep_time: '1s' },
            { keep_bytes: '256MiB', keep_time: '1h' },
          ]),
        },
      },
    },
    'sim.yaml',
  );
  if (!v.ok) throw new Error(`simulation config: ${JSON.stringify(v.problems)}`);
  return v.config;
}

class SimNode {
  readonly name: NodeName;
  readonly disk: VirtualDisk;
  /** The machine's wall clock is this many ms off (set by clock faults; survives restarts). */
  wallOffset = 0;
  /** Its database (durable across its restarts). */
  readonly db: SimDb;
  proc: Proc | null = null;
  journal: Journal | null = null;
  source: SourceGroup | null = null;
  target: TargetGroup | null = null;
  starts = 0;
  /** Up: a process runs (it may still be starting). */
  get up(): boolean {
    return this.proc?.alive === true;
  }

  constructor(name: NodeName, world: World) {
    this.name = name;
    this.disk = new VirtualDisk(world);
    this.db = new SimDb(() => world.wall(this.wallOffset));
  }
}

export async function runSim(o: SimOptions): Promise<SimResult> {
  const world = new World(o.seed);
  const rng = world.rng;
  const mode = rng.chance(0.5) ? 'sync' : 'async';
  const backups: Backup[] = rng.chance(0.3) ? ['east', 'south'] : ['east'];
  const config = simConfig(mode, backups, rng);
  const group: GroupConfig = config.groups.bank!;
  const net = new Network(world);
  net.latency = rng.pick([
    [0.05, 0.5],
    [0.1, 3],
    [1, 20],
  ] as [number, number][]);
  const lines: string[] = [];
  let takeBacks = 0;
  let cuts = 0;
  let released = 0;
  const violations: string[] = [];
  const violate = (what: string) => {
    if (!violations.includes(what)) violations.push(`${(world.now / 1000).toFixed(3)} s: ${what}`);
  };
  const nodes = {
    west: new SimNode('west', world),
    east: new SimNode('east', world),
    south: new SimNode('south', world),
  };
  const members = [nodes.west, ...backups.map((b) => nodes[b])];
  const segmentBytes = rng.pick([512, 4096, 1 << 20]);
  const tailCacheBytes = rng.pick([0, 2048, 1 << 20]);
  const acked: { id: number; at: number }[] = [];
  const faults: Record<string, number> = {};
  const count = (k: string) => {
    faults[k] = (faults[k] ?? 0) + 1;
  };

  const env = (node: SimNode): GroupEnv => ({
    createCapture: async (_e, co) => new SimCapture(node.db, co, rng) as Capture,
    createApply: async (_e, ao) => new SimApply(node.db, ao) as Apply,
    createSnapshot: () => Promise.reject(new Error('the simulation does not seed')),
    readSchemas: async () => [],
    connect: (_addr, peer) => net.connect(node.name, peer),
  });

  /** One request to another node over the network (take-back), like node.ts's node requests. */
  const ask = (from: SimNode, to: NodeName, request: TailRequest, timeoutMs: number) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const peer = nodes[to];
      const timer = setTimeout(
        () => reject(new Error(`${to} did not answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const rtt = () => rng.real(...net.latency);
      const caller = world.current;
      world.schedule(
        rtt(),
        'rpc:ask',
        () => {
          if (!peer.up || !peer.journal || net.isCut(from.name, to)) return;
          const answer = tailOf(peer.journal, request);
          world.schedule(
            rtt(),
            'rpc:answer',
            () => {
              if (net.isCut(from.name, to)) return;
              clearTimeout(timer);
              resolve(answer);
            },
            caller ?? null,
          );
        },
        peer.proc,
      );
    });

  /** The node's listener: HELLO to the group, or a refusal (node.ts #accept / #hello). */
  const accept = (node: SimNode, conn: Parameters<Parameters<Network['listen']>[2]>[0]) => {
    const ch = new Channel(conn, { onClose: () => {} });
    const timer = setTimeout(() => ch.close('no HELLO within 5 s'), 5000);
    ch.setHandler((m) => {
      clearTimeout(timer);
      if (m.type !== MsgType.Hello) return ch.close(`first message must be HELLO, got type ${m.type}`);
      const tg = node.target;
      const refusal = tg
        ? tg.check(m, conn.peer)
        : { code: 'LINK_PROTOCOL', message: `${node.name} is not a backup` };
      if (refusal) {
        ch.refuse({ ...refusal, epoch: ROLE.epoch, primary: ROLE.primary });
        return;
      }
      tg!.attach(ch, m);
    });
  };

  const start = (node: SimNode) => {
    // One process per node (a real node holds its state folder's lock).
    if (node.up) return;
    const proc = world.spawn(`${node.name}#${++node.starts}`, () => node.wallOffset);
    node.proc = proc;
    const log = simLogger(
      lines,
      proc.name,
      () => world.now,
      o.fullLog ? Number.POSITIVE_INFINITY : 4000,
      (msg) => {
        if (msg.startsWith('took back')) takeBacks++;
        else if (msg.startsWith('journal cut back')) cuts++;
        else if (msg === 'journal: retention deleted segment') released++;
      },
    );
    proc.run(async () => {
      try {
        const journal = await Journal.open({
          dir: `/${node.name}/journal`,
          disk: node.disk,
          segmentBytes,
          tailCacheBytes,
          retention: group.retention,
          log,
        });
        if (!proc.alive) return;
        node.journal = journal;
        // A backup cuts its journal when the restarted primary holds other records there. Apply
        // must not have taken the records cut, not even while the cut ran. In sync mode the cut
        // is the likeliest instant to lose an acknowledged record: check the disaster image too.
        if (node.name !== 'west') {
          const cut = journal.truncateAfter.bind(journal);
          journal.truncateAfter = (position) =>
            cut(position).then(() => {
              const applied = node.target?.apply.appliedPosition ?? 0;
              if (applied > position)
                violate(`${node.name} applied ${applied}, past its journal cut after ${position}`);
              if (mode === 'sync') checks.push(disasterCheck(node));
            });
        }
        const ctx: SecureContext = {
          security: config.security,
          cluster: 'sim',
          node: node.name,
          nodes: new Set(NODES),
        };
        if (node.name === 'west') {
          const g = new SourceGroup(
            config,
            'west',
            group,
            ctx,
            log,
            journal,
            {
              role: () => ROLE,
              onNewerEpoch: (e, p) =>
                violate(`west told of a newer epoch ${e} (primary ${p}): no role changes here`),
              witness: null,
              ask: (peer, request, timeoutMs) => ask(node, peer as NodeName, request, timeoutMs),
            },
            env(node),
          );
          await g.start();
          if (!proc.alive) return;
          node.source = g;
        } else {
          const g = new TargetGroup(
            config,
            node.name,
            group,
            log,
            journal,
            {
              role: () => ROLE,
              adopt: (e, p) => violate(`${node.name} adopted epoch ${e} of ${p}: no role changes here`),
              control: () => Promise.reject(new Error('no requests in the simulation')),
            },
            env(node),
          );
          await g.start();
          if (!proc.alive) return;
          node.target = g;
        }
        net.listen(node.name, proc, (conn) => accept(node, conn));
      } catch (err) {
        const e = err as Error & { code?: string };
        log.warn({ err: e.message }, 'start failed');
        if (e.code === 'JOURNAL_CORRUPT') violate(`${node.name} refused to start: ${e.message}`);
        // The node is started again (systemd would), unless an injected fault explains it.
        restart(node, 1000, false);
      }
    });
  };

  const stopProc = (node: SimNode, machine: boolean) => {
    const proc = node.proc;
    if (!proc?.alive) return;
    proc.alive = false;
    net.killed(proc, machine);
    net.unlisten(node.name);
    if (machine) node.disk.powerLoss();
    node.journal = null;
    node.source = null;
    node.target = null;
  };

  const restart = (node: SimNode, afterMs: number, machine: boolean) => {
    stopProc(node, machine);
    world.schedule(afterMs, `restart:${node.name}`, () => start(node), null);
  };

  // A failed group (its journal hit an I/O error) is restarted by its node; here, the process.
  const watch = () => {
    for (const node of Object.values(nodes)) {
      const state = node.source?.state ?? node.target?.state;
      if (state === 'failed') {
        count('group restarts');
        restart(node, 1000, false);
      }
    }
    world.schedule(200, 'watch', watch, null);
  };

  // ---- the workload ----
  const commit = () => {
    const west = nodes.west;
    const id = west.db.ledger.length + 1;
    const seq = west.db.write(randomTransfer(rng, id));
    if (typeof seq !== 'number') throw new Error(`west refused a write: ${seq}`);
    if (mode === 'async') acked.push({ id, at: world.now });
    else if (west.up && west.source?.state === 'running') {
      const g = west.source;
      west.proc!.run(() => {
        g.capture.kick();
        g.waitDurable(BigInt(seq)).then(
          () => acked.push({ id, at: world.now }),
          () => {},
        );
      });
    }
  };
  let writing = true;
  const workload = () => {
    if (!writing) return;
    for (let i = rng.int(1, 3); i > 0; i--) commit();
    world.schedule(rng.real(1, 30), 'app:commit', workload, null);
  };

  // ---- sync mode: the backup's disaster image holds every acknowledged transaction ----
  const checks: Promise<void>[] = [];
  const disasterCheck = async (backup: SimNode) => {
    const at = world.now;
    const ackedBefore = acked.filter((a) => a.at <= at).map((a) => a.id);
    if (ackedBefore.length === 0) return;
    const held = new Set(backup.db.ledger);
    const applied = backup.db.applied;
    const image = backup.disk.clone();
    image.powerLoss(true);
    const p = world.spawn('disaster-check');
    await p.run(async () => {
      const j = await Journal.open({
        dir: `/${backup.name}/journal`,
        disk: image,
        log: { info() {}, warn() {} },
      });
      for (let pos = Math.max(j.firstPosition, 1); pos <= j.lastPosition; pos++) {
        const rec = decodeRecord(j.read(pos, { maxBytes: 1, maxRecords: 1 })[0]!);
        for (const c of rec.changes) if (c.op === 'insert') held.add(Number(c.after![0]));
      }
      await j.close();
    });
    const lost = ackedBefore.filter((id) => !held.has(id));
    if (lost.length > 0)
      violate(
        `sync mode: transactions ${lost.slice(0, 5).join(', ')}${lost.length > 5 ? ` (+${lost.length - 5})` : ''} were acknowledged but are not on ${backup.name}'s disk (database applied ${applied})`,
      );
  };

  /**
   * A node that believes it is primary at an epoch no newer than the group's (a deposed primary
   * back from a partition, or a node that never was one) streams its own records to a backup
   * for a while: it must be refused, and none of its records may reach the backup's journal.
   */
  const deposed = (epoch: number, target: Backup) => {
    const proc = world.spawn(`north@${epoch}`);
    const log = simLogger(lines, proc.name, () => world.now);
    proc.run(async () => {
      const journal = await Journal.open({
        dir: `/north/journal-${world.now}`,
        disk: new VirtualDisk(world),
        log,
      });
      const hlc = { now: () => BigInt(Date.now()) << 16n };
      for (let i = 0; i < 20; i++) {
        const position = journal.nextPosition;
        void journal.append(
          encodeRecord({
            position,
            epoch,
            origin: 'north',
            hlc: hlc.now(),
            source: '',
            txCount: 1,
            changes: [],
          }),
        );
      }
      const sender = new LinkSender({
        group,
        cluster: 'sim',
        node: 'north',
        peer: target,
        addr: config.nodes[target]!.listen,
        ctx: {
          security: config.security,
          cluster: 'sim',
          node: 'north',
          nodes: new Set([...NODES, 'north']),
        },
        connect: (_addr, peer) => net.connect('north', peer),
        journal,
        epoch: () => epoch,
        log,
        snapshot: () => Promise.reject(new Error('a deposed primary does not seed')),
        onProgress: () => {},
      });
      sender.run();
      const watchSender = () => {
        if (sender.state === 'streaming' || sender.state === 'seeding')
          violate(
            `${target} took a stream from north at epoch ${epoch} (the group is at epoch ${ROLE.epoch}, primary west)`,
          );
        else world.schedule(5, 'deposed:watch', watchSender);
      };
      watchSender();
      world.schedule(
        rng.real(200, 3000),
        'deposed:gone',
        () => {
          proc.alive = false;
          net.killed(proc, false);
        },
        null,
      );
    });
  };

  // ---- the faults ----
  const durationMs = o.durationMs ?? 12_000;
  const nFaults = rng.int(2, 8);
  for (let i = 0; i < nFaults; i++) {
    const at = rng.real(500, durationMs - 500);
    const kind = rng.pick([
      'kill',
      'power',
      'cut',
      'reset',
      'eio-write',
      'eio-sync',
      'deposed',
      'clock',
    ] as const);
    const node = rng.pick(members);
    const backup = rng.pick(backups);
    world.schedule(
      at,
      `fault:${kind}`,
      () => {
        if (kind === 'kill' || kind === 'power') {
          if (!node.up) return;
          count(`${kind} ${node.name}`);
          restart(node, rng.real(10, 3000), kind === 'power');
        } else if (kind === 'cut') {
          count('cuts');
          net.cut('west', backup);
          world.schedule(rng.real(50, 8000), 'fault:heal', () => net.heal('west', backup), null);
        } else if (kind === 'reset') {
          const [a, b] = rng.chance(0.5) ? ['west', backup] : [backup, 'west'];
          if (net.reset(a, b)) count('resets');
        } else if (kind === 'clock') {
          // Someone sets the machine's clock: up to two hours either way.
          count(`clock jumps ${node.name}`);
          node.wallOffset += rng.pick([-1, 1]) * rng.real(1000, 2 * 3600_000);
        } else if (kind === 'deposed') {
          count('deposed primaries');
          deposed(rng.pick([0, ROLE.epoch]), backup);
        } else {
          count(`${kind} ${node.name}`);
          node.disk.failNext(kind === 'eio-write' ? 'write' : 'sync');
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
    for (const node of Object.values(nodes)) stopProc(node, false);
    world.uninstall();
  }
  async function phases(): Promise<void> {
    for (const b of backups) start(nodes[b]);
    start(nodes.west);
    watch();
    world.schedule(200, 'app:start', workload, null);
    if (mode === 'sync') {
      for (let i = 0; i < 8; i++) {
        world.schedule(
          rng.real(1000, durationMs),
          'check:disaster',
          () => {
            for (const b of backups) checks.push(disasterCheck(nodes[b]));
          },
          null,
        );
      }
    }
    await world.runUntil(durationMs);
    writing = false;
    net.healAll();
    for (const node of members) if (!node.up) start(node);
    const w = nodes.west;
    const caughtUp = (e: SimNode) =>
      e.target?.state === 'running' &&
      e.journal!.lastPosition === w.journal!.lastPosition &&
      e.journal!.durablePosition === e.journal!.lastPosition &&
      e.db.applied === w.journal!.lastPosition;
    const converged = () =>
      w.source?.state === 'running' &&
      w.source.capture.pendingChanges() === 0 &&
      w.journal!.durablePosition === w.journal!.lastPosition &&
      backups.every((b) => caughtUp(nodes[b]));
    if (!(await world.runWhile(() => !converged(), 60_000))) {
      const state = (n: SimNode) =>
        `${n.name} ${n.source?.state ?? n.target?.state ?? 'down'} journal ${n.journal?.lastPosition}`;
      violate(
        `did not converge within 60 s of healing: ${members.map(state).join(', ')}, applied ${backups.map((b) => nodes[b].db.applied).join('/')}, committed ${nodes.west.db.ledger.length}`,
      );
    }
    // Disaster checks still opening their journal image need the world to run.
    let checking = true;
    const done = Promise.all(checks).finally(() => {
      checking = false;
    });
    if (await world.runWhile(() => checking, 60_000)) await done;
    else violate('a disaster check could not open the backup journal image within 60 s');
    for (const b of backups) compare(nodes[b]);
    hlcIncreasing();
    for (const c of world.crashes) violate(`crash: ${c}`);
  }

  /** Hybrid logical clock timestamps strictly increase along the primary's journal, whatever its clock did. */
  function hlcIncreasing(): void {
    const j = nodes.west.journal;
    if (!j) return;
    let prev = -1n;
    for (let p = j.firstPosition; p <= j.lastPosition; p++) {
      const hlc = decodeRecord(j.read(p, { maxBytes: 1, maxRecords: 1 })[0]!).hlc;
      if (hlc <= prev) {
        violate(`HLC of position ${p} (${hlc}) is not above the one before (${prev})`);
        return;
      }
      prev = hlc;
    }
  }

  /** Every committed transaction on the backup exactly once, in order; journals identical. */
  function compare(backup: SimNode): void {
    const db = backup.db;
    for (const v of db.violations) violate(`${backup.name}: ${v}`);
    const n = nodes.west.db.ledger.length;
    if (violations.length === 0 && (db.ledger.length !== n || db.ledger.some((id, i) => id !== i + 1)))
      violate(`${backup.name}'s ledger holds ${db.ledger.length} transactions, the source committed ${n}`);
    const wj = nodes.west.journal;
    const ej = backup.journal;
    if (wj && ej && violations.length === 0) {
      const from = Math.max(wj.firstPosition, ej.firstPosition);
      for (let p = from; p <= wj.lastPosition; p++) {
        const a = wj.read(p, { maxBytes: 1, maxRecords: 1 })[0]!;
        const b = ej.read(p, { maxBytes: 1, maxRecords: 1 })[0];
        if (!b || !a.equals(b)) {
          const show = (x: Buffer | undefined) => {
            if (!x) return 'nothing';
            const r = decodeRecord(x);
            return `source ${r.source}, txCount ${r.txCount}, hlc ${r.hlc}, ${r.changes.length} changes`;
          };
          violate(`journals differ at position ${p}: west has ${show(a)}, ${backup.name} ${show(b)}`);
          break;
        }
      }
    }
  }
  faults['disk faults hit'] = members.reduce((a, n) => a + n.disk.faultsHit, 0);
  faults[`${backups.length} backup${backups.length > 1 ? 's' : ''}`] = 1;
  // How often the recovery paths ran (from the nodes' own log lines).
  faults['take-backs'] = takeBacks;
  faults['backup cuts'] = cuts;
  faults['segments released'] = released;
  faults.connections = net.connections;
  return {
    seed: o.seed,
    mode,
    violations,
    digest: world.digest,
    events: world.events,
    virtualMs: Math.round(world.now),
    committed: nodes.west.db.ledger.length,
    acknowledged: acked.length,
    faults,
    log: o.fullLog ? lines : lines.slice(-200),
  };
}
