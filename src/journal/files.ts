/**
 * File-system steps the journal's crash safety rests on. `durable: false` (tests only) skips
 * every fsync; the order of operations stays the same.
 */
import { join } from 'node:path';
import type { Disk, DiskFile } from './disk.js';
import { encodeSegmentHeader, type FileKind, fileName } from './format.js';

/** fsync a folder so entries created, renamed or removed in it survive a crash. */
export async function syncDir(disk: Disk, dir: string, durable: boolean): Promise<void> {
  if (!durable) return;
  const fh = await disk.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Create `<base>.<kind>` holding only a segment header. The header is written to a .tmp name,
 * fsynced, then renamed into place and the folder fsynced: a file with the final name therefore
 * always starts with a whole header, and a crash leaves at most a .tmp file that open deletes.
 */
export async function createSegmentFile(
  disk: Disk,
  dir: string,
  base: number,
  createdAt: number,
  kind: FileKind,
  durable: boolean,
): Promise<string> {
  const name = fileName(base, kind);
  const tmp = join(dir, `${name}.tmp`);
  const fh = await disk.open(tmp, 'w');
  try {
    await writeFully(fh, [encodeSegmentHeader(base, createdAt)], 0);
    if (durable) await fh.datasync();
  } finally {
    await fh.close();
  }
  await disk.rename(tmp, join(dir, name));
  await syncDir(disk, dir, durable);
  return join(dir, name);
}

/** writev every buffer at `position`, continuing after short writes. */
export async function writeFully(fh: DiskFile, buffers: Buffer[], position: number): Promise<void> {
  let bufs = buffers;
  let pos = position;
  while (bufs.length > 0) {
    const { bytesWritten } = await fh.writev(bufs, pos);
    pos += bytesWritten;
    let skip = bytesWritten;
    let i = 0;
    while (i < bufs.length && skip >= bufs[i]!.length) skip -= bufs[i++]!.length;
    bufs = bufs.slice(i);
    if (bufs.length > 0 && skip > 0) bufs[0] = bufs[0]!.subarray(skip);
    if (bytesWritten === 0 && bufs.length > 0) throw new Error(`writev wrote 0 bytes at offset ${pos}`);
  }
}
