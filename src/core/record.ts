/**
 * Journal records: the one type every stage speaks. Capture produces them, the journal stores
 * them, the link ships them, apply consumes them. Capture code never imports apply code.
 *
 * A record holds one or more whole source transactions (never part of one) at one journal
 * position. The binary layout starts with fixed-width fields so the journal and the link can
 * read position and epoch without decoding the body:
 *
 *   offset 0  u8   codec version (RECORD_VERSION)
 *   offset 1  u64  position
 *   offset 9  u32  epoch
 *   offset 13 u64  hybrid logical clock timestamp
 *   then      str  origin node, str source position, uv transaction count,
 *                  uv n + n str (string table: table and column names),
 *                  uv n + n changes
 */
import { BufferReader, BufferWriter, DecodeError } from './bytes.js';

export const RECORD_VERSION = 1;

/** A column value. Integers are always bigint so 64-bit keys survive exactly. */
export type Value = null | bigint | number | string | Uint8Array | boolean;

export interface ColumnDef {
  name: string;
  /** Declared type as the source wrote it (SQLite: free text; may be ''). */
  type: string;
  notNull: boolean;
  /** Default expression as SQL text, or null. */
  default: string | null;
  /**
   * PostgreSQL: the column's collation when it is not its type's (`COLLATE "C"`), as SQL.
   */
  collation?: string;
  /** PostgreSQL's attribute number, when the source has one: tells a rename from drop + add. */
  attnum?: number;
  /** PostgreSQL: an identity column (GENERATED ... AS IDENTITY), numbered by its own sequence. */
  identity?: boolean;
  /**
   * PostgreSQL, an identity column: its sequence's name (as journal names go), which the
   * backup's takes (`SEQUENCE NAME`), so that the sequence's values and options reach it.
   */
  identitySequence?: string;
  /**
   * PostgreSQL, a default that draws from a sequence (`nextval`): whether the column owns that
   * sequence (a serial column), so that a backup makes it the column's too. Absent from the
   * definitions of earlier versions.
   */
  serial?: boolean;
}

/**
 * PostgreSQL: a generated column (`GENERATED ALWAYS AS (expr) STORED`). Each database computes
 * its values from the row's other columns, so rows never carry them: it is not among a table's
 * `columns`.
 */
export interface GeneratedColumnDef {
  name: string;
  type: string;
  notNull: boolean;
  /** The expression, as `pg_get_expr` prints it with `public` on the search path. */
  expr: string;
  attnum: number;
}

/**
 * A PostgreSQL type a table's columns use that a target may lack: a user-defined enum, domain,
 * composite or range type, or an extension that provides types (adapters/postgres/user-types.ts).
 */
export type UserType =
  | { kind: 'extension'; name: string; schema: string }
  | (NamedType & { kind: 'enum'; labels: string[] })
  | (NamedType & {
      kind: 'domain';
      base: string;
      notNull: boolean;
      default: string | null;
      checks: { name: string; def: string }[];
    })
  | (NamedType & { kind: 'composite'; attributes: { name: string; type: string }[] })
  | (NamedType & { kind: 'range'; subtype: string });

interface NamedType {
  schema: string;
  name: string;
  /** The name as the columns' types spell it (`format_type`). */
  ref: string;
  /**
   * The type on the source that read it (`<system identifier>:<oid>`): tells a renamed type from
   * a new one.
   */
  id?: string;
}

