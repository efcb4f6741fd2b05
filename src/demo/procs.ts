/** Helpers to run `tandem run` nodes as child processes (demo, tests and benchmarks share them). */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { NodeStatus } from '../node/status.js';

/** The built CLI; the same path from src/demo (tests) and dist/demo (the package). */
export const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export class NodeProcess {
  readonly name: string;
  readonly #config: string;
  readonly #logFile: string;
  readonly #env: NodeJS.ProcessEnv;
  readonly adminUrl: string;
  child: ChildProcess | null = null;
  exit: Promise<number | null> = Promise.resolve(null);

  constructor(opts: {
    name: string;
    config: string;
    logFile: string;
    admin: string;
    env?: NodeJS.ProcessEnv;
  }) {
    this.name = opts.name;
    this.#config = opts.config;
    this.#logFile = opts.logFile;
    this.adminUrl = `http://${opts.admin}`;
    this.#env = opts.env ?? process.env;
  }

  start(): void {
    const log = createWriteStream(this.#logFile, { flags: 'a' });
    const child = spawn(process.execPath, [CLI, 'run', '--config', this.#config, '--node', this.name], {
      env: { ...this.#env, TANDEM_LOG_PRETTY: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.pipe(log);
    child.stderr!.pipe(log);
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
