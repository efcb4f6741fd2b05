/** The `tandem` command as a user meets it: help, version, exit codes, status. Needs dist/. */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI } from '../../src/demo/procs.js';
import type { NodeStatus } from '../../src/node/status.js';
import { makeCluster, type TestCluster, until } from '../helpers/cluster.js';

function tandem(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, timeout: 30000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('tandem CLI', () => {
  let c: TestCluster | null = null;
  let child: ChildProcess | null = null;
  afterEach(() => {
    if (child?.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    child = null;
    c?.cleanup();
    c = null;
  });

  it('prints its version and help for every command', () => {
    const v = tandem(['--version']);
    expect(v.code).toBe(0);
    expect(v.out.trim()).toMatch(/^\d+\.\d+\.\d+/);
    for (const cmd of [[], ['run'], ['status'], ['demo']]) {
      const h = tandem([...cmd, '--help']);
      expect(h.code, cmd.join(' ')).toBe(0);
      expect(h.out).toMatch(/Usage: tandem/);
    }
  });

  it('exits 2 on bad usage and on bad config, naming the field', async () => {
    expect(tandem(['run']).code).toBe(2);
    expect(tandem(['frobnicate']).code).toBe(2);
    c = await makeCluster();
    const bad = path.join(c.dir, 'bad.yaml');
    writeFileSync(bad, 'cluster: demo\nnodes: {}\ngroups:\n  shop: { kind: sql, mode: fast }\n');
    const r = tandem(['run', '--config', bad, '--node', 'east']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/bad\.yaml/);
    expect(r.err).toMatch(/groups\.shop\.mode/);
    const missing = tandem(['status', '--config', path.join(c.dir, 'nope.yaml')]);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/nope\.yaml/);
    const unknownNode = tandem(['run', '--config', c.config, '--node', 'north'], c.env);
    expect(unknownNode.code).toBe(2);
    expect(unknownNode.err).toMatch(/north/);
  });

  it('refuses to start without its secret, and never prints it', async () => {
    c = await makeCluster();
    const env = { ...c.env };
    delete env.TANDEM_SECRET;
    const r = tandem(['run', '--config', c.config, '--node', 'east'], env);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/TANDEM_SECRET/);
  });

  it('status shows each node, and one that does not answer as unreachable', async () => {
    c = await makeCluster();
    const east = c.proc('east');
    east.start();
    await east.ready();
    const r = tandem(['status', '--config', c.config], c.env);
    expect(r.code).toBe(1); // west is not running
    expect(r.out).toMatch(/shop\s+east\s+primary\s+1\s+running/);
    expect(r.out).toMatch(/west\s+\?\s+\?\s+UNREACHABLE/);
    const j = tandem(['status', '--config', c.config, '--json'], c.env);
    const parsed = JSON.parse(j.out) as { nodes: { node: string; reachable: boolean }[] };
    expect(parsed.nodes.find((n) => n.node === 'west')!.reachable).toBe(false);
    expect(parsed.nodes.find((n) => n.node === 'east')!.reachable).toBe(true);

    // A second process for the same node is refused: it would share the journal.
    const twice = tandem(['run', '--config', c.config, '--node', 'east'], c.env);
    expect(twice.code).toBe(1);
    expect(twice.err).toMatch(/NODE_LOCKED.*in use by another tandem process \(pid \d+\)/);
    expect(await east.kill('SIGTERM')).toBe(0);
  }, 60_000);

  it('SIGTERM does not wait out the drain timeout for a backup whose link is down', async () => {
    c = await makeCluster();
    const db = new Database(c.db('east'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)');
    // A drain of ten minutes: the test's own timeout ends it first if the stop waits for west.
    const args = ['run', '--config', c.config, '--node', 'east', '--drain-timeout', '600000'];
    const east = spawn(process.execPath, [CLI, ...args], { env: c.env, stdio: 'ignore' });
    child = east;
    const exited = once(east, 'exit');
    const admin = `http://127.0.0.1:${c.ports.east!.admin}/status`;
    const captured = async () => {
      const res = await fetch(admin).catch(() => null);
      const s = res?.ok ? ((await res.json()) as NodeStatus) : null;
      return s?.groups[0]?.positions.captured ?? 0;
    };
    await until('east answers', async () => (await fetch(admin).catch(() => null))?.ok === true, 20_000);
    db.prepare("INSERT INTO items (name) VALUES ('one')").run();
    db.close();
    // Journaled on east, never confirmed by west, which is not running.
    await until('the insert captured', async () => (await captured()) >= 1, 20_000);
    east.kill('SIGTERM');
    const [code] = await exited;
    expect(code).toBe(0);
  }, 30_000);
});
