import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BatchCodec, DICTIONARY_BYTES } from '../../src/link/compression.js';

// Batches like a workload's: similar rows (a few words repeated) of any size, some beyond the
// dictionary and beyond the size compressed in the thread pool (64 KiB).
const batch = fc
  .tuple(
    fc.array(fc.constantFrom('pgbench_accounts', 'aid', 'filler', '   ', '\u0000\u0001', 'é'), {
      maxLength: 200,
    }),
    fc.uint8Array({ maxLength: 300 }),
    fc.constantFrom(1, 1, 1, 50, 400),
  )
  .map(([words, noise, repeat]) =>
    Buffer.concat(Array.from({ length: repeat }, () => Buffer.concat([Buffer.from(words.join('|')), noise]))),
  );

describe('batch compression with the connection dictionary', () => {
  it('a receiver that takes the batches in order gets each one back exactly', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(batch, { minLength: 1, maxLength: 25 }), async (batches) => {
        const sender = new BatchCodec();
        const receiver = new BatchCodec();
        for (const raw of batches) {
          const data = await sender.deflate(raw);
          expect(receiver.inflate(data, 64 << 20).equals(raw)).toBe(true);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('compresses a small batch against the ones before it', async () => {
    const row = (i: number) =>
      Buffer.from(`public.pgbench_accounts|aid|bid|abalance|filler|${i}|${' '.repeat(84)}`);
    const alone = await new BatchCodec().deflate(row(2));
    const codec = new BatchCodec();
    await codec.deflate(row(1));
    const after = await codec.deflate(row(2));
    expect(after.length).toBeLessThan(alone.length / 2);
    expect(DICTIONARY_BYTES).toBeGreaterThan(row(1).length);
  });

  it('a receiver that missed a batch does not get the next one back', async () => {
    const sender = new BatchCodec();
    const receiver = new BatchCodec();
    const rows = [0, 1, 2].map((i) => Buffer.from(`insert into orders ${i} ${'note '.repeat(20)}`));
    await sender.deflate(rows[0]!);
    const data = await sender.deflate(rows[1]!);
    let got: Buffer | null = null;
    try {
      got = receiver.inflate(data, 1 << 20);
    } catch {
      // zlib refuses a reference before the start of the (empty) dictionary
    }
    expect(got?.equals(rows[1]!) ?? false).toBe(false);
  });
});
