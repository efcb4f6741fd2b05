import {
  appendFileSync,
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
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { TandemError } from '../../src/core/errors.js';
import { encodeRecord, peekEpoch } from '../../src/core/record.js';
import { Journal, type JournalOptions, MAX_PAYLOAD_BYTES } from '../../src/journal/index.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tandem-journal-prop-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function open(dir: string, extra: Partial<JournalOptions> = {}): Promise<Journal> {
  return Journal.open({ dir, fsync: false, ...extra });
}

/** A record's shape: payload filler length and whether its epoch steps up from the previous one. */
const recordSpec = fc.record({ fill: fc.nat(120), bump: fc.boolean() });
type RecordSpec = { fill: number; bump: boolean };

function buildRecords(specs: RecordSpec[], firstPosition = 1, firstEpoch = 1): Buffer[] {
  let epoch = firstEpoch;
  return specs.map((s, i) => {
    if (s.bump) epoch++;
    const position = firstPosition + i;
    return encodeRecord({
      position,
      epoch,
      origin: 'n1',
      hlc: BigInt(position),
      source: `src-${position}`,
      txCount: 1,
      changes: [
        {
          op: 'update',
          table: 'items',
          columns: ['id', 'body'],
          before: [BigInt(position), null],
          after: [BigInt(position), 'y'.repeat(s.fill)],
        },
      ],
    });
  });
}

function readAll(j: Journal): Buffer[] {
  const out: Buffer[] = [];
  for (;;) {
    const got = j.read(j.firstPosition + out.length, { maxBytes: 4096, maxRecords: 37 });
    if (got.length === 0) return out;
    out.push(...got);
  }
}

function segFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => n.endsWith('.seg'))
    .sort();
}

/** Every whole frame on disk, parsed independently of the implementation. */
function framesOnDisk(dir: string): { name: string; offset: number; len: number }[] {
  const frames: { name: string; offset: number; len: number }[] = [];
  for (const name of segFiles(dir)) {
    const buf = readFileSync(join(dir, name));
    let offset = 32;
    while (offset + 8 <= buf.length) {
      const len = buf.readUInt32BE(offset);
      if (offset + 8 + len > buf.length) break;
      frames.push({ name, offset, len });
      offset += 8 + len;
    }
  }
  return frames;
}

