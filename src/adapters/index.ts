/** Picks the adapter for an endpoint's engine; engine-neutral checks used by role changes. */
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import { type Endpoint, type GroupConfig, tableMatches } from '../config/index.js';
import type { TableSchema, Value } from '../core/record.js';
import { PgApply } from './postgres/apply.js';
import { checkSyncSetup, PgCapture, slotName } from './postgres/capture.js';
import { checkPostgres, connectPostgres, pgClientConfig } from './postgres/endpoint.js';
import {
  listTables as listPgTables,
  quoteIdent as quotePgIdent,
  readTableSchema as readPgSchema,
  tableRef,
} from './postgres/schema.js';
import { PgSnapshot } from './postgres/snapshot.js';
import { fromPgText, toPgParam } from './postgres/values.js';
import { SqliteApply } from './sqlite/apply.js';
import { SqliteCapture } from './sqlite/capture.js';
import { toParam } from './sqlite/literal.js';
import { openDatabase } from './sqlite/open.js';
import {
  listTables as listSqliteTables,
  readTableSchema as readSqliteSchema,
  quoteIdent as sqliteIdent,
} from './sqlite/schema.js';
import { SqliteSnapshot } from './sqlite/snapshot.js';
import type { Apply, ApplyOptions, Capture, CaptureCut, CaptureOptions, Snapshot } from './types.js';

export type { Apply, Capture, Snapshot } from './types.js';

export function createCapture(endpoint: Endpoint, o: CaptureOptions): Capture {
  return endpoint.engine === 'sqlite'
    ? new SqliteCapture({ ...o, path: endpoint.path })
    : new PgCapture({ ...o, url: endpoint.url });
}

export function createApply(endpoint: Endpoint, o: ApplyOptions): Apply {
  return endpoint.engine === 'sqlite'
    ? new SqliteApply({ ...o, path: endpoint.path })
    : new PgApply({ ...o, url: endpoint.url });
}

/** The definitions of the group's tables at `endpoint` now. */
export async function readSchemas(endpoint: Endpoint, group: GroupConfig): Promise<TableSchema[]> {
  if (endpoint.engine === 'sqlite') {
    const db = openDatabase(endpoint.path, { field: `groups.${group.name}.endpoints`, timeout: 5000 });
    try {
      return listSqliteTables(db)
        .filter((t) => tableMatches(group.tables, t))
        .map((t) => readSqliteSchema(db, t, group.name, group.keys[t]));
    } finally {
      db.close();
    }
  }
  const client = await connectPostgres(endpoint.url, `groups.${group.name}.endpoints`);
  try {
    const out: TableSchema[] = [];
    for (const t of (await listPgTables(client)).filter((x) => tableMatches(group.tables, x))) {
      out.push(await readPgSchema(client, t, group.name, group.keys[t]));
    }
    return out;
  } finally {
    await client.end();
  }
}

/** A snapshot for seeding; `cut` (the capture's, opened just before) places it in the journal. */
export async function createSnapshot(
  endpoint: Endpoint,
  group: GroupConfig,
  cut: CaptureCut,
  log: Logger,
): Promise<Snapshot> {
  return endpoint.engine === 'sqlite'
    ? SqliteSnapshot.take(endpoint.path, group, cut)
    : PgSnapshot.take(endpoint.url, group, cut, log);
}

/**
 * Whether this node's database could become the group's primary now (before a switchover
 * fences anything): SQLite opens for writing; PostgreSQL passes a source's prerequisite checks
 * and, in sync mode, names Tandem in synchronous_standby_names or may be set up to.
 */
export async function checkPromotable(
  endpoint: Endpoint,
  group: GroupConfig,
  node: string,
  log: Logger,
): Promise<void> {
  const field = `groups.${group.name}.endpoints.${node}`;
  if (endpoint.engine === 'sqlite') {
    openDatabase(endpoint.path, { field, timeout: 1000 }).close();
    return;
  }
  await checkPostgres({
    url: endpoint.url,
    field,
    role: 'source',
    tables: group.tables,
    keys: group.keys,
    group: group.name,
    slot: slotName(group.name, node),
  });
  if (group.mode !== 'sync') return;
  const client = await connectPostgres(endpoint.url, field);
  try {
    await checkSyncSetup(client, group, node, field, log, true);
  } finally {
    await client.end();
  }
}

/** Rows and an order-independent checksum of every table of the group (`tandem switchover --verify`). */
export interface TableSums {
  engine: Endpoint['engine'];
  tables: { table: string; rows: number; sum: string }[];
}

