/**
 * One replication group's journal on one node: an append-only, checksummed, durable sequence
 * of records in segment files (format.ts). Positions start at 1 and never skip.
 *
 * Invariants:
 *  - firstPosition <= durablePosition + 1 <= nextPosition. Records in [firstPosition,
 *    durablePosition] are fsynced and readable; (durablePosition, nextPosition) are accepted
 *    appends still queued or being written.
 *  - Epochs never decrease along positions.
 *  - Segments are contiguous: each base is the previous segment's last position + 1. Only the
 *    last (active) segment is written; all others are sealed and immutable until deleted.
 *  - Group commit: at most one flush is in flight. A flush takes everything queued, writes it
 *    with one writev per segment touched (durable when it returns: O_DSYNC) before any of its appends resolve.
 *  - A failed write or fsync stops the journal (JOURNAL_FAILED): nothing after the last
 *    successful fsync is ever reported durable in this process.
 */
import { dirname, resolve as resolvePath } from 'node:path';
import { crc32c } from '../core/crc32c.js';
import { TandemError } from '../core/errors.js';
import { systemClock, type WallClock } from '../core/hlc.js';
import { peekEpoch, peekPosition } from '../core/record.js';
import { type Disk, type DiskFile, nodeDisk } from './disk.js';
import { createSegmentFile, syncDir, writeFully } from './files.js';
import { FRAME_HEADER_BYTES, MAX_PAYLOAD_BYTES, MIN_PAYLOAD_BYTES } from './format.js';
import { SegmentReader } from './reader.js';
import { type JournalLog, recover } from './recovery.js';
import { commitReset, finishReset } from './reset.js';
import { Segment } from './segment.js';
import { TailCache } from './tail-cache.js';

const MIB = 1024 * 1024;

/**
 * The active segment for appends. Durable journals open it with O_DSYNC: each write returns once
 * its data (and the file size) is on disk, as write + fdatasync would, in one system call and one
 * trip through libuv's thread pool instead of two (the commit latency of sync mode).
 */
function openActive(disk: Disk, path: string, durable: boolean): Promise<DiskFile> {
  return disk.open(path, durable ? 'r+sync' : 'r+');
}

export interface JournalOptions {
  /** The group's journal folder; created if missing. */
  dir: string;
  /** Roll to a new segment once the active one reaches this size. Default 64 MiB. */
  segmentBytes?: number;
  /** fdatasync appends and fsync the folder on create/delete. Default true; tests may pass false. */
  fsync?: boolean;
  /** Sealed segments are kept while among the newest keepBytes or sealed less than keepMillis ago. */
  retention?: { keepBytes: number; keepMillis: number };
  /** Wall clock in ms for segment creation times and retention. Default Date.now. */
  clock?: WallClock;
  log?: JournalLog;
  /** Budget for the in-memory cache of recent durable payloads; 0 disables it. Default 4 MiB. */
  tailCacheBytes?: number;
  /** The file system (default the real one; the simulation passes a virtual disk). */
  disk?: Disk;
}

interface Settings {
  dir: string;
  segmentBytes: number;
  durable: boolean;
  keepBytes: number;
  keepMillis: number;
  clock: WallClock;
  log: JournalLog;
  tailCacheBytes: number;
  disk: Disk;
}

interface Pending {
  payload: Buffer;
  /** crc32c(payload) when the caller has it, else computed at the write. */
  crc: number | undefined;
  resolve: () => void;
  reject: (err: unknown) => void;
}

function settingsFrom(opts: JournalOptions): Settings {
  const nonNegative = (name: string, v: number): number => {
    if (!Number.isSafeInteger(v) || v < 0)
      throw new RangeError(`journal option ${name} must be an integer >= 0, got ${v}`);
    return v;
  };
  if (typeof opts.dir !== 'string' || opts.dir === '') throw new RangeError('journal option dir is required');
  const segmentBytes = nonNegative('segmentBytes', opts.segmentBytes ?? 64 * MIB);
  if (segmentBytes === 0) throw new RangeError('journal option segmentBytes must be > 0');
  return {
    dir: opts.dir,
    segmentBytes,
    durable: opts.fsync ?? true,
    keepBytes: nonNegative('retention.keepBytes', opts.retention?.keepBytes ?? 256 * MIB),
    keepMillis: nonNegative('retention.keepMillis', opts.retention?.keepMillis ?? 60 * 60 * 1000),
    clock: opts.clock ?? systemClock,
    log: opts.log ?? { info() {}, warn() {} },
    tailCacheBytes: nonNegative('tailCacheBytes', opts.tailCacheBytes ?? 4 * MIB),
    disk: opts.disk ?? nodeDisk,
  };
}

