/**
 * Throwaway PostgreSQL 15 clusters for tests: initdb into a fresh temp folder, settings for
 * logical replication, a free loopback port and the Unix socket inside the folder, so several
 * clusters (and several test workers) run side by side without meeting. Never the machine's own
 * cluster on 5432: scripts/test-setup.mjs installs the server binaries only.
 */
import { execFile } from 'node:child_process';
import {
  appendFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from '../demo/procs.js';

const BIN = '/usr/lib/postgresql/15/bin';
const exec = promisify(execFile);

export interface PgCluster {
  port: number;
  /** The data directory; it also holds the Unix socket and the server log (`log`). */
  dir: string;
  /** `postgres://user@127.0.0.1:port/db`, without a password (the clusters trust loopback). */
  url(db?: string, user?: string): string;
  /** Runs `query` (one or more statements) as the superuser postgres, in `db` (default postgres). */
  sql(query: string, db?: string): Promise<pg.QueryResult>;
  /** Fast shutdown, then removes the folder. Safe after kill() and when called twice. */
  stop(): Promise<void>;
  /** SIGKILL to the postmaster: a crash, for crash tests. stop() still cleans up afterwards. */
  kill(): void;
}

export interface PgOptions {
  /** postgresql.conf settings, over the defaults below (`{ wal_level: 'replica' }`). */
  settings?: Record<string, string>;
  /** pg_hba.conf lines placed before the trust lines, so they match first. */
  hba?: string[];
}

/** Cluster folders are named after the test process that owns them: `tandem-pg-<pid>-XXXXXX`. */
const PREFIX = 'tandem-pg-';
const OWNED = new RegExp(`^${PREFIX}(\\d+)-`);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, and belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The postmaster's pid from the folder's postmaster.pid, or null when it has none. */
function postmasterPid(dir: string): number | null {
  try {
    const pid = Number(readFileSync(path.join(dir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * Removes the clusters of test processes that are gone without stop() (killed by a timeout, or a
 * forgotten stop): pg_ctl detaches the server from the test process, so nothing else would ever
 * stop it. A folder is swept only once its owner is dead, and its postmaster killed only while
 * /proc shows that pid running postgres on that folder (the pid may have been reused since).
 */
function sweepOrphans(): void {
  const tmp = os.tmpdir();
  for (const name of readdirSync(tmp)) {
    const owner = OWNED.exec(name)?.[1];
    if (owner === undefined || alive(Number(owner))) continue;
    const dir = path.join(tmp, name);
    try {
      const pid = postmasterPid(dir);
      if (pid !== null && alive(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) {
        process.kill(pid, 'SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // Swept by the other test worker meanwhile, or another user's: leave it.
    }
  }
}

/** initdb and postgres refuse to run as root; as root they run as the postgres OS user. */
function asPostgres(cmd: string, args: string[]) {
  const asRoot = process.getuid?.() === 0;
  const file = asRoot ? 'runuser' : path.join(BIN, cmd);
  const argv = asRoot ? ['-u', 'postgres', '--', path.join(BIN, cmd), ...args] : args;
  return exec(file, argv, { encoding: 'utf8', timeout: 90_000 });
}

function message(err: unknown): string {
  return err instanceof Error ? err.message.trim() : String(err);
}

/** A postgresql.conf value: quoted, with quotes doubled. */
function confValue(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

class Cluster implements PgCluster {
  port = 0;
  readonly dir: string;
  readonly #log: string;
  #stopped = false;
  #killed = false;

  constructor(dir: string) {
    this.dir = dir;
    this.#log = path.join(dir, 'log');
  }

  url(db = 'postgres', user = 'postgres'): string {
    return `postgres://${encodeURIComponent(user)}@127.0.0.1:${this.port}/${encodeURIComponent(db)}`;
  }

  async sql(query: string, db = 'postgres'): Promise<pg.QueryResult> {
    const client = new pg.Client({ host: '127.0.0.1', port: this.port, user: 'postgres', database: db });
    try {
      await client.connect();
      return await client.query(query);
    } catch (err) {
      throw this.failure(`query on database ${db} failed: ${message(err)}\nquery: ${query}`, err);
    } finally {
      await client.end().catch(() => {});
    }
  }

  /**
   * Starts the server on a free port. freePort() only shows the port was free a moment ago, and
   * the other test worker may take it in between: on "Address already in use" try another.
   */
  async start(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.port = await freePort();
      // A later line wins in postgresql.conf, so a retry just appends the new port.
      appendFileSync(path.join(this.dir, 'postgresql.conf'), `port = ${this.port}\n`);
      const logStart = this.#logSize();
      try {
        await asPostgres('pg_ctl', ['-D', this.dir, '-l', this.#log, '-w', '-t', '60', 'start']);
        return;
      } catch (err) {
        const fresh = this.#readLog().slice(logStart);
        if (attempt < 3 && fresh.includes('Address already in use')) continue;
        throw this.failure(`pg_ctl start on port ${this.port} failed: ${message(err)}`, err);
      }
    }
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    let failure: Error | null = null;
    // After kill() there is no server to stop, only its stale pid file.
    if (!this.#killed && this.#pid() !== null) {
      try {
        await asPostgres('pg_ctl', ['-D', this.dir, '-m', 'fast', '-w', '-t', '30', 'stop']);
      } catch (err) {
        failure = this.failure(`pg_ctl stop failed: ${message(err)}`, err);
        this.abandon();
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    if (failure) throw failure;
  }

  kill(): void {
    const pid = this.#pid();
    if (pid === null) throw this.failure('kill(): no postmaster.pid, the server is not running');
    process.kill(pid, 'SIGKILL');
    this.#killed = true;
  }

  /** Last resort (failed start or stop): SIGKILL the server and drop its folder. */
  abandon(): void {
    const pid = this.#pid();
    if (pid !== null && alive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** An error that says what failed, with the end of the server log (why, as the server saw it). */
  failure(what: string, cause?: unknown): Error {
    const tail = this.#readLog().trimEnd().split('\n').slice(-25).join('\n');
    return new Error(
      `test PostgreSQL cluster in ${this.dir}: ${what}\n--- server log (last lines) ---\n${tail || '(empty)'}`,
      { cause },
    );
  }

  #pid(): number | null {
    return postmasterPid(this.dir);
  }

  #readLog(): string {
    try {
      return readFileSync(this.#log, 'utf8');
    } catch {
      return '';
    }
  }

  #logSize(): number {
    try {
      return statSync(this.#log).size;
    } catch {
      return 0;
    }
  }
}

export async function startPg(opts: PgOptions = {}): Promise<PgCluster> {
  sweepOrphans();
  const dir = mkdtempSync(path.join(os.tmpdir(), `${PREFIX}${process.pid}-`));
  const cluster = new Cluster(dir);
  try {
    // initdb runs as postgres, so the (empty) folder must be its own.
    if (process.getuid?.() === 0) await exec('chown', ['postgres:postgres', dir]);
    await asPostgres('initdb', [
      '-D',
      dir,
      '-U',
      'postgres',
      '--auth=trust',
      '--no-sync',
      '-E',
      'UTF8',
      '--locale=C.UTF-8',
    ]).catch((err) => {
      throw cluster.failure(`initdb failed: ${message(err)}`, err);
    });
    const settings: Record<string, string> = {
      listen_addresses: '127.0.0.1',
      // The socket in the cluster's own folder: /var/run/postgresql may not exist or be shared.
      unix_socket_directories: dir,
      wal_level: 'logical',
      max_wal_senders: '20',
      max_replication_slots: '20',
      // fsync off only to make tests fast: a killed server still recovers (its WAL is in the
      // page cache), only a machine crash could lose data. synchronous_commit stays on so a
      // commit waits for its WAL write, as in production.
      fsync: 'off',
      synchronous_commit: 'on',
      shared_buffers: '64MB',
      max_connections: '100',
      ...opts.settings,
    };
    appendFileSync(
      path.join(dir, 'postgresql.conf'),
      `\n# tandem test cluster\n${Object.entries(settings)
        .map(([k, v]) => `${k} = ${confValue(v)}`)
        .join('\n')}\n`,
    );
    if (opts.hba && opts.hba.length > 0) {
      const hba = path.join(dir, 'pg_hba.conf');
      writeFileSync(hba, `${opts.hba.join('\n')}\n${readFileSync(hba, 'utf8')}`);
    }
    await cluster.start();
    return cluster;
  } catch (err) {
    cluster.abandon();
    throw err;
  }
}