export interface TableSchema {
  name: string;
  /** Engine whose type names `columns[].type` uses (absent: the target's own). */
  dialect?: 'sqlite' | 'postgres';
  columns: ColumnDef[];
  /** PostgreSQL: the generated columns (absent: none). */
  generated?: GeneratedColumnDef[];
  /** Key columns in key order; never empty for a replicated table. */
  primaryKey: string[];
  /**
   * PostgreSQL: the name of the source's primary key constraint, when it has one on exactly
   * those columns (absent: the target's default name).
   */
  primaryKeyName?: string;
  /**
   * PostgreSQL: CHECK, UNIQUE, EXCLUDE and FOREIGN KEY constraints as `pg_get_constraintdef`
   * gives them; a foreign key names the table it references (journal name).
   */
  constraints?: { name: string; def: string; references?: string }[];
  /**
   * Other indexes, as the source engine's CREATE INDEX statements: PostgreSQL's from
   * `pg_get_indexdef`; SQLite's as it stores them, and one per UNIQUE constraint.
   */
  indexes?: string[];
  /** PostgreSQL: the user-defined types the columns use, in creation order (absent: none). */
  types?: UserType[];
  /**
   * PostgreSQL: the table as the source cluster knows it whatever its name (system identifier
   * and oid): a backup follows a rename or a move to another schema by it.
   */
  id?: string;
  /** PostgreSQL: the table's owner (a role name), which a backup gives it when it can. */
  owner?: string;
  /**
   * PostgreSQL: the table's privileges as `aclitem` texts (`app=arwd/owner`; absent: the
   * defaults, its owner's only), and those of the sequences its defaults draw from, by name.
   */
  grants?: string[];
  sequenceGrants?: Record<string, string[]>;
  /**
   * PostgreSQL, a change's definition only (not kept with the table's): the source's command
   * rewrote the table, and every row of it follows in the same transaction.
   */
  rewritten?: boolean;
}

export interface RowChange {
  op: 'insert' | 'update' | 'delete';
  table: string;
  /** Names of the columns the images hold, in image order. */
  columns: string[];
  /** Before image (update, delete) or null where the source gives none. */
  before: Value[] | null;
  /** After image (insert, update). */
  after: Value[] | null;
}

/** Create the table, or bring it to this definition. */
export interface SchemaChange {
  op: 'schema';
  table: string;
  schema: TableSchema;
}

/**
 * The source dropped the table, or (PostgreSQL) the sequence whose values it sent as `sequence`
 * changes: a table and a sequence cannot share a name.
 */
export interface DropChange {
  op: 'drop';
  table: string;
}

export interface TruncateChange {
  op: 'truncate';
  table: string;
}

/** A sequence's current value at the source (`table` holds the sequence's name). */
export interface SequenceChange {
  op: 'sequence';
  table: string;
  value: bigint;
  /**
   * PostgreSQL: false when `value` has not been handed out yet (the next `nextval` gives it:
   * a sequence never drawn from, or set by `setval(..., false)` or `RESTART`). Absent: true.
   */
  called?: boolean;
  /** PostgreSQL: how the sequence counts, when first sent and whenever it changed. */
  options?: SequenceOptions;
}

/** A PostgreSQL sequence's definition, as `pg_sequences` shows it. */
export interface SequenceOptions {
  /** smallint, integer or bigint. */
  type: string;
  increment: bigint;
  min: bigint;
  max: bigint;
  start: bigint;
  cache: bigint;
  cycle: boolean;
}

export type Change = RowChange | SchemaChange | DropChange | TruncateChange | SequenceChange;

export interface JournalRecord {
  /** Sequence number in the group's journal, from 1, no gaps. */
  position: number;
  /** Role epoch of the writer; raised by every role change. */
  epoch: number;
  /** Node that captured the change. */
  origin: string;
  /** Hybrid logical clock timestamp at capture. */
  hlc: bigint;
  /** The source's own position after this record (SQLite: change-table sequence), opaque here. */
  source: string;
  /** Number of source transactions merged into this record (at least 1). */
  txCount: number;
  changes: Change[];
}

const OP_CODES = { insert: 1, update: 2, delete: 3, schema: 4, drop: 5, truncate: 6, sequence: 7 } as const;
/** A sequence change with flags: options follow (1), its value not handed out yet (2). */
const SEQUENCE_WITH_FLAGS = 8;
const HEADER_BYTES = 21;

enum Tag {
  Null = 0,
  Int = 1,
  Real = 2,
  Text = 3,
  Blob = 4,
  False = 5,
  True = 6,
}

export function writeValue(w: BufferWriter, v: Value): void {
  if (v === null) w.u8(Tag.Null);
  else if (typeof v === 'bigint') w.u8(Tag.Int).sv64(v);
  else if (typeof v === 'number') w.u8(Tag.Real).f64(v);
  else if (typeof v === 'string') w.u8(Tag.Text).str(v);
  else if (typeof v === 'boolean') w.u8(v ? Tag.True : Tag.False);
  else if (v instanceof Uint8Array) w.u8(Tag.Blob).bytes(v);
  else throw new TypeError(`cannot encode value of type ${typeof v}`);
}