export class Journal {
  #s: Settings;
  /** Contiguous, in base order, never empty; the last one is active. */
  #segments: Segment[];
  /** Write handle of the active segment. */
  #active: DiskFile;
  #reader: SegmentReader;
  #cache: TailCache;
  #next: number;
  #durable: number;
  #lastEpoch: number;
  #queue: Pending[] = [];
  /** Payloads of (durablePosition, nextPosition), in order: appended, not yet on disk. */
  #unflushed: Buffer[] = [];
  #appendListeners = new Set<() => void>();
  #flusher: Promise<void> | null = null;
  #flushCount = 0;
  #listeners = new Set<(position: number) => void>();
  #failure: TandemError | null = null;
  #failureListeners = new Set<(failure: TandemError) => void>();
  /** reset / truncateAfter calls in progress; appends are refused meanwhile. */
  #rewrites = 0;
  /** Set by close(): appends are refused from then on. */
  #closing: Promise<void> | null = null;
  /** Set once close() has released the files. */
  #closed = false;
  /** Serializes retain, reset, truncateAfter and close. */
  #lock: Promise<unknown> = Promise.resolve();

  private constructor(s: Settings, segments: Segment[], active: DiskFile, lastEpoch: number) {
    this.#s = s;
    this.#reader = new SegmentReader(s.disk);
    this.#segments = segments;
    this.#active = active;
    this.#cache = new TailCache(s.tailCacheBytes);
    this.#next = this.#activeSegment.next;
    this.#durable = this.#next - 1;
    this.#lastEpoch = lastEpoch;
  }

  /** Open (creating if needed) and recover the journal in opts.dir; see recovery.ts. */
  static async open(opts: JournalOptions): Promise<Journal> {
    const s = settingsFrom(opts);
    await makeDir(s.disk, s.dir, s.durable);
    const { segments, lastEpoch } = await recover(s.disk, s.dir, s.durable, nowMs(s.clock), s.log);
    const active = await openActive(s.disk, segments.at(-1)!.path, s.durable);
    const journal = new Journal(s, segments, active, lastEpoch);
    s.log.info(
      {
        dir: s.dir,
        firstPosition: journal.firstPosition,
        lastPosition: journal.lastPosition,
        segments: segments.length,
      },
      'journal: opened',
    );
    return journal;
  }

  /** The journal's folder. */
  get dir(): string {
    return this.#s.dir;
  }
  get firstPosition(): number {
    return this.#segments[0]!.base;
  }

  get nextPosition(): number {
    return this.#next;
  }

  get lastPosition(): number {
    return this.#next - 1;
  }

  get durablePosition(): number {
    return this.#durable;
  }

  get lastEpoch(): number {
    return this.#lastEpoch;
  }

