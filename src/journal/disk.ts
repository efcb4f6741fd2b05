/**
 * Every file-system call the journal and a node's small state files (roles, witness, divergence
 * reports) make, behind one small interface: the deterministic simulation (test/sim) runs the
 * real journal and node on a virtual disk that completes calls in a seeded order and, at a
 * simulated crash, loses what was written but not synced. `nodeDisk` is the real file system.
 */
import {
  closeSync,
  constants,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { mkdir, open, readdir, rename, rm, unlink } from 'node:fs/promises';
import path from 'node:path';

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
  /** A small state file's text, or null when it does not exist (synchronous, as a node reads them). */
  readText(file: string): string | null;
  /**
   * Replaces a small state file atomically and durably: a crash leaves the old text or the new,
   * never a mix (temporary file, fsync, rename, fsync of the folder).
   */
  writeTextDurably(file: string, text: string): void;
  /** A folder's names; none when it does not exist. */
  list(dir: string): string[];
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
  readText: (file) => (existsSync(file) ? readFileSync(file, 'utf8') : null),
  writeTextDurably,
  list: (dir) => (existsSync(dir) ? readdirSync(dir) : []),
};

function writeTextDurably(file: string, text: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, text);
  fsyncPath(tmp);
  renameSync(tmp, file);
  fsyncPath(path.dirname(file));
}

function fsyncPath(p: string): void {
  const fd = openSync(p, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
