import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { crc32c } from '../../src/core/crc32c.js';
import { TandemError } from '../../src/core/errors.js';
import { encodeRecord } from '../../src/core/record.js';
import { nodeDisk } from '../../src/journal/disk.js';
import { Journal, type JournalOptions } from '../../src/journal/index.js';
import { commitReset } from '../../src/journal/reset.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tandem-journal-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function rec(position: number, epoch = 1, fill = 16): Buffer {
  return encodeRecord({
    position,
    epoch,
    origin: 'n1',
    hlc: BigInt(position),
    source: String(position),
    txCount: 1,
    changes: [
      {
        op: 'insert',
        table: 't',
        columns: ['id', 'v'],
        before: null,
        after: [BigInt(position), 'x'.repeat(fill)],
      },
    ],
  });
}

function captureLog() {
  const entries: { level: 'info' | 'warn'; obj: Record<string, unknown>; msg: string }[] = [];
  return {
    entries,
    log: {
      info: (obj: object, msg: string) =>
        entries.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
      warn: (obj: object, msg: string) =>
        entries.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
    },
  };
}

function open(dir: string, extra: Partial<JournalOptions> = {}): Promise<Journal> {
  return Journal.open({ dir, fsync: false, ...extra });
}

async function appendRange(j: Journal, from: number, to: number, epoch = 1, fill = 16): Promise<void> {
  const all: Promise<void>[] = [];
  for (let p = from; p <= to; p++) all.push(j.append(rec(p, epoch, fill)));
  await Promise.all(all);
}

function readAll(j: Journal, from = j.firstPosition): Buffer[] {
  const out: Buffer[] = [];
  for (;;) {
    const got = j.read(from + out.length, { maxBytes: 64 * 1024, maxRecords: 100 });
    if (got.length === 0) return out;
    out.push(...got);
  }
}

function segFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => n.endsWith('.seg'))
    .sort();
}

async function expectCode(p: Promise<unknown> | (() => unknown), code: string): Promise<TandemError> {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(TandemError);
  expect((err as TandemError).code).toBe(code);
  return err as TandemError;
}

