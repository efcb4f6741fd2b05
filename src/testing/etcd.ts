/**
 * A throwaway single-member etcd (Debian's etcd-server) on free loopback ports, for the failover
 * tests with etcd as the quorum.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../demo/procs.js';

export interface Etcd {
  url: string;
  stop(): Promise<void>;
}

export async function startEtcd(host = '127.0.0.1'): Promise<Etcd> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-etcd-'));
  const client = await freePort();
  const peer = await freePort();
  const url = `http://${host}:${client}`;
  const child: ChildProcess = spawn(
    'etcd',
    [
      '--name=t',
      `--data-dir=${dir}`,
      `--listen-client-urls=${url}`,
      `--advertise-client-urls=${url}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=t=http://127.0.0.1:${peer}`,
    ],
    { stdio: 'ignore' },
  );
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(500) });
      if (res.ok) return { url, stop };
    } catch {
      // not up yet
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  throw new Error(`etcd did not start on ${url} (is etcd-server installed? apt-get install etcd-server)`);
}
