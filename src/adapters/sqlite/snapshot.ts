/**
 * A consistent copy of a group's tables for seeding a backup, taken while writes go on.
 *
 * The journal's durable position P is read first, then a read transaction opens a snapshot.
 * Every record up to P was committed before the snapshot began, so the snapshot holds it;
 * records after P may or may not be in it, and apply's idempotent row operations make
 * replaying them harmless. The backup therefore resumes streaming at P + 1.
 */
import type Database from 'better-sqlite3';
import type { GroupConfig } from '../../config/index.js';
import { tableMatches } from '../../config/index.js';
import type { TableSchema, Value } from '../../core/record.js';
import type { Snapshot } from '../types.js';
import { openDatabase } from './open.js';
import { listTables, quoteIdent, readTableSchema } from './schema.js';

export interface SnapshotChunk {
  table: string;
  columns: string[];
  rows: Value[][];
}

export class SqliteSnapshot implements Snapshot {
  readonly #db: Database.Database;
  readonly position: number;
  readonly schemas: TableSchema[];
  readonly tables: { table: string; total: number }[];

  /** `durablePosition` must be read from the journal before this constructor runs. */
  constructor(path: string, group: GroupConfig, durablePosition: number) {
    this.position = durablePosition;
    this.#db = openDatabase(path, {
      field: `groups.${group.name}.endpoints (primary)`,
      timeout: 5000,
      readonly: true,
    });
    this.#db.exec('BEGIN');
    // The first read fixes the snapshot.
    const tables = listTables(this.#db).filter((t) => tableMatches(group.tables, t));
    this.schemas = tables.map((t) => readTableSchema(this.#db, t, group.name, group.keys[t]));
    this.tables = tables.map((table) => {
      const r = this.#db.prepare(`SELECT count(*) AS n FROM ${quoteIdent(table)}`).get() as { n: bigint };
      return { table, total: Number(r.n) };
    });
  }

  /** Rows table by table in chunks of at most `chunkRows`; the caller may await between chunks. */
  *chunks(chunkRows = 2000): Generator<SnapshotChunk> {
    for (const s of this.schemas) {
      const columns = s.columns.map((c) => c.name);
      const stmt = this.#db
        .prepare(`SELECT ${columns.map(quoteIdent).join(', ')} FROM ${quoteIdent(s.name)}`)
        .raw(true);
      let rows: Value[][] = [];
      for (const r of stmt.iterate() as IterableIterator<Value[]>) {
        rows.push(r);
        if (rows.length >= chunkRows) {
          yield { table: s.name, columns, rows };
          rows = [];
        }
      }
      if (rows.length > 0) yield { table: s.name, columns, rows };
    }
  }

  close(): void {
    if (this.#db.inTransaction) this.#db.exec('COMMIT');
    this.#db.close();
  }
}
