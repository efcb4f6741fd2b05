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
    return Object.is(v, -0) ? '-0' : String(v);
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

/** The type OID fromPgText converts by, for a type as format_type spells it. */
function valueOid(type: string): number {
  switch (type) {
    case 'bigint':
      return 20;
    case 'smallint':
      return 21;
    case 'integer':
      return 23;
    case 'oid':
      return 26;
    case 'real':
      return 700;
    case 'double precision':
      return 701;
    case 'boolean':
      return BOOL_OID;
    case 'bytea':
      return BYTEA_OID;
    default:
      return 25; // text: kept as PostgreSQL's text form
  }
}

const ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

/** One field of COPY's text format, unescaped (NULL is `\N`). */
function copyField(field: string): string | null {
  if (field === '\\N') return null;
  if (!field.includes('\\')) return field;
  return field.replace(/\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)/g, (_, e: string) => {
    if (e[0] === 'x') return String.fromCharCode(Number.parseInt(e.slice(1), 16));
    if (/^[0-7]/.test(e)) return String.fromCharCode(Number.parseInt(e, 8));
    return ESCAPES[e] ?? e;
  });
}

/** Rows in COPY's text format, as `COPY ... TO STDOUT` writes them, as journal values. */
export function parseCopyText(text: Buffer, types: readonly string[]): Value[][] {
  const oids = types.map(valueOid);
  const rows: Value[][] = [];
  const all = text.toString('utf8');
  if (all === '') return rows;
  for (const line of (all.endsWith('\n') ? all.slice(0, -1) : all).split('\n')) {
    const fields = line.split('\t');
    if (fields.length !== oids.length) {
      throw new Error(`COPY row has ${fields.length} fields, expected ${oids.length}`);
    }
    rows.push(fields.map((f, i) => fromPgText(copyField(f), oids[i]!)));
  }
  return rows;
}
