/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven slicing-by-8.
 * Eight 256-entry tables let the main loop fold eight input bytes per step with eight lookups;
 * table k holds the CRC of a byte followed by k zero bytes. Tables are built once at module
 * load and never change.
 *
 * `seed` is a previous result: crc32c(b, crc32c(a)) === crc32c(concat(a, b)).
 */

const POLY = 0x82f63b78;

function buildTables(): Int32Array[] {
  const t0 = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t0[n] = c;
  }
  const tables = [t0];
  for (let k = 1; k < 8; k++) {
    const prev = tables[k - 1]!;
    const next = new Int32Array(256);
    for (let n = 0; n < 256; n++) next[n] = (prev[n]! >>> 8) ^ t0[prev[n]! & 0xff]!;
    tables.push(next);
  }
  return tables;
}

const [T0, T1, T2, T3, T4, T5, T6, T7] = buildTables() as [
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
];

export function crc32c(data: Uint8Array, seed = 0): number {
  let crc = ~seed;
  const n = data.length;
  let i = 0;
  const end8 = n - (n & 7);
  for (; i < end8; i += 8) {
    const a = (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24)) ^ crc;
    const b = data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24);
    crc =
      T7[a & 0xff]! ^
      T6[(a >>> 8) & 0xff]! ^
      T5[(a >>> 16) & 0xff]! ^
      T4[a >>> 24]! ^
      T3[b & 0xff]! ^
      T2[(b >>> 8) & 0xff]! ^
      T1[(b >>> 16) & 0xff]! ^
      T0[b >>> 24]!;
  }
  for (; i < n; i++) crc = T0[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}
