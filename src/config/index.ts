export { loadConfig } from './load.js';
export {
  type Config,
  DEFAULTS,
  type GroupConfig,
  groupsOfNode,
  type NodeConfig,
  type SecurityConfig,
} from './schema.js';
export { MIN_SECRET_BYTES, resolveSecret, SecretRef } from './secret.js';
export {
  type Address,
  type Endpoint,
  formatAddress,
  globToRegExp,
  type Parsed,
  parseAddress,
  parseDuration,
  parseSize,
  readPgUrl,
  tableMatches,
} from './units.js';
