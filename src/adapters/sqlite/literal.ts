/**
 * Parser for the row images the capture triggers write. A trigger may use only built-in SQL,
 * so each image is `quote(c1) || ',' || quote(c2) ...`: a comma-separated list of SQL literals.
 * SQLite's quote() is exact: integers in full, reals with enough digits to round-trip
 * (it falls back to %!.20e when 15 digits do not), text with '' escapes, blobs as X'hex'.
 */
import type { Value } from '../../core/record.js';

export class LiteralError extends Error {
  override name = 'LiteralError';
}

export function parseImage(text: string): Value[] {
  const out: Value[] = [];
  let i = 0;
  const n = text.length;
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === 0x27 /* ' */) {
      let s = '';
      let j = i + 1;
      for (;;) {
        const q = text.indexOf("'", j);
        if (q < 0) throw new LiteralError(`unterminated text literal at ${i}`);
        s += text.slice(j, q);
        if (text.charCodeAt(q + 1) === 0x27) {
          s += "'";
          j = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      out.push(s);
    } else if ((c === 0x58 || c === 0x78) && text.charCodeAt(i + 1) === 0x27 /* X' */) {
      const q = text.indexOf("'", i + 2);
      if (q < 0) throw new LiteralError(`unterminated blob literal at ${i}`);
      out.push(Buffer.from(text.slice(i + 2, q), 'hex'));
      i = q + 1;
    } else {
      let j = text.indexOf(',', i);
      if (j < 0) j = n;
      const tok = text.slice(i, j);
      if (tok === 'NULL') out.push(null);
      else if (/^-?\d+$/.test(tok)) out.push(BigInt(tok));
      else if (/^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(tok)) out.push(Number(tok));
      else if (tok === 'Inf' || tok === '-Inf') out.push(tok === 'Inf' ? Infinity : -Infinity);
      else throw new LiteralError(`unexpected literal "${tok.slice(0, 40)}" at ${i}`);
      i = j;
    }
    if (i >= n) return out;
    if (text.charCodeAt(i) !== 0x2c) throw new LiteralError(`expected ',' at ${i}`);
    i++;
  }
}

export type Param = bigint | number | string | Buffer | null;

/**
 * A journal value as a better-sqlite3 parameter (booleans as 0/1). A float NaN (a PostgreSQL
 * source's) becomes the TEXT 'NaN': SQLite stores a NaN REAL as NULL, and REAL affinity keeps
 * text that is not a number as text. Captured back, that text is 'NaN', which a PostgreSQL
 * float column reads as NaN. ±Infinity are REALs in SQLite and need nothing.
 */
export function toParam(v: Value): Param {
  if (typeof v === 'number') return Number.isNaN(v) ? 'NaN' : v;
  if (typeof v === 'boolean') return v ? 1n : 0n;
  if (v instanceof Uint8Array && !Buffer.isBuffer(v)) return Buffer.from(v);
  return v as Param;
}
