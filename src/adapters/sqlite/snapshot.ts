/**
 * A consistent copy of a group's tables for seeding a backup, taken while writes go on.
 *
 * A read transaction opens a snapshot and reads the change table's last seq in it: a snapshot
 * holds whole commits, and SQLite has one writer at a time, so the snapshot holds exactly the
 * changes up to that seq. The capture's cut (CaptureCut) ends a record at that seq, and its
 * position is the snapshot's: the backup streams from the next record, none of whose changes the
 * copy holds.
 */
import type Database from 'better-sqlite3';
import type { GroupConfig } from '../../config/index.js';
import { tableMatches } from '../../config/index.js';
import { BufferReader, BufferWriter } from '../../core/bytes.js';
import { readValue, type TableSchema, type Value, writeValue } from '../../core/record.js';
import type { CaptureCut, SeedData, SeedTablePlan, Snapshot } from '../types.js';
import { toParam } from './literal.js';
import { openDatabase } from './open.js';
import { listTables, quoteIdent, readTableSchema } from './schema.js';

/** Rows per chunk (a chunk commits on the backup as one transaction) and per message. */
const CHUNK_ROWS = 20_000;
const PART_ROWS = 2000;

export class SqliteSnapshot implements Snapshot {
  readonly engine = 'sqlite' as const;
  readonly #db: Database.Database;
  position = 0;
  readonly schemas: TableSchema[];

  private constructor(db: Database.Database, schemas: TableSchema[]) {
    this.#db = db;
    this.schemas = schemas;
  }

  static async take(path: string, group: GroupConfig, cut: CaptureCut): Promise<SqliteSnapshot> {
    const db = openDatabase(path, {
      field: `groups.${group.name}.endpoints (primary)`,
      timeout: 5000,
      readonly: true,
    });
    try {
      db.exec('BEGIN');
      // The first read fixes the snapshot. AUTOINCREMENT keeps the highest seq ever handed out.
      const row = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = '_tandem_changes'").get() as
        | { seq: bigint }
        | undefined;
      const tables = listTables(db).filter((t) => tableMatches(group.tables, t));
      const snap = new SqliteSnapshot(
        db,
        tables.map((t) => readTableSchema(db, t, group.name, group.keys[t])),
      );
      snap.position = await cut.at(row?.seq ?? 0n);
      return snap;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** Exact row counts; every CHUNK_ROWS-th key (in key order) bounds a chunk. */
  async plan(): Promise<SeedTablePlan[]> {
    return this.schemas.map((s) => {
      const table = quoteIdent(s.name);
      const r = this.#db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: bigint };
      const total = Number(r.n);
      if (s.primaryKey.length === 0 || total < 2 * CHUNK_ROWS) return { table: s.name, total, bounds: [] };
      const key = s.primaryKey.map(quoteIdent).join(', ');
      const rows = this.#db
        .prepare(
          `SELECT ${key} FROM (SELECT ${key}, row_number() OVER (ORDER BY ${key}) AS tandem_n FROM ${table}) WHERE tandem_n % ${CHUNK_ROWS} = 0`,
        )
        .raw(true)
        .all() as Value[][];
      return { table: s.name, total, bounds: rows.map(encodeBound) };
    });
  }

  /**
   * Parts are read whole (`all()`), key range after key range, so that chunks read by several
   * workers never leave a statement running on the one connection between parts.
   */
  async *readChunk(table: SeedTablePlan, index: number): AsyncIterable<SeedData> {
    const s = this.schemas.find((x) => x.name === table.table);
    if (!s) throw new Error(`table "${table.table}" is not in this snapshot`);
    const columns = s.columns.map((c) => c.name);
    const select = `SELECT ${columns.map(quoteIdent).join(', ')} FROM ${quoteIdent(s.name)}`;
    if (s.primaryKey.length === 0) {
      yield { format: 'values', columns, rows: this.#db.prepare(select).raw(true).all() as Value[][] };
      return;
    }
    const order = s.primaryKey.map(quoteIdent).join(', ');
    const key = `(${order})`;
    const marks = `(${s.primaryKey.map(() => '?').join(', ')})`;
    const at = s.primaryKey.map((k) => columns.indexOf(k));
    const upper = index < table.bounds.length ? decodeBound(table.bounds[index]!) : null;
    let after = index > 0 ? decodeBound(table.bounds[index - 1]!) : null;
    // The rows after `after` (or from the chunk's start) up to its upper bound, in key order.
    const page = (from: boolean) => {
      const where = [from ? `${key} > ${marks}` : '', upper ? `${key} <= ${marks}` : ''].filter(Boolean);
      const sql = `${select}${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY ${order} LIMIT ${PART_ROWS}`;
      return this.#db.prepare(sql).raw(true);
    };
    const first = page(after !== null);
    const next = page(true);
    for (let part = 0; ; part++) {
      const params = [...(after ?? []), ...(upper ?? [])].map(toParam);
      const rows = (part === 0 ? first : next).all(...params) as Value[][];
      if (rows.length > 0 || part === 0) yield { format: 'values', columns, rows };
      if (rows.length < PART_ROWS) return;
      after = at.map((i) => rows[rows.length - 1]![i]!);
    }
  }

  close(): void {
    if (!this.#db.open) return;
    if (this.#db.inTransaction) this.#db.exec('COMMIT');
    this.#db.close();
  }
}

/** A key as an opaque bound: its values in the journal's value encoding, base64. */
function encodeBound(key: Value[]): string {
  const w = new BufferWriter(64);
  for (const v of key) writeValue(w, v);
  return w.finish().toString('base64');
}

function decodeBound(bound: string): Value[] {
  const r = new BufferReader(Buffer.from(bound, 'base64'));
  const out: Value[] = [];
  while (r.remaining > 0) out.push(readValue(r));
  return out;
}
