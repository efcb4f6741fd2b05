/**
 * Recovery at open: bring the folder to a consistent journal or refuse with JOURNAL_CORRUPT.
 *
 *  - `.tmp` files are creations that never committed: deleted.
 *  - A `.reset` file is a committed reset: finished (reset.ts).
 *  - Every `.seg` is scanned in base order. Its header must be valid and match its name; every
 *    frame must have a length within bounds, a matching crc32c, the next position and an epoch
 *    no older than the one before it. Each segment's base must follow the previous segment's
 *    last position (a missing segment is damage; missing segments before the first are not:
 *    retention deletes from the front).
 *  - A bad frame in the last segment with no whole frame after it is a torn write: the file is
 *    cut back to the end of the last whole frame. "Whole frame after it" means some later offset
 *    where a frame with a valid crc32c parses and carries a plausible next position; finding one
 *    proves the bad bytes sit in the middle of data that was written after them, i.e. damage.
 *  - Any other bad frame, bad header or gap is damage: JOURNAL_CORRUPT naming file and offset.
 *  - What recovery found is then made durable: the last segment is fdatasynced and the folder
 *    fsynced. A process killed mid-write leaves data in the page cache that no fsync covered;
 *    read back whole, it would be trusted and built on (new segments after it, records
 *    acknowledged), and a power loss later could still tear it, in a segment no longer the last
 *    (found by the deterministic simulation; PostgreSQL syncs its data folder after a crash
 *    for the same reason).
 *
 * Reads go through a window of at most max(1 MiB, one frame) bytes, and a frame is only loaded
 * after its length is checked against MAX_PAYLOAD_BYTES and the file size, so a damaged length
 * never causes a large allocation.
 */
import { join } from 'node:path';
import { crc32c } from '../core/crc32c.js';
import { peekEpoch } from '../core/record.js';
import type { Disk, DiskFile } from './disk.js';
import { createSegmentFile, syncDir } from './files.js';
import {
  decodeSegmentHeader,
  FRAME_HEADER_BYTES,
  fileName,
  MAX_PAYLOAD_BYTES,
  MIN_PAYLOAD_BYTES,
  parseFileName,
  readPayloadPosition,
  SEGMENT_HEADER_BYTES,
} from './format.js';
import { corruptError } from './reader.js';
import { finishReset } from './reset.js';
import { Segment } from './segment.js';

const CHUNK_BYTES = 1024 * 1024;

/** The pino-compatible subset the journal logs through. */
export interface JournalLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface Recovered {
  /** In base order, contiguous, at least one; the last is the active segment. */
  segments: Segment[];
  lastEpoch: number;
}

export async function recover(
  disk: Disk,
  dir: string,
  durable: boolean,
  now: number,
  log: JournalLog,
): Promise<Recovered> {
  const names = await disk.readdir(dir);
  const resets: number[] = [];
  for (const name of names) {
    if (name.endsWith('.tmp')) {
      await disk.remove(join(dir, name));
      log.info({ dir, file: name }, 'journal: removed uncommitted file');
    } else if (parseFileName(name)?.kind === 'reset') {
      resets.push(parseFileName(name)!.base);
    }
  }
  if (resets.length > 1) {
    throw corruptError({ path: join(dir, fileName(resets[0]!, 'reset')) }, 0, 'more than one pending reset');
  }
  if (resets.length === 1) {
    const base = resets[0]!;
    await readHeader(disk, dir, fileName(base, 'reset'), base);
    const removed = await finishReset(disk, dir, base, durable);
    log.info({ dir, nextPosition: base, removed }, 'journal: finished interrupted reset');
  }

  const bases = (await disk.readdir(dir))
    .map((name) => parseFileName(name))
    .filter((p) => p?.kind === 'seg')
    .map((p) => p!.base)
    .sort((a, b) => a - b);
  if (bases.length === 0) {
    await createSegmentFile(disk, dir, 1, now, 'seg', durable);
    log.info({ dir }, 'journal: created new journal');
    return { segments: [new Segment(dir, 1, now)], lastEpoch: 0 };
  }

  const segments: Segment[] = [];
  let lastEpoch = 0;
  for (let i = 0; i < bases.length; i++) {
    const base = bases[i]!;
    const prev = segments[i - 1];
    if (prev && prev.next !== base) {
      throw corruptError(
        { path: join(dir, fileName(base, 'seg')) },
        0,
        `segment starts at position ${base} but ${prev.name} ends at position ${prev.last} (byte offset ${prev.size}); a segment is missing`,
      );
    }
    const scanned = await scanSegment(disk, dir, base, i === bases.length - 1, lastEpoch, durable, log);
    if (prev) prev.sealedAt = scanned.segment.createdAt;
    segments.push(scanned.segment);
    lastEpoch = scanned.lastEpoch;
  }
  await syncDir(disk, dir, durable);
  return { segments, lastEpoch };
}

