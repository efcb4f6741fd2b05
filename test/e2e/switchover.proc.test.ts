/**
 * `tandem switchover` as a user runs it, against real `tandem run` processes (dist/): the
 * timeline, reroute hooks (a command and a webhook), roles kept across a restart, a switch back,
 * and the errors of a switchover that cannot start.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI } from '../../src/demo/procs.js';
import { makeCluster, sleep, type TestCluster, until } from '../helpers/cluster.js';

function tandem(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b;
    });
    child.stderr.on('data', (b: Buffer) => {
      err += b;
    });
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

describe('tandem switchover (processes)', () => {
  let c: TestCluster | null = null;
  let server: http.Server | null = null;
  afterEach(async () => {
    c?.cleanup();
    c = null;
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = null;
  });

  it('switches with a timeline and hooks, keeps roles across a restart, switches back', async () => {
    const posts: Record<string, unknown>[] = [];
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (b: Buffer) => {
        body += b;
      });
      req.on('end', () => {
        posts.push(JSON.parse(body) as Record<string, unknown>);
        res.end('ok');
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    c = await makeCluster({
      groupExtra: [
        '    reroute:',
        '      command: echo "$TANDEM_GROUP $TANDEM_PRIMARY $TANDEM_PREVIOUS $TANDEM_EPOCH $TANDEM_ENDPOINT" >> hooks.txt',
        `      webhook: http://127.0.0.1:${port}/moved`,
      ].join('\n'),
    });
    const db = new Database(c.db('east'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)');
    db.close();
    const east = c.proc('east');
    const west = c.proc('west');
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);
    await until('streaming', async () => (await east.status())?.groups[0]?.links[0]?.state === 'streaming');
    // A writer that follows the primary.
    const dbs = { east: new Database(c.db('east')), west: new Database(c.db('west')) };
    for (const d of Object.values(dbs)) d.pragma('busy_timeout = 2000');
    let at: 'east' | 'west' = 'east';
    let stop = false;
    let acked = 0;
    const writing = (async () => {
      while (!stop) {
        try {
          dbs[at].prepare('INSERT INTO t (v) VALUES (?)').run(`r${acked}`);
          acked++;
        } catch (err) {
          if (!/FENCED/.test((err as Error).message)) throw err;
          at = at === 'east' ? 'west' : 'east';
        }
        await sleep(2);
      }
    })();
    await until('writes', () => acked > 100);

    const r = await tandem(['switchover', 'shop', '--config', c.config, '--verify'], c.env);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^switchover of group shop: east -> west \(epoch 1 -> 2\)/);
    for (const step of ['prepare', 'fence', 'drain', 'verify', 'sequences', 'promote', 'reverse', 'reroute'])
      expect(r.out).toMatch(new RegExp(`^  ${step} +\\d+ ms  `, 'm'));
    expect(r.out).toMatch(/writes unavailable: \d+ ms/);
    expect(r.out).toMatch(/command ok.*webhook ok \(HTTP 200\)/);
    expect(readFileSync(path.join(c.dir, 'hooks.txt'), 'utf8')).toBe(
      `shop west east 2 sqlite:${c.db('west')}\n`,
    );
    expect(posts).toEqual([
      expect.objectContaining({
        group: 'shop',
        primary: 'west',
        previous: 'east',
        epoch: 2,
        reason: 'switchover',
      }),
    ]);

    // Roles survive a restart of both nodes.
    await until('writer at west', () => at === 'west');
    await Promise.all([east.kill('SIGTERM'), west.kill('SIGTERM')]);
    east.start();
    west.start();
    await Promise.all([east.ready(), west.ready()]);
    expect((await west.status())?.groups[0]).toMatchObject({ role: 'primary', epoch: 2 });
    expect((await east.status())?.groups[0]).toMatchObject({ role: 'backup', epoch: 2, primary: 'west' });
    await until(
      'streaming again',
      async () => (await west.status())?.groups[0]?.links[0]?.state === 'streaming',
    );
    const status = await tandem(['status', '--config', c.config], c.env);
    expect(status.out).toMatch(/shop\s+west\s+primary\s+2/);

    const back = await tandem(['switchover', 'shop', '--config', c.config, '--to', 'east'], c.env);
    expect(back.code).toBe(0);
    expect(back.out).toMatch(/west -> east \(epoch 2 -> 3\)/);
    await until('writer back at east', () => at === 'east');
    stop = true;
    await writing;
    for (const d of Object.values(dbs)) d.close();

    // Errors: unknown group and node (usage, exit 2); a backup that is down (exit 1, nothing done).
    const nope = await tandem(['switchover', 'nope', '--config', c.config], c.env);
    expect(nope.code).toBe(2);
    expect(nope.err).toMatch(/GROUP_UNKNOWN.*"nope"/);
    const ghost = await tandem(['switchover', 'shop', '--config', c.config, '--to', 'north'], c.env);
    expect(ghost.code).toBe(2);
    expect(ghost.err).toMatch(/--to north: not a node of group shop/);
    await west.kill('SIGKILL');
    await until('link down', async () => (await east.status())?.groups[0]?.links[0]?.state !== 'streaming');
    const down = await tandem(['switchover', 'shop', '--config', c.config], c.env);
    expect(down.code).toBe(1);
    expect(down.err).toMatch(/SWITCH_FAILED.*the link to west is (down|connecting).*Nothing was changed/);
    expect((await east.status())?.groups[0]).toMatchObject({ role: 'primary', epoch: 3, fenced: false });
  }, 90_000);
});
