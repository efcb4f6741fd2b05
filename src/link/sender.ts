/**
 * Source end of a link: dials one target for one group, agrees on where to resume, seeds the
 * target when it needs a snapshot, then streams journal records in compressed batches.
 *
 * Invariants
 * - Records are sent as soon as they are appended, while the local journal's own fsync is in
 *   flight, so both journals write at once. Every batch says how far the local journal is
 *   durable, and DURABLE says it when that moves on: the target applies nothing beyond it, so a
 *   record the source loses in a crash is at most in the target's journal, never in its
 *   database, and the target cuts it at the next connection (receiver.ts).
 * - Streaming starts at the target's `nextPosition` from WELCOME: after any disconnect the
 *   stream resumes exactly where the target's journal ends, no gap, no duplicate.
 * - At most `windowBytes` of unacknowledged batches are in flight, and records are read from
 *   the journal only as the window opens: a slow target never grows the source's memory.
 */
import type { Logger } from 'pino';
import {
  chunkKey,
  type SeedData,
  type SeedFormat,
  type SeedPlan,
  type SeedState,
  type SeedTablePlan,
  type Snapshot,
  seedRowCount,
} from '../adapters/types.js';
import type { Address, GroupConfig } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import { monoNow } from '../core/mono.js';
import type { Journal } from '../journal/index.js';
import { Channel } from './channel.js';
import { BatchCodec, Compression, deflateRaw } from './compression.js';
import { frameRecords } from './framing.js';
import {
  type ControlReply,
  encodeRows,
  type Message,
  MsgType,
  PROTOCOL_VERSION,
  type Refuse,
  type Welcome,
} from './messages.js';
import { SeedProgress, showSeedOnTerminal } from './seed-progress.js';
import { connectSecure, type SecureContext } from './transport.js';

export interface SenderOptions {
  group: GroupConfig;
  cluster: string;
  node: string;
  peer: string;
  addr: Address;
  ctx: SecureContext;
  /** Dials and authenticates the target (default: TLS over TCP). */
  connect?: typeof connectSecure;
  journal: Journal;
  epoch: () => number;
  log: Logger;
  /** Takes a snapshot for seeding; must read the journal's durable position before its snapshot. */
  snapshot: () => Promise<Snapshot>;
  /** The target's positions moved. */
  onProgress: () => void;
  /** The target refused this node for a newer epoch: another node is primary now. */
  onNewerEpoch?: (epoch: number, primary: string) => void;
  windowBytes?: number;
  heartbeatMs?: number;
  deadMs?: number;
}

export type LinkState = 'connecting' | 'handshake' | 'seeding' | 'streaming' | 'down';

/**
 * After a seed the target refused (or whose snapshot failed with SEED_FAILED), the next one
 * waits 1 s, doubling up to 30 s: it would fail the same way until the operator acts (rows that
 * differ, a slot too few), and each attempt is a snapshot and a full copy or comparison.
 */
const SEED_RETRY_MS = 1000;
const SEED_RETRY_MAX_MS = 30_000;

export class LinkSender {
  readonly #o: SenderOptions;
  #stopped = false;
  #channel: Channel | null = null;
  /** The snapshot a seed in progress reads from. */
  #snapshot: Snapshot | null = null;
  /** Why the last connection closed (null: closed without a reason). */
  #closeReason: string | null = null;
  #state: LinkState = 'connecting';
  #lastError: string | null = null;
  #next = 0;
  readonly #inflight: { last: number; bytes: number }[] = [];
  /** CONTROL requests waiting for their reply, by id. */
  readonly #controls = new Map<number, (m: ControlReply | Refuse) => void>();
  #controlId = 0;
  #inflightBytes = 0;
  #wake: (() => void) | null = null;
  #pokeScheduled = false;
  #loop: Promise<void> | null = null;
  #unsubscribe: (() => void)[] = [];
  /** The highest local durable position told to the target on this connection. */
  #announced = 0;
  /** Positions the target reported. */
  durable = 0;
  applied = 0;
  appliedHlc = 0n;
  bytesOut = 0;
  bytesIn = 0;
  /** The seed in progress once planned (null while one is being prepared, and between seeds). */
  seed: SeedProgress | null = null;
  /** How many times this backup was seeded by this node since it started. */
  seeds = 0;
  lastSeed: { position: number; rows: number; resumed: number; ms: number } | null = null;
  /** The backup being seeded holds no usable copy: never seeded, or gave it up (UNSEEDED). */
  #unseeded = false;
  /** The target sent REFUSE during this connection's seed. */
  #seedRefused = false;
  /** Seeds that failed by a refusal since the link last streamed (the retry backoff's exponent). */
  #seedFailures = 0;
  /** The code of the refusal that ended this connection, if one did. */
  #refusedWith: string | null = null;
  /** This connection reached streaming (the redial delays start over). */
  #streamed = false;

