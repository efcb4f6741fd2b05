/**
 * Crash-safe reset: replace every segment with one empty segment whose base is the next
 * position. Highest-base-wins rules cannot tell a reset from a roll (a reset to lastPosition + 1
 * looks exactly like one) and break when the new base equals an old segment's name, so the
 * new segment is first committed under its own name:
 *
 *   1. create `<base>.reset`: a segment header, written to .tmp, fsynced, renamed, folder fsynced.
 *      This is the commit point: from here on recovery completes the reset.
 *   2. unlink every `.seg`, fsync the folder.
 *   3. rename `<base>.reset` to `<base>.seg`, fsync the folder.
 *
 * A crash before 1 completes leaves at most a .tmp file (deleted at open) and the old journal.
 * A crash after 1 leaves a `.reset` file, and open redoes 2 and 3, which are idempotent.
 */
import { join } from 'node:path';
import type { Disk } from './disk.js';
import { createSegmentFile, syncDir } from './files.js';
import { fileName, parseFileName } from './format.js';

/** Step 1. */
export async function commitReset(
  disk: Disk,
  dir: string,
  base: number,
  createdAt: number,
  durable: boolean,
): Promise<void> {
  await createSegmentFile(disk, dir, base, createdAt, 'reset', durable);
}

/** Steps 2 and 3; returns how many old segments were removed. */
export async function finishReset(disk: Disk, dir: string, base: number, durable: boolean): Promise<number> {
  let removed = 0;
  for (const name of await disk.readdir(dir)) {
    if (parseFileName(name)?.kind !== 'seg') continue;
    await disk.unlink(join(dir, name));
    removed++;
  }
  await syncDir(disk, dir, durable);
  await disk.rename(join(dir, fileName(base, 'reset')), join(dir, fileName(base, 'seg')));
  await syncDir(disk, dir, durable);
  return removed;
}
