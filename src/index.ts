/** The package's library API. */
export { type Config, type GroupConfig, loadConfig } from './config/index.js';
export { ERROR_CODES, type ErrorCode, TandemError } from './core/errors.js';
export { TandemNode } from './node/node.js';
export type { GroupStatus, LinkStatus, NodeStatus } from './node/status.js';
export { type CommitInfo, type SyncWriterOptions, TandemSqliteWriter } from './sync-writer.js';
export { VERSION } from './version.js';
