/**
 * One process per node state folder: two `tandem run` processes appending to the same journal
 * would corrupt it. The lock is a file holding the owner's pid, created exclusively. A lock left
 * by a process that died (SIGKILL) is taken over when that pid no longer runs a tandem process.
 */
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { TandemError } from '../core/errors.js';

function runsTandem(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('tandem');
  } catch {
    return true; // alive and not inspectable: assume it is the owner
  }
}

export class StateLock {
  readonly file: string;

  private constructor(file: string) {
    this.file = file;
  }

  static acquire(stateDir: string, node: string): StateLock {
    mkdirSync(stateDir, { recursive: true });
    const file = path.join(stateDir, 'LOCK');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
        return new StateLock(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = Number.parseInt(readFileSync(file, 'utf8'), 10);
      if (Number.isInteger(owner) && runsTandem(owner)) {
        throw new TandemError(
          'NODE_LOCKED',
          `node ${node}'s state folder ${stateDir} is in use by another tandem process (pid ${owner})`,
          'Run one `tandem run` per node: stop the other process, or pass the --node this machine is meant to be',
        );
      }
      unlinkSync(file); // stale: its owner is gone
    }
    throw new TandemError(
      'NODE_LOCKED',
      `cannot take the lock ${file}`,
      'Remove the file if no tandem process runs',
    );
  }

  release(): void {
    try {
      unlinkSync(this.file);
    } catch {
      // already gone
    }
  }
}
