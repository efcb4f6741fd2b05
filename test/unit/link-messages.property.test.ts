import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DecodeError } from '../../src/core/bytes.js';
import { crc32c } from '../../src/core/crc32c.js';
import { frameRecords, unframeRecords } from '../../src/link/framing.js';
import {
  decodeMessage,
  encodeMessage,
  FrameReader,
  MAX_FRAME_BYTES,
  type Message,
  MsgType,
  PROTOCOL_VERSION,
} from '../../src/link/messages.js';

const pos = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const message: fc.Arbitrary<Message> = fc.oneof(
  fc.record({
    type: fc.constant(MsgType.Hello as const),
    version: fc.constant(PROTOCOL_VERSION),
    cluster: fc.string(),
    group: fc.string(),
    node: fc.string(),
    epoch: fc.nat(),
    firstPosition: pos,
    durablePosition: pos,
  }),
  fc.record({
    type: fc.constant(MsgType.Welcome as const),
    node: fc.string(),
    epoch: fc.nat(),
    nextPosition: pos,
    applied: pos,
    seeded: fc.boolean(),
    seed: fc.string(),
    seedLanes: fc.nat(),
  }),
  fc.record({
    type: fc.constant(MsgType.Refuse as const),
    code: fc.string(),
    message: fc.string(),
    epoch: fc.nat({ max: 2 ** 32 - 1 }),
    primary: fc.string(),
  }),
  fc.record({ type: fc.constant(MsgType.Control as const), id: fc.nat(), body: fc.string() }),
  fc.record({
    type: fc.constant(MsgType.ControlReply as const),
    id: fc.nat(),
    ok: fc.boolean(),
    body: fc.string(),
  }),
  fc.record({
    type: fc.constant(MsgType.Batch as const),
    first: pos,
    count: fc.nat(),
    sourceDurable: pos,
    compression: fc.constantFrom(0, 1),
    rawLength: fc.nat(),
    data: fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b)),
  }),
  fc.record({ type: fc.constant(MsgType.Durable as const), position: pos }),
  fc.record({
    type: fc.constant(MsgType.Ack as const),
    durable: pos,
    applied: pos,
    appliedHlc: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  }),
  fc.record({
    type: fc.constantFrom(MsgType.Ping as const, MsgType.Pong as const),
    time: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  }),
  fc.record({
    type: fc.constant(MsgType.SeedBegin as const),
    position: pos,
    epoch: fc.nat(),
    resume: fc.boolean(),
    plan: fc.string(),
  }),
  fc.record({
    type: fc.constant(MsgType.SeedRows as const),
    table: fc.string(),
    chunk: fc.nat(),
    final: fc.boolean(),
    format: fc.constantFrom(0, 1),
    rows: fc.nat(),
    columns: fc.array(fc.string(), { maxLength: 5 }),
    compression: fc.constantFrom(0, 1),
    rawLength: fc.nat(),
    data: fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b)),
  }),
  fc.record({
    type: fc.constantFrom(
      MsgType.SeedEnd as const,
      MsgType.SeedDone as const,
      MsgType.Unseed as const,
      MsgType.Unseeded as const,
    ),
    position: pos,
  }),
);

describe('link frames', () => {
  it('round-trip through a FrameReader fed in arbitrary slices', () => {
    fc.assert(
      fc.property(
        fc.array(message, { maxLength: 10 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1 }),
        (msgs, cuts) => {
          const stream = Buffer.concat(msgs.map(encodeMessage));
          const got: Message[] = [];
          const r = new FrameReader(
            (f) => got.push(decodeMessage(f)),
            (e) => {
              throw e;
            },
          );
          let o = 0;
          let i = 0;
          while (o < stream.length) {
            const n = cuts[i++ % cuts.length]!;
            r.push(stream.subarray(o, o + n));
            o += n;
          }
          expect(got).toEqual(msgs);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses oversized and zero lengths before allocating', () => {
    for (const len of [0, MAX_FRAME_BYTES + 1, 0xffffffff]) {
      let err: Error | null = null;
      const r = new FrameReader(
        () => {
          throw new Error('no frame expected');
        },
        (e) => {
          err = e;
        },
      );
      const b = Buffer.alloc(4);
      b.writeUInt32BE(len >>> 0);
      r.push(b);
      expect(err).toBeInstanceOf(DecodeError);
    }
  });

  it('decodes garbage only to DecodeError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 100 }), (b) => {
        try {
          decodeMessage(Buffer.from(b));
        } catch (e) {
          expect(e).toBeInstanceOf(DecodeError);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('refuses a HELLO with the wrong magic', () => {
    const hello = encodeMessage({
      type: MsgType.Hello,
      version: PROTOCOL_VERSION,
      cluster: 'c',
      group: 'g',
      node: 'n',
      epoch: 1,
      firstPosition: 1,
      durablePosition: 0,
    });
    hello.writeUInt8(hello.readUInt8(5) ^ 0xff, 5);
    expect(() => decodeMessage(hello.subarray(4))).toThrow(/magic/);
  });

  it('batch framing detects any flipped bit', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 50 }), { minLength: 1, maxLength: 5 }),
        fc.nat(),
        (recs, bit) => {
          const payloads = recs.map((r) => Buffer.from(r));
          const framed = frameRecords(payloads);
          const crcs: number[] = [];
          expect(unframeRecords(framed, payloads.length, crcs)).toEqual(payloads);
          expect(crcs).toEqual(payloads.map((p) => crc32c(p)));
          const flipped = Buffer.from(framed);
          const b = bit % (flipped.length * 8);
          flipped[b >> 3]! ^= 1 << (b & 7);
          expect(() => unframeRecords(flipped, payloads.length)).toThrow();
        },
      ),
      { numRuns: 300 },
    );
  });
});
