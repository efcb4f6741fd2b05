/** A group's journal on a node: `<state>/journal/<group>`, with the group's retention. */
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config, GroupConfig } from '../config/index.js';
import { type Disk, Journal } from '../journal/index.js';

export function openGroupJournal(
  config: Config,
  node: string,
  group: GroupConfig,
  log: Logger,
  disk: Disk,
): Promise<Journal> {
  return Journal.open({
    disk,
    dir: path.join(config.nodes[node]!.state, 'journal', group.name),
    retention: group.retention,
    segmentBytes: group.retention.segmentBytes,
    log,
  });
}
