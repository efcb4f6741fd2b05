/** Picks the adapter for an endpoint's engine; engine-neutral checks used by role changes. */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { type Endpoint, type GroupConfig, tableMatches } from '../config/index.js';
import type { TableSchema } from '../core/record.js';
import { PgApply } from './postgres/apply.js';
import { checkSyncSetup, PgCapture, slotName } from './postgres/capture.js';
import { checkPostgres, connectPostgres } from './postgres/endpoint.js';
import { listTables as listPgTables, readTableSchema as readPgSchema, tableRef } from './postgres/schema.js';
import { PgSnapshot } from './postgres/snapshot.js';
import { SqliteApply } from './sqlite/apply.js';
import { SqliteCapture } from './sqlite/capture.js';
import { openDatabase } from './sqlite/open.js';
import { listTables as listSqliteTables, readTableSchema as readSqliteSchema } from './sqlite/schema.js';
import { SqliteSnapshot } from './sqlite/snapshot.js';
import type { Apply, ApplyOptions, Capture, CaptureOptions, Snapshot } from './types.js';

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

/** `durablePosition` must be read from the journal before the snapshot starts. */
export async function createSnapshot(
  endpoint: Endpoint,
  group: GroupConfig,
  durablePosition: number,
): Promise<Snapshot> {
  return endpoint.engine === 'sqlite'
    ? new SqliteSnapshot(endpoint.path, group, durablePosition)
    : PgSnapshot.take(endpoint.url, group, durablePosition);
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
          .prepare(`SELECT * FROM "${t.replaceAll('"', '""')}"`)
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
