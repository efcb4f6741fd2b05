/** Helpers to run `tandem run` nodes as child processes (demo, tests and benchmarks share them). */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { NodeStatus } from '../node/status.js';
import { PACKAGE_ROOT } from '../version.js';

/** The `tandem` command as built (scripts/bundle.mjs), from src/ (tests), dist/ and the bundle alike. */
export const CLI = path.join(PACKAGE_ROOT, 'dist', 'bin', 'tandem.js');
/**
 * Node's flags for `tandem run` as the built CLI's shebang line gives them (src/cli/main.ts,
 * `#!/usr/bin/env -S node <flags>`; why these, docs/postgres.md), so processes started with
 * this Node binary run as the `tandem` command does.
 */
function nodeFlags(): string[] {
  const shebang = readFileSync(CLI, 'utf8').split('\n', 1)[0]!;
  return shebang.split(/\s+/).slice(shebang.includes(' -S ') ? 3 : 2);
}

const handedOut = new Set<number>();

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * A loopback port that is free now. Chosen below Linux's ephemeral range (32768+), so that the
 * kernel does not hand it to some outgoing connection before the node listens on it, at random,
 * and never twice from one process. Parallel test workers draw from separate slices of the
 * range (a port checked free can be taken by another process before it is used).
 */
export async function freePort(): Promise<number> {
  const worker = Number(process.env.VITEST_POOL_ID ?? 0) % 4;
  const [low, size] = worker === 0 ? [20000, 12000] : [20000 + (worker - 1) * 4000, 4000];
  for (let i = 0; i < 200; i++) {
    const port = low + Math.floor(Math.random() * size);
    if (handedOut.has(port)) continue;
    if (await bindable(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free loopback port found between ${low} and ${low + size}`);
}

export class NodeProcess {
  readonly name: string;
  readonly #config: string;
  readonly #logFile: string;
  readonly #env: NodeJS.ProcessEnv;
  readonly #wrap: string[];
  readonly adminUrl: string;
  child: ChildProcess | null = null;
  exit: Promise<number | null> = Promise.resolve(null);

  constructor(opts: {
    name: string;
    config: string;
    logFile: string;
    admin: string;
    env?: NodeJS.ProcessEnv;
    /** A command prefix to run it under (a network namespace: `ip netns exec NAME`). */
    wrap?: string[];
  }) {
    this.name = opts.name;
    this.#config = opts.config;
    this.#logFile = opts.logFile;
    this.adminUrl = `http://${opts.admin}`;
    this.#env = opts.env ?? process.env;
    this.#wrap = opts.wrap ?? [];
  }

  /**
   * Starts `tandem run`; `extraEnv` adds to the environment of this start only, and `under` is a
   * command prefix for this start only (a tracer injecting faults: `strace ...`).
   */
  start(extraEnv: NodeJS.ProcessEnv = {}, under: string[] = []): void {
    const log = createWriteStream(this.#logFile, { flags: 'a' });
    const argv = [
      process.execPath,
      ...nodeFlags(),
      CLI,
      'run',
      '--config',
      this.#config,
      '--node',
      this.name,
    ];
    const [cmd, ...args] = [...this.#wrap, ...under, ...argv];
    const child = spawn(cmd!, args, {
      env: { ...this.#env, TANDEM_LOG_PRETTY: '0', ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // Both streams write to one file: neither may end it while the other still writes.
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    child.once('close', () => log.end());
    this.child = child;
    this.exit = new Promise((resolve) =>
      child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))),
    );
  }

  kill(signal: NodeJS.Signals): Promise<number | null> {
    this.child?.kill(signal);
    return this.exit;
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  async status(timeoutMs = 1000): Promise<NodeStatus | null> {
    try {
      const res = await fetch(`${this.adminUrl}/status`, { signal: AbortSignal.timeout(timeoutMs) });
      return res.ok ? ((await res.json()) as NodeStatus) : null;
    } catch {
      return null;
    }
  }

  /** The last `lines` lines of the node's log (stdout and stderr), for a failure's message. */
  logTail(lines: number): string {
    return tail(this.#logFile, lines);
  }

  /** Waits until the admin API answers (the node has started every group). */
  async ready(timeoutMs = 20000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) {
        throw new Error(
          `node ${this.name} exited during start-up (${this.#logFile}):\n${tail(this.#logFile, 8)}`,
        );
      }
      if (await this.status(500)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(
      `node ${this.name} did not answer on ${this.adminUrl} within ${timeoutMs} ms (see ${this.#logFile})`,
    );
  }
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}
