/**
 * Journal frames inside a batch: `u32 length | u32 crc32c(record) | record`, the journal's own
 * on-disk framing, so a record is checked end to end from the source's disk to the target's.
 */
import { DecodeError } from '../core/bytes.js';
import { crc32c } from '../core/crc32c.js';

export function frameRecords(payloads: Buffer[]): Buffer {
  let size = 0;
  for (const p of payloads) size += 8 + p.length;
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (const p of payloads) {
    out.writeUInt32BE(p.length, o);
    out.writeUInt32BE(crc32c(p), o + 4);
    p.copy(out, o + 8);
    o += 8 + p.length;
  }
  return out;
}

/**
 * The records of a batch, each checked against its crc32c; `crcs`, when given, receives those
 * checksums (the journal writes them again without computing them twice).
 */
export function unframeRecords(buf: Buffer, expected: number, crcs?: number[]): Buffer[] {
  const out: Buffer[] = [];
  let o = 0;
  while (o < buf.length) {
    if (o + 8 > buf.length) throw new DecodeError(`batch truncated at offset ${o}`);
    const len = buf.readUInt32BE(o);
    const crc = buf.readUInt32BE(o + 4);
    if (o + 8 + len > buf.length)
      throw new DecodeError(`record of ${len} bytes overruns the batch at offset ${o}`);
    const p = buf.subarray(o + 8, o + 8 + len);
    if (crc32c(p) !== crc) throw new DecodeError(`record checksum mismatch at batch offset ${o}`);
    out.push(p);
    crcs?.push(crc);
    o += 8 + len;
  }
  if (out.length !== expected)
    throw new DecodeError(`batch holds ${out.length} records, header says ${expected}`);
  return out;
}
