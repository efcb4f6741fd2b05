/**
 * Two nodes in one process (no child processes): seeding while writes go on, streaming,
 * sync mode through the library API, status, metrics and the dashboard over the admin API.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { Journal } from '../../src/journal/index.js';
import { type NodeEnv, realEnv } from '../../src/node/env.js';
import { TandemSqliteWriter } from '../../src/sync-writer.js';
import { dump, localCluster, sleep, type TestCluster, until } from '../helpers/cluster.js';

describe('two nodes in one process', () => {
  const local = localCluster(1000);
  const { nodes, start } = local;
  let c: TestCluster;

  it('seeds a backup from a live source, then streams; the copy is exact', async () => {
    c = await local.make();
    const db = new Database(c.db('east'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER)');
    const ins = db.prepare('INSERT INTO t (v, n) VALUES (?, ?)');
    db.transaction(() => {
      for (let i = 0; i < 20000; i++) ins.run(`row ${i}`, i);
    })();
    const east = await start('east');
    let stop = false;
    const writes = (async () => {
      let i = 0;
      while (!stop) {
        db.transaction(() => {
          ins.run(`live ${i}`, i);
          db.prepare('UPDATE t SET n = n + 1 WHERE id = ?').run(1 + (i % 1000));
          i++;
        })();
        await sleep(1);
      }
    })();
    await start('west');
    await until('seeded and streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    await sleep(500);
    stop = true;
    await writes;
    await until('caught up', () => {
      const g = east.status().groups[0]!;
      return g.positions.applied === g.positions.captured && g.positions.captured > 0;
    });
    await sleep(200);
    await until('caught up again', () => {
      const g = east.status().groups[0]!;
      return g.positions.applied === g.positions.captured;
    });
    db.close();
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
  }, 60_000);

  it('a backup whose journal lost records it had applied (apply runs ahead of the fsync) realigns and goes on', async () => {
    c = await local.make();
    const pair = await local.streaming('CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)');
    const { db, east } = pair;
    let west = pair.west;
    const ins = db.prepare('INSERT INTO t (n) VALUES (?)');
    const caughtUp = () =>
      until('caught up', () => {
        const g = east.status().groups[0]!;
        return g.links[0]?.state === 'streaming' && g.positions.applied === g.positions.captured;
      });
    for (let i = 0; i < 60; i++) {
      ins.run(i);
      await sleep(4); // one record per transaction
    }
    await caughtUp();
    await local.nodes.stop(west, 0);
    // The backup's journal loses its last 20 records, as when its node dies after applying them
    // and before their fsync.
    const j = await Journal.open({ dir: path.join(c.dir, 'state', 'west', 'journal', 'shop') });
    const applied = j.lastPosition;
    await j.truncateAfter(applied - 20);
    await j.close();
    for (let i = 0; i < 30; i++) ins.run(100 + i);
    west = await start('west');
    await caughtUp();
    db.close();
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
    // It continued after what it had applied: the journal restarted there.
    expect(west.status().groups[0]!.positions.captured).toBeGreaterThan(applied);
  }, 60_000);

  it("a starting backup takes the primary's connection at once and answers its HELLO once its group runs", async () => {
    c = await local.make();
    const db = new Database(c.db('east'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)');
    db.prepare('INSERT INTO t (n) VALUES (1)').run();
    const east = await start('east');
    await until('east redials', () => east.status().groups[0]!.links[0]!.state === 'down');
    // West's group takes a second to start (its database is slow to open).
    let applyOpen = false;
    const slow: NodeEnv = {
      ...realEnv,
      createApply: async (...a) => {
        await sleep(1000);
        const apply = await realEnv.createApply(...a);
        applyOpen = true;
        return apply;
      },
    };
    const starting = start('west', slow);
    // Meanwhile east is connected, authenticated and waits for WELCOME.
    await until('east connected', () => east.status().groups[0]!.links[0]!.state === 'handshake');
    expect(applyOpen).toBe(false);
    await starting;
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    db.prepare('INSERT INTO t (n) VALUES (2)').run();
    db.close();
    await until('west has both rows', () => dump(c.db('west'), ['t']).t!.length === 2);
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
  }, 60_000);

  it('sync mode: the library commit resolves only once the backup journal holds it', async () => {
    c = await local.make({ mode: 'sync', groupExtra: '    sync: { timeout: 1500ms, degrade: false }' });
    new Database(c.db('east')).exec('CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)');
    const east = await start('east');
    const west = await start('west');
    const w = TandemSqliteWriter.open({ config: c.config, node: 'east', group: 'shop' });
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    for (let i = 0; i < 50; i++) {
      await w.transaction((db) => db.prepare('INSERT INTO acct (balance) VALUES (?)').run(i));
      // Acknowledged: the backup's journal holds it durably right now.
      expect(west.status().groups[0]!.positions.journalDurable).toBeGreaterThanOrEqual(w.lastCommit.position);
      expect(w.lastCommit.degraded).toBe(false);
    }
    // With the backup gone, a commit is not acknowledged: it times out with a clear error.
    await nodes.stop(west, 0);
    await expect(
      w.transaction((db) => db.prepare('INSERT INTO acct (balance) VALUES (-1)').run()),
    ).rejects.toThrow(/SYNC_TIMEOUT/);
    w.close();
  }, 60_000);

  it('serves status, metrics, health and the dashboard over the admin API', async () => {
    c = await local.make();
    new Database(c.db('east')).exec('CREATE TABLE t (id INTEGER PRIMARY KEY)');
    const east = await start('east');
    const west = await start('west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    const admin = `http://127.0.0.1:${c.ports.east!.admin}`;
    const status = (await (await fetch(`${admin}/status`)).json()) as {
      node: string;
      groups: { role: string }[];
    };
    expect(status.node).toBe('east');
    expect(status.groups[0]!.role).toBe('primary');
    const metrics = await (await fetch(`${admin}/metrics`)).text();
    expect(metrics).toMatch(/tandem_position\{group="shop",stage="captured"\}/);
    expect(metrics).toMatch(/tandem_lag_records\{group="shop",peer="west"\}/);
    expect(metrics).toMatch(/^tandem_link_up\{group="shop",peer="west"\} 1$/m);
    expect(metrics).toMatch(/^tandem_link_state\{group="shop",peer="west",state="streaming"\} 1$/m);
    expect(metrics).toMatch(/^tandem_link_state\{group="shop",peer="west",state="down"\} 0$/m);
    expect(metrics).toMatch(/tandem_wire_bytes_total\{group="shop",peer="west",direction="out"\} [1-9]/);
    expect(metrics).toMatch(/tandem_journal_bytes\{group="shop"\}/);
    expect(metrics).toMatch(/tandem_fenced\{group="shop",role="primary"\} 0/);
    const westMetrics = await (await fetch(`http://127.0.0.1:${c.ports.west!.admin}/metrics`)).text();
    expect(westMetrics).toMatch(/tandem_fenced\{group="shop",role="backup"\} 1/);
    expect(westMetrics).toMatch(/tandem_virtual_switch\{group="shop"\} 0/);
    expect(westMetrics).toMatch(/tandem_primary_heard_seconds\{group="shop"\} \d/);
    expect((await fetch(`${admin}/healthz`)).status).toBe(200);

    // The dashboard: both nodes' rows, whichever node serves it; its refresh is the body alone.
    const page = await fetch(`http://127.0.0.1:${c.ports.west!.admin}/`);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const html = await page.text();
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).toContain('served by node west');
    expect(html).toMatch(
      /<td>shop<\/td><td>east<\/td><td>primary<\/td>.*<td class="ok">running<\/td><td>west:streaming<\/td>/,
    );
    expect(html).toMatch(
      /<td>shop<\/td><td>west<\/td><td>backup<\/td>.*<td class="ok">running<\/td><td>east:connected<\/td>/,
    );
    expect(html).toContain(`href="http://127.0.0.1:${c.ports.east!.admin}/metrics"`);
    const body = await (await fetch(`${admin}/?part=body`)).text();
    expect(body).not.toContain('<html');
    expect(body).toMatch(/<td>shop<\/td><td>east<\/td><td>primary<\/td>/);
    // A node that does not answer is a row of its own, in red.
    await nodes.stop(west, 0);
    const without = await (await fetch(`${admin}/?part=body`)).text();
    expect(without).toMatch(
      /<td>\*<\/td><td>west<\/td><td class="warn">\?<\/td><td class="num">\?<\/td><td class="bad">UNREACHABLE<\/td><td>admin 127\.0\.0\.1:\d+: ECONNREFUSED<\/td>/,
    );
  }, 30_000);
});