describe('Journal basics', () => {
  it('starts empty at position 1 with one segment named by its base', async () => {
    const dir = tempDir();
    const j = await open(dir);
    expect([j.firstPosition, j.nextPosition, j.lastPosition, j.durablePosition, j.lastEpoch]).toEqual([
      1, 1, 0, 0, 0,
    ]);
    expect(segFiles(dir)).toEqual(['00000000000000000001.seg']);
    expect(j.sizeBytes).toBe(32);
    expect(j.read(1, { maxBytes: 1000, maxRecords: 10 })).toEqual([]);
    await j.close();
    const header = readFileSync(join(dir, '00000000000000000001.seg'));
    expect(header.subarray(0, 4).toString('latin1')).toBe('TDJ1');
    expect(header.length).toBe(32);
  });

  it('creates missing parent folders, with fsync on', async () => {
    const dir = join(tempDir(), 'a', 'b', 'group');
    const j = await Journal.open({ dir });
    await j.append(rec(1));
    await j.close();
    expect(segFiles(dir)).toEqual(['00000000000000000001.seg']);
  });

  it('round-trips across segment rolls and a reopen, from disk and from the cache', async () => {
    const dir = tempDir();
    const expected = Array.from({ length: 300 }, (_, i) => rec(i + 1, 1 + Math.floor(i / 100), i % 50));
    const j = await open(dir, { segmentBytes: 2048, tailCacheBytes: 4096 });
    await Promise.all(expected.map((p) => j.append(p)));
    expect(j.segmentCount).toBeGreaterThan(5);
    expect(j.durablePosition).toBe(300);
    expect(j.lastEpoch).toBe(3);
    expect(readAll(j)).toEqual(expected);
    for (const from of [1, 2, 63, 64, 65, 128, 129, 200, 299, 300]) {
      expect(j.read(from, { maxBytes: 1e9, maxRecords: 3 })).toEqual(expected.slice(from - 1, from + 2));
    }
    const segments = j.segmentCount;
    const size = j.sizeBytes;
    await j.close();
    for (const name of segFiles(dir)) expect(statSync(join(dir, name)).size).toBeLessThan(2048 + 200);

    const again = await open(dir, { segmentBytes: 2048, tailCacheBytes: 0 });
    expect([again.firstPosition, again.nextPosition, again.durablePosition, again.lastEpoch]).toEqual([
      1, 301, 300, 3,
    ]);
    expect([again.segmentCount, again.sizeBytes]).toEqual([segments, size]);
    expect(readAll(again)).toEqual(expected);
    await again.append(rec(301, 3));
    expect(readAll(again, 299)).toEqual([...expected.slice(298), rec(301, 3)]);
    await again.close();
  });

  it('writes a checksum the caller passes (a record off the link) as it would have computed it; a wrong one reads back as damage', async () => {
    const payloads = Array.from({ length: 50 }, (_, i) => rec(i + 1, 1, i % 7));
    const [a, b] = [tempDir(), tempDir()];
    const computed = await open(a, { tailCacheBytes: 0 });
    const passed = await open(b, { tailCacheBytes: 0 });
    await Promise.all(payloads.map((p) => computed.append(p)));
    await Promise.all(payloads.map((p, i) => passed.append(p, i % 2 ? crc32c(p) : undefined)));
    await Promise.all([computed.close(), passed.close()]);
    expect(segFiles(b)).toEqual(segFiles(a));
    // Frames alike (the 32-byte headers hold each file's creation time).
    for (const name of segFiles(a))
      expect(readFileSync(join(b, name)).subarray(32)).toEqual(readFileSync(join(a, name)).subarray(32));

    const c = tempDir();
    const wrong = await open(c, { tailCacheBytes: 0 });
    await wrong.append(rec(1), crc32c(rec(1)) ^ 1);
    await expectCode(() => wrong.read(1, { maxBytes: 1e9, maxRecords: 1 }), 'JOURNAL_CORRUPT');
    await wrong.close().catch(() => {});
  });

  it('honours maxRecords and maxBytes but always returns one available record', async () => {
    const j = await open(tempDir(), { tailCacheBytes: 0 });
    await appendRange(j, 1, 10, 1, 100);
    const one = rec(1, 1, 100).length;
    expect(j.read(1, { maxBytes: 1e9, maxRecords: 4 })).toHaveLength(4);
    expect(j.read(1, { maxBytes: one * 3, maxRecords: 100 })).toHaveLength(3);
    expect(j.read(1, { maxBytes: one * 3 - 1, maxRecords: 100 })).toHaveLength(2);
    expect(j.read(5, { maxBytes: 1, maxRecords: 100 })).toEqual([rec(5, 1, 100)]);
    expect(j.read(11, { maxBytes: 1e9, maxRecords: 100 })).toEqual([]);
    expect(j.read(1000, { maxBytes: 1e9, maxRecords: 100 })).toEqual([]);
    await j.close();
  });

  it('stores and reads a payload larger than a segment and than the read window', async () => {
    const dir = tempDir();
    const j = await open(dir, { segmentBytes: 4096, tailCacheBytes: 0 });
    const big = rec(2, 1, 3 * 1024 * 1024);
    await j.append(rec(1));
    await j.append(big);
    await j.append(rec(3));
    await j.close();
    const again = await open(dir, { tailCacheBytes: 0 });
    expect(again.read(1, { maxBytes: 10, maxRecords: 10 })).toEqual([rec(1)]);
    const [got, ...rest] = again.read(2, { maxBytes: 10, maxRecords: 10 });
    // Buffer.equals: vitest's deep equality is far too slow on megabytes.
    expect(got?.equals(big)).toBe(true);
    expect(rest).toEqual([]);
    const all = readAll(again);
    expect(all.length).toBe(3);
    expect(Buffer.concat(all).equals(Buffer.concat([rec(1), big, rec(3)]))).toBe(true);
    await again.close();
  });

  it('refuses an append that skips or repeats a position, or carries an older epoch', async () => {
    const j = await open(tempDir());
    await j.append(rec(1, 5));
    const gap = await expectCode(j.append(rec(3, 5)), 'JOURNAL_GAP');
    expect(gap.message).toContain('expected position 2');
    expect(gap.message).toContain('position 3');
    await expectCode(j.append(rec(1, 5)), 'JOURNAL_GAP');
    const stale = await expectCode(j.append(rec(2, 4)), 'JOURNAL_GAP');
    expect(stale.message).toContain('epoch 4');
    expect(j.nextPosition).toBe(2);
    await j.append(rec(2, 6));
    expect([j.lastPosition, j.lastEpoch]).toEqual([2, 6]);
    await expect(j.append(Buffer.alloc(5))).rejects.toThrow(RangeError);
    await j.close();
    await expect(j.append(rec(3, 6))).rejects.toThrow(/closed/);
  });

  it('advances nextPosition synchronously so appends can be issued without awaiting', async () => {
    const j = await open(tempDir());
    const a = j.append(rec(1));
    const b = j.append(rec(2));
    expect(j.nextPosition).toBe(3);
    expect(j.lastPosition).toBe(2);
    expect(j.durablePosition).toBe(0);
    expect(j.read(1, { maxBytes: 1e9, maxRecords: 10 })).toEqual([]);
    await Promise.all([a, b]);
    expect(j.durablePosition).toBe(2);
    await j.close();
  });
});

