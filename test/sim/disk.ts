/**
 * A virtual disk behind the Disk interface of the journal and the node's state files
 * (src/journal/disk.ts).
 *
 * Model (what a Linux file system promises, no more):
 * - A write or truncate changes the file at once (the page cache) and becomes durable only when
 *   an fsync/fdatasync of that file completes, or at completion for a file opened `r+sync`
 *   (O_DSYNC). Creating, renaming and unlinking change the folder at once and become durable
 *   when the folder is fsynced. Folders made by mkdirp are durable at once. A state file
 *   replaced by `writeTextDurably` is durable at return (the real one fsyncs file and folder).
 * - `powerLoss()` (the machine dies): each file keeps its durable image plus a random prefix of
 *   the changes made since, the last one possibly torn part-way; each folder keeps its durable
 *   entries plus a random prefix of the changes since. A process kill loses nothing.
 * - Calls complete after a random latency, each on its own: two calls in flight may complete
 *   in either order. A call made by a killed process does nothing and never completes.
 * - Faults: `failNext('write' | 'sync')` makes that call fail with EIO. A failed fsync also
 *   drops the file's unsynced changes as the page cache may (keeping a random prefix).
 */
import { basename, dirname } from 'node:path';
import type { Disk, DiskFile, OpenMode } from '../../src/journal/index.js';
import type { World } from './world.js';

type FileOp = { kind: 'write'; pos: number; bytes: Buffer } | { kind: 'truncate'; len: number };
type DirOp =
  | { kind: 'link'; name: string; inode: Inode }
  | { kind: 'unlink'; name: string }
  | { kind: 'rename'; from: string; to: string };

class Inode {
  data: Buffer = Buffer.alloc(0);
  durable: Buffer = Buffer.alloc(0);
  /** Changes since the durable image, in order. */
  log: FileOp[] = [];
}

class Folder {
  entries = new Map<string, Inode>();
  durable = new Map<string, Inode>();
  log: DirOp[] = [];
}

function applyFile(data: Buffer, op: FileOp): Buffer {
  if (op.kind === 'truncate') {
    if (op.len <= data.length) return Buffer.from(data.subarray(0, op.len));
    return Buffer.concat([data, Buffer.alloc(op.len - data.length)]);
  }
  const end = op.pos + op.bytes.length;
  const out = end > data.length ? Buffer.concat([data, Buffer.alloc(end - data.length)]) : Buffer.from(data);
  op.bytes.copy(out, op.pos);
  return out;
}

function applyDir(entries: Map<string, Inode>, op: DirOp): void {
  if (op.kind === 'link') entries.set(op.name, op.inode);
  else if (op.kind === 'unlink') entries.delete(op.name);
  else {
    const inode = entries.get(op.from);
    if (!inode) return;
    entries.delete(op.from);
    entries.set(op.to, inode);
  }
}

function errno(code: string, what: string): Error {
  return Object.assign(new Error(`${code}: ${what}`), { code });
}

export class VirtualDisk implements Disk {
  readonly #world: World;
  readonly #folders = new Map<string, Folder>([['/', new Folder()]]);
  readonly #fds = new Map<number, Inode>();
  #nextFd = 3;
  #failNext: { write: number; sync: number } = { write: 0, sync: 0 };
  /** Injected faults that hit a call. */
  faultsHit = 0;
  /** Latency of a call, ms (a fsync is slower). */
  latency = { call: [0.01, 0.2] as [number, number], sync: [0.1, 2] as [number, number], stallChance: 0.005 };

  constructor(world: World) {
    this.#world = world;
  }

  failNext(kind: 'write' | 'sync', n = 1): void {
    this.#failNext[kind] += n;
  }

  /**
   * The machine died: everything not durable is lost, except a random prefix of it (`strict`:
   * nothing of it, the worst case).
   */
  powerLoss(strict = false): void {
    const rng = this.#world.rng;
    const inodes = new Set<Inode>();
    for (const f of this.#folders.values()) {
      const keep = strict ? 0 : rng.int(0, f.log.length);
      for (const op of f.log.slice(0, keep)) applyDir(f.durable, op);
      f.log = [];
      f.entries = new Map(f.durable);
      for (const i of f.entries.values()) inodes.add(i);
    }
    for (const inode of inodes) this.#loseUnsynced(inode, strict);
    this.#fds.clear();
  }

