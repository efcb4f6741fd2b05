/**
 * A consistent copy of a PostgreSQL group's tables for seeding a backup, taken while writes go
 * on. A replication connection creates a temporary logical slot that exports its snapshot
 * (`CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')`); every worker connection adopts it in a
 * REPEATABLE READ, READ ONLY transaction (SET TRANSACTION SNAPSHOT), so chunks are read in
 * parallel from one consistent state. The slot's consistent point splits the stream exactly:
 * the snapshot holds every transaction that committed before it and none after, and the
 * capture's cut turns it into the journal position of the last record the copy holds (see
 * CaptureCut and docs/postgres.md). The slot is gone when the replication connection closes,
 * right after the workers adopted the snapshot.
 *
 * Chunks are key ranges: the planner walks the primary key once (an index-only scan) and keeps
 * every n-th key as a bound, n chosen so a chunk is a few MiB. Each chunk is read with
 * `COPY (SELECT ... WHERE key range) TO STDOUT`, whose text goes to a PostgreSQL target as is.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { GroupConfig } from '../../config/index.js';
import { tableMatches } from '../../config/index.js';
import { TandemError } from '../../core/errors.js';
import type { TableSchema } from '../../core/record.js';
import { valueTypes } from '../typemap.js';
import type { CaptureCut, SeedData, SeedFormat, SeedTablePlan, Snapshot } from '../types.js';
import { copyOut } from './copy-out.js';
import { closeClient, connectPostgres } from './endpoint.js';
import { parseLsn } from './pgoutput.js';
import { listTables, quoteIdent, quoteLiteral, readTableSchema, splitName, tableRef } from './schema.js';
import { parseCopyText } from './values.js';

/** Size a chunk aims at (estimated from the table's size on disk per row). */
const CHUNK_BYTES = 4 << 20;
/** Largest part of a chunk sent as one message. */
const PART_BYTES = 8 << 20;

export class PgSnapshot implements Snapshot {
  readonly engine = 'postgres' as const;
  position = 0;
  readonly schemas: TableSchema[] = [];
  readonly #clients: pg.Client[] = [];
  readonly #free: pg.Client[] = [];
  readonly #waiting: ((c: pg.Client) => void)[] = [];

  private constructor() {}

  /** `reportAfterMs`: how long the slot may wait before the transactions it waits for are logged. */
  static async take(
    url: string,
    group: GroupConfig,
    cut: CaptureCut,
    log: Logger,
    { workers = group.seed.workers, reportAfterMs = 5000 } = {},
  ): Promise<PgSnapshot> {
    const field = `groups.${group.name}.endpoints (primary)`;
    const snap = new PgSnapshot();
    let exporter: pg.Client | null = null;
    // Steps that do not wait for each other run at once (each is a few round trips to the
    // source): the connections; once the snapshot is adopted, closing the exporter, reading the
    // tables' definitions and waiting for the capture's cut.
    const connecting: Promise<unknown>[] = [];
    try {
      // A walsender connection for a database (pg passes `replication` at start-up; its types omit it).
      connecting.push(
        connectPostgres(url, field, { replication: 'database' } as pg.ClientConfig).then(
          (c) => (exporter = c),
        ),
      );
      for (let i = 0; i < workers; i++)
        connecting.push(connectPostgres(url, field).then((c) => snap.#clients.push(c)));
      await Promise.all(connecting);
      const main = snap.#clients[0]!;
      const version = Number(
        (await main.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v,
      );
      // Making the slot waits for the transactions running now to end: say which, if it takes long.
      const report = setInterval(() => void reportBlockers(main, log), reportAfterMs);
      const { mark, id } = await exportSnapshot(exporter!, version, field).finally(() =>
        clearInterval(report),
      );
      const position = cut.at(mark);
      // Awaited below; an earlier failure must not leave it unhandled.
      position.catch(() => {});
      await Promise.all(
        snap.#clients.map((c) =>
          c.query(
            `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT ${quoteLiteral(id)}`,
          ),
        ),
      );
      // Adopted: the slot (and with it the exported snapshot) may go.
      const closing = closeClient(exporter!);
      exporter = null;
      const tables = (await listTables(main)).filter((t) => tableMatches(group.tables, t));
      snap.schemas.push(
        ...(await Promise.all(
          tables.map((t, i) =>
            readTableSchema(snap.#clients[i % snap.#clients.length]!, t, group.name, group.keys[t]),
          ),
        )),
      );
      snap.position = await position;
      await closing;
      snap.#free.push(...snap.#clients);
    } catch (err) {
      // Connections still being made are closed once made.
      await Promise.allSettled(connecting);
      if (exporter) await closeClient(exporter);
      await snap.close();
      throw err;
    }
    return snap;
  }

  async #acquire(): Promise<pg.Client> {
    return this.#free.pop() ?? (await new Promise<pg.Client>((resolve) => this.#waiting.push(resolve)));
  }

  #release(c: pg.Client): void {
    const next = this.#waiting.shift();
    if (next) next(c);
    else this.#free.push(c);
  }

  async #use<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = await this.#acquire();
    try {
      return await fn(c);
    } finally {
      this.#release(c);
    }
  }

