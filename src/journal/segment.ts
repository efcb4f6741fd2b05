/**
 * In-memory view of one segment file: which positions it holds, how many bytes, and a sparse
 * index (the file offset of every INDEX_STRIDE-th record) so a read seeks close to any position
 * while memory stays proportional to records / INDEX_STRIDE.
 *
 * Invariant: the view covers only durable bytes. count, size and the index advance after the
 * bytes they describe are fsynced (or, at open, found whole on disk).
 */
import { join } from 'node:path';
import { fileName, SEGMENT_HEADER_BYTES } from './format.js';

export const INDEX_STRIDE = 64;

export class Segment {
  readonly base: number;
  readonly name: string;
  readonly path: string;
  /** Creation time from the header (injected clock, ms). */
  readonly createdAt: number;
  /** When the segment stopped taking records: the creation time of the next segment; null while active. */
  sealedAt: number | null = null;
  #count = 0;
  #size = SEGMENT_HEADER_BYTES;
  /** #offsets[i] is the file offset of the frame of position base + i * INDEX_STRIDE. */
  #offsets: number[] = [];

  constructor(dir: string, base: number, createdAt: number) {
    this.base = base;
    this.name = fileName(base, 'seg');
    this.path = join(dir, this.name);
    this.createdAt = createdAt;
  }

  get count(): number {
    return this.#count;
  }

  /** Bytes of header and durable frames. */
  get size(): number {
    return this.#size;
  }

  /** Position the next record in this segment would carry. */
  get next(): number {
    return this.base + this.#count;
  }

  /** Last position held (base - 1 when empty). */
  get last(): number {
    return this.base + this.#count - 1;
  }

  /** Record a whole frame of the next position, starting at the current end. */
  add(frameBytes: number): void {
    if (this.#count % INDEX_STRIDE === 0) this.#offsets.push(this.#size);
    this.#count++;
    this.#size += frameBytes;
  }

  /** The nearest indexed record at or before `position` (which must lie in [base, next]). */
  seek(position: number): { position: number; offset: number } {
    if (position === this.next) return { position, offset: this.#size };
    const i = Math.floor((position - this.base) / INDEX_STRIDE);
    return { position: this.base + i * INDEX_STRIDE, offset: this.#offsets[i]! };
  }

  /** Keep only the first `count` records, which end at byte `size`. */
  truncate(count: number, size: number): void {
    this.#count = count;
    this.#size = size;
    this.#offsets.length = Math.ceil(count / INDEX_STRIDE);
  }
}