export function readValue(r: BufferReader): Value {
  const tag = r.u8();
  switch (tag) {
    case Tag.Null:
      return null;
    case Tag.Int:
      return r.sv64();
    case Tag.Real:
      return r.f64();
    case Tag.Text:
      return r.str();
    case Tag.Blob:
      return Buffer.from(r.bytes());
    case Tag.False:
      return false;
    case Tag.True:
      return true;
    default:
      throw new DecodeError(`unknown value tag ${tag}`);
  }
}

class StringTable {
  readonly list: string[] = [];
  #index = new Map<string, number>();
  id(s: string): number {
    let i = this.#index.get(s);
    if (i === undefined) {
      i = this.list.length;
      this.list.push(s);
      this.#index.set(s, i);
    }
    return i;
  }
}

function writeImage(w: BufferWriter, img: Value[] | null): void {
  if (img === null) {
    w.u8(0);
    return;
  }
  w.u8(1).uv(img.length);
  for (const v of img) writeValue(w, v);
}

function readImage(r: BufferReader, width: number): Value[] | null {
  const present = r.u8();
  if (present === 0) return null;
  if (present !== 1) throw new DecodeError(`bad image marker ${present}`);
  const n = r.uv();
  if (n !== width) throw new DecodeError(`image has ${n} values for ${width} columns`);
  const img: Value[] = new Array(n);
  for (let i = 0; i < n; i++) img[i] = readValue(r);
  return img;
}

export function encodeRecord(rec: JournalRecord): Buffer {
  if (!Number.isSafeInteger(rec.position) || rec.position < 1) {
    throw new RangeError(`record position must be a positive safe integer, got ${rec.position}`);
  }
  const strings = new StringTable();
  const body = new BufferWriter(256);
  body.uv(rec.changes.length);
  for (const c of rec.changes) {
    const flagged = c.op === 'sequence' && (c.options !== undefined || c.called === false);
    body.u8(flagged ? SEQUENCE_WITH_FLAGS : OP_CODES[c.op]).uv(strings.id(c.table));
    switch (c.op) {
      case 'insert':
      case 'update':
      case 'delete':
        body.uv(c.columns.length);
        for (const col of c.columns) body.uv(strings.id(col));
        writeImage(body, c.before);
        writeImage(body, c.after);
        break;
      case 'schema':
        body.str(JSON.stringify(c.schema));
        break;
      case 'sequence': {
        body.sv64(c.value);
        if (!flagged) break;
        const o = c.options;
        body.u8((o ? 1 : 0) | (c.called === false ? 2 : 0));
        if (o)
          body
            .str(o.type)
            .sv64(o.increment)
            .sv64(o.min)
            .sv64(o.max)
            .sv64(o.start)
            .sv64(o.cache)
            .u8(o.cycle ? 1 : 0);
        break;
      }
      case 'drop':
      case 'truncate':
        break;
    }
  }
  const w = new BufferWriter(HEADER_BYTES + 64 + body.length);
  w.u8(RECORD_VERSION).u64(BigInt(rec.position)).u32(rec.epoch).u64(rec.hlc);
  w.str(rec.origin).str(rec.source).uv(rec.txCount);
  w.uv(strings.list.length);
  for (const s of strings.list) w.str(s);
  w.raw(body.finish());
  return w.finish();
}

/**
 * A record's names (tables, columns) and, per table, the column lists its row changes named.
 * Row changes of one table usually name the same columns: they share one array (read-only).
 */
interface StringTableView {
  strings: string[];
  columnSets: Map<string, { idx: number[]; columns: string[] }>;
}

/** String tables of recent records, by their bytes: records of one workload repeat a few. */
const recentTables: { bytes: Buffer; view: StringTableView }[] = [];
const RECENT_TABLES = 8;

function readStringTable(r: BufferReader): StringTableView {
  const nStrings = r.uv();
  if (nStrings > r.remaining) throw new DecodeError(`string table of ${nStrings} exceeds record`);
  const start = r.offset;
  for (let i = 0; i < nStrings; i++) r.skip();
  for (const t of recentTables)
    if (t.view.strings.length === nStrings && r.sameSince(start, t.bytes)) return t.view;
  const bytes = Buffer.from(r.since(start));
  r.seek(start);
  const strings: string[] = new Array(nStrings);
  for (let i = 0; i < nStrings; i++) strings[i] = r.str();
  const view = { strings, columnSets: new Map() };
  recentTables.unshift({ bytes, view });
  if (recentTables.length > RECENT_TABLES) recentTables.pop();
  return view;
}