  plan(): Promise<SeedTablePlan[]> {
    return Promise.all(this.schemas.map((s) => this.#use((c) => planTable(c, s))));
  }

  async *readChunk(table: SeedTablePlan, index: number, format: SeedFormat): AsyncIterable<SeedData> {
    const s = this.schemas.find((x) => x.name === table.table);
    if (!s) throw new Error(`table "${table.table}" is not in this snapshot`);
    const columns = s.columns.map((x) => x.name);
    const types = valueTypes(s);
    const where = chunkWhere(s, table.bounds, index);
    const sql = `COPY (SELECT ${columns.map(quoteIdent).join(', ')} FROM ${tableRef(s.name)}${where}) TO STDOUT`;
    const part = (text: Buffer): SeedData =>
      format === 'pgcopy'
        ? { format, columns, text, rows: countLines(text) }
        : { format, columns, rows: parseCopyText(text, types) };
    // Parts are cut at row ends once PART_BYTES have arrived; a worker connection is held for
    // the whole chunk (its COPY runs until the last part is taken).
    const c = await this.#acquire();
    try {
      const stream = c.query(copyOut(sql));
      let held: Buffer[] = [];
      let size = 0;
      let sent = false;
      for await (const buf of stream as AsyncIterable<Buffer>) {
        held.push(buf);
        size += buf.length;
        if (size < PART_BYTES) continue;
        const all = Buffer.concat(held);
        const end = all.lastIndexOf(10) + 1;
        if (end === 0) continue;
        held = end < all.length ? [all.subarray(end)] : [];
        size = all.length - end;
        sent = true;
        yield part(all.subarray(0, end));
      }
      if (size > 0 || !sent) yield part(Buffer.concat(held));
    } finally {
      this.#release(c);
    }
  }

  /** The read-only transactions end with their connections (a COPY may still be running). */
  async close(): Promise<void> {
    await Promise.all(this.#clients.splice(0).map((c) => closeClient(c)));
  }
}

/** A table's chunks for a seed: its row estimate and the key bounds between chunks. */
export async function planTable(c: pg.Client, s: TableSchema): Promise<SeedTablePlan> {
  const r = await c.query<{ rows: string; pages: string }>(
    'SELECT GREATEST(reltuples, 0)::bigint::text AS rows, relpages::text AS pages FROM pg_class WHERE oid = $1::regclass',
    [tableRef(s.name)],
  );
  // Planner estimates: the bounds only need to be roughly even, and counting would read it all.
  const estimate = Number(r.rows[0]?.rows ?? 0);
  const pages = Number(r.rows[0]?.pages ?? 0);
  const width = estimate > 0 && pages > 0 ? (pages * 8192) / estimate : 100;
  const chunkRows = Math.min(500_000, Math.max(1000, Math.round(CHUNK_BYTES / width)));
  if (s.primaryKey.length === 0 || estimate < 2 * chunkRows) {
    return { table: s.name, total: estimate, bounds: [] };
  }
  if (s.primaryKey.length === 1) {
    // The key's histogram from the statistics (ANALYZE's equal-frequency buckets): bounds at
    // no cost. Stale statistics only make the chunks uneven.
    const { schema, name } = splitName(s.name);
    const h = await c.query<{ b: string[] | null }>(
      'SELECT histogram_bounds::text::text[] AS b FROM pg_stats WHERE schemaname = $1 AND tablename = $2 AND attname = $3',
      [schema, name, s.primaryKey[0]],
    );
    const hist = h.rows[0]?.b;
    if (hist && hist.length > 2) {
      const step = Math.max(1, Math.round(chunkRows / (estimate / (hist.length - 1))));
      const bounds: string[] = [];
      for (let i = step; i < hist.length - 1; i += step) bounds.push(JSON.stringify([hist[i]]));
      return { table: s.name, total: estimate, bounds };
    }
  }
  // Otherwise every chunkRows-th key, in one walk of the key's index.
  const key = s.primaryKey.map(quoteIdent).join(', ');
  const texts = s.primaryKey.map((k) => `${quoteIdent(k)}::text`).join(', ');
  const b = await c.query({
    text: `SELECT ${texts} FROM (SELECT ${key}, row_number() OVER (ORDER BY ${key}) AS tandem_n FROM ${tableRef(s.name)}) s WHERE tandem_n % ${chunkRows} = 0`,
    rowMode: 'array',
  });
  const bounds = (b.rows as string[][]).map((row) => JSON.stringify(row));
  return { table: s.name, total: Math.max(estimate, bounds.length * chunkRows), bounds };
}

/** ` WHERE key > bounds[index - 1] AND key <= bounds[index]`, either side left out at the ends. */
function chunkWhere(s: TableSchema, bounds: string[], index: number): string {
  if (bounds.length === 0) return '';
  const key = `(${s.primaryKey.map(quoteIdent).join(', ')})`;
  const typeOf = (k: string) => s.columns.find((c) => c.name === k)!.type;
  const tuple = (bound: string) =>
    `(${(JSON.parse(bound) as string[]).map((v, i) => `${quoteLiteral(v)}::${typeOf(s.primaryKey[i]!)}`).join(', ')})`;
  const parts: string[] = [];
  if (index > 0) parts.push(`${key} > ${tuple(bounds[index - 1]!)}`);
  if (index < bounds.length) parts.push(`${key} <= ${tuple(bounds[index]!)}`);
  return ` WHERE ${parts.join(' AND ')}`;
}

function countLines(buf: Buffer): number {
  let n = 0;
  for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) n++;
  return n;
}

/**
 * Logs the transactions on the source that hold a transaction id (the ones a new logical slot
 * waits for), oldest first; commits waiting for synchronous replication are named as such.
 */
async function reportBlockers(c: pg.Client, log: Logger): Promise<void> {
  try {
    const r = await c.query<{
      pid: number;
      user: string;
      app: string;
      state: string;
      wait: string | null;
      secs: number;
      query: string;
    }>(
      `SELECT pid, usename::text AS user, application_name AS app, state, wait_event AS wait,
              extract(epoch FROM now() - xact_start)::int AS secs, left(query, 120) AS query
         FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
        ORDER BY xact_start LIMIT 5`,
    );
    const syncRep = r.rows.some((x) => x.wait === 'SyncRep');
    log.warn(
      { transactions: r.rows },
      syncRep
        ? "the seed's snapshot waits for transactions running on the source to end, and some are commits waiting for synchronous replication: in sync mode they wait for this very backup (with sync.degrade the group turns async after sync.timeout; or end them)"
        : "the seed's snapshot waits for transactions running on the source to end (a new logical slot starts where none of them runs): these, oldest first, hold it up; end them or wait",
    );
  } catch (err) {
    log.warn(
      { err: (err as Error).message },
      "the seed's snapshot waits for transactions running on the source to end",
    );
  }
}

/**
 * Creates a temporary logical slot on a replication connection and exports its snapshot; both
 * live until the connection runs another command or closes. Returns the slot's consistent point.
 */
async function exportSnapshot(
  c: pg.Client,
  version: number,
  field: string,
): Promise<{ mark: bigint; id: string }> {
  const slot = `tandem_seed_${randomBytes(6).toString('hex')}`;
  // PostgreSQL 15 takes options in parentheses; older servers the bare keyword.
  const sql =
    version >= 150000
      ? `CREATE_REPLICATION_SLOT ${slot} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')`
      : `CREATE_REPLICATION_SLOT ${slot} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT`;
  try {
    const r = await c.query<{ consistent_point: string; snapshot_name: string }>(sql);
    const row = r.rows[0]!;
    return { mark: parseLsn(row.consistent_point), id: row.snapshot_name };
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new TandemError(
      'SEED_FAILED',
      `${field}: the seed's snapshot could not be taken: creating a temporary replication slot failed: ${(err as Error).message}`,
      code === '53400'
        ? 'A seed needs one replication slot more than streaming for as long as its snapshot is being taken: raise max_replication_slots by one (ALTER SYSTEM SET max_replication_slots = ...; then restart PostgreSQL) or drop a slot nobody uses'
        : 'Check the PostgreSQL log; the seed is tried again when the link reconnects',
      { cause: err },
    );
  }
}
