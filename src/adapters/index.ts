/** Picks the adapter for an endpoint's engine. */
import { type Endpoint, type GroupConfig, tableMatches } from '../config/index.js';
import type { TableSchema } from '../core/record.js';
import { PgApply } from './postgres/apply.js';
import { PgCapture } from './postgres/capture.js';
import { connectPostgres } from './postgres/endpoint.js';
import { listTables as listPgTables, readTableSchema as readPgSchema } from './postgres/schema.js';
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
