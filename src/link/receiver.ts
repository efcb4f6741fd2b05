/**
 * Target end of a link for one group: checks the source's HELLO, tells it where its journal
 * ends, appends received batches to the local journal and acknowledges what is durable and
 * what is applied. Seeds arrive here too and go straight into the target database.
 *
 * Invariants
 * - A record is acknowledged only after the local journal has fsynced it.
 * - Apply takes nothing beyond `sourceDurable`, the source journal's durable position as last
 *   heard (HELLO, BATCH, DURABLE): records the source sent ahead of its own fsync stay in this
 *   journal only. At every new connection the stream resumes after what this node knows the
 *   source made durable (or has applied); the records this journal holds beyond that are kept
 *   and compared with what the source sends again: the same record is kept, the first that
 *   differs (a source that crashed before its fsync lost them and captured its transactions
 *   again) cuts the journal there. A record a sync commit was acknowledged for is never cut, and
 *   nothing unconfirmed is applied or acknowledged.
 * - Positions are checked by the journal: a batch that does not continue the tail exactly is a
 *   protocol error, never a silent skip or a duplicate.
 * - At most `maxPendingBatches` batches wait for fsync; beyond that the socket is paused and TCP
 *   pushes back on the source.
 */
import { inflateRawSync } from 'node:zlib';
import type { Logger } from 'pino';
import { type Apply, chunkKey, type SeedData, type SeedPlan, seedRowCount } from '../adapters/types.js';
import type { GroupConfig } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import type { Journal } from '../journal/index.js';
import type { Channel } from './channel.js';
import { BatchCodec, Compression } from './compression.js';
import { unframeRecords } from './framing.js';
import {
  type Batch,
  type ControlReply,
  decodeRows,
  type Hello,
  type Message,
  MsgType,
  PROTOCOL_VERSION,
  type SeedRows,
} from './messages.js';
import { SeedProgress, type SeedProgressView, showSeedOnTerminal } from './seed-progress.js';

const MAX_INFLATED = 64 << 20;

/** How soon apply's progress reaches the source (coalesced). */
const APPLIED_ACK_MS = 10;
/** How soon, in async mode, the journal's durable position reaches the source (coalesced). */
const ASYNC_ACK_MS = 5;

export interface ReceiverOptions {
  group: GroupConfig;
  cluster: string;
  node: string;
  journal: Journal;
  /** The target database (its apply adapter): positions and seeding. */
  target: Apply;
  /** This node's view of the group: its epoch and primary. */
  role: () => { epoch: number; primary: string };
  /**
   * A primary of a newer epoch connected (a role change this node missed): record it before
   * anything streams.
   */
  adopt: (epoch: number, primary: string) => void;
  /** Answers a CONTROL request of the primary (switchover steps). */
  control: (request: Record<string, unknown>) => Promise<ControlAnswer>;
  log: Logger;
  /** The source's durable position moved: apply may go further. */
  onSourceDurable?: () => void;
  maxPendingBatches?: number;
}

/** The answer to a CONTROL request, and what to do once it has been sent. */
export interface ControlAnswer {
  body: Record<string, unknown>;
  after?: () => void;
}

export class LinkReceiver {
  readonly #o: ReceiverOptions;
  #channel: Channel | null = null;
  /** Each connection's batch dictionary (compression.ts). */
  readonly #codecs = new WeakMap<Channel, BatchCodec>();
  #pending = 0;
  #queued = 0;
  /** Connections refused after a message failed: the messages queued behind it are dropped. */
  readonly #refused = new WeakSet<Channel>();
  #chain: Promise<void> = Promise.resolve();
  #seed: Seeding | null = null;
  /** The abandoned seed of a closed connection, until its chunks in progress are rolled back. */
  #aborting: Promise<void> = Promise.resolve();
  #ackTimer: NodeJS.Timeout | null = null;
  #ackQueued = false;
  #failed: string | null = null;
  /** lastHeardAt of connections that closed. */
  #heard = 0;
  source: string | null = null;
  /** How far the source's journal is durable, as last heard, and from which primary and epoch. */
  #sourceDurable = 0;
  /**
   * Records this journal holds, from `next` to `last`, that the source sent on an earlier
   * connection and may not hold: compared one by one with what it sends again.
   */
  #unconfirmed: { next: number; last: number } | null = null;
  #heardFrom = '';
  bytesIn = 0;
  bytesOut = 0;

