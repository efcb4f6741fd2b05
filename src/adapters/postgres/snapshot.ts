/**
 * A consistent copy of a PostgreSQL group's tables for seeding a backup, taken while writes go
 * on: a REPEATABLE READ, READ ONLY transaction, read through a cursor in chunks. The journal's
 * durable position P is read before the transaction's snapshot is taken, so every record up to
 * P is in the copy; later records are replayed idempotently (see docs/postgres.md).
 */
import type pg from 'pg';
import type { GroupConfig } from '../../config/index.js';
import { tableMatches } from '../../config/index.js';
import type { TableSchema, Value } from '../../core/record.js';
import type { Snapshot } from '../types.js';
import { connectPostgres } from './endpoint.js';
import { listTables, quoteIdent, readTableSchema, tableRef } from './schema.js';
import { fromPgText, RAW_TYPES } from './values.js';

export class PgSnapshot implements Snapshot {
  readonly #client: pg.Client;
  readonly position: number;
  schemas: TableSchema[] = [];
  readonly tables: { table: string; total: number }[] = [];
  #chunkRows: number;

  private constructor(client: pg.Client, position: number, chunkRows: number) {
    this.#client = client;
    this.position = position;
    this.#chunkRows = chunkRows;
  }

  /** `durablePosition` must be read from the journal before this is called. */
  static async take(
    url: string,
    group: GroupConfig,
    durablePosition: number,
    chunkRows = 5000,
  ): Promise<PgSnapshot> {
    const client = await connectPostgres(url, `groups.${group.name}.endpoints (primary)`);
    const snap = new PgSnapshot(client, durablePosition, chunkRows);
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      // The first query fixes the snapshot.
      const tables = (await listTables(client)).filter((t) => tableMatches(group.tables, t));
      for (const t of tables) snap.schemas.push(await readTableSchema(client, t, group.name, group.keys[t]));
      for (const t of tables) {
        // Planner estimate: progress only needs an order of magnitude, and count(*) would read it all twice.
        const r = await client.query<{ n: string }>(
          'SELECT GREATEST(reltuples, 0)::bigint::text AS n FROM pg_class WHERE oid = $1::regclass',
          [tableRef(t)],
        );
        const total = Number(r.rows[0]?.n ?? 0);
        snap.tables.push({ table: t, total });
      }
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    return snap;
  }

  async *chunks(): AsyncIterable<{ table: string; columns: string[]; rows: Value[][] }> {
    const c = this.#client;
    for (const s of this.schemas) {
      const columns = s.columns.map((x) => x.name);
      await c.query(
        `DECLARE tandem_seed NO SCROLL CURSOR FOR SELECT ${columns.map(quoteIdent).join(', ')} FROM ${tableRef(s.name)}`,
      );
      for (;;) {
        const r = await c.query({
          text: `FETCH ${this.#chunkRows} FROM tandem_seed`,
          rowMode: 'array',
          types: RAW_TYPES,
        });
        if (r.rows.length === 0) break;
        const oids = r.fields.map((f) => f.dataTypeID);
        const rows = (r.rows as (string | null)[][]).map((row) => row.map((v, i) => fromPgText(v, oids[i]!)));
        yield { table: s.name, columns, rows };
      }
      await c.query('CLOSE tandem_seed');
    }
  }

  async close(): Promise<void> {
    await this.#client.query('COMMIT').catch(() => {});
    await this.#client.end().catch(() => {});
  }
}