describe('Journal group commit', () => {
  it('fsyncs many records per flush and resolves them in order', async () => {
    const dir = tempDir();
    const j = await Journal.open({ dir, fsync: true });
    const durable: number[] = [];
    const unsubscribe = j.onDurable((p) => durable.push(p));
    const resolved: number[] = [];
    const n = 400;
    const all: Promise<void>[] = [];
    for (let p = 1; p <= n; p++) {
      all.push(j.append(rec(p)).then(() => void resolved.push(p)));
      // Interleave some event-loop turns so appends arrive while a flush is in flight.
      if (p % 100 === 0) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(all);
    expect(resolved).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(j.flushCount).toBeGreaterThan(0);
    expect(j.flushCount).toBeLessThan(n / 10);
    expect(durable.at(-1)).toBe(n);
    expect([...durable].sort((a, b) => a - b)).toEqual(durable);
    unsubscribe();
    await j.append(rec(n + 1));
    expect(durable.at(-1)).toBe(n);
    await j.close();
  });

  it('close flushes appends that were never awaited', async () => {
    const dir = tempDir();
    const j = await open(dir);
    const pending = [1, 2, 3].map((p) => j.append(rec(p)));
    await j.close();
    await Promise.all(pending);
    const again = await open(dir);
    expect(readAll(again)).toEqual([rec(1), rec(2), rec(3)]);
    await again.close();
  });

  it("offers appended records before they are durable only to readers that ask (a backup's apply)", async () => {
    const j = await open(tempDir(), { segmentBytes: 200 });
    await appendRange(j, 1, 3);
    const appended: number[] = [];
    j.onAppend(() => appended.push(j.lastPosition));
    const pending = [4, 5, 6, 7].map((p) => j.append(rec(p)));
    expect(appended).toEqual([4, 5, 6, 7]);
    expect(j.durablePosition).toBe(3);
    // Durable readers (a sender) see nothing new; apply sees the records in order, within limits.
    expect(j.read(4, { maxBytes: 1e9, maxRecords: 10 })).toEqual([]);
    expect(j.read(2, { maxBytes: 1e9, maxRecords: 10, appended: true })).toEqual(
      [2, 3, 4, 5, 6, 7].map((p) => rec(p)),
    );
    expect(j.read(5, { maxBytes: 1e9, maxRecords: 2, appended: true })).toEqual([rec(5), rec(6)]);
    await Promise.all(pending);
    expect(j.durablePosition).toBe(7);
    expect(j.read(6, { maxBytes: 1e9, maxRecords: 10, appended: true })).toEqual([rec(6), rec(7)]);
    await j.close();
  });

  it('a failed write fails its waiters, is never reported durable and stops the journal', async () => {
    const dir = tempDir();
    const { entries, log } = captureLog();
    const j = await open(dir, { segmentBytes: 100, log });
    const durable: number[] = [];
    j.onDurable((p) => durable.push(p));
    await appendRange(j, 1, 2);
    // The next append must roll to a new segment; with the folder gone, creating it fails.
    rmSync(dir, { recursive: true, force: true });
    const failed = j.append(rec(3));
    const queued = j.append(rec(4));
    const err = await expectCode(failed, 'JOURNAL_FAILED');
    expect((err as Error).cause).toBeDefined();
    await expectCode(queued, 'JOURNAL_FAILED');
    await expectCode(j.append(rec(5)), 'JOURNAL_FAILED');
    expect(j.durablePosition).toBe(2);
    expect(durable.at(-1)).toBe(2);
    expect(j.read(1, { maxBytes: 1e9, maxRecords: 10 })).toEqual([rec(1), rec(2)]);
    // Records that will never be durable are not offered to apply either.
    expect(j.read(1, { maxBytes: 1e9, maxRecords: 10, appended: true })).toEqual([rec(1), rec(2)]);
    expect(entries.some((e) => e.level === 'warn' && /failed/.test(e.msg))).toBe(true);
    await expectCode(j.truncateAfter(1), 'JOURNAL_FAILED');
    await j.close();
  });
});

describe('Journal recovery', () => {
  it('cuts a torn frame at the end of the last segment and logs it', async () => {
    const dir = tempDir();
    const j = await open(dir);
    await appendRange(j, 1, 5);
    await j.close();
    const file = join(dir, segFiles(dir)[0]!);
    const full = statSync(file).size;
    truncateSync(file, full - 7);
    const { entries, log } = captureLog();
    const again = await open(dir, { log });
    expect(again.lastPosition).toBe(4);
    expect(readAll(again)).toEqual([rec(1), rec(2), rec(3), rec(4)]);
    const warn = entries.find((e) => e.level === 'warn');
    expect(warn?.obj.segment).toBe(file);
    const cutAt = full - rec(5).length - 8;
    expect(warn?.obj.offset).toBe(cutAt);
    expect(warn?.obj.bytesCut).toBe(rec(5).length + 8 - 7);
    expect(statSync(file).size).toBe(cutAt);
    await again.append(rec(5));
    await again.close();
  });

  it('cuts random garbage after the last whole frame', async () => {
    const dir = tempDir();
    const j = await open(dir);
    await appendRange(j, 1, 3);
    await j.close();
    const file = join(dir, segFiles(dir)[0]!);
    writeFileSync(file, Buffer.from([0, 0, 0, 40, 1, 2, 3, 4, 9, 9]), { flag: 'a' });
    const again = await open(dir);
    expect(readAll(again)).toEqual([rec(1), rec(2), rec(3)]);
    await again.close();
  });

  it('refuses a damaged frame in a sealed segment, naming the file and offset', async () => {
    const dir = tempDir();
    const j = await open(dir, { segmentBytes: 512 });
    await appendRange(j, 1, 40);
    await j.close();
    const name = segFiles(dir)[1]!;
    const file = join(dir, name);
    const bytes = readFileSync(file);
    bytes[32 + 8 + 3]! ^= 0x10;
    writeFileSync(file, bytes);
    const err = await expectCode(open(dir), 'JOURNAL_CORRUPT');
    expect(err.message).toContain(name);
    expect(err.message).toContain('byte offset 32');
  });

  it('refuses a bad header, a missing middle segment and a file whose header disagrees with its name', async () => {
    const build = async () => {
      const dir = tempDir();
      const j = await open(dir, { segmentBytes: 256 });
      await appendRange(j, 1, 20);
      await j.close();
      return { dir, names: segFiles(dir) };
    };
    {
      const { dir, names } = await build();
      const file = join(dir, names.at(-1)!);
      const bytes = readFileSync(file);
      bytes[12]! ^= 1;
      writeFileSync(file, bytes);
      const err = await expectCode(open(dir), 'JOURNAL_CORRUPT');
      expect(err.message).toContain(names.at(-1)!);
      expect(err.message).toContain('byte offset 0');
    }
    {
      const { dir, names } = await build();
      expect(names.length).toBeGreaterThan(3);
      rmSync(join(dir, names[2]!));
      const err = await expectCode(open(dir), 'JOURNAL_CORRUPT');
      expect(err.message).toContain(names[3]!);
      expect(err.message).toContain('missing');
    }
    {
      const { dir, names } = await build();
      const last = names.at(-1)!;
      const renamed = `${String(Number(last.slice(0, 20)) + 1).padStart(20, '0')}.seg`;
      writeFileSync(join(dir, renamed), readFileSync(join(dir, last)));
      rmSync(join(dir, last));
      await expectCode(open(dir), 'JOURNAL_CORRUPT');
    }
  });

  it('removes uncommitted .tmp files and treats a journal whose oldest segments are gone as starting later', async () => {
    const dir = tempDir();
    const j = await open(dir, { segmentBytes: 256 });
    await appendRange(j, 1, 20);
    await j.close();
    const names = segFiles(dir);
    rmSync(join(dir, names[0]!));
    writeFileSync(join(dir, '00000000000000000099.seg.tmp'), 'partial');
    const again = await open(dir);
    expect(existsSync(join(dir, '00000000000000000099.seg.tmp'))).toBe(false);
    expect(again.firstPosition).toBe(Number(names[1]!.slice(0, 20)));
    expect(again.lastPosition).toBe(20);
    await again.close();
  });

  it('reports a durable frame damaged after open as JOURNAL_CORRUPT when read from disk', async () => {
    const dir = tempDir();
    const j = await open(dir, { tailCacheBytes: 0 });
    await appendRange(j, 1, 3);
    const file = join(dir, segFiles(dir)[0]!);
    const bytes = readFileSync(file);
    const second = 32 + 8 + rec(1).length;
    bytes[second + 8 + 30]! ^= 4;
    writeFileSync(file, bytes);
    expect(j.read(1, { maxBytes: 1e9, maxRecords: 1 })).toEqual([rec(1)]);
    const err = await expectCode(() => j.read(2, { maxBytes: 1e9, maxRecords: 1 }), 'JOURNAL_CORRUPT');
    expect(err.message).toContain(`byte offset ${second}`);
    await j.close();
  });

  it('never allocates for an absurd frame length', async () => {
    const dir = tempDir();
    const j = await open(dir);
    await appendRange(j, 1, 3);
    await j.close();
    const file = join(dir, segFiles(dir)[0]!);
    const bytes = readFileSync(file);
    const lastFrame = bytes.length - rec(3).length - 8;
    bytes.writeUInt32BE(0xffffffff, lastFrame);
    writeFileSync(file, bytes);
    const before = process.memoryUsage().arrayBuffers;
    const again = await open(dir);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 1024 * 1024);
    expect(again.lastPosition).toBe(2);
    await again.close();
  });
});

