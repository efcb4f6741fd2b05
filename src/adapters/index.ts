/** Picks the adapter for an endpoint's engine. */
import type { Endpoint, GroupConfig } from '../config/index.js';
import { PgApply } from './postgres/apply.js';
import { PgCapture } from './postgres/capture.js';
import { PgSnapshot } from './postgres/snapshot.js';
import { SqliteApply } from './sqlite/apply.js';
import { SqliteCapture } from './sqlite/capture.js';
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