export async function tableChecksums(endpoint: Endpoint, group: GroupConfig): Promise<TableSums> {
  const field = `groups.${group.name}.endpoints`;
  const tables: TableSums['tables'] = [];
  if (endpoint.engine === 'sqlite') {
    const db = openDatabase(endpoint.path, { field, timeout: 5000, readonly: true });
    try {
      for (const t of listSqliteTables(db).filter((x) => tableMatches(group.tables, x))) {
        let rows = 0;
        let sum = 0n;
        const it = db
          .prepare(`SELECT * FROM ${sqliteIdent(t)}`)
          .raw(true)
          .iterate() as Iterable<unknown[]>;
        for (const row of it) {
          rows++;
          sum += rowHash(row.map(canonical).join('\x1f'));
        }
        tables.push({ table: t, rows, sum: sum.toString() });
      }
    } finally {
      db.close();
    }
    return { engine: 'sqlite', tables };
  }
  const client = await connectPostgres(endpoint.url, field);
  try {
    for (const t of (await listPgTables(client)).filter((x) => tableMatches(group.tables, x))) {
      // The first 60 bits of each row's md5, summed (sum of bigint is numeric: no overflow).
      const r = await client.query<{ n: string; s: string }>(
        `SELECT count(*)::text AS n,
                coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0)::text AS s
           FROM ${tableRef(t)} t`,
      );
      tables.push({ table: t, rows: Number(r.rows[0]!.n), sum: r.rows[0]!.s });
    }
  } finally {
    await client.end();
  }
  return { engine: 'postgres', tables };
}

function canonical(v: unknown): string {
  if (v === null) return 'N';
  if (typeof v === 'bigint') return `i${v}`;
  if (typeof v === 'number') return `r${v}`;
  if (Buffer.isBuffer(v)) return `b${v.toString('hex')}`;
  return `s${String(v)}`;
}

function rowHash(text: string): bigint {
  return BigInt(`0x${createHash('md5').update(text).digest('hex').slice(0, 15)}`);
}

/**
 * The current rows of `table` at `endpoint` for the given key values (in `key` order); a key
 * with no row is left out. Values as the journal carries them.
 */
export async function readRowsByKey(
  endpoint: Endpoint,
  group: GroupConfig,
  table: string,
  key: string[],
  keys: Value[][],
): Promise<{ columns: string[]; rows: Value[][] }> {
  const field = `groups.${group.name}.endpoints`;
  if (endpoint.engine === 'sqlite') {
    const db = openDatabase(endpoint.path, { field, timeout: 5000, readonly: true });
    db.defaultSafeIntegers(true);
    try {
      const columns = readSqliteSchema(db, table, group.name, key).columns.map((c) => c.name);
      const q = db
        .prepare(
          `SELECT ${columns.map(sqliteIdent).join(', ')} FROM ${sqliteIdent(table)} WHERE ${key.map((k) => `${sqliteIdent(k)} = ?`).join(' AND ')}`,
        )
        .raw(true);
      const rows: Value[][] = [];
      for (const k of keys) {
        const r = q.get(k.map(toParam)) as unknown[] | undefined;
        if (r) rows.push(r.map((v) => (Buffer.isBuffer(v) ? new Uint8Array(v) : (v as Value))));
      }
      return { columns, rows };
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({
    ...pgClientConfig(endpoint.url),
    // Every value as PostgreSQL's text, converted by its type (as capture does).
    types: { getTypeParser: () => (v: string) => v },
  });
  await client.connect();
  try {
    const rows: Value[][] = [];
    let columns: string[] = [];
    for (const k of keys) {
      const r = await client.query({
        text: `SELECT * FROM ${tableRef(table)} WHERE ${key.map((c, i) => `${quotePgIdent(c)} = $${i + 1}`).join(' AND ')}`,
        values: k.map(toPgParam),
        rowMode: 'array',
      });
      columns = r.fields.map((f) => f.name);
      for (const row of r.rows as (string | null)[][])
        rows.push(row.map((v, i) => fromPgText(v, r.fields[i]!.dataTypeID)));
    }
    return { columns, rows };
  } finally {
    await client.end();
  }
}

/** Whether the journal's before images of `table` hold every column (else only the key). */
export async function fullBeforeImages(
  endpoint: Endpoint,
  group: GroupConfig,
  table: string,
): Promise<boolean> {
  if (endpoint.engine === 'sqlite') return true;
  const client = await connectPostgres(endpoint.url, `groups.${group.name}.endpoints`);
  try {
    const r = await client.query<{ full: boolean }>(
      "SELECT relreplident = 'f' AS full FROM pg_class WHERE oid = $1::regclass",
      [tableRef(table)],
    );
    return r.rows[0]?.full === true;
  } finally {
    await client.end();
  }
}

/**
 * Runs `sql` (statements with their own BEGIN/COMMIT) on the endpoint as an ordinary client:
 * on a primary, what it writes is captured and replicated like any application's writes.
 */
export async function writeSql(endpoint: Endpoint, group: GroupConfig, sql: string): Promise<void> {
  const field = `groups.${group.name}.endpoints`;
  if (endpoint.engine === 'sqlite') {
    const db = openDatabase(endpoint.path, { field, timeout: 5000 });
    try {
      db.exec(sql);
    } finally {
      db.close();
    }
    return;
  }
  const client = await connectPostgres(endpoint.url, field);
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}