describe('Journal reset and truncateAfter', () => {
  it('reset discards everything, survives reopen and accepts the new next position', async () => {
    const dir = tempDir();
    const j = await open(dir, { segmentBytes: 256 });
    await appendRange(j, 1, 30, 3);
    await j.reset(1000);
    expect([j.firstPosition, j.nextPosition, j.durablePosition, j.lastEpoch, j.segmentCount]).toEqual([
      1000, 1000, 999, 0, 1,
    ]);
    await expectCode(() => j.read(5, { maxBytes: 1e9, maxRecords: 1 }), 'JOURNAL_GAP');
    await expectCode(j.append(rec(31, 3)), 'JOURNAL_GAP');
    await j.append(rec(1000, 1));
    await j.close();
    expect(segFiles(dir)).toEqual(['00000000000000001000.seg']);
    const again = await open(dir);
    expect([again.firstPosition, again.nextPosition]).toEqual([1000, 1001]);
    expect(readAll(again)).toEqual([rec(1000, 1)]);
    await again.close();
  });

  it('reset to lastPosition + 1 or to an existing base still drops the old records', async () => {
    for (const target of [21, 1]) {
      const dir = tempDir();
      const j = await open(dir, { segmentBytes: 256 });
      await appendRange(j, 1, 20);
      await j.reset(target);
      await j.close();
      const again = await open(dir);
      expect([again.firstPosition, again.nextPosition]).toEqual([target, target]);
      expect(readAll(again)).toEqual([]);
      await again.close();
    }
  });

  it('a reset interrupted after its commit point is finished at open', async () => {
    const dir = tempDir();
    const j = await open(dir, { segmentBytes: 256 });
    await appendRange(j, 1, 20);
    await j.close();
    // Crash right after step 1 of the reset protocol: old segments and a committed .reset file.
    await commitReset(nodeDisk, dir, 5, Date.now(), false);
    const { entries, log } = captureLog();
    const again = await open(dir, { log });
    expect([again.firstPosition, again.nextPosition, again.segmentCount]).toEqual([5, 5, 1]);
    expect(readdirSync(dir)).toEqual(['00000000000000000005.seg']);
    expect(entries.some((e) => /reset/.test(e.msg))).toBe(true);
    await again.close();
  });

  it('refuses appends issued while a reset runs', async () => {
    const j = await open(tempDir());
    await appendRange(j, 1, 3);
    const resetting = j.reset(50);
    await expect(j.append(rec(4))).rejects.toThrow(/reset or truncated/);
    await resetting;
    await j.append(rec(50));
    await j.close();
  });

  it('truncateAfter drops the tail inside a segment, at a boundary and entirely, and survives reopen', async () => {
    const dir = tempDir();
    const j = await open(dir, { segmentBytes: 300, tailCacheBytes: 0 });
    const all = Array.from({ length: 40 }, (_, i) => rec(i + 1, i < 20 ? 1 : 2));
    for (const p of all) void j.append(p);
    await j.truncateAfter(33);
    expect([j.lastPosition, j.durablePosition, j.lastEpoch]).toEqual([33, 33, 2]);
    expect(readAll(j)).toEqual(all.slice(0, 33));
    await j.truncateAfter(15);
    expect([j.lastPosition, j.lastEpoch]).toEqual([15, 1]);
    await j.append(rec(16, 1));
    await j.close();

    const again = await open(dir, { segmentBytes: 300 });
    expect(readAll(again)).toEqual([...all.slice(0, 15), rec(16, 1)]);
    // A boundary: the last record of a sealed segment.
    const boundary = Number(segFiles(dir)[1]!.slice(0, 20)) - 1;
    await again.truncateAfter(boundary);
    expect(segFiles(dir)).toHaveLength(1);
    expect(readAll(again)).toEqual(all.slice(0, boundary));
    await again.truncateAfter(0);
    expect([again.firstPosition, again.nextPosition, again.lastEpoch, again.sizeBytes]).toEqual([
      1, 1, 0, 32,
    ]);
    await again.truncateAfter(50);
    await again.append(rec(1, 7));
    await again.close();

    const third = await open(dir);
    expect([third.nextPosition, third.lastEpoch]).toEqual([2, 7]);
    await third.close();
  });
});

