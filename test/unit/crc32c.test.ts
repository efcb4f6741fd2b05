import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32c } from '../../src/core/crc32c.js';

/** Bit-at-a-time reference, obviously correct and slow. */
function reference(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

describe('crc32c', () => {
  it('matches the standard check vectors', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(new Uint8Array(0))).toBe(0);
  });

  it('agrees with a bitwise reference for every length and alignment', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(7), (bytes, skip) => {
        const view = bytes.subarray(Math.min(skip, bytes.length));
        expect(crc32c(view)).toBe(reference(view));
      }),
      { numRuns: 300 },
    );
  });

  it('chains through the seed: crc(b, crc(a)) equals crc(a + b)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 500 }), fc.nat(), (bytes, at) => {
        const cut = bytes.length === 0 ? 0 : at % (bytes.length + 1);
        const whole = crc32c(bytes);
        expect(crc32c(bytes.subarray(cut), crc32c(bytes.subarray(0, cut)))).toBe(whole);
      }),
      { numRuns: 300 },
    );
  });

  it('detects every single-bit flip', () => {
    const data = Buffer.from('the quick brown fox jumps over the lazy dog');
    const good = crc32c(data);
    for (let bit = 0; bit < data.length * 8; bit++) {
      const copy = Buffer.from(data);
      copy[bit >> 3]! ^= 1 << (bit & 7);
      expect(crc32c(copy)).not.toBe(good);
    }
  });
});
