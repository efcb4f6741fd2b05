export { type Disk, type DiskFile, nodeDisk, type OpenMode } from './disk.js';
export { MAX_PAYLOAD_BYTES } from './format.js';
export { Journal, type JournalOptions } from './journal.js';
export type { JournalLog } from './recovery.js';
