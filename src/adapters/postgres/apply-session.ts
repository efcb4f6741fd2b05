/**
 * One apply connection to a PostgreSQL backup: statements queued as text and sent many per round
 * trip (simple query protocol); this connection's server-side prepared statements, one per
 * (table, operation, column list), each PREPAREd in the batch before its first use; and its
 * temporary staging tables, which COPY fills for long runs of upserts.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Value } from '../../core/record.js';
import { quoteIdent, quoteLiteral, tableRef } from './schema.js';
import { toCopyText, toPgParam } from './values.js';

/** What a flush sends, in order: statements in one round trip, or rows for one COPY. */
type Part = { sql: string } | { copy: string; text: string };

export class ApplySession {
  readonly client: pg.Client;
  readonly #prepared = new Map<string, string>();
  /** Staging table by target table. */
  readonly #stages = new Map<string, string>();
  #count = 0;
  #parts: Part[] = [];
  #batch: string[] = [];
  #bytes = 0;
  /** A transaction of the serial path is open on this connection. */
  inTx = false;

  constructor(client: pg.Client) {
    this.client = client;
  }

  /**
   * Queues a statement; statements go many per round trip, up to about 16 MiB each (a parallel
   * round's share is usually one round trip).
   */
  queue(sql: string): void {
    this.#batch.push(sql);
    this.#bytes += sql.length;
    if (this.#bytes > 16 << 20) this.#cut();
  }

  #cut(): void {
    if (this.#batch.length === 0) return;
    this.#parts.push({ sql: this.#batch.join(';\n') });
    this.#batch = [];
    this.#bytes = 0;
  }

  /**
   * Sends what is queued, in order. What is queued during the flush waits for the next one, so
   * the next batch can be built while this one runs.
   */
  async flush(): Promise<void> {
    this.#cut();
    const parts = this.#parts;
    this.#parts = [];
    for (const p of parts) {
      if ('sql' in p) await this.client.query(p.sql);
      else await pipeline(Readable.from([p.text]), this.client.query(copyFrom(p.copy)));
    }
  }

  /** The prepared statement's name for `id`; queues its PREPARE the first time. */
  prepare(id: string, build: () => { types: string[]; sql: string }): string {
    let name = this.#prepared.get(id);
    if (!name) {
      name = `tandem_${this.#count++}`;
      const { types, sql } = build();
      this.queue(`PREPARE ${name} (${types.join(', ')}) AS ${sql}`);
      this.#prepared.set(id, name);
    }
    return name;
  }

  /**
   * Queues `rows` for `table` through COPY: into this connection's staging table for it (a
   * temporary table with the same columns and no constraints, created the first time, emptied
   * after each use), then `finish` (given the staging table's name) moves them.
   */
  copy(table: string, columns: string[], rows: Value[][], finish: (stage: string) => string): void {
    let stage = this.#stages.get(table);
    if (!stage) {
      stage = `tandem_stage_${this.#count++}`;
      this.queue(`CREATE TEMP TABLE ${stage} AS SELECT * FROM ${tableRef(table)} WITH NO DATA`);
      this.#stages.set(table, stage);
    }
    this.#cut();
    this.#parts.push({
      copy: `COPY ${stage} (${columns.map(quoteIdent).join(', ')}) FROM STDIN`,
      text: rows.map((r) => `${r.map(toCopyText).join('\t')}\n`).join(''),
    });
    this.queue(finish(stage));
    this.queue(`TRUNCATE ${stage}`);
  }

  /** Forgets what depends on `table`'s shape (it changed): prepared statements, staging table. */
  forget(table: string): void {
    for (const [id, name] of this.#prepared) {
      if (id.startsWith(`${table}\0`)) {
        this.queue(`DEALLOCATE ${name}`);
        this.#prepared.delete(id);
      }
    }
    const stage = this.#stages.get(table);
    if (stage) {
      this.queue(`DROP TABLE IF EXISTS pg_temp.${stage}`);
      this.#stages.delete(table);
    }
  }

  /** Drops what is queued and rolls back the transaction that may be open. */
  async rollback(): Promise<void> {
    this.#parts = [];
    this.#batch = [];
    this.#bytes = 0;
    // Some queued PREPAREs never ran: start over. A staging table created in the transaction
    // is gone; one from before stays unused.
    this.#prepared.clear();
    this.#stages.clear();
    this.inTx = false;
    await this.client.query('ROLLBACK; DEALLOCATE ALL').catch(() => {});
  }
}

/**
 * A journal value as an untyped SQL literal, which takes the type of the parameter it fills
 * (standard_conforming_strings is on for the session).
 */
export function literal(v: Value): string {
  if (v === null) return 'NULL';
  if (v instanceof Uint8Array) return `'\\x${Buffer.from(v).toString('hex')}'`;
  return quoteLiteral(String(toPgParam(v)));
}

/**
 * Values of one column as a one-dimensional array literal (`'{1,"a b",NULL}'`), untyped like
 * `literal`: every element but NULL and numbers quoted, so its text reaches the element type's
 * input as it is.
 */
export function arrayLiteral(values: readonly Value[]): string {
  const elements = values.map((v) => {
    if (v === null) return 'NULL';
    if (typeof v === 'bigint' || typeof v === 'number') return String(toPgParam(v));
    const text = v instanceof Uint8Array ? `\\x${Buffer.from(v).toString('hex')}` : String(toPgParam(v));
    return `"${text.replace(/[\\"]/g, '\\$&')}"`;
  });
  return quoteLiteral(`{${elements.join(',')}}`);
}
