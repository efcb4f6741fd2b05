/**
 * Every file-system call the journal makes, behind one small interface: the deterministic
 * simulation (test/sim) runs the real journal on a virtual disk that completes calls in a
 * seeded order and, at a simulated crash, loses what was written but not synced. `nodeDisk` is
 * the real file system.
 */
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { mkdir, open, readdir, rename, rm, unlink } from 'node:fs/promises';

export interface DiskFile {
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  writev(buffers: Buffer[], position: number): Promise<{ bytesWritten: number }>;
  datasync(): Promise<void>;
  sync(): Promise<void>;
  truncate(length: number): Promise<void>;
  stat(): Promise<{ size: number }>;
  close(): Promise<void>;
}

/**
 * `r` read only (a folder too, to fsync it); `r+` read and write; `r+sync` read and write, each
 * write durable when it returns (O_DSYNC); `w` created or emptied for writing.
 */
export type OpenMode = 'r' | 'r+' | 'r+sync' | 'w';

export interface Disk {
  open(path: string, mode: OpenMode): Promise<DiskFile>;
  readdir(dir: string): Promise<string[]>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Removes a file; a missing one is no error. */
  remove(path: string): Promise<void>;
  /** mkdir -p; returns the first folder it created, or undefined when the folder existed. */
  mkdirp(dir: string): Promise<string | undefined>;
  /** The read path of durable records is synchronous (reader.ts). */
  openSync(path: string): number;
  readSync(fd: number, buffer: Buffer, offset: number, length: number, position: number): number;
  closeSync(fd: number): void;
}

export const nodeDisk: Disk = {
  open: (path, mode) => open(path, mode === 'r+sync' ? constants.O_RDWR | constants.O_DSYNC : mode),
  readdir: (dir) => readdir(dir),
  rename: (from, to) => rename(from, to),
  unlink: (path) => unlink(path),
  remove: (path) => rm(path, { force: true }),
  mkdirp: (dir) => mkdir(dir, { recursive: true }),
  openSync: (path) => openSync(path, 'r'),
  readSync: (fd, buffer, offset, length, position) => readSync(fd, buffer, offset, length, position),
  closeSync: (fd) => closeSync(fd),
};