  /** A copy of this disk as it is now (its own files, same world). */
  clone(): VirtualDisk {
    const copy = new VirtualDisk(this.#world);
    const inodes = new Map<Inode, Inode>();
    const dup = (i: Inode): Inode => {
      let c = inodes.get(i);
      if (!c) {
        c = new Inode();
        c.data = i.data;
        c.durable = i.durable;
        c.log = [...i.log];
        inodes.set(i, c);
      }
      return c;
    };
    for (const [dir, f] of this.#folders) {
      const g = new Folder();
      for (const [n, i] of f.entries) g.entries.set(n, dup(i));
      for (const [n, i] of f.durable) g.durable.set(n, dup(i));
      g.log = f.log.map((op) => (op.kind === 'link' ? { ...op, inode: dup(op.inode) } : op));
      copy.#folders.set(dir, g);
    }
    return copy;
  }

  #loseUnsynced(inode: Inode, strict = false): void {
    const rng = this.#world.rng;
    let data = inode.durable;
    const keep = strict ? 0 : rng.int(0, inode.log.length);
    for (let i = 0; i < keep; i++) {
      const op = inode.log[i]!;
      // The last change kept may be torn: only a prefix of its bytes reached the disk.
      if (i === keep - 1 && op.kind === 'write' && rng.chance(0.5)) {
        data = applyFile(data, {
          kind: 'write',
          pos: op.pos,
          bytes: op.bytes.subarray(0, rng.int(0, op.bytes.length)),
        });
      } else data = applyFile(data, op);
    }
    inode.data = data;
    inode.durable = data;
    inode.log = [];
  }

  // ---- Disk ----