  constructor(o: SenderOptions) {
    this.#o = o;
  }

  get state(): LinkState {
    return this.#state;
  }
  /**
   * Seeding a backup that holds no usable copy (its WELCOME said it was never seeded or is
   * part-way through a seed, or it answered UNSEED): it cannot take over until the seed ends, so
   * sync commits need not wait for it meanwhile (SourceGroup). A seeded backup counts until its
   * UNSEEDED: its database is a copy that could be promoted.
   */
  get seedingUnseeded(): boolean {
    return this.#state === 'seeding' && this.#unseeded;
  }
  get lastError(): string | null {
    return this.#lastError;
  }
  get peer(): string {
    return this.#o.peer;
  }
  get rttMs(): number {
    return this.#channel?.rttMs ?? 0;
  }
  /** When the latest PING the backup answered on the current connection was sent (0: none). */
  get answeredPingAt(): number {
    return this.#state === 'streaming' || this.#state === 'seeding'
      ? (this.#channel?.answeredPingAt ?? 0)
      : 0;
  }
  ping(): void {
    this.#channel?.ping();
  }
  /** Wire bytes including the live connection. */
  get wireBytesOut(): number {
    return this.bytesOut + (this.#channel?.bytesOut ?? 0);
  }
  get wireBytesIn(): number {
    return this.bytesIn + (this.#channel?.bytesIn ?? 0);
  }

  run(): void {
    const j = this.#o.journal;
    this.#unsubscribe = [
      // Appends of one turn of the event loop go out as one batch.
      j.onAppend(() => {
        if (this.#pokeScheduled) return;
        this.#pokeScheduled = true;
        setImmediate(() => {
          this.#pokeScheduled = false;
          this.#poke();
        });
      }),
      j.onDurable((p) => this.#announce(p)),
    ];
    this.#loop = this.#connectLoop();
  }

  /** Tells the target the local journal is durable up to `durable` when it holds records beyond what it was told. */
  #announce(durable: number): void {
    const ch = this.#channel;
    if (!ch || this.#state !== 'streaming' || this.#announced >= this.#next - 1) return;
    const position = Math.min(durable, this.#next - 1);
    if (position <= this.#announced) return;
    this.#announced = position;
    ch.send({ type: MsgType.Durable, position }).catch(() => {});
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const off of this.#unsubscribe) off();
    this.#channel?.close(null);
    this.#poke();
    // A seed's readers may wait on the source database: closing the snapshot ends them.
    await this.#snapshot?.close();
    await this.#loop;
  }

  #poke(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#wake = null;
        resolve();
      }, ms);
      this.#wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  /** Waits `ms` (journal appends do not cut it short; stop() does). */
  async #pause(ms: number): Promise<void> {
    const end = monoNow() + ms;
    while (!this.#stopped && monoNow() < end) await this.#sleep(end - monoNow());
  }

  async #connectLoop(): Promise<void> {
    // Redial quickly: a refused connection costs little, and a restarted backup should not wait.
    // While the backup's port refuses (it is starting: nothing listens yet), every 25 ms for the
    // first seconds; otherwise 25, 50, then every 100 ms, from 25 again after a session that
    // streamed. A backup whose group has failed (APPLY_FAILED: it restarts the group itself,
    // after 1 s, 2 s, 4 s, ...) is asked again after 100 ms doubling to 5 s: it would refuse
    // every 100 ms for as long as its fault lasts.
    let backoff = 25;
    let failedBackup = 0;
    let downSince: number | null = null;
    while (!this.#stopped) {
      this.#state = 'connecting';
      let refused = false;
      let seedRetryMs = 0;
      this.#refusedWith = null;
      try {
        await this.#session();
      } catch (err) {
        const msg = (err as Error).message;
        refused = (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
        if (this.#seedRefused || (err instanceof TandemError && err.code === 'SEED_FAILED')) {
          // Not a broken connection: the next seed waits (its error stays in status meanwhile).
          this.#seedFailures++;
          seedRetryMs = Math.min(SEED_RETRY_MAX_MS, SEED_RETRY_MS * 2 ** (this.#seedFailures - 1));
          if (!this.#stopped)
            this.#o.log.error(
              { peer: this.#o.peer, err: msg, retryInMs: seedRetryMs },
              'seeding the backup failed: trying again later',
            );
        } else if (msg !== this.#lastError) this.#o.log.warn({ peer: this.#o.peer, err: msg }, 'link down');
        this.#lastError = msg;
      }
      if (this.#stopped) break;
      if (this.#streamed) {
        this.#streamed = false;
        backoff = 25;
        downSince = null;
      }
      failedBackup = this.#refusedWith === 'APPLY_FAILED' ? failedBackup + 1 : 0;
      this.#state = 'down';
      downSince ??= monoNow();
      const starting = refused && monoNow() - downSince < 5000;
      if (seedRetryMs > 0) await this.#pause(seedRetryMs);
      else if (failedBackup > 0) await this.#pause(Math.min(5000, 100 * 2 ** (failedBackup - 1)));
      else await this.#sleep(starting ? 25 : backoff);
      backoff = Math.min(backoff * 2, 100);
    }
    this.#state = 'down';
  }

  /** One connection, from dial to close. Rejects with the reason it ended. */
  async #session(): Promise<void> {
    const o = this.#o;
    this.#seedRefused = false;
    const conn = await (o.connect ?? connectSecure)(o.addr, o.peer, o.ctx);
    this.#closeReason = null;
    let onClosed!: () => void;
    const closed = new Promise<void>((r) => {
      onClosed = r;
    });
    let reply: ((m: Message) => void) | null = null;
    const ch = new Channel(conn, {
      heartbeatMs: o.heartbeatMs,
      deadMs: o.deadMs,
      onMessage: (m) => {
        if (m.type === MsgType.Refuse && this.#state === 'seeding') this.#seedRefused = true;
        if (m.type === MsgType.Ack) {
          this.durable = m.durable;
          this.applied = m.applied;
          this.appliedHlc = m.appliedHlc;
          while (this.#inflight.length > 0 && this.#inflight[0]!.last <= m.durable) {
            this.#inflightBytes -= this.#inflight.shift()!.bytes;
          }
          o.onProgress();
          this.#poke();
        } else if (m.type === MsgType.ControlReply) {
          this.#controls.get(m.id)?.(m);
          this.#controls.delete(m.id);
        } else if (reply) {
          const r = reply;
          reply = null;
          r(m);
        } else if (m.type === MsgType.Refuse) {
          this.#refused(m);
          ch.close(`refused by ${o.peer}: ${refusal(m)}`);
        } else {
          ch.close(`unexpected message type ${m.type}`);
        }
      },
      onClose: (reason) => {
        this.#closeReason = reason;
        this.bytesOut += conn.raw.bytesWritten;
        this.bytesIn += conn.raw.bytesRead;
        this.#channel = null;
        onClosed();
        this.#poke();
        if (reply) reply(closedReply(reason));
        for (const c of this.#controls.values()) c(closedReply(reason));
        this.#controls.clear();
      },
    });
    this.#channel = ch;
    // stop() while dialing found no channel to close: this one closes now, or the session waits forever.
    if (this.#stopped) ch.close(null);
    // The next message from the target; a channel that closed before the wait began answers at once.
    const next = () =>
      new Promise<Message>((resolve) => {
        if (ch.closed) resolve(closedReply(this.#closeReason));
        else reply = resolve;
      });
    try {
      this.#state = 'handshake';
      const journal = o.journal;
      const welcomeP = next();
      // The target may apply up to this; later durable positions travel with batches and DURABLE.
      const durableAtHello = journal.durablePosition;
      await ch.send({
        type: MsgType.Hello,
        version: PROTOCOL_VERSION,
        cluster: o.cluster,
        group: o.group.name,
        node: o.node,
        epoch: o.epoch(),
        firstPosition: journal.firstPosition,
        durablePosition: durableAtHello,
      });
      const w = await welcomeP;
      if (w.type === MsgType.Refuse) {
        this.#refused(w);
        throw new Error(`refused by ${o.peer}: ${refusal(w)}`);
      }
      if (w.type !== MsgType.Welcome) throw new Error(`expected WELCOME, got message type ${w.type}`);
      this.durable = w.nextPosition - 1;
      this.applied = w.applied;
      // A refused seed's error stays until a seed succeeds: the next one may well fail the same way.
      if (this.#seedFailures === 0) this.#lastError = null;
      o.onProgress();
      let from = w.nextPosition;
      if (this.#needsSeed(w)) {
        from = (await this.#seed(ch, next, w)) + 1;
      } else if (w.nextPosition > journal.nextPosition) {
        throw new TandemError(
          'LINK_PROTOCOL',
          `node ${o.peer} holds group ${o.group.name} up to position ${w.nextPosition - 1}, beyond this node's journal (${journal.lastPosition})`,
          'The nodes have diverged; reseed the backup (stop it, delete its state folder and database, start it)',
        );
      }
      this.#o.log.info({ peer: o.peer, from }, 'link streaming');
      this.#state = 'streaming';
      this.#streamed = true;
      this.#lastError = null;
      this.#seedFailures = 0;
      this.#next = from;
      this.#announced = durableAtHello;
      this.#inflight.length = 0;
      this.#inflightBytes = 0;
      await Promise.race([this.#pump(ch, new BatchCodec()), closed]);
      await closed;
    } finally {
      ch.close(null);
    }
    if (!this.#stopped) throw new Error(this.#closeReason ?? 'link closed');
  }

  #refused(r: Refuse): void {
    this.#refusedWith = r.code;
    if (r.epoch > this.#o.epoch() && r.primary !== '') this.#o.onNewerEpoch?.(r.epoch, r.primary);
  }

  /**
   * Sends a request to the target on the streaming connection and resolves with its answer.
   * Requests travel behind the batches sent before them. Rejects when the target answers with
   * an error, the connection closes, or no answer comes within `timeoutMs`.
   */
  control(request: Record<string, unknown>, timeoutMs: number): Promise<Record<string, unknown>> {
    const ch = this.#channel;
    if (!ch || this.#state !== 'streaming')
      return Promise.reject(new Error(`the link to ${this.#o.peer} is ${this.#state}, not streaming`));
    const id = ++this.#controlId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#controls.delete(id);
        reject(new Error(`${this.#o.peer} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#controls.set(id, (m) => {
        clearTimeout(timer);
        if (m.type === MsgType.Refuse) reject(new Error(`link to ${this.#o.peer} closed: ${m.message}`));
        else if (!m.ok) reject(new ControlRefused(m.body));
        else resolve(JSON.parse(m.body) as Record<string, unknown>);
      });
      ch.send({ type: MsgType.Control, id, body: JSON.stringify(request) }).catch(() => {});
    });
  }

  #needsSeed(w: Welcome): boolean {
    if (!w.seeded) return true;
    // The target needs records the journal has released: only a snapshot can bring it back.
    return w.nextPosition < this.#o.journal.firstPosition;
  }

  /**
   * Seeds the target from a snapshot; resolves with the seed's position once the target has
   * committed it. Chunks are read and sent by `seed.workers` workers at once. A seed the target
   * began earlier (WELCOME's seed state) is resumed with the chunks it lacks when it is still
   * possible: planned by this node, same table definitions, journal still holding its position.
   */
  async #seed(ch: Channel, next: () => Promise<Message>, w: Welcome): Promise<number> {
    const o = this.#o;
    this.#state = 'seeding';
    // The last seed's figures are not this one's: status says it is being prepared until planned.
    this.seed = null;
    this.#unseeded = false;
    if (w.seeded) {
      // A seeded backup first gives up its copy, durably: only then may commits stop waiting
      // for it (it can no longer take over), and a snapshot that waits for them can be taken.
      const first = o.journal.firstPosition;
      o.log.warn(
        { peer: o.peer, next: w.nextPosition, first },
        'backup needs released records: reseeding it',
      );
      const unseededP = next();
      await ch.send({ type: MsgType.Unseed, position: first });
      const r = await unseededP;
      if (r.type === MsgType.Refuse) throw new Error(`reseeding refused by ${o.peer}: ${refusal(r)}`);
      if (r.type !== MsgType.Unseeded || r.position !== first) throw new Error('expected UNSEEDED');
    }
    // Sync commits stop waiting for it (seedingUnseeded): taking the snapshot may wait for them.
    this.#unseeded = true;
    if (o.group.mode === 'sync') {
      o.onProgress();
      o.log.warn(
        { peer: o.peer },
        'sync mode: commits do not wait for this backup while it is being seeded (it holds no usable copy and cannot take over until the seed ends)',
      );
    }
    const snap = await o.snapshot();
    this.#snapshot = snap;
    try {
      const state = w.seed ? (JSON.parse(w.seed) as SeedState) : null;
      const resume = state !== null && this.#canResume(state, snap);
      const plan: SeedPlan = resume
        ? { ...state.plan, consistentAt: Math.max(state.plan.consistentAt ?? 0, snap.position) }
        : {
            position: snap.position,
            source: o.node,
            engine: snap.engine,
            schemas: snap.schemas,
            tables: await snap.plan(),
          };
      const done = new Set(resume ? state.done.map((d) => chunkKey(d.table, d.chunk)) : []);
      const tasks = plan.tables.flatMap((t) =>
        Array.from({ length: t.bounds.length + 1 }, (_, i) => ({ t, i })).filter(
          ({ i }) => !done.has(chunkKey(t.table, i)),
        ),
      );
      const progress = new SeedProgress(plan.position, plan.tables, resume ? state.done : []);
      this.seed = progress;
      o.log.info(
        { peer: o.peer, position: plan.position, rows: progress.total, chunks: tasks.length, resume },
        resume ? "resuming the backup's seed" : 'seeding backup',
      );
      await ch.send({
        type: MsgType.SeedBegin,
        position: plan.position,
        epoch: o.epoch(),
        resume,
        plan: JSON.stringify(plan),
      });
      const started = monoNow();
      const format: SeedFormat =
        snap.engine === 'postgres' && o.group.endpoints[o.peer]?.engine === 'postgres' ? 'pgcopy' : 'values';
      const logTimer = setInterval(() => {
        const { rows, total, rowsPerSec, etaSec } = progress.view();
        o.log.info({ peer: o.peer, rows, total, rowsPerSec, etaSec }, 'seeding progress');
      }, 2000);
      const bars = showSeedOnTerminal(`${o.group.name}: seeding ${o.peer}`, progress);
      try {
        const worker = async () => {
          for (let task = tasks.shift(); task; task = tasks.shift()) {
            await this.#sendChunk(ch, snap, task.t, task.i, format, progress);
          }
        };
        const workers = Math.max(1, Math.min(o.group.seed.workers, w.seedLanes));
        await Promise.all(Array.from({ length: workers }, worker));
      } finally {
        clearInterval(logTimer);
        bars();
      }
      const doneP = next();
      await ch.send({ type: MsgType.SeedEnd, position: plan.position });
      const reply = await doneP;
      if (reply.type === MsgType.Refuse) throw new Error(`seeding refused by ${o.peer}: ${refusal(reply)}`);
      if (reply.type !== MsgType.SeedDone || reply.position !== plan.position) {
        throw new Error(`expected SEED_DONE for position ${plan.position}`);
      }
      this.seeds++;
      const { rows, resumed } = progress.view();
      this.lastSeed = { position: plan.position, rows, resumed, ms: Math.round(monoNow() - started) };
      o.log.info({ peer: o.peer, ...this.lastSeed }, 'backup seeded');
      this.durable = plan.position;
      this.applied = plan.position;
      return plan.position;
    } finally {
      this.#snapshot = null;
      this.seed = null;
      await snap.close();
    }
  }

  #canResume(state: SeedState, snap: Snapshot): boolean {
    const p = state.plan;
    return (
      p.source === this.#o.node &&
      p.engine === snap.engine &&
      p.position + 1 >= this.#o.journal.firstPosition &&
      p.position <= this.#o.journal.durablePosition &&
      JSON.stringify(p.schemas) === JSON.stringify(snap.schemas)
    );
  }

  /** Sends one chunk part by part; the last part is marked final (an empty chunk is one part). */
  async #sendChunk(
    ch: Channel,
    snap: Snapshot,
    t: SeedTablePlan,
    index: number,
    format: SeedFormat,
    progress: SeedProgress,
  ) {
    let held: SeedData | null = null;
    for await (const part of snap.readChunk(t, index, format)) {
      if (ch.closed) throw new Error(this.#closeReason ?? 'link closed during seeding');
      if (held) await this.#sendPart(ch, t.table, index, held, false, progress);
      held = part;
    }
    if (held) await this.#sendPart(ch, t.table, index, held, true, progress);
  }

  async #sendPart(
    ch: Channel,
    table: string,
    chunk: number,
    d: SeedData,
    final: boolean,
    progress: SeedProgress,
  ): Promise<void> {
    const deflate = this.#o.group.compression === 'deflate';
    const raw = d.format === 'pgcopy' ? d.text : encodeRows(d.rows);
    const rows = seedRowCount(d);
    await ch.send({
      type: MsgType.SeedRows,
      table,
      chunk,
      final,
      format: d.format === 'pgcopy' ? 1 : 0,
      rows,
      columns: d.columns,
      compression: deflate ? Compression.Deflate : Compression.None,
      rawLength: raw.length,
      data: deflate ? await deflateRaw(raw) : raw,
    });
    progress.add(table, rows);
  }

  /** Streams appended records while the window allows, until the channel closes. */
  async #pump(ch: Channel, codec: BatchCodec): Promise<void> {
    const o = this.#o;
    const window = o.windowBytes ?? 8 << 20;
    const { maxRecords, maxBytes } = o.group.batch;
    while (!ch.closed && !this.#stopped) {
      if (this.#inflightBytes >= window || this.#next > o.journal.lastPosition) {
        await this.#sleep(1000);
        continue;
      }
      const payloads = o.journal.read(this.#next, { maxBytes, maxRecords, appended: true });
      if (payloads.length === 0) {
        await this.#sleep(1000);
        continue;
      }
      const raw = frameRecords(payloads);
      const deflate = o.group.compression === 'deflate';
      const data = deflate ? await codec.deflate(raw) : raw;
      const first = this.#next;
      this.#next += payloads.length;
      this.#inflight.push({ last: this.#next - 1, bytes: raw.length });
      this.#inflightBytes += raw.length;
      const sourceDurable = Math.min(o.journal.durablePosition, this.#next - 1);
      if (sourceDurable > this.#announced) this.#announced = sourceDurable;
      await ch.send({
        type: MsgType.Batch,
        first,
        count: payloads.length,
        sourceDurable: this.#announced,
        compression: deflate ? Compression.DeflateWithDictionary : Compression.None,
        rawLength: raw.length,
        data,
      });
    }
  }
}

/** The target answered a CONTROL request with an error (it did not do what was asked). */
export class ControlRefused extends Error {
  override name = 'ControlRefused';
}

/** What a wait for the target's reply gets when the channel closed. */
function closedReply(reason: string | null): Refuse {
  return { type: MsgType.Refuse, code: 'CLOSED', message: reason ?? 'closed', epoch: 0, primary: '' };
}

function refusal(r: Refuse): string {
  return `[${r.code}] ${r.message}`;
}