async function readHeader(disk: Disk, dir: string, name: string, base: number): Promise<number> {
  const fh = await disk.open(join(dir, name), 'r');
  try {
    return await checkHeader(fh, join(dir, name), base);
  } finally {
    await fh.close();
  }
}

/** Validates the header against the file's name; returns its creation time. */
async function checkHeader(fh: DiskFile, path: string, base: number): Promise<number> {
  const buf = Buffer.alloc(SEGMENT_HEADER_BYTES);
  const { bytesRead } = await fh.read(buf, 0, SEGMENT_HEADER_BYTES, 0);
  const header = decodeSegmentHeader(buf.subarray(0, bytesRead));
  if (typeof header === 'string') throw corruptError({ path }, 0, header);
  if (header.base !== base)
    throw corruptError({ path }, 0, `header says base ${header.base}, name says ${base}`);
  return header.createdAt;
}

/** A read window over one file; load() never reads past the end of the file. */
class FileWindow {
  #fh: DiskFile;
  #size: number;
  #chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  buf: Buffer = Buffer.alloc(0);
  start = 0;

  constructor(fh: DiskFile, size: number) {
    this.#fh = fh;
    this.#size = size;
  }

  has(offset: number, n: number): boolean {
    return offset >= this.start && offset + n <= this.start + this.buf.length;
  }

