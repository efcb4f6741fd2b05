/**
 * Picks the adapter for an endpoint's engine, loading it the first time an endpoint needs it: a
 * node of SQLite groups never loads PostgreSQL's driver, nor one of PostgreSQL groups SQLite's.
 * Also the engine-neutral checks role changes use.
 */
import type { Logger } from 'pino';
import type { Endpoint, GroupConfig } from '../config/index.js';
import type { TableSchema, Value } from '../core/record.js';
import type {
  Apply,
  ApplyOptions,
  Capture,
  CaptureCut,
  CaptureOptions,
  EngineAdapter,
  Snapshot,
  TableSum,
} from './types.js';

export type { Apply, Capture, Snapshot } from './types.js';

const loaded = new Map<Endpoint['engine'], Promise<EngineAdapter>>();

/** The engine of `endpoint` and where it is (its URL or database file). */
async function engineOf(endpoint: Endpoint): Promise<[EngineAdapter, string]> {
  let e = loaded.get(endpoint.engine);
  if (!e) {
    e =
      endpoint.engine === 'sqlite'
        ? import('./sqlite/engine.js').then((m) => m.engine)
        : import('./postgres/engine.js').then((m) => m.engine);
    loaded.set(endpoint.engine, e);
  }
  return [await e, endpoint.engine === 'sqlite' ? endpoint.path : endpoint.url];
}

export async function createCapture(endpoint: Endpoint, o: CaptureOptions): Promise<Capture> {
  const [e, where] = await engineOf(endpoint);
  return e.createCapture(where, o);
}

export async function createApply(endpoint: Endpoint, o: ApplyOptions): Promise<Apply> {
  const [e, where] = await engineOf(endpoint);
  return e.createApply(where, o);
}

/** The definitions of the group's tables at `endpoint` now. */
export async function readSchemas(endpoint: Endpoint, group: GroupConfig): Promise<TableSchema[]> {
  const [e, where] = await engineOf(endpoint);
  return e.readSchemas(where, group);
}

/** A snapshot for seeding; `cut` (the capture's, opened just before) places it in the journal. */
export async function createSnapshot(
  endpoint: Endpoint,
  group: GroupConfig,
  cut: CaptureCut,
  log: Logger,
): Promise<Snapshot> {
  const [e, where] = await engineOf(endpoint);
  return e.createSnapshot(where, group, cut, log);
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
  const [e, where] = await engineOf(endpoint);
  await e.checkPromotable(where, group, node, log);
}

/** Rows and an order-independent checksum of every table of the group (`tandem switchover --verify`). */
export interface TableSums {
  engine: Endpoint['engine'];
  tables: TableSum[];
}

export async function tableChecksums(endpoint: Endpoint, group: GroupConfig): Promise<TableSums> {
  const [e, where] = await engineOf(endpoint);
  return { engine: endpoint.engine, tables: await e.tableSums(where, group) };
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
  const [e, where] = await engineOf(endpoint);
  return e.readRowsByKey(where, group, table, key, keys);
}

/** Whether the journal's before images of `table` hold every column (else only the key). */
export async function fullBeforeImages(
  endpoint: Endpoint,
  group: GroupConfig,
  table: string,
): Promise<boolean> {
  const [e, where] = await engineOf(endpoint);
  return e.fullBeforeImages(where, group, table);
}

/**
 * Runs `sql` (statements with their own BEGIN/COMMIT) on the endpoint as an ordinary client:
 * on a primary, what it writes is captured and replicated like any application's writes.
 */
export async function writeSql(endpoint: Endpoint, group: GroupConfig, sql: string): Promise<void> {
  const [e, where] = await engineOf(endpoint);
  await e.writeSql(where, group, sql);
}