function sameColumnIds(known: number[], read: number[], width: number): boolean {
  if (known.length !== width) return false;
  for (let j = 0; j < width; j++) if (known[j] !== read[j]) return false;
  return true;
}

export function decodeRecord(buf: Buffer): JournalRecord {
  const r = new BufferReader(buf);
  const version = r.u8();
  if (version !== RECORD_VERSION) throw new DecodeError(`unsupported record version ${version}`);
  const position = Number(r.u64());
  const epoch = r.u32();
  const hlc = r.u64();
  const origin = r.str();
  const source = r.str();
  const txCount = r.uv();
  const { strings, columnSets } = readStringTable(r);
  const str = (i: number): string => {
    const s = strings[i];
    if (s === undefined) throw new DecodeError(`string index ${i} out of range`);
    return s;
  };
  const nChanges = r.uv();
  if (nChanges > r.remaining) throw new DecodeError(`change count ${nChanges} exceeds record`);
  const changes: Change[] = new Array(nChanges);
  const scratch: number[] = [];
  for (let i = 0; i < nChanges; i++) {
    const code = r.u8();
    const table = str(r.uv());
    switch (code) {
      case OP_CODES.insert:
      case OP_CODES.update:
      case OP_CODES.delete: {
        const op = code === OP_CODES.insert ? 'insert' : code === OP_CODES.update ? 'update' : 'delete';
        const width = r.uv();
        if (width > r.remaining) throw new DecodeError(`column count ${width} exceeds record`);
        for (let j = 0; j < width; j++) scratch[j] = r.uv();
        const known = columnSets.get(table);
        let columns: string[];
        if (known && sameColumnIds(known.idx, scratch, width)) {
          columns = known.columns;
        } else {
          const idx = scratch.slice(0, width);
          columns = idx.map(str);
          columnSets.set(table, { idx, columns });
        }
        const before = readImage(r, width);
        const after = readImage(r, width);
        changes[i] = { op, table, columns, before, after };
        break;
      }
      case OP_CODES.schema: {
        let schema: TableSchema;
        try {
          schema = JSON.parse(r.str()) as TableSchema;
        } catch (e) {
          if (e instanceof DecodeError) throw e;
          throw new DecodeError('schema change holds invalid JSON');
        }
        changes[i] = { op: 'schema', table, schema };
        break;
      }
      case OP_CODES.drop:
        changes[i] = { op: 'drop', table };
        break;
      case OP_CODES.sequence:
        changes[i] = { op: 'sequence', table, value: r.sv64() };
        break;
      case SEQUENCE_WITH_FLAGS: {
        const value = r.sv64();
        const flags = r.u8();
        if (flags > 3) throw new DecodeError(`bad sequence flags ${flags}`);
        const change: SequenceChange = { op: 'sequence', table, value };
        if (flags & 2) change.called = false;
        if (flags & 1) {
          change.options = {
            type: r.str(),
            increment: r.sv64(),
            min: r.sv64(),
            max: r.sv64(),
            start: r.sv64(),
            cache: r.sv64(),
            cycle: r.u8() === 1,
          };
        }
        changes[i] = change;
        break;
      }
      case OP_CODES.truncate:
        changes[i] = { op: 'truncate', table };
        break;
      default:
        throw new DecodeError(`unknown change op ${code}`);
    }
  }
  if (r.remaining !== 0) throw new DecodeError(`${r.remaining} trailing bytes after record`);
  return { position, epoch, hlc, origin, source, txCount, changes };
}

/** Position of an encoded record, read without decoding the rest. */
export function peekPosition(buf: Buffer): number {
  if (buf.length < HEADER_BYTES)
    throw new DecodeError(`record of ${buf.length} bytes is shorter than its header`);
  return Number(buf.readBigUInt64BE(1));
}

/** Epoch of an encoded record, read without decoding the rest. */
export function peekEpoch(buf: Buffer): number {
  if (buf.length < HEADER_BYTES)
    throw new DecodeError(`record of ${buf.length} bytes is shorter than its header`);
  return buf.readUInt32BE(9);
}
