/**
 * Decoder for PostgreSQL's pgoutput logical replication messages (protocol version 1), as sent
 * inside XLogData by START_REPLICATION. Values are kept as the server's text, untouched:
 * conversion is values.ts's job, so nothing is lost to a generic type parser. An unchanged
 * TOASTed value ('u') is reported as UNCHANGED, never as NULL.
 * Reference: PostgreSQL docs, "Logical Replication Message Formats".
 */

export const UNCHANGED: unique symbol = Symbol('unchanged TOAST value');
export type RawValue = string | null | typeof UNCHANGED;

export interface RelationColumn {
  name: string;
  typeOid: number;
  typeMod: number;
  /** Part of the replica identity (the key PostgreSQL sends for updates and deletes). */
  key: boolean;
}

export interface Relation {
  oid: number;
  schema: string;
  name: string;
  replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
  columns: RelationColumn[];
}

export type PgMessage =
  | { tag: 'begin'; finalLsn: bigint; commitTime: bigint; xid: number }
  | { tag: 'commit'; lsn: bigint; endLsn: bigint; commitTime: bigint }
  | { tag: 'relation'; relation: Relation }
  | { tag: 'insert'; relation: Relation; new: RawValue[] }
  | { tag: 'update'; relation: Relation; old: RawValue[] | null; keyOnly: boolean; new: RawValue[] }
  | { tag: 'delete'; relation: Relation; old: RawValue[]; keyOnly: boolean }
  | { tag: 'truncate'; relations: Relation[]; cascade: boolean; restartIdentity: boolean }
  | { tag: 'message'; transactional: boolean; lsn: bigint; prefix: string; content: Buffer }
  | { tag: 'origin' | 'type' };

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function parseLsn(text: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (!m) throw new Error(`not an LSN: ${text}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

class Reader {
  #b: Buffer;
  #o = 0;
  constructor(b: Buffer) {
    this.#b = b;
  }
  u8(): number {
    return this.#b.readUInt8(this.#o++);
  }
  i16(): number {
    const v = this.#b.readInt16BE(this.#o);
    this.#o += 2;
    return v;
  }
  i32(): number {
    const v = this.#b.readInt32BE(this.#o);
    this.#o += 4;
    return v;
  }
  u64(): bigint {
    const v = this.#b.readBigUInt64BE(this.#o);
    this.#o += 8;
    return v;
  }
  i64(): bigint {
    const v = this.#b.readBigInt64BE(this.#o);
    this.#o += 8;
    return v;
  }
  cstr(): string {
    const end = this.#b.indexOf(0, this.#o);
    if (end < 0) throw new Error('unterminated string in pgoutput message');
    const s = this.#b.toString('utf8', this.#o, end);
    this.#o = end + 1;
    return s;
  }
  bytes(n: number): Buffer {
    if (this.#o + n > this.#b.length) throw new Error('pgoutput message truncated');
    const v = this.#b.subarray(this.#o, this.#o + n);
    this.#o += n;
    return v;
  }
}

/** Decodes messages; keeps the relation cache the stream relies on. */
export class PgoutputDecoder {
  readonly #relations = new Map<number, Relation>();

  relation(oid: number): Relation {
    const r = this.#relations.get(oid);
    if (!r) throw new Error(`pgoutput: change for relation ${oid} before its RELATION message`);
    return r;
  }

  decode(buf: Buffer): PgMessage {
    const r = new Reader(buf);
    const tag = String.fromCharCode(r.u8());
    switch (tag) {
      case 'B':
        return { tag: 'begin', finalLsn: r.u64(), commitTime: r.i64(), xid: r.i32() };
      case 'C': {
        r.u8(); // flags, unused
        return { tag: 'commit', lsn: r.u64(), endLsn: r.u64(), commitTime: r.i64() };
      }
      case 'R': {
        const oid = r.i32();
        const schema = r.cstr();
        const name = r.cstr();
        const ident = String.fromCharCode(r.u8());
        const n = r.i16();
        const columns: RelationColumn[] = [];
        for (let i = 0; i < n; i++) {
          const flags = r.u8();
          columns.push({ name: r.cstr(), typeOid: r.i32(), typeMod: r.i32(), key: (flags & 1) === 1 });
        }
        const replicaIdentity = ({ d: 'default', n: 'nothing', f: 'full', i: 'index' } as const)[
          ident as 'd' | 'n' | 'f' | 'i'
        ];
        if (!replicaIdentity) throw new Error(`pgoutput: unknown replica identity ${ident}`);
        const relation: Relation = { oid, schema, name, replicaIdentity, columns };
        this.#relations.set(oid, relation);
        return { tag: 'relation', relation };
      }
      case 'I': {
        const relation = this.relation(r.i32());
        expect(r.u8(), 'N');
        return { tag: 'insert', relation, new: tuple(r) };
      }
      case 'U': {
        const relation = this.relation(r.i32());
        let kind = String.fromCharCode(r.u8());
        let old: RawValue[] | null = null;
        let keyOnly = false;
        if (kind === 'K' || kind === 'O') {
          keyOnly = kind === 'K';
          old = tuple(r);
          kind = String.fromCharCode(r.u8());
        }
        if (kind !== 'N') throw new Error(`pgoutput: bad update submessage ${kind}`);
        return { tag: 'update', relation, old, keyOnly, new: tuple(r) };
      }
      case 'D': {
        const relation = this.relation(r.i32());
        const kind = String.fromCharCode(r.u8());
        if (kind !== 'K' && kind !== 'O') throw new Error(`pgoutput: bad delete submessage ${kind}`);
        return { tag: 'delete', relation, old: tuple(r), keyOnly: kind === 'K' };
      }
      case 'T': {
        const n = r.i32();
        const options = r.u8();
        const relations: Relation[] = [];
        for (let i = 0; i < n; i++) relations.push(this.relation(r.i32()));
        return {
          tag: 'truncate',
          relations,
          cascade: (options & 1) === 1,
          restartIdentity: (options & 2) === 2,
        };
      }
      case 'M': {
        const flags = r.u8();
        const lsn = r.u64();
        const prefix = r.cstr();
        const len = r.i32();
        return {
          tag: 'message',
          transactional: (flags & 1) === 1,
          lsn,
          prefix,
          content: Buffer.from(r.bytes(len)),
        };
      }
      case 'O':
        return { tag: 'origin' };
      case 'Y':
        return { tag: 'type' };
      default:
        throw new Error(`pgoutput: unknown message ${tag}`);
    }
  }
}

function expect(byte: number, ch: string): void {
  if (byte !== ch.charCodeAt(0))
    throw new Error(`pgoutput: expected ${ch}, got ${String.fromCharCode(byte)}`);
}

function tuple(r: Reader): RawValue[] {
  const n = r.i16();
  const out: RawValue[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const kind = String.fromCharCode(r.u8());
    if (kind === 'n') out[i] = null;
    else if (kind === 'u') out[i] = UNCHANGED;
    else if (kind === 't') out[i] = r.bytes(r.i32()).toString('utf8');
    else throw new Error(`pgoutput: unsupported tuple value kind ${kind}`);
  }
  return out;
}
