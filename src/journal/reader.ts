/**
 * Synchronous reads of durable frames from segment files. Reads start at the sparse index entry
 * at or before the wanted position and walk frame headers forward; payloads handed out are
 * copies, verified against their checksum and position. A frame that fails here was whole when
 * it was written or recovered, so it means the file changed underneath: JOURNAL_CORRUPT.
 *
 * Read descriptors are kept in a small LRU so a journal with many segments holds few fds.
 */
import { crc32c } from '../core/crc32c.js';
import { TandemError } from '../core/errors.js';
import type { Disk } from './disk.js';
import { FRAME_HEADER_BYTES, MAX_PAYLOAD_BYTES, MIN_PAYLOAD_BYTES, readPayloadPosition } from './format.js';
import type { Segment } from './segment.js';

const MAX_OPEN_FDS = 8;
const BLOCK_BYTES = 256 * 1024;

export function corruptError(seg: { path: string }, offset: number, what: string): TandemError {
  return new TandemError(
    'JOURNAL_CORRUPT',
    `journal segment ${seg.path} is damaged at byte offset ${offset}: ${what}`,
    'Stop this node, move the journal folder aside and reseed the node from its peer; do not edit segment files',
  );
}

/**
 * A window over [start, start + len) of one file, refilled on demand; never reads past `end`.
 * One Window is reused by every read (payloads are copied out), so steady-state reads allocate
 * only what they return.
 */
class Window {
  readonly #disk: Disk;
  #fd = -1;
  #end = 0;
  #buf = Buffer.allocUnsafe(BLOCK_BYTES);
  #start = 0;
  #len = 0;

  constructor(disk: Disk) {
    this.#disk = disk;
  }

  /** Point the window at another file (or the same one, grown); drops a buffer grown for a big frame. */
  reset(fd: number, end: number): this {
    this.#fd = fd;
    this.#end = end;
    this.#len = 0;
    if (this.#buf.length > BLOCK_BYTES) this.#buf = Buffer.allocUnsafe(BLOCK_BYTES);
    return this;
  }

  /** The bytes [offset, offset + n); callers check offset + n <= end first. Valid until the next call. */
  view(offset: number, n: number): Buffer {
    if (offset < this.#start || offset + n > this.#start + this.#len) {
      const want = Math.min(Math.max(n, BLOCK_BYTES), this.#end - offset);
      if (want > this.#buf.length) this.#buf = Buffer.allocUnsafe(want);
      let got = 0;
      while (got < want) {
        const r = this.#disk.readSync(this.#fd, this.#buf, got, want - got, offset + got);
        if (r === 0) break;
        got += r;
      }
      this.#start = offset;
      this.#len = got;
      if (got < n) throw new Error(`short read: ${got} of ${n} bytes at offset ${offset}`);
    }
    return this.#buf.subarray(offset - this.#start, offset - this.#start + n);
  }
}

export class SegmentReader {
  readonly #disk: Disk;
  /** Open read descriptors; Map order is least recently used first. */
  #fds = new Map<Segment, number>();
  #window: Window;

  constructor(disk: Disk) {
    this.#disk = disk;
    this.#window = new Window(disk);
  }

  /**
   * Payloads of positions from..to (all inside `seg` and durable), stopping early when `take`
   * (asked with each payload's length before it is copied) returns false.
   */
  read(seg: Segment, from: number, to: number, take: (bytes: number) => boolean): Buffer[] {
    const out: Buffer[] = [];
    const w = this.#window.reset(this.#fd(seg), seg.size);
    let { position, offset } = seg.seek(from);
    while (position <= to) {
      const len = this.#frameLength(seg, w, offset);
      if (position >= from) {
        if (!take(len)) break;
        const frame = w.view(offset, FRAME_HEADER_BYTES + len);
        const payload = frame.subarray(FRAME_HEADER_BYTES);
        if (crc32c(payload) !== frame.readUInt32BE(4))
          throw corruptError(seg, offset, 'frame checksum mismatch');
        const got = readPayloadPosition(payload, 0);
        if (got !== position)
          throw corruptError(seg, offset, `frame holds position ${got}, expected ${position}`);
        out.push(Buffer.from(payload));
      }
      offset += FRAME_HEADER_BYTES + len;
      position++;
    }
    return out;
  }

  /** File offset of the frame of `position` (seg.size when position === seg.next). */
  offsetOf(seg: Segment, position: number): number {
    const w = this.#window.reset(this.#fd(seg), seg.size);
    let at = seg.seek(position);
    while (at.position < position) {
      const len = this.#frameLength(seg, w, at.offset);
      at = { position: at.position + 1, offset: at.offset + FRAME_HEADER_BYTES + len };
    }
    return at.offset;
  }

  /** Close the descriptor of a segment that is deleted or replaced. */
  forget(seg: Segment): void {
    const fd = this.#fds.get(seg);
    if (fd === undefined) return;
    this.#fds.delete(seg);
    this.#disk.closeSync(fd);
  }

  closeAll(): void {
    for (const fd of this.#fds.values()) this.#disk.closeSync(fd);
    this.#fds.clear();
  }

  #frameLength(seg: Segment, w: Window, offset: number): number {
    if (offset + FRAME_HEADER_BYTES > seg.size)
      throw corruptError(seg, offset, 'frame header past durable end');
    const len = w.view(offset, FRAME_HEADER_BYTES).readUInt32BE(0);
    if (len < MIN_PAYLOAD_BYTES || len > MAX_PAYLOAD_BYTES || offset + FRAME_HEADER_BYTES + len > seg.size) {
      throw corruptError(seg, offset, `frame length ${len} is out of bounds`);
    }
    return len;
  }

  #fd(seg: Segment): number {
    let fd = this.#fds.get(seg);
    if (fd !== undefined) {
      this.#fds.delete(seg);
    } else {
      if (this.#fds.size >= MAX_OPEN_FDS) {
        const [oldest, oldFd] = this.#fds.entries().next().value!;
        this.#fds.delete(oldest);
        this.#disk.closeSync(oldFd);
      }
      fd = this.#disk.openSync(seg.path);
    }
    this.#fds.set(seg, fd);
    return fd;
  }
}
