/**
 * `tandem switchover` as a user runs it, against real `tandem run` processes (dist/): the
 * timeline, reroute hooks (a command and a webhook), roles kept across a restart, a switch back,
 * and the errors of a switchover that cannot start.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { makeCluster, sleep, startOnTable, type TestCluster, tandem, until } from '../helpers/cluster.js';

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
    const { east, west } = await startOnTable(
      c!,
      'CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)',
    );
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
    expect(down.err).toMatch(
      /SWITCH_FAILED.*east: the link to west is (down|connecting).*Start west or fix the link/,
    );
    expect((await east.status())?.groups[0]).toMatchObject({ role: 'primary', epoch: 3, fenced: false });
  }, 90_000);

  /**
   * The backup dies at the promotion (failpoints): before recording its new role, or after it
   * took over but before answering. The old primary stays fenced, in doubt, until the backup
   * is back and says which; never two primaries that take writes.
   */
  for (const [point, promoted] of [
    ['promote-before-record', false],
    ['promote-before-answer', true],
  ] as const) {
    it(`SIGKILL of the backup at ${point}: the old primary stays fenced, then ${promoted ? 'follows the new primary' : 'serves on'}`, async () => {
      c = await makeCluster();
      const db = new Database(c.db('east'));
      db.pragma('journal_mode = WAL');
      db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
      db.prepare("INSERT INTO t VALUES (1, 'before')").run();
      db.close();
      const east = c.proc('east');
      const west = c.proc('west');
      east.start();
      west.start({ TANDEM_FAILPOINTS: point });
      await Promise.all([east.ready(), west.ready()]);
      await until('streaming', async () => (await east.status())?.groups[0]?.links[0]?.state === 'streaming');
      const r = await tandem(['switchover', 'shop', '--config', c.config], c.env);
      expect(r.code).toBe(1);
      expect(r.out).toMatch(/NOT DONE: \[SWITCH_UNKNOWN\] the promotion of west went unanswered/);
      expect(await west.exit).toBe(-1); // killed by its failpoint
      const doubt = (await east.status())?.groups[0];
      expect(doubt).toMatchObject({ role: 'in-doubt', fenced: true, epoch: 1 });
      const w = new Database(c.db('east'));
      expect(() => w.prepare("INSERT INTO t VALUES (2, 'during')").run()).toThrow(/FENCED/);
      w.close();
      const status = await tandem(['status', '--config', c.config], c.env);
      expect(status.out).toMatch(/shop\s+east\s+in-doubt/);

      west.start();
      await west.ready();
      const primary = promoted ? west : east;
      const backup = promoted ? east : west;
      await until(
        'roles settled',
        async () =>
          (await primary.status())?.groups[0]?.role === 'primary' &&
          (await backup.status())?.groups[0]?.role === 'backup',
        20_000,
      );
      expect((await primary.status())?.groups[0]).toMatchObject({ epoch: promoted ? 2 : 1, fenced: false });
      await until(
        'streaming',
        async () => (await primary.status())?.groups[0]?.links[0]?.state === 'streaming',
      );
      const p = new Database(c.db(primary.name));
      p.prepare("INSERT INTO t VALUES (3, 'after')").run();
      p.close();
      await until('the backup has it', () => {
        const b = new Database(c!.db(backup.name), { readonly: true });
        try {
          return b.prepare('SELECT v FROM t WHERE id = 3').get();
        } finally {
          b.close();
        }
      });
    }, 60_000);
  }

  it('SIGKILL of the old primary after it recorded the promotion as pending: restarted, it asks the backup and serves on', async () => {
    c = await makeCluster();
    const { east, west } = await startOnTable(
      c!,
      'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)',
      ['east', 'west'],
      { east: { TANDEM_FAILPOINTS: 'switchover-after-pending' } },
    );
    await until('streaming', async () => (await east.status())?.groups[0]?.links[0]?.state === 'streaming');
    const r = await tandem(['switchover', 'shop', '--config', c.config], c.env);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/NODE_UNREACHABLE.*the primary east stopped answering during the switchover/);
    expect(await east.exit).toBe(-1);
    expect(
      JSON.parse(readFileSync(path.join(c.dir, 'state', 'east', 'roles.json'), 'utf8')).shop,
    ).toMatchObject({
      epoch: 1,
      primary: 'east',
      pending: { to: 'west', epoch: 2 },
    });
    east.start();
    await east.ready();
    await until('east serves again', async () => {
      const g = (await east.status())?.groups[0];
      return g?.role === 'primary' && !g.fenced && g.links[0]?.state === 'streaming';
    });
    expect((await west.status())?.groups[0]).toMatchObject({ role: 'backup', epoch: 1 });
    const p = new Database(c.db('east'));
    p.prepare("INSERT INTO t VALUES (1, 'after')").run();
    p.close();
  }, 60_000);
});