  /** Make [offset, offset + n) available; callers have checked offset + n <= size. */
  async load(offset: number, n: number): Promise<void> {
    const want = Math.min(Math.max(n, CHUNK_BYTES), this.#size - offset);
    const target = want <= this.#chunk.length ? this.#chunk : Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.#fh.read(target, got, want - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got < n) throw new Error(`short read: ${got} of ${n} bytes at offset ${offset}`);
    this.buf = target.subarray(0, got);
    this.start = offset;
  }
}

type FrameCheck = { len: number; epoch: number } | string;

/** Whether a whole frame of `position` (epoch >= minEpoch) starts at `offset`; a string says why not. */
async function checkFrame(
  w: FileWindow,
  size: number,
  offset: number,
  position: number,
  minEpoch: number,
): Promise<FrameCheck> {
  if (offset + FRAME_HEADER_BYTES > size) return `incomplete frame header (${size - offset} bytes)`;
  if (!w.has(offset, FRAME_HEADER_BYTES)) await w.load(offset, FRAME_HEADER_BYTES);
  const at = offset - w.start;
  const len = w.buf.readUInt32BE(at);
  const crc = w.buf.readUInt32BE(at + 4);
  if (len > MAX_PAYLOAD_BYTES) return `frame length ${len} exceeds the ${MAX_PAYLOAD_BYTES}-byte limit`;
  if (len < MIN_PAYLOAD_BYTES) return `frame length ${len} is shorter than a record header`;
  if (offset + FRAME_HEADER_BYTES + len > size) {
    return `incomplete frame (${len}-byte payload, ${size - offset - FRAME_HEADER_BYTES} bytes present)`;
  }
  if (!w.has(offset, FRAME_HEADER_BYTES + len)) await w.load(offset, FRAME_HEADER_BYTES + len);
  const payload = w.buf.subarray(
    offset - w.start + FRAME_HEADER_BYTES,
    offset - w.start + FRAME_HEADER_BYTES + len,
  );
  if (crc32c(payload) !== crc) return 'frame checksum mismatch';
  const got = readPayloadPosition(payload, 0);
  if (got !== position) return `frame holds position ${got}, expected ${position}`;
  const epoch = peekEpoch(payload);
  if (epoch < minEpoch) return `frame epoch ${epoch} is older than the previous epoch ${minEpoch}`;
  return { len, epoch };
}

/**
 * The first offset after `from` where a frame with a valid crc32c parses and carries a position
 * in [position, position + frames that could still fit], or null. Cheap field checks run before
 * the crc so most offsets cost a few byte reads.
 */
async function findWholeFrame(
  w: FileWindow,
  size: number,
  from: number,
  position: number,
): Promise<{ offset: number; position: number } | null> {
  const minFrame = FRAME_HEADER_BYTES + MIN_PAYLOAD_BYTES;
  const maxPosition = position + Math.floor((size - from) / minFrame);
  for (let o = from + 1; o + minFrame <= size; o++) {
    if (!w.has(o, minFrame)) await w.load(o, minFrame);
    const at = o - w.start;
    const len = w.buf.readUInt32BE(at);
    if (len < MIN_PAYLOAD_BYTES || len > MAX_PAYLOAD_BYTES || o + FRAME_HEADER_BYTES + len > size) continue;
    const pos = readPayloadPosition(w.buf, at + FRAME_HEADER_BYTES);
    if (pos < position || pos > maxPosition) continue;
    if (!w.has(o, FRAME_HEADER_BYTES + len)) await w.load(o, FRAME_HEADER_BYTES + len);
    const p = o - w.start + FRAME_HEADER_BYTES;
    if (crc32c(w.buf.subarray(p, p + len)) === w.buf.readUInt32BE(p - 4)) return { offset: o, position: pos };
  }
  return null;
}

async function scanSegment(
  disk: Disk,
  dir: string,
  base: number,
  isLast: boolean,
  prevEpoch: number,
  durable: boolean,
  log: JournalLog,
): Promise<{ segment: Segment; lastEpoch: number }> {
  const path = join(dir, fileName(base, 'seg'));
  const fh = await disk.open(path, isLast ? 'r+' : 'r');
  try {
    const createdAt = await checkHeader(fh, path, base);
    const segment = new Segment(dir, base, createdAt);
    const size = (await fh.stat()).size;
    const w = new FileWindow(fh, size);
    let epoch = prevEpoch;
    let offset = SEGMENT_HEADER_BYTES;
    while (offset < size) {
      const frame = await checkFrame(w, size, offset, segment.next, epoch);
      if (typeof frame !== 'string') {
        segment.add(FRAME_HEADER_BYTES + frame.len);
        epoch = frame.epoch;
        offset += FRAME_HEADER_BYTES + frame.len;
        continue;
      }
      if (!isLast) throw corruptError(segment, offset, `${frame} in a segment that is not the last`);
      const later = await findWholeFrame(w, size, offset, segment.next);
      if (later) {
        throw corruptError(
          segment,
          offset,
          `${frame}, yet a whole frame of position ${later.position} follows at byte offset ${later.offset}`,
        );
      }
      await fh.truncate(offset);
      log.warn(
        { segment: path, offset, bytesCut: size - offset, reason: frame },
        'journal: cut torn write at the end of the last segment',
      );
      break;
    }
    if (isLast && durable) await fh.datasync();
    return { segment, lastEpoch: epoch };
  } finally {
    await fh.close();
  }
}