async function openError(dir: string): Promise<TandemError> {
  let err: unknown;
  try {
    const j = await open(dir);
    await j.close();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(TandemError);
  return err as TandemError;
}

function expectPrefix(got: Buffer[], all: Buffer[]): void {
  expect(got.length).toBeLessThanOrEqual(all.length);
  for (let i = 0; i < got.length; i++) expect(got[i]!.equals(all[i]!)).toBe(true);
}

async function writeJournal(
  specs: RecordSpec[],
  segmentBytes: number,
): Promise<{ dir: string; records: Buffer[] }> {
  const dir = tempDir();
  const records = buildRecords(specs);
  const j = await open(dir, { segmentBytes });
  await Promise.all(records.map((r) => j.append(r)));
  await j.close();
  return { dir, records };
}

describe('Journal properties', () => {
  it('after a crash, reopen yields a contiguous prefix holding every acknowledged record', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(recordSpec, { minLength: 1, maxLength: 50 }),
        fc.nat(),
        fc.integer({ min: 150, max: 1500 }),
        fc.nat(),
        fc.nat(),
        fc.option(fc.uint8Array({ minLength: 1, maxLength: 80 }), { nil: undefined }),
        async (specs, acked, segmentBytes, segPick, cutPick, garbage) => {
          const records = buildRecords(specs);
          const durableCount = acked % (records.length + 1);
          const dir = tempDir();
          const j = await open(dir, { segmentBytes });
          await Promise.all(records.slice(0, durableCount).map((r) => j.append(r)));
          // What was durable when the crash hit: every file and the bytes fsynced in it.
          const durableSizes = new Map(segFiles(dir).map((n) => [n, statSync(join(dir, n)).size]));
          const lastDurable = [...durableSizes.keys()].at(-1)!;
          // Appends issued but never acknowledged; their bytes may or may not have reached disk.
          await Promise.all(records.slice(durableCount).map((r) => j.append(r)));
          await j.close();

          // The crash keeps a random prefix of the unacknowledged bytes: it cuts one file at or
          // after its durable size (a new file always holds its whole header), removes the
          // files created after it, and may leave garbage where a write was torn.
          const names = segFiles(dir);
          const candidates = names.slice(names.indexOf(lastDurable));
          const victim = candidates[segPick % candidates.length]!;
          const file = join(dir, victim);
          const floor = durableSizes.get(victim) ?? 32;
          const cut = floor + (cutPick % (statSync(file).size - floor + 1));
          for (const later of names.slice(names.indexOf(victim) + 1)) rmSync(join(dir, later));
          truncateSync(file, cut);
          if (garbage) appendFileSync(file, garbage);

          const again = await open(dir, { segmentBytes });
          const got = readAll(again);
          expect(got.length).toBeGreaterThanOrEqual(durableCount);
          expectPrefix(got, records);
          expect(again.firstPosition).toBe(1);
          expect(again.nextPosition).toBe(got.length + 1);
          expect(again.durablePosition).toBe(got.length);
          // The recovered journal takes the next record and keeps it across another reopen.
          const next = buildRecords([{ fill: 3, bump: true }], got.length + 1, 1000)[0]!;
          await again.append(next);
          await again.close();
          const third = await open(dir);
          expectPrefix(readAll(third), [...got, next]);
          expect(third.lastPosition).toBe(got.length + 1);
          await third.close();
        },
      ),
      { numRuns: 100 },
    );
  });

  it('a flipped bit in a frame followed by whole frames is JOURNAL_CORRUPT naming the file and offset', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(recordSpec, { minLength: 2, maxLength: 30 }),
        fc.integer({ min: 150, max: 1500 }),
        fc.nat(),
        fc.nat(),
        async (specs, segmentBytes, framePick, bitPick) => {
          const { dir } = await writeJournal(specs, segmentBytes);
          const frames = framesOnDisk(dir);
          const frame = frames[framePick % (frames.length - 1)]!;
          const bit = bitPick % ((8 + frame.len) * 8);
          const file = join(dir, frame.name);
          const bytes = readFileSync(file);
          bytes[frame.offset + (bit >> 3)]! ^= 1 << (bit & 7);
          writeFileSync(file, bytes);
          const err = await openError(dir);
          expect(err.code).toBe('JOURNAL_CORRUPT');
          expect(err.message).toContain(frame.name);
          expect(err.message).toContain(`byte offset ${frame.offset}:`);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('a missing middle segment is JOURNAL_CORRUPT', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(recordSpec, { minLength: 12, maxLength: 40 }),
        fc.nat(),
        async (specs, pick) => {
          const { dir } = await writeJournal(specs, 200);
          const names = segFiles(dir);
          fc.pre(names.length >= 3);
          const victim = 1 + (pick % (names.length - 2));
          rmSync(join(dir, names[victim]!));
          const err = await openError(dir);
          expect(err.code).toBe('JOURNAL_CORRUPT');
          expect(err.message).toContain(names[victim + 1]!);
        },
      ),
      { numRuns: 25 },
    );
  });

  it('a damaged frame length never allocates or hangs: a torn tail is cut, anything else is corrupt', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(recordSpec, { minLength: 1, maxLength: 30 }),
        fc.integer({ min: 150, max: 1500 }),
        fc.nat(),
        fc.oneof(
          fc.integer({ min: MAX_PAYLOAD_BYTES + 1, max: 0xffffffff }),
          fc.integer({ min: 1, max: 4096 }),
        ),
        async (specs, segmentBytes, framePick, length) => {
          const { dir, records } = await writeJournal(specs, segmentBytes);
          const frames = framesOnDisk(dir);
          const index = framePick % frames.length;
          const frame = frames[index]!;
          const file = join(dir, frame.name);
          const bytes = readFileSync(file);
          // Small picks become lengths just past the end of the file (still under the limit).
          const bad = length > MAX_PAYLOAD_BYTES ? length : bytes.length - frame.offset - 8 + length;
          bytes.writeUInt32BE(bad, frame.offset);
          writeFileSync(file, bytes);

          const started = performance.now();
          const before = process.memoryUsage().arrayBuffers;
          if (index === frames.length - 1) {
            const j = await open(dir);
            expect(j.lastPosition).toBe(records.length - 1);
            await j.close();
          } else {
            const err = await openError(dir);
            expect(err.code).toBe('JOURNAL_CORRUPT');
            expect(err.message).toContain(`byte offset ${frame.offset}:`);
          }
          expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 1024 * 1024);
          expect(performance.now() - started).toBeLessThan(2000);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('matches a simple model under appends, truncations, resets, retention, reads and reopens', async () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('append' as const),
        specs: fc.array(recordSpec, { minLength: 1, maxLength: 15 }),
      }),
      fc.record({ kind: fc.constant('truncate' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('reset' as const), delta: fc.integer({ min: -20, max: 20 }) }),
      fc.record({ kind: fc.constant('retain' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('read' as const), pick: fc.nat(), max: fc.integer({ min: 1, max: 8 }) }),
      fc.record({ kind: fc.constant('reopen' as const) }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(op, { minLength: 1, maxLength: 25 }),
        fc.constantFrom(0, 300, 1 << 20),
        async (ops, tailCacheBytes) => {
          const dir = tempDir();
          let now = 0;
          const opts = {
            segmentBytes: 400,
            tailCacheBytes,
            clock: { now: () => now },
            retention: { keepBytes: 0, keepMillis: 10 },
          };
          let j = await open(dir, opts);
          // Model: records[i] holds position first + i.
          let first = 1;
          let records: Buffer[] = [];
          const next = () => first + records.length;
          const lastEpoch = () => (records.length === 0 ? 0 : peekEpoch(records.at(-1)!));
          for (const o of ops) {
            now += 7;
            if (o.kind === 'append') {
              const batch = buildRecords(o.specs, next(), Math.max(lastEpoch(), 1));
              await Promise.all(batch.map((r) => j.append(r)));
              records.push(...batch);
            } else if (o.kind === 'truncate') {
              const keep = o.pick % (records.length + 1);
              await j.truncateAfter(first - 1 + keep);
              records = records.slice(0, keep);
            } else if (o.kind === 'reset') {
              const to = Math.max(1, next() + o.delta);
              await j.reset(to);
              first = to;
              records = [];
            } else if (o.kind === 'retain') {
              const held = first - 1 + (o.pick % (records.length + 1));
              await j.retain(held);
              expect(j.firstPosition).toBeGreaterThanOrEqual(first);
              expect(j.firstPosition).toBeLessThanOrEqual(Math.max(first, held + 1));
              records = records.slice(j.firstPosition - first);
              first = j.firstPosition;
            } else if (o.kind === 'read') {
              const from = first + (o.pick % (records.length + 1));
              const got = j.read(from, { maxBytes: 1 << 20, maxRecords: o.max });
              expect(got.length).toBe(Math.min(o.max, next() - from));
              expectPrefix(got, records.slice(from - first));
            } else {
              await j.close();
              j = await open(dir, opts);
            }
            expect([j.firstPosition, j.nextPosition, j.durablePosition]).toEqual([first, next(), next() - 1]);
            expect(j.lastEpoch).toBe(lastEpoch());
          }
          expectPrefix(readAll(j), records);
          expect(readAll(j).length).toBe(records.length);
          await j.close();
        },
      ),
      { numRuns: 80 },
    );
  });
});
