/**
 * PostgreSQL text values <-> journal values. The journal keeps integers as bigint, floats as
 * numbers, booleans, bytea as bytes; every other type travels as PostgreSQL's own text form
 * (numeric, timestamps, json, uuid, arrays, ...), which is exact and which PostgreSQL accepts
 * back as input.
 */
import type { Value } from '../../core/record.js';

const INT_OIDS = new Set([20, 21, 23, 26]); // int8, int2, int4, oid
const FLOAT_OIDS = new Set([700, 701]); // float4, float8
const BOOL_OID = 16;
const BYTEA_OID = 17;

export function fromPgText(text: string | null, typeOid: number): Value {
  if (text === null) return null;
  if (INT_OIDS.has(typeOid)) return BigInt(text);
  if (FLOAT_OIDS.has(typeOid)) return Number(text); // 'NaN', 'Infinity', '-Infinity' included
  if (typeOid === BOOL_OID) return text === 't';
  if (typeOid === BYTEA_OID) {
    if (!text.startsWith('\\x')) throw new Error('bytea must be in hex output format (bytea_output = hex)');
    return Buffer.from(text.slice(2), 'hex');
  }
  return text;
}

export type PgParam = string | boolean | Buffer | null;

/** A journal value as a query parameter. */
export function toPgParam(v: Value): PgParam {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'NaN';
    if (v === Number.POSITIVE_INFINITY) return 'Infinity';
    if (v === Number.NEGATIVE_INFINITY) return '-Infinity';
    return String(v);
  }
  return Buffer.isBuffer(v) ? v : Buffer.from(v);
}

/** A value as a field of COPY's text format (tab-separated, \N for NULL, backslash escapes). */
export function toCopyText(v: Value): string {
  if (v === null) return '\\N';
  let s: string;
  if (typeof v === 'boolean') s = v ? 't' : 'f';
  else if (v instanceof Uint8Array) s = `\\x${Buffer.from(v).toString('hex')}`;
  else s = toPgParam(v) as string;
  return s.replace(/[\\\t\n\r]/g, (c) =>
    c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r',
  );
}

/** pg query option that leaves every value as the server's text. */
export const RAW_TYPES = { getTypeParser: () => (text: string) => text };
