/** Picks the adapter for an endpoint's engine. */
import type { Endpoint, GroupConfig } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import { SqliteApply } from './sqlite/apply.js';
import { SqliteCapture } from './sqlite/capture.js';
import { SqliteSnapshot } from './sqlite/snapshot.js';
import type { Apply, ApplyOptions, Capture, CaptureOptions, Snapshot } from './types.js';

export type { Apply, Capture, Snapshot } from './types.js';

function unsupported(endpoint: Endpoint, field: string): never {
  throw new TandemError(
    'ENDPOINT_UNSUPPORTED',
    `${field}: ${endpoint.engine} endpoints are not supported by this build yet`,
    'Use a sqlite: endpoint',
  );
}

export function createCapture(endpoint: Endpoint, o: CaptureOptions): Capture {
  if (endpoint.engine === 'sqlite') return new SqliteCapture({ ...o, path: endpoint.path });
  return unsupported(endpoint, `groups.${o.group.name}.endpoints.${o.node}`);
}

export function createApply(endpoint: Endpoint, o: ApplyOptions): Apply {
  if (endpoint.engine === 'sqlite') return new SqliteApply({ ...o, path: endpoint.path });
  return unsupported(endpoint, `groups.${o.group.name}.endpoints.${o.node}`);
}

/** `durablePosition` must be read from the journal before the snapshot starts. */
export async function createSnapshot(
  endpoint: Endpoint,
  group: GroupConfig,
  durablePosition: number,
): Promise<Snapshot> {
  if (endpoint.engine === 'sqlite') return new SqliteSnapshot(endpoint.path, group, durablePosition);
  return unsupported(endpoint, `groups.${group.name}.endpoints (primary)`);
}