  /** Bytes of durable data over all segments, headers included. */
  get sizeBytes(): number {
    let total = 0;
    for (const seg of this.#segments) total += seg.size;
    return total;
  }

  get segmentCount(): number {
    return this.#segments.length;
  }

  /** Completed write+fdatasync rounds (a flush that crosses a segment roll counts twice). */
  get flushCount(): number {
    return this.#flushCount;
  }

  /**
   * Queue an encoded record. Its position must equal nextPosition and its epoch be >= lastEpoch;
   * both are checked, and nextPosition advanced, before this returns, so callers may issue many
   * appends without awaiting each. Resolves once the record is fsynced. The payload must not be
   * modified afterwards (it is written, and cached, as is). `crc`: its crc32c, when the caller
   * has just checked it (a record off the link), so it is not computed again.
   */
  append(payload: Buffer, crc?: number): Promise<void> {
    try {
      this.#admit(payload);
    } catch (err) {
      const refused = Promise.reject(err);
      // A refusal refuses the rest of a pipelined batch too (its positions no longer follow), and
      // the caller awaits the last: as below, one left unawaited is no unhandled rejection.
      refused.catch(() => {});
      return refused;
    }
    const done = new Promise<void>((resolve, reject) => {
      this.#queue.push({ payload, crc, resolve, reject });
      this.#flusher ??= this.#flushLoop();
    });
    this.#unflushed.push(payload);
    for (const listener of this.#appendListeners) listener();
    // Callers pipeline appends and await the last: a failure rejects all of them, and is told
    // once through onFailure, so one left unawaited is no unhandled rejection (awaiting still throws).
    done.catch(() => {});
    return done;
  }

  /**
   * Durable payloads from `from` on, in order: at most maxRecords, and no more than maxBytes of
   * payload unless the first record alone is larger (one record is returned whenever one is
   * available). With `appended`, records appended and not yet durable follow the durable ones
   * (a backup's apply: see docs/journal.md). Returned buffers are shared with the cache: treat
   * them as read-only.
   */
  read(from: number, limits: { maxBytes: number; maxRecords: number; appended?: boolean }): Buffer[] {
    this.#assertOpen();
    if (!Number.isSafeInteger(from)) throw new RangeError(`read position must be an integer, got ${from}`);
    if (!(limits.maxBytes >= 0 && limits.maxRecords >= 0)) {
      throw new RangeError(
        `read limits must be >= 0, got ${limits.maxBytes} bytes / ${limits.maxRecords} records`,
      );
    }
    if (from < this.firstPosition) {
      throw new TandemError(
        'JOURNAL_GAP',
        `position ${from} was released by retention or a reset; journal ${this.#s.dir} starts at position ${this.firstPosition}`,
        'Reseed the target: the records it needs are no longer kept',
      );
    }
    const out: Buffer[] = [];
    let count = 0;
    let bytes = 0;
    const take = (len: number): boolean => {
      if (count >= limits.maxRecords || (count > 0 && bytes + len > limits.maxBytes)) return false;
      count++;
      bytes += len;
      return true;
    };
    let pos = from;
    while (pos <= this.#durable) {
      const cached = this.#cache.get(pos);
      if (cached) {
        if (!take(cached.length)) break;
        out.push(cached);
        pos++;
        continue;
      }
      // Not cached: read from the segment holding pos, up to the cache or the segment's end.
      const seg = this.#segments[this.#indexOf(pos)]!;
      const to = Math.min(seg.last, this.#durable, this.#cache.first - 1);
      const got = this.#reader.read(seg, pos, to, take);
      for (const p of got) out.push(p);
      pos += got.length;
      if (got.length === 0 || pos <= to) break;
    }
    if (limits.appended && pos > this.#durable) {
      for (let i = pos - this.#durable - 1; i < this.#unflushed.length; i++) {
        const p = this.#unflushed[i]!;
        if (!take(p.length)) break;
        out.push(p);
      }
    }
    return out;
  }

  /** Call `listener()` after every append (the record is not durable yet); returns unsubscribe. */
  onAppend(listener: () => void): () => void {
    this.#appendListeners.add(listener);
    return () => {
      this.#appendListeners.delete(listener);
    };
  }

  /** Call `listener(durablePosition)` after every fsync that advances it; returns unsubscribe. */
  onDurable(listener: (position: number) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** The error that stopped this journal (a failed write or fsync), or null. */
  get failure(): TandemError | null {
    return this.#failure;
  }

  /**
   * Call `listener(failure)` once, when a write or fsync fails and the journal stops (soon after
   * subscribing, when it has stopped already); returns unsubscribe.
   */
  onFailure(listener: (failure: TandemError) => void): () => void {
    const failure = this.#failure;
    if (failure) {
      let on = true;
      queueMicrotask(() => on && listener(failure));
      return () => {
        on = false;
      };
    }
    this.#failureListeners.add(listener);
    return () => {
      this.#failureListeners.delete(listener);
    };
  }

  /** Resolves once every record up to `position` is durable (at once if it is already). */
  whenDurable(position: number): Promise<void> {
    if (this.durablePosition >= position) return Promise.resolve();
    return new Promise((resolve) => {
      const off = this.onDurable((p) => {
        if (p < position) return;
        off();
        resolve();
      });
    });
  }

  /**
   * Discard every record and start an empty journal whose next append carries `nextPosition`
   * (a backup being seeded). Pending appends are flushed first; appends issued before this
   * resolves are refused. Crash-safe (reset.ts).
   */
  reset(nextPosition: number): Promise<void> {
    if (!Number.isSafeInteger(nextPosition) || nextPosition < 1) {
      return Promise.reject(new RangeError(`reset position must be a positive integer, got ${nextPosition}`));
    }
    return this.#rewrite(async () => {
      const createdAt = nowMs(this.#s.clock);
      try {
        await commitReset(this.#s.disk, this.#s.dir, nextPosition, createdAt, this.#s.durable);
        const dropped = this.#segments.length;
        this.#segments = [new Segment(this.#s.dir, nextPosition, createdAt)];
        this.#next = nextPosition;
        this.#durable = nextPosition - 1;
        this.#unflushed = [];
        this.#lastEpoch = 0;
        this.#cache.clear();
        this.#reader.closeAll();
        await this.#active.close();
        await finishReset(this.#s.disk, this.#s.dir, nextPosition, this.#s.durable);
        this.#active = await openActive(this.#s.disk, this.#activeSegment.path, this.#s.durable);
        this.#s.log.info({ dir: this.#s.dir, nextPosition, dropped }, 'journal: reset');
      } catch (err) {
        throw this.#fail(err);
      }
    });
  }

  /**
   * Drop every record after `position` (rewinding a divergent tail); durable on return. Pending
   * appends are flushed first; appends issued before this resolves are refused. A position at or
   * past lastPosition changes nothing; one before firstPosition - 1 is a JOURNAL_GAP.
   */
  truncateAfter(position: number): Promise<void> {
    if (!Number.isSafeInteger(position)) {
      return Promise.reject(new RangeError(`truncate position must be an integer, got ${position}`));
    }
    return this.#rewrite(async () => {
      if (position >= this.lastPosition) return;
      const first = this.firstPosition;
      if (position < first - 1) {
        throw new TandemError(
          'JOURNAL_GAP',
          `cannot truncate journal ${this.#s.dir} after position ${position}: it starts at position ${first}`,
          'Reseed the node instead: the records before its start are no longer kept',
        );
      }
      const k = position < first ? 0 : this.#indexOf(position);
      const keep = this.#segments[k]!;
      const cutAt = this.#reader.offsetOf(keep, position + 1);
      const epoch =
        position < first ? 0 : peekEpoch(this.#reader.read(keep, position, position, () => true)[0]!);
      // Memory first, so reads never see a record being dropped; then disk, newest file first
      // so a crash part-way leaves a contiguous (if longer) journal.
      const dropped = this.#segments.splice(k + 1);
      keep.truncate(position + 1 - keep.base, cutAt);
      keep.sealedAt = null;
      this.#next = position + 1;
      this.#durable = position;
      this.#unflushed = [];
      this.#lastEpoch = epoch;
      this.#cache.truncateAfter(position);
      try {
        if (dropped.length > 0) {
          await this.#active.close();
          this.#active = await openActive(this.#s.disk, keep.path, this.#s.durable);
        }
        for (const seg of dropped.reverse()) {
          this.#reader.forget(seg);
          await this.#s.disk.unlink(seg.path);
          await syncDir(this.#s.disk, this.#s.dir, this.#s.durable);
        }
        await this.#active.truncate(cutAt);
        if (this.#s.durable) await this.#active.datasync();
      } catch (err) {
        throw this.#fail(err);
      }
      this.#s.log.info(
        { dir: this.#s.dir, position, droppedSegments: dropped.length },
        'journal: truncated after position',
      );
    });
  }

  /**
   * Deletes the oldest sealed segments, whoever still needs them, until the journal is at most
   * `maxBytes` (or only the active segment is left). The cap on disk use past which a backup
   * that stays away must be reseeded. Returns the new first position.
   */
  releaseOldest(maxBytes: number): Promise<number> {
    return this.#exclusive(async () => {
      this.#assertOpen();
      while (this.#segments.length > 1 && this.sizeBytes > maxBytes) {
        const seg = this.#segments.shift()!;
        this.#reader.forget(seg);
        await this.#s.disk.unlink(seg.path);
        await syncDir(this.#s.disk, this.#s.dir, this.#s.durable);
        this.#s.log.warn(
          { segment: seg.path, lastPosition: seg.last, maxBytes },
          'journal: size cap released segment',
        );
      }
      return this.firstPosition;
    });
  }

  /**
   * Delete the oldest sealed segments whose records are all <= heldByAllTargets and that lie
   * outside the retention window: a segment is kept while the segments newer than it hold fewer
   * than keepBytes, or while it was sealed less than keepMillis ago. Deletion stops at the first
   * segment to keep, so the journal stays contiguous. Returns the number deleted.
   */
  retain(heldByAllTargets: number): Promise<number> {
    if (!Number.isSafeInteger(heldByAllTargets)) {
      return Promise.reject(new RangeError(`retain position must be an integer, got ${heldByAllTargets}`));
    }
    return this.#exclusive(async () => {
      this.#assertOpen();
      const now = nowMs(this.#s.clock);
      let newer = this.sizeBytes;
      const doomed: Segment[] = [];
      for (const seg of this.#segments.slice(0, -1)) {
        newer -= seg.size;
        const sealedAt = seg.sealedAt ?? now;
        if (seg.last > heldByAllTargets || newer < this.#s.keepBytes || sealedAt + this.#s.keepMillis > now)
          break;
        doomed.push(seg);
      }
      // Oldest first, one folder fsync each, so a crash never leaves a hole.
      for (const seg of doomed) {
        this.#segments.shift();
        this.#reader.forget(seg);
        await this.#s.disk.unlink(seg.path);
        await syncDir(this.#s.disk, this.#s.dir, this.#s.durable);
        this.#s.log.info({ segment: seg.path, lastPosition: seg.last }, 'journal: retention deleted segment');
      }
      return doomed.length;
    });
  }

  /** Flush pending appends, then close all files. Later calls return the same promise. */
  close(): Promise<void> {
    this.#closing ??= this.#exclusive(async () => {
      await this.#drain();
      this.#closed = true;
      this.#reader.closeAll();
      await this.#active.close();
    });
    return this.#closing;
  }

  get #activeSegment(): Segment {
    return this.#segments.at(-1)!;
  }

  /** Validate an append and advance nextPosition / lastEpoch; throws the refusal. */
  #admit(payload: Buffer): void {
    if (this.#failure) throw this.#failure;
    if (this.#closing) throw new Error(`journal ${this.#s.dir} is closed`);
    if (this.#rewrites > 0) throw new Error(`journal ${this.#s.dir} is being reset or truncated`);
    if (!Buffer.isBuffer(payload)) throw new TypeError('journal payload must be a Buffer');
    if (payload.length < MIN_PAYLOAD_BYTES || payload.length > MAX_PAYLOAD_BYTES) {
      throw new RangeError(
        `journal payload of ${payload.length} bytes is outside ${MIN_PAYLOAD_BYTES}..${MAX_PAYLOAD_BYTES}`,
      );
    }
    const position = peekPosition(payload);
    const epoch = peekEpoch(payload);
    if (position !== this.#next) {
      throw new TandemError(
        'JOURNAL_GAP',
        `record at position ${position} does not follow journal ${this.#s.dir}: expected position ${this.#next}`,
        'Send records in order from the journal tail; a target that fell behind must catch up or be reseeded',
      );
    }
    if (epoch < this.#lastEpoch) {
      throw new TandemError(
        'JOURNAL_GAP',
        `record at position ${position} has epoch ${epoch}, older than journal epoch ${this.#lastEpoch}`,
        'Drop records from a deposed writer; only the current epoch may extend the journal',
      );
    }
    this.#next++;
    this.#lastEpoch = epoch;
  }

  /** The single flusher: runs while appends are queued; never rejects. */
  async #flushLoop(): Promise<void> {
    // Yield once so appends issued in the same synchronous run share the first flush.
    await Promise.resolve();
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      await this.#flushBatch(batch);
    }
    this.#flusher = null;
  }

  async #flushBatch(batch: Pending[]): Promise<void> {
    let start = 0;
    try {
      while (start < batch.length) {
        let seg = this.#activeSegment;
        if (seg.count > 0 && seg.size >= this.#s.segmentBytes) seg = await this.#roll();
        // Take records until this segment reaches segmentBytes (at least one).
        let end = start;
        let size = seg.size;
        do {
          size += FRAME_HEADER_BYTES + batch[end]!.payload.length;
          end++;
        } while (end < batch.length && size < this.#s.segmentBytes);
        await this.#writeChunk(seg, batch.slice(start, end));
        start = end;
      }
    } catch (err) {
      const failure = this.#fail(err);
      for (const p of batch.slice(start)) p.reject(failure);
    }
  }

  /** Write and fdatasync `chunk` at the end of `seg`, then publish it as durable. */
  async #writeChunk(seg: Segment, chunk: Pending[]): Promise<void> {
    const headers = Buffer.allocUnsafe(FRAME_HEADER_BYTES * chunk.length);
    const buffers: Buffer[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const { payload, crc } = chunk[i]!;
      const h = headers.subarray(i * FRAME_HEADER_BYTES, (i + 1) * FRAME_HEADER_BYTES);
      h.writeUInt32BE(payload.length, 0);
      h.writeUInt32BE(crc ?? crc32c(payload), 4);
      buffers.push(h, payload);
    }
    // Durable when written: the active segment is open with O_DSYNC (see openActive).
    await writeFully(this.#active, buffers, seg.size);
    this.#flushCount++;
    for (const p of chunk) {
      seg.add(FRAME_HEADER_BYTES + p.payload.length);
      this.#cache.push(seg.last, p.payload);
    }
    this.#durable = seg.last;
    this.#unflushed.splice(0, chunk.length);
    for (const p of chunk) p.resolve();
    for (const listener of this.#listeners) {
      try {
        listener(this.#durable);
      } catch (err) {
        this.#s.log.warn({ err }, 'journal: onDurable listener threw');
      }
    }
  }

  /** Seal the active segment and start the next; its data is already fsynced. */
  async #roll(): Promise<Segment> {
    const sealed = this.#activeSegment;
    const createdAt = nowMs(this.#s.clock);
    const seg = new Segment(this.#s.dir, sealed.next, createdAt);
    await createSegmentFile(this.#s.disk, this.#s.dir, seg.base, createdAt, 'seg', this.#s.durable);
    const fh = await openActive(this.#s.disk, seg.path, this.#s.durable);
    await this.#active.close();
    this.#active = fh;
    sealed.sealedAt = createdAt;
    this.#segments.push(seg);
    this.#s.log.info({ segment: seg.path, sealed: sealed.path }, 'journal: rolled to a new segment');
    return seg;
  }

  /** Enter the failed state (once), rejecting everything queued; returns the failure. */
  #fail(cause: unknown): TandemError {
    if (!this.#failure) {
      const reason = cause instanceof Error ? cause.message : String(cause);
      this.#failure = new TandemError(
        'JOURNAL_FAILED',
        `journal ${this.#s.dir} failed to write (${reason}) and accepts no more records`,
        'Check the disk (space, errors in the kernel log). The node reopens the journal and restarts the group by itself, retrying with backoff; reopening keeps every record found whole on disk',
        { cause },
      );
      this.#s.log.warn({ err: cause, dir: this.#s.dir }, 'journal: write failed; journal stopped');
      for (const listener of this.#failureListeners) {
        try {
          listener(this.#failure);
        } catch (err) {
          this.#s.log.warn({ err }, 'journal: onFailure listener threw');
        }
      }
    }
    const queued = this.#queue;
    this.#queue = [];
    this.#unflushed = [];
    for (const p of queued) p.reject(this.#failure);
    return this.#failure;
  }

  /** Wait until no flush is in flight and nothing is queued. */
  async #drain(): Promise<void> {
    while (this.#flusher) await this.#flusher;
  }

  /** Run a reset / truncateAfter: refuse appends from now, flush earlier ones, then run `fn`. */
  #rewrite(fn: () => Promise<void>): Promise<void> {
    this.#rewrites++;
    return this.#exclusive(async () => {
      this.#assertOpen();
      await this.#drain();
      if (this.#failure) throw this.#failure;
      await fn();
    }).finally(() => {
      this.#rewrites--;
    });
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn);
    this.#lock = run.catch(() => undefined);
    return run;
  }

  #assertOpen(): void {
    if (this.#closed) throw new Error(`journal ${this.#s.dir} is closed`);
  }

  /** Index of the segment holding `position`, which must be in [firstPosition, lastPosition]. */
  #indexOf(position: number): number {
    let lo = 0;
    let hi = this.#segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#segments[mid]!.base <= position) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

/** mkdir -p, fsyncing the parent of every folder created so the journal's own entry survives a crash. */
async function makeDir(disk: Disk, dir: string, durable: boolean): Promise<void> {
  const made = await disk.mkdirp(dir);
  if (made === undefined) return;
  for (let p = resolvePath(dir); ; p = dirname(p)) {
    await syncDir(disk, dirname(p), durable);
    if (p === resolvePath(made)) return;
  }
}

function nowMs(clock: WallClock): number {
  return Math.max(0, Math.floor(clock.now()));
}
