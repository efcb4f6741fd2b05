/**
 * On-disk layout of a journal folder.
 *
 *   <base:20 digits>.seg         a segment; base is the position of its first record
 *   <base:20 digits>.reset       a committed, unfinished reset (see journal.ts)
 *   <name>.tmp                   a file being created; never committed, deleted at open
 *
 * Segment header, 32 bytes, big-endian:
 *   0  'TDJ1'   4  u16 format version   6  u16 reserved (0)
 *   8  u64 base position   16  u64 creation time (ms)   24  u32 crc32c(bytes 0..23)   28  4 zero bytes
 *
 * Frame: u32 payload length, u32 crc32c(payload), payload. A payload is an encoded record
 * (core/record.ts) whose position and epoch are read with peekPosition / peekEpoch.
 */
import { crc32c } from '../core/crc32c.js';

export const SEGMENT_HEADER_BYTES = 32;
export const FRAME_HEADER_BYTES = 8;
export const FORMAT_VERSION = 1;
/** Largest payload accepted on write and believed on read; a larger length is damage. */
export const MAX_PAYLOAD_BYTES = 64 * 1024 * 1024;
/** Smallest payload: the fixed record header that peekPosition / peekEpoch read (record.ts). */
export const MIN_PAYLOAD_BYTES = 21;
/** Offset inside a payload of its u64 position (record.ts). */
const PAYLOAD_POSITION_OFFSET = 1;

const MAGIC = Buffer.from('TDJ1', 'latin1');
const NAME_DIGITS = 20;
const NAME_RE = /^(\d{20})\.(seg|reset)$/;

export type FileKind = 'seg' | 'reset';

export function fileName(base: number, kind: FileKind): string {
  return `${String(base).padStart(NAME_DIGITS, '0')}.${kind}`;
}

/** The base position and kind a file name encodes, or null for a name the journal does not own. */
export function parseFileName(name: string): { base: number; kind: FileKind } | null {
  const m = NAME_RE.exec(name);
  if (!m) return null;
  const base = Number(m[1]);
  if (!Number.isSafeInteger(base) || base < 1) return null;
  return { base, kind: m[2] as FileKind };
}

export function encodeSegmentHeader(base: number, createdAt: number): Buffer {
  const h = Buffer.alloc(SEGMENT_HEADER_BYTES);
  MAGIC.copy(h, 0);
  h.writeUInt16BE(FORMAT_VERSION, 4);
  h.writeBigUInt64BE(BigInt(base), 8);
  h.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(createdAt))), 16);
  h.writeUInt32BE(crc32c(h.subarray(0, 24)), 24);
  return h;
}

/** The decoded header, or a string saying why these bytes are not a valid header. */
export function decodeSegmentHeader(h: Buffer): { base: number; createdAt: number } | string {
  if (h.length < SEGMENT_HEADER_BYTES) return `header is ${h.length} bytes, expected ${SEGMENT_HEADER_BYTES}`;
  if (!h.subarray(0, 4).equals(MAGIC)) return 'bad magic (not a Tandem journal segment)';
  const crc = h.readUInt32BE(24);
  if (crc32c(h.subarray(0, 24)) !== crc) return 'header checksum mismatch';
  const version = h.readUInt16BE(4);
  if (version !== FORMAT_VERSION) return `unsupported format version ${version}`;
  const base = Number(h.readBigUInt64BE(8));
  if (!Number.isSafeInteger(base) || base < 1) return `header base position ${base} is out of range`;
  return { base, createdAt: Number(h.readBigUInt64BE(16)) };
}

/** Position stored in a payload at `at`, read as two u32 so no BigInt is allocated. */
export function readPayloadPosition(buf: Buffer, at: number): number {
  const o = at + PAYLOAD_POSITION_OFFSET;
  return buf.readUInt32BE(o) * 0x1_0000_0000 + buf.readUInt32BE(o + 4);
}