  open(path: string, mode: OpenMode): Promise<DiskFile> {
    return this.#call('open', () => {
      const folder = this.#folders.get(path);
      if (folder) return this.#dirHandle(folder);
      const parent = this.#folder(dirname(path));
      let inode = parent.entries.get(basename(path));
      if (!inode) {
        if (mode !== 'w') throw errno('ENOENT', `no such file or directory, open '${path}'`);
        inode = new Inode();
        this.#dirOp(parent, { kind: 'link', name: basename(path), inode });
      } else if (mode === 'w') this.#fileOp(inode, { kind: 'truncate', len: 0 });
      return this.#fileHandle(inode, mode);
    });
  }

  readdir(dir: string): Promise<string[]> {
    return this.#call('readdir', () => [...this.#folder(dir).entries.keys()].sort());
  }

  rename(from: string, to: string): Promise<void> {
    return this.#call('rename', () => {
      const f = this.#folder(dirname(from));
      if (dirname(to) !== dirname(from)) throw errno('EXDEV', `rename across folders '${from}' -> '${to}'`);
      if (!f.entries.has(basename(from)))
        throw errno('ENOENT', `no such file or directory, rename '${from}'`);
      this.#dirOp(f, { kind: 'rename', from: basename(from), to: basename(to) });
    });
  }

  unlink(path: string): Promise<void> {
    return this.#call('unlink', () => {
      const f = this.#folder(dirname(path));
      if (!f.entries.has(basename(path)))
        throw errno('ENOENT', `no such file or directory, unlink '${path}'`);
      this.#dirOp(f, { kind: 'unlink', name: basename(path) });
    });
  }

  remove(path: string): Promise<void> {
    return this.#call('remove', () => {
      const f = this.#folders.get(dirname(path));
      if (f?.entries.has(basename(path))) this.#dirOp(f, { kind: 'unlink', name: basename(path) });
    });
  }

  mkdirp(dir: string): Promise<string | undefined> {
    return this.#call('mkdir', () => this.#mkdirs(dir));
  }

  /** mkdir -p, at once; the first folder made. */
  #mkdirs(dir: string): string | undefined {
    const missing: string[] = [];
    for (let p = dir; !this.#folders.has(p); p = dirname(p)) missing.unshift(p);
    for (const p of missing) this.#folders.set(p, new Folder());
    return missing[0];
  }

  openSync(path: string): number {
    const inode = this.#folder(dirname(path)).entries.get(basename(path));
    if (!inode) throw errno('ENOENT', `no such file or directory, open '${path}'`);
    const fd = this.#nextFd++;
    this.#fds.set(fd, inode);
    return fd;
  }

  readSync(fd: number, buffer: Buffer, offset: number, length: number, position: number): number {
    const inode = this.#fds.get(fd);
    if (!inode) throw errno('EBADF', `bad file descriptor ${fd}`);
    return inode.data.copy(buffer, offset, position, Math.min(inode.data.length, position + length));
  }

  closeSync(fd: number): void {
    this.#fds.delete(fd);
  }

  readText(path: string): string | null {
    const inode = this.#folders.get(dirname(path))?.entries.get(basename(path));
    return inode ? inode.data.toString('utf8') : null;
  }

  /** Synchronous, as on a real node (the event loop waits): durable and visible at return. */
  writeTextDurably(path: string, text: string): void {
    this.#mkdirs(dirname(path));
    const f = this.#folder(dirname(path));
    const inode = new Inode();
    inode.data = Buffer.from(text);
    inode.durable = inode.data;
    this.#dirOp(f, { kind: 'link', name: basename(path), inode });
    for (const op of f.log) applyDir(f.durable, op);
    f.log = [];
  }

  list(dir: string): string[] {
    return [...(this.#folders.get(dir)?.entries.keys() ?? [])].sort();
  }

  // ---- internals ----

  #folder(dir: string): Folder {
    const f = this.#folders.get(dir);
    if (!f) throw errno('ENOENT', `no such file or directory '${dir}'`);
    return f;
  }

  #dirOp(f: Folder, op: DirOp): void {
    applyDir(f.entries, op);
    f.log.push(op);
  }

  #fileOp(inode: Inode, op: FileOp): void {
    inode.data = applyFile(inode.data, op);
    inode.log.push(op);
  }

  /** Makes the logged changes of `inode` up to `last` durable (none when `last` is gone). */
  #syncFile(inode: Inode, last: FileOp | undefined): void {
    const n = last ? inode.log.indexOf(last) + 1 : 0;
    for (const op of inode.log.slice(0, n)) inode.durable = applyFile(inode.durable, op);
    inode.log = inode.log.slice(n);
  }

  #takeFault(kind: 'write' | 'sync'): boolean {
    if (this.#failNext[kind] === 0) return false;
    this.#failNext[kind]--;
    this.faultsHit++;
    return true;
  }

  /**
   * Runs `effect` now (as the kernel would at the call) and completes after a random latency,
   * as the calling process. A dead process's call has no effect and never completes.
   */
  #call<T>(label: string, effect: () => T, slow = false): Promise<T> {
    const w = this.#world;
    const proc = w.current;
    if (proc && !proc.alive) return new Promise<T>(() => {});
    let result: { ok: true; value: T } | { ok: false; err: unknown };
    try {
      result = { ok: true, value: effect() };
    } catch (err) {
      result = { ok: false, err };
    }
    const [lo, hi] = slow ? this.latency.sync : this.latency.call;
    const stall = w.rng.chance(this.latency.stallChance) ? w.rng.real(5, 200) : 0;
    return new Promise<T>((resolve, reject) => {
      w.schedule(w.rng.real(lo, hi) + stall, `disk:${label}`, () => {
        if (result.ok) resolve(result.value);
        else reject(result.err);
      });
    });
  }

  #dirHandle(folder: Folder): DiskFile {
    const sync = () =>
      this.#call('dirsync', () => folder.log.at(-1), true).then((last) => {
        const n = last ? folder.log.indexOf(last) + 1 : 0;
        for (const op of folder.log.slice(0, n)) applyDir(folder.durable, op);
        folder.log = folder.log.slice(n);
      });
    return {
      read: () => Promise.reject(errno('EISDIR', 'is a directory')),
      writev: () => Promise.reject(errno('EISDIR', 'is a directory')),
      datasync: sync,
      sync,
      truncate: () => Promise.reject(errno('EISDIR', 'is a directory')),
      stat: () => this.#call('stat', () => ({ size: 0 })),
      close: () => this.#call('close', () => undefined),
    };
  }

  #fileHandle(inode: Inode, mode: OpenMode): DiskFile {
    const writable = mode !== 'r';
    const sync = () => {
      if (this.#takeFault('sync')) {
        return this.#call(
          'fsync',
          () => {
            // After a failed fsync the kernel may have dropped the dirty pages.
            this.#loseUnsynced(inode);
            throw errno('EIO', 'i/o error, fsync');
          },
          true,
        );
      }
      return this.#call('fsync', () => inode.log.at(-1), true).then((last) => this.#syncFile(inode, last));
    };
    return {
      read: (buffer, offset, length, position) =>
        this.#call('read', () => ({
          bytesRead: inode.data.copy(
            buffer,
            offset,
            position,
            Math.min(inode.data.length, position + length),
          ),
        })),
      writev: (buffers, position) => {
        if (!writable) return Promise.reject(errno('EBADF', 'file not open for writing'));
        if (this.#takeFault('write'))
          return this.#call('write', () => {
            throw errno('EIO', 'i/o error, write');
          });
        const op: FileOp = { kind: 'write', pos: position, bytes: Buffer.concat(buffers) };
        return this.#call(
          'write',
          () => {
            this.#fileOp(inode, op);
            return { bytesWritten: op.bytes.length };
          },
          mode === 'r+sync',
        ).then((r) => {
          // O_DSYNC: durable when the write returns (and so is every change logged before it).
          if (mode === 'r+sync') this.#syncFile(inode, op);
          return r;
        });
      },
      datasync: sync,
      sync,
      truncate: (len) =>
        writable
          ? this.#call('truncate', () => this.#fileOp(inode, { kind: 'truncate', len }))
          : Promise.reject(errno('EBADF', 'file not open for writing')),
      stat: () => this.#call('stat', () => ({ size: inode.data.length })),
      close: () => this.#call('close', () => undefined),
    };
  }
}
