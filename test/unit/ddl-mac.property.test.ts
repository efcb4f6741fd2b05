import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { verifyDdlMessage } from '../../src/adapters/postgres/ddl.js';

/**
 * A message as the event trigger signs it (ddl.ts, the group's mac function): the server keeps
 * HMAC's pads, the key XOR 0x36 and 0x5c over 64 bytes, and computes
 * sha256(opad || sha256(ipad || "<xid>:<json>")).
 */
function sign(key: Buffer, xid: number, json: Buffer): Buffer {
  const block = Buffer.concat([key, Buffer.alloc(64 - key.length)]);
  const ipad = Buffer.from(block.map((b) => b ^ 0x36));
  const opad = Buffer.from(block.map((b) => b ^ 0x5c));
  const inner = createHash('sha256').update(ipad).update(`${xid}:`).update(json).digest();
  const mac = createHash('sha256').update(opad).update(inner).digest('hex');
  return Buffer.concat([Buffer.from(`${mac}:`), json]);
}

const key = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b));
const xid = fc.nat({ max: 0xffffffff });
const json = fc.json().map((j) => Buffer.from(`{"v":${j}}`));

describe('verifyDdlMessage', () => {
  it('takes a message the trigger signed, for its transaction, and gives back its JSON', () => {
    fc.assert(
      fc.property(key, xid, json, (k, x, j) => {
        // pgoutput's BEGIN is read as a signed 32-bit integer.
        expect(verifyDdlMessage({ key: k, since: 0n }, x | 0, 100n, sign(k, x, j))).toEqual(j);
      }),
    );
  });

  it('refuses a message changed by a byte, signed for another transaction or with another key', () => {
    fc.assert(
      fc.property(key, key, xid, json, fc.nat(), (k, other, x, j, at) => {
        const m = sign(k, x, j);
        const flipped = Buffer.from(m);
        flipped[at % m.length]! ^= 1;
        const k0 = { key: k, since: 0n };
        expect(verifyDdlMessage(k0, x, 100n, flipped)).toBeNull();
        expect(verifyDdlMessage(k0, (x + 1) >>> 0, 100n, m)).toBeNull();
        if (!other.equals(k)) expect(verifyDdlMessage({ key: other, since: 0n }, x, 100n, m)).toBeNull();
      }),
    );
  });

  it("reads an earlier version's unsigned message only from before the key's start", () => {
    fc.assert(
      fc.property(key, xid, json, fc.bigInt({ min: 1n, max: 1n << 40n }), (k, x, j, since) => {
        const kk = { key: k, since };
        expect(verifyDdlMessage(kk, x, since - 1n, j)).toEqual(j);
        expect(verifyDdlMessage(kk, x, since, j)).toBeNull();
        // A signed one is checked wherever it is (the functions sign before the start is set).
        expect(verifyDdlMessage(kk, x, since - 1n, sign(k, x, j))).toEqual(j);
        expect(verifyDdlMessage(kk, x, since - 1n, sign(k, x + 1, j))).toBeNull();
      }),
    );
  });
});
