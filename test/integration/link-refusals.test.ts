/**
 * A backup refuses peers that authenticate but break the rules (older epoch, identity that does
 * not match the HELLO, wrong protocol version, wrong cluster, a batch that does not continue
 * its journal, garbage frames), and keeps serving the real primary meanwhile.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { encodeRecord } from '../../src/core/record.js';
import { Channel } from '../../src/link/channel.js';
import { frameRecords } from '../../src/link/framing.js';
import { type Message, MsgType } from '../../src/link/messages.js';
import { connectSecure, type SecureContext } from '../../src/link/transport.js';
import {
  dump,
  eastConfigVia,
  eastHello,
  makeCluster,
  Nodes,
  type TestCluster,
  until,
} from '../helpers/cluster.js';
import { FaultProxy } from '../helpers/fault-proxy.js';

describe('link refusals', () => {
  let c: TestCluster | null = null;
  const nodes = new Nodes();
  afterEach(async () => {
    await nodes.stopAll(500);
    c?.cleanup();
    c = null;
  });

  /** An authenticated connection to west as `as`. */
  function connectAs(as: string) {
    const config = loadConfig(c!.config);
    const ctx: SecureContext = {
      security: config.security,
      cluster: config.cluster,
      node: as,
      nodes: new Set(Object.keys(config.nodes)),
    };
    return connectSecure(config.nodes.west!.listen, 'west', ctx);
  }

  /** Opens an authenticated connection to west as `as`, sends `first`, returns the answer. */
  async function attempt(
    as: string,
    first: (ch: Channel) => void,
  ): Promise<{ reply: Message | null; replies: Message[]; closed: string | null }> {
    const conn = await connectAs(as);
    return new Promise((resolve) => {
      const replies: Message[] = [];
      const ch = new Channel(conn, {
        onMessage: (m) => {
          replies.push(m);
        },
        onClose: (reason) => resolve({ reply: replies[0] ?? null, replies, closed: reason }),
      });
      first(ch);
      setTimeout(() => ch.close('test timeout'), 8000);
    });
  }

  it('refuses rule breakers with a reason and keeps streaming from the primary', async () => {
    c = await makeCluster();
    process.env.TANDEM_SECRET = c.secret;
    const db = new Database(c.db('east'));
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)');
    const east = await nodes.start(c.config, 'east');
    await nodes.start(c.config, 'west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    let n = 0;
    const writer = setInterval(() => db.prepare('INSERT INTO t (v) VALUES (?)').run(n++), 5);

    const cases: [string, string, (ch: Channel) => void, RegExp][] = [
      ['older epoch', 'east', (ch) => void ch.send(eastHello({ epoch: 0 })), /LINK_EPOCH/],
      ['identity mismatch', 'west', (ch) => void ch.send(eastHello({ node: 'east' })), /LINK_AUTH/],
      ['not the primary', 'west', (ch) => void ch.send(eastHello({ node: 'west' })), /not the primary/],
      ['protocol version', 'east', (ch) => void ch.send(eastHello({ version: 99 })), /protocol version 99/],
      ['cluster', 'east', (ch) => void ch.send(eastHello({ cluster: 'other' })), /cluster "other"/],
      [
        'unknown group',
        'east',
        (ch) => void ch.send(eastHello({ group: 'nope' })),
        /GROUP_UNKNOWN|not a backup in group/,
      ],
    ];
    for (const [what, as, first, expected] of cases) {
      const r = await attempt(as, first);
      expect(r.reply?.type, what).toBe(MsgType.Refuse);
      const refusal = r.reply as { code: string; message: string };
      expect(`${refusal.code} ${refusal.message}`, what).toMatch(expected);
    }

    // Garbage frame types, and a first message that is not HELLO: closed without an answer.
    const garbage = await attempt('east', (ch) => {
      ch.conn.stream.write(Buffer.from([0, 0, 0, 3, 0xee, 1, 2]));
    });
    expect(garbage.reply).toBeNull();
    expect(garbage.closed).toMatch(/closed|protocol/);

    expect(east.status().groups[0]!.links[0]!.state).toBe('streaming');
    clearInterval(writer);
    // Capture what the writer committed last (capture polls), then wait for the backup.
    await east.sources.get('shop')!.drain(5000);
    await until('caught up', () => {
      const g = east.status().groups[0]!;
      return g.positions.captured > 0 && g.links[0]!.applied === g.positions.captured;
    });
    db.close();
    expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
  }, 60_000);

  it('stops at once while a peer holds a connection open without a word', async () => {
    c = await makeCluster();
    process.env.TANDEM_SECRET = c.secret;
    const west = await nodes.start(c.config, 'west');
    const conn = await connectAs('east');
    const closed = new Promise((r) => conn.stream.once('close', r));
    const t0 = performance.now();
    await nodes.stop(west, 0);
    // The server's close used to wait for the connection to end: here, until west gave up
    // waiting for a HELLO (5 s); a request in flight could hold it longer.
    expect(performance.now() - t0).toBeLessThan(3000);
    await closed;
  }, 30_000);

  it('closes a link whose batch does not continue the journal (no gap, no duplicate)', async () => {
    c = await makeCluster();
    process.env.TANDEM_SECRET = c.secret;
    const west = await nodes.start(c.config, 'west');
    // West was never seeded: pose as east, skip the seed, and send a batch starting at 5.
    const r = await attempt('east', (ch) => {
      void ch.send(eastHello({}));
      const rec = encodeRecord({
        position: 5,
        epoch: 1,
        origin: 'east',
        hlc: 1n,
        source: 'x',
        txCount: 1,
        changes: [],
      });
      const raw = frameRecords([rec]);
      void ch.send({
        type: MsgType.Batch,
        first: 5,
        count: 1,
        sourceDurable: 5,
        compression: 0,
        rawLength: raw.length,
        data: raw,
      });
    });
    expect(r.reply?.type).toBe(MsgType.Welcome);
    const refusal = r.replies[1] as { type: MsgType; message: string };
    expect(refusal.type).toBe(MsgType.Refuse);
    expect(refusal.message).toMatch(/batch starts at 5, journal needs 1/);
    expect(west.status().groups[0]!.positions.captured).toBe(0);
  }, 30_000);

  it('asks a backup whose apply failed again at a slowing pace, and streams once it is fixed', async () => {
    c = await makeCluster();
    process.env.TANDEM_SECRET = c.secret;
    const proxy = await FaultProxy.start({ host: '127.0.0.1', port: c.ports.west!.listen });
    try {
      // East dials west through the proxy, which counts the connections.
      const eastConfig = eastConfigVia(c, proxy.port);
      const db = new Database(c.db('east'));
      db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)');
      const east = await nodes.start(eastConfig, 'east');
      await nodes.start(c.config, 'west');
      const link = () => east.status().groups[0]!.links[0]!;
      await until('streaming', () => link().state === 'streaming');
      // Something on the backup makes every apply of the next row fail.
      const west = new Database(c.db('west'));
      west.exec("CREATE TRIGGER boom BEFORE INSERT ON t BEGIN SELECT RAISE(ABORT, 'boom'); END");
      db.prepare('INSERT INTO t (v) VALUES (1)').run();
      await until('refused', () => /APPLY_FAILED/.test(link().lastError ?? ''));
      const before = proxy.accepted;
      await sleep(3000);
      // Every 100 ms that would be 30; 100, 200, 400, 800, 1600 ms apart, at most 6.
      expect(proxy.accepted - before).toBeLessThanOrEqual(8);
      west.exec('DROP TRIGGER boom');
      west.close();
      await until(
        'applied',
        () => link().state === 'streaming' && link().applied === east.status().groups[0]!.positions.captured,
        40_000,
      );
      db.close();
      expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
    } finally {
      await proxy.close();
    }
  }, 60_000);
});
