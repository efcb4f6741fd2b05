/**
 * One apply connection to a PostgreSQL backup: statements queued as text and sent many per round
 * trip (simple query protocol), and this connection's server-side prepared statements, one per
 * (table, operation, column list), each PREPAREd in the batch before its first use.
 */
import type pg from 'pg';
import type { Value } from '../../core/record.js';
import { quoteLiteral } from './schema.js';
import { toPgParam } from './values.js';

export class ApplySession {
  readonly client: pg.Client;
  readonly #prepared = new Map<string, string>();
  #count = 0;
  #batch: string[] = [];
  #bytes = 0;
  /** A transaction is open on this connection. */
  inTx = false;

  constructor(client: pg.Client) {
    this.client = client;
  }

  queue(sql: string): void {
    this.#batch.push(sql);
    this.#bytes += sql.length;
  }

  /** Bytes queued and not yet sent. */
  get queued(): number {
    return this.#bytes;
  }

  /** Sends the queued statements in one round trip. */
  async flush(): Promise<void> {
    if (this.#batch.length === 0) return;
    const text = this.#batch.join(';\n');
    this.#batch = [];
    this.#bytes = 0;
    await this.client.query(text);
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

  /** Deallocates the prepared statements whose id starts with `prefix` (a table changed shape). */
  forget(prefix: string): void {
    for (const [id, name] of this.#prepared) {
      if (id.startsWith(prefix)) {
        this.queue(`DEALLOCATE ${name}`);
        this.#prepared.delete(id);
      }
    }
  }

  /** Drops what is queued and rolls back an open transaction. */
  async rollback(): Promise<void> {
    this.#batch = [];
    this.#bytes = 0;
    if (!this.inTx) return;
    this.inTx = false;
    await this.client.query('ROLLBACK').catch(() => {});
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