  constructor(o: ReceiverOptions) {
    this.#o = o;
  }

  get connected(): boolean {
    return this.#channel !== null && !this.#channel.closed;
  }
  /** When (monoNow) anything last arrived from the primary (0: never since start). */
  get lastHeardAt(): number {
    return Math.max(this.#heard, this.#channel?.lastReceivedAt ?? 0);
  }
  /** Apply may take records up to here (docs/link.md, "Sending ahead of the source's fsync"). */
  get sourceDurable(): number {
    return Math.min(this.#sourceDurable, this.#confirmed);
  }

  /** The last position of this journal known to be the source's (all but unconfirmed records). */
  get #confirmed(): number {
    return this.#unconfirmed ? this.#unconfirmed.next - 1 : Number.MAX_SAFE_INTEGER;
  }

  /** Where the source's stream continues: the journal's end, or the first unconfirmed record. */
  get #resumeAt(): number {
    return Math.min(this.#o.journal.nextPosition, this.#confirmed + 1);
  }
  get seeding(): SeedProgressView | null {
    return this.#seed ? this.#seed.progress.view() : null;
  }
  get wireBytesIn(): number {
    return this.bytesIn + (this.#channel?.bytesIn ?? 0);
  }
  get wireBytesOut(): number {
    return this.bytesOut + (this.#channel?.bytesOut ?? 0);
  }

  /**
   * Checks a HELLO for this group. Returns a refusal reason, or null when the peer may stream.
   * `peer` is the authenticated identity (null in plaintext mode).
   */
  check(hello: Hello, peer: string | null): { code: string; message: string } | null {
    const o = this.#o;
    if (hello.version !== PROTOCOL_VERSION) {
      return {
        code: 'LINK_PROTOCOL',
        message: `protocol version ${hello.version} is not ${PROTOCOL_VERSION}`,
      };
    }
    if (hello.cluster !== o.cluster) {
      return { code: 'LINK_PROTOCOL', message: `cluster "${hello.cluster}" is not "${o.cluster}"` };
    }
    if (peer !== null && peer !== hello.node) {
      return { code: 'LINK_AUTH', message: `authenticated as ${peer} but claims to be ${hello.node}` };
    }
    const { epoch, primary } = o.role();
    if (hello.epoch < epoch) {
      return {
        code: 'LINK_EPOCH',
        message: `epoch ${hello.epoch} is older than this node's epoch ${epoch} (primary: ${primary})`,
      };
    }
    if (hello.epoch === epoch && hello.node !== primary) {
      return {
        code: 'LINK_PROTOCOL',
        message: `${hello.node} is not the primary of group ${o.group.name} at epoch ${epoch} (${primary} is)`,
      };
    }
    if (this.#failed) return { code: 'APPLY_FAILED', message: this.#failed };
    return null;
  }

  /** Takes over an accepted channel whose HELLO passed `check`; an older connection is closed. */
  attach(ch: Channel, hello: Hello): void {
    const role = this.#o.role();
    if (hello.epoch > role.epoch) {
      this.#o.log.warn(
        { epoch: hello.epoch, primary: hello.node, was: role },
        'a primary of a newer epoch connected: following it',
      );
      this.#o.adopt(hello.epoch, hello.node);
    }
    const old = this.#channel;
    if (old) old.close('replaced by a new connection from the source');
    this.#channel = ch;
    this.#codecs.set(ch, new BatchCodec());
    this.#pending = 0;
    this.source = hello.node;
    ch.setHandler((m) => this.#message(ch, m));
    ch.setOnClose((reason) => {
      this.#heard = Math.max(this.#heard, ch.lastReceivedAt);
      this.bytesIn += ch.bytesIn;
      this.bytesOut += ch.bytesOut;
      if (this.#channel === ch) this.#channel = null;
      const seed = this.#seed;
      if (seed) {
        // Parts still queued are dropped; closing the lanes rolls back the chunks being written
        // (a lane may wait on a lock: this does not wait for it). The next WELCOME waits for this.
        this.#seed = null;
        seed.bars();
        seed.error ??= new Error('link closed during seeding');
        this.#aborting = (async () => {
          await this.#o.target.abortSeed();
          await Promise.all(seed.lanes);
        })().catch((err: Error) => this.#o.log.warn({ err: err.message }, 'abandoning the seed failed'));
      }
      if (reason) this.#o.log.warn({ peer: hello.node, reason }, 'link from source closed');
    });
    const t = this.#o.target;
    // After the last connection's messages (a switchover step may still be running) and seed.
    void Promise.all([this.#aborting, this.#chain])
      .then(async () => {
        this.#holdUnconfirmed(hello);
        this.#sourceDurable = hello.durablePosition;
        this.#heardFrom = primaryAtEpoch(hello);
        this.#o.onSourceDurable?.();
        this.#o.log.info(
          { peer: hello.node, next: this.#o.journal.nextPosition },
          'link from source accepted',
        );
        // The source takes everything before nextPosition as durable here (sync commits wait
        // for it): records an earlier connection appended may still be in flight to the disk.
        await this.#o.journal.whenDurable(this.#resumeAt - 1);
        await ch.send({
          type: MsgType.Welcome,
          node: this.#o.node,
          epoch: this.#o.role().epoch,
          nextPosition: this.#resumeAt,
          applied: t.appliedPosition,
          seeded: t.seeded,
          seed: t.seedState ? JSON.stringify(t.seedState) : '',
          seedLanes: t.seedLanes,
        });
      })
      .catch((err: Error) => ch.close(`accepting the link failed: ${err.message}`));
  }

  /**
   * Marks the journal's records that the source may not hold: those beyond the durable position
   * this node heard from the same primary in the same epoch, and beyond what it applied (apply
   * never passes the first). They were sent ahead of the source's fsync; a source that crashed
   * since lost them, captured the same transactions again, and may hold other records at those
   * positions. The stream resumes after the last confirmed one, and #batch compares.
   */
  #holdUnconfirmed(hello: Hello): void {
    const j = this.#o.journal;
    const heard = this.#heardFrom === primaryAtEpoch(hello) ? this.#sourceDurable : 0;
    const keep = Math.max(heard, this.#o.target.appliedPosition);
    this.#unconfirmed = null;
    if (j.lastPosition <= keep || keep < j.firstPosition - 1) return;
    this.#unconfirmed = { next: keep + 1, last: j.lastPosition };
    this.#o.log.info(
      { peer: hello.node, confirmed: keep, unconfirmed: j.lastPosition - keep },
      'records beyond what the source confirmed are kept until it sends them again',
    );
  }

  /**
   * Compares a batch's first records with the unconfirmed ones this journal holds at the same
   * positions; returns how many are the same. At the first that differs, the journal is cut
   * there (that record and all after it were the source's before a crash that lost them).
   */
  async #confirm(payloads: Buffer[]): Promise<number> {
    const u = this.#unconfirmed!;
    const j = this.#o.journal;
    let same = 0;
    while (same < payloads.length && u.next <= u.last) {
      const mine = j.read(u.next, { maxBytes: 1, maxRecords: 1, appended: true })[0];
      if (!mine?.equals(payloads[same]!)) break;
      same++;
      u.next++;
    }
    if (u.next <= u.last && same < payloads.length) {
      this.#o.log.info(
        { from: u.next, dropped: u.last - u.next + 1 },
        'journal cut back: the source holds other records there (it lost these in a crash)',
      );
      // Unconfirmed until they are gone: apply stops before them (sourceDurable) while the cut
      // runs, or it could take the very records being cut, which the source holds otherwise.
      await j.truncateAfter(u.next - 1);
      this.#unconfirmed = null;
    } else if (u.next > u.last) this.#unconfirmed = null;
    if (same > 0) this.#o.onSourceDurable?.();
    return same;
  }

  #sourceDurableIs(position: number): void {
    if (position <= this.#sourceDurable) return;
    this.#sourceDurable = position;
    this.#o.onSourceDurable?.();
  }

  /** Stops accepting: the group is failing or stopping. */
  fail(reason: string): void {
    this.#failed = reason;
    this.#channel?.close(reason);
  }

  close(): void {
    if (this.#ackTimer) clearTimeout(this.#ackTimer);
    this.#channel?.close(null);
  }

  /** Apply moved: tell the source soon (coalesced). */
  notifyApplied(): void {
    this.#ackWithin(APPLIED_ACK_MS);
  }

  /**
   * The journal made received records durable. In sync mode a source commit waits for this: one
   * ACK for all the batches one fsync made durable (their appends resolve in one run of
   * microtasks, and the ACK goes after the last of them). In async mode nothing waits for it
   * but retention, status and a switchover's drain, so the ACKs of a few milliseconds go as
   * one: a write less on this node and a wake-up less on the source per transaction.
   */
  #ackSoon(): void {
    if (this.#o.group.mode !== 'sync') {
      this.#ackWithin(ASYNC_ACK_MS);
      return;
    }
    if (this.#ackQueued) return;
    this.#ackQueued = true;
    queueMicrotask(() => {
      this.#ackQueued = false;
      this.#ack();
    });
  }

  /** An ACK within `ms`, or with the one already due. */
  #ackWithin(ms: number): void {
    if (this.#ackTimer || !this.#channel) return;
    this.#ackTimer = setTimeout(() => {
      this.#ackTimer = null;
      this.#ack();
    }, ms);
  }

  #ack(): void {
    const ch = this.#channel;
    if (!ch) return;
    void ch.send({
      type: MsgType.Ack,
      durable: Math.min(this.#o.journal.durablePosition, this.#confirmed),
      applied: this.#o.target.appliedPosition,
      appliedHlc: this.#o.target.appliedHlc,
    });
  }

  /**
   * Messages are handled one at a time in arrival order (seed steps may be asynchronous); the
   * socket is paused while many wait.
   */
  #message(ch: Channel, m: Message): void {
    this.#queued++;
    if (this.#queued > 32) ch.pause();
    this.#chain = this.#chain
      .then(() => (ch.closed || this.#refused.has(ch) ? undefined : this.#handle(ch, m)))
      .catch((err: Error) => {
        // The first failure refuses the connection; what was queued behind it is dropped
        // unread (a refused seed's chunks each failed again, one error logged per chunk).
        if (this.#refused.has(ch)) return;
        this.#refused.add(ch);
        const msg = err.message;
        this.#o.log.error({ err: msg }, 'link from source failed');
        // A REFUSE carries the code on its own: the message is the rest of a TandemError's.
        void ch.send({
          type: MsgType.Refuse,
          code: (err as { code?: string }).code ?? 'LINK_PROTOCOL',
          message: err instanceof TandemError ? `${err.what}. ${err.fix}` : msg,
          ...this.#o.role(),
        });
        setTimeout(() => ch.close(msg), 50);
      })
      .finally(() => {
        this.#queued--;
        this.#maybeResume(ch);
      });
  }

  /** Reads again once few messages wait and few batches wait for fsync. */
  #maybeResume(ch: Channel): void {
    if (this.#queued <= 8 && this.#pending < (this.#o.maxPendingBatches ?? 16)) ch.resume();
  }

  async #handle(ch: Channel, m: Message): Promise<void> {
    switch (m.type) {
      case MsgType.Batch:
        await this.#batch(ch, m);
        this.#sourceDurableIs(m.sourceDurable);
        return;
      case MsgType.Durable:
        this.#sourceDurableIs(m.position);
        return;
      case MsgType.Unseed:
        this.#o.log.warn(
          { sourceFirst: m.position, next: this.#o.journal.nextPosition },
          'the primary released records this backup needs: giving up the copy for a new seed (it cannot take over until the seed ends)',
        );
        await this.#o.target.unseed();
        await ch.send({ type: MsgType.Unseeded, position: m.position });
        return;
      case MsgType.SeedBegin: {
        const t = this.#o.target;
        const plan = JSON.parse(m.plan) as SeedPlan;
        const done = m.resume ? (t.seedState?.done ?? []) : [];
        this.#o.log.info(
          { position: m.position, chunksDone: done.length, resume: m.resume },
          m.resume ? 'resuming seed from source' : 'seeding from source',
        );
        await t.beginSeed(plan, m.resume);
        const progress = new SeedProgress(plan.position, plan.tables, done);
        this.#seed = {
          done: new Set(done.map((d) => chunkKey(d.table, d.chunk))),
          epoch: m.epoch,
          progress,
          bars: showSeedOnTerminal(`${this.#o.group.name}: seeded by ${this.source}`, progress),
          lanes: Array.from({ length: t.seedLanes }, () => Promise.resolve()),
          busy: new Array<number>(t.seedLanes).fill(0),
          laneOf: new Map(),
          error: null,
        };
        return;
      }
      case MsgType.SeedRows:
        await this.#seedRows(m);
        return;
      case MsgType.Control: {
        let reply: ControlReply;
        let after: (() => void) | undefined;
        try {
          const answer = await this.#o.control(JSON.parse(m.body) as Record<string, unknown>);
          after = answer.after;
          reply = { type: MsgType.ControlReply, id: m.id, ok: true, body: JSON.stringify(answer.body) };
        } catch (err) {
          this.#o.log.warn({ err: (err as Error).message }, 'request of the primary failed');
          reply = { type: MsgType.ControlReply, id: m.id, ok: false, body: (err as Error).message };
        }
        await ch.send(reply).catch(() => {});
        after?.();
        return;
      }
      case MsgType.SeedEnd: {
        const s = this.#seed;
        if (!s || s.progress.position !== m.position) throw new Error('SEED_END does not match SEED_BEGIN');
        await Promise.all(s.lanes);
        if (s.error) throw s.error;
        const position = await this.#o.target.endSeed(s.epoch);
        this.#seed = null;
        s.bars();
        // The journal restarts right after the snapshot; older records are already in the data.
        try {
          await this.#o.journal.reset(position + 1);
          // Nothing of the old journal is left to confirm.
          this.#unconfirmed = null;
        } catch (err) {
          ch.close(`journal reset failed: ${(err as Error).message}`);
          return;
        }
        this.#o.log.info({ position, rows: s.progress.rows }, 'seeded');
        await ch.send({ type: MsgType.SeedDone, position });
        return;
      }
      default:
        throw new Error(`unexpected message type ${m.type} from source`);
    }
  }

  /**
   * Hands a chunk part to a target lane: a new chunk goes to the least busy lane, later parts of
   * it to the same one. Waits while twice as many parts as lanes are queued (memory stays
   * bounded and TCP pushes back on the source). A lane's failure fails the seed.
   */
  async #seedRows(m: SeedRows): Promise<void> {
    const s = this.#seed;
    if (!s) throw new Error('SEED_ROWS outside a seed');
    if (s.error) throw s.error;
    if (m.compression !== Compression.Deflate && m.compression !== Compression.None)
      throw new Error(`seed chunk compressed with unknown code ${m.compression}`);
    const raw =
      m.compression === Compression.Deflate
        ? inflateRawSync(m.data, { maxOutputLength: MAX_INFLATED })
        : m.data;
    if (raw.length !== m.rawLength) throw new Error('seed chunk length mismatch');
    const data: SeedData =
      m.format === 1
        ? { format: 'pgcopy', columns: m.columns, text: raw, rows: m.rows }
        : { format: 'values', columns: m.columns, rows: decodeRows(raw, m.columns.length) };
    const key = chunkKey(m.table, m.chunk);
    if (s.done.has(key)) return; // committed before a resume: never written twice
    let lane = s.laneOf.get(key);
    if (lane === undefined) {
      // A lane's transaction holds one chunk: a new chunk takes a lane with none open (the
      // source keeps at most as many chunks open as WELCOME offered lanes).
      const open = new Set(s.laneOf.values());
      const free = s.busy.map((n, i) => ({ n, i })).filter((x) => !open.has(x.i));
      if (free.length === 0) throw new Error(`more than ${s.lanes.length} seed chunks open at once`);
      lane = free.reduce((a, b) => (b.n < a.n ? b : a)).i;
      s.laneOf.set(key, lane);
    }
    if (m.final) s.laneOf.delete(key);
    const l = lane;
    s.busy[l]!++;
    s.lanes[l] = s.lanes[l]!.then(async () => {
      try {
        if (s.error) return;
        await this.#o.target.seedChunk(l, m.table, m.chunk, data, m.final);
        s.progress.add(m.table, seedRowCount(data));
      } catch (err) {
        s.error ??= err as Error;
      } finally {
        s.busy[l]!--;
      }
    });
    while (s.busy.reduce((a, b) => a + b, 0) > 2 * s.lanes.length && !s.error) await Promise.race(s.lanes);
  }

  /** A BATCH's framed records, through this connection's dictionary when compressed. */
  #inflateBatch(ch: Channel, m: Batch): Buffer {
    if (m.compression === Compression.None) return m.data;
    const codec = this.#codecs.get(ch);
    if (m.compression !== Compression.DeflateWithDictionary || !codec) {
      throw new Error(`batch compressed with unknown code ${m.compression}`);
    }
    return codec.inflate(m.data, MAX_INFLATED);
  }