describe('Journal retention', () => {
  it('deletes only sealed segments that every target holds and that are outside the window', async () => {
    const dir = tempDir();
    let now = 1_000_000;
    const clock = { now: () => now };
    const opts = { segmentBytes: 500, clock, retention: { keepBytes: 1000, keepMillis: 60_000 } };
    const j = await open(dir, opts);
    await appendRange(j, 1, 100);
    const segments = j.segmentCount;
    expect(segments).toBeGreaterThan(6);

    // Everything sealed just now: too young.
    expect(await j.retain(100)).toBe(0);
    now += 60_000;
    // Old enough, but no target holds anything yet.
    expect(await j.retain(0)).toBe(0);
    // Targets hold up to 30: only segments whose last record is <= 30 go.
    const deleted = await j.retain(30);
    expect(deleted).toBeGreaterThan(0);
    expect(j.firstPosition - 1).toBeLessThanOrEqual(30);
    expect(j.segmentCount).toBe(segments - deleted);
    await expectCode(() => j.read(1, { maxBytes: 1e9, maxRecords: 1 }), 'JOURNAL_GAP');
    const gap = await expectCode(
      () => j.read(j.firstPosition - 1, { maxBytes: 1e9, maxRecords: 1 }),
      'JOURNAL_GAP',
    );
    expect(gap.message).toContain('released by retention');
    expect(j.read(j.firstPosition, { maxBytes: 1e9, maxRecords: 1 })).toEqual([rec(j.firstPosition)]);

    // Held everywhere: deletion stops where the newest keepBytes start, never the active one.
    await j.retain(1_000_000);
    const names = segFiles(dir);
    const sizes = names.map((n) => statSync(join(dir, n)).size);
    const newerThanOldest = sizes.slice(1).reduce((a, b) => a + b, 0);
    expect(newerThanOldest).toBeLessThan(1000);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(j.sizeBytes);

    const first = j.firstPosition;
    await j.close();
    const again = await open(dir, opts);
    expect(again.firstPosition).toBe(first);
    expect(readAll(again)).toEqual(Array.from({ length: 101 - first }, (_, i) => rec(first + i)));
    await again.close();
  });

  it('never deletes the active segment', async () => {
    let now = 0;
    const j = await open(tempDir(), {
      segmentBytes: 100,
      clock: { now: () => now },
      retention: { keepBytes: 0, keepMillis: 0 },
    });
    await appendRange(j, 1, 5);
    now = 10;
    await j.retain(5);
    expect(j.segmentCount).toBe(1);
    expect(j.firstPosition).toBe(5);
    expect(j.read(5, { maxBytes: 1e9, maxRecords: 9 })).toEqual([rec(5)]);
    await j.close();
  });
});