  async #batch(ch: Channel, m: Batch): Promise<void> {
    const journal = this.#o.journal;
    const expected = this.#resumeAt;
    if (m.first !== expected) throw new Error(`batch starts at ${m.first}, journal needs ${expected}`);
    const raw = this.#inflateBatch(ch, m);
    if (raw.length !== m.rawLength) throw new Error('batch length mismatch after decompression');
    const crcs: number[] = [];
    let payloads = unframeRecords(raw, m.count, crcs);
    if (this.#unconfirmed) {
      const same = await this.#confirm(payloads);
      if (same > 0) {
        // Records this journal already holds: acknowledged once durable here.
        void journal.whenDurable(m.first + same - 1).then(() => {
          if (this.#channel === ch) this.#ackSoon();
        });
      }
      payloads = payloads.slice(same);
      crcs.splice(0, same);
      if (payloads.length === 0) return;
    }
    let last: Promise<void> | null = null;
    for (let i = 0; i < payloads.length; i++) last = journal.append(payloads[i]!, crcs[i]);
    this.#pending++;
    if (this.#pending >= (this.#o.maxPendingBatches ?? 16)) ch.pause();
    last?.then(
      () => {
        this.#pending--;
        if (this.#channel === ch) {
          this.#maybeResume(ch);
          this.#ackSoon();
        }
      },
      (err: Error) => {
        this.#pending--;
        ch.close(`journal append failed: ${err.message}`);
      },
    );
  }
}

/** Which primary at which epoch a source durable position was heard from. */
const primaryAtEpoch = (h: Hello) => `${h.node}@${h.epoch}`;

/** A seed being received: progress, and the lanes (target connections) chunks are written on. */
interface Seeding {
  epoch: number;
  progress: SeedProgress;
  /** Stops the progress bars on a terminal. */
  bars: () => void;
  /** Chunks an interrupted seed committed (`table\0chunk`). */
  done: Set<string>;
  lanes: Promise<void>[];
  /** Parts queued per lane. */
  busy: number[];
  /** The lane of each chunk whose final part has not arrived. */
  laneOf: Map<string, number>;
  error: Error | null;
}
