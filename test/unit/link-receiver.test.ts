/**
 * The backup's end of the link (src/link/receiver.ts) on its own, against a hand-driven primary.
 *
 * Cutting its journal back (docs/link.md, "Sending ahead of the source's fsync"): the
 * records it holds beyond what the restarted primary confirmed are compared with what the
 * primary sends again, and at the first that differs the journal is cut there. Until the cut is
 * done those records are unconfirmed: apply, limited by the receiver's `sourceDurable`, must
 * not take them, not even if their own write completes while the cut waits for it (the cut
 * first drains the journal's pending writes). Found by the link simulation (2026-12-06, seed 13
 * with DURABLE delayed): the receiver marked them confirmed before the truncation ran, and apply
 * took the very records being cut, then the primary's versions of the same transactions.
 *
 * Its ACKs: one per fsync in sync mode, where a source commit waits for each; coalesced in async
 * mode. And its refusal: once per connection, at the first message that fails.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { afterEach, expect, it } from 'vitest';
import type { Apply } from '../../src/adapters/types.js';
import { loadConfig } from '../../src/config/index.js';
import { encodeRecord } from '../../src/core/record.js';
import { type Disk, type DiskFile, nodeDisk } from '../../src/journal/disk.js';
import { Journal } from '../../src/journal/index.js';
import { Channel } from '../../src/link/channel.js';
import { Compression } from '../../src/link/compression.js';
import { frameRecords } from '../../src/link/framing.js';
import { type Message, MsgType } from '../../src/link/messages.js';
import { LinkReceiver } from '../../src/link/receiver.js';
import type { Connection } from '../../src/link/transport.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { eastHello, sleep, until } from '../helpers/cluster.js';

const cleanup: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** A record of the primary east at epoch 1; `variant` tells two captures of a position apart. */
function rec(position: number, variant = 0): Buffer {
  return encodeRecord({
    position,
    epoch: 1,
    origin: 'east',
    hlc: BigInt(position),
    source: `${position}.${variant}`,
    txCount: 1,
    changes: [
      { op: 'insert', table: 't', columns: ['id', 'v'], before: null, after: [BigInt(position), variant] },
    ],
  });
}

/** The node's disk, except that writes to the journal's segments wait while `hold` is set. */
function holdingDisk(): { disk: Disk; hold(): void; release(): void } {
  let gate: Promise<void> | null = null;
  let open: (() => void) | null = null;
  const wrap = (f: DiskFile): DiskFile =>
    new Proxy(f, {
      get(target, prop, receiver) {
        if (prop !== 'writev') return Reflect.get(target, prop, receiver);
        return async (buffers: Buffer[], position: number) => {
          if (gate) await gate;
          return target.writev(buffers, position);
        };
      },
    });
  const disk = new Proxy(nodeDisk, {
    get(target, prop, receiver) {
      if (prop !== 'open') return Reflect.get(target, prop, receiver);
      return async (path: string, mode: string) => {
        const f = await target.open(path, mode as never);
        return path.endsWith('.seg') ? wrap(f) : f;
      };
    },
  });
  return {
    disk,
    hold: () => {
      gate = new Promise((r) => {
        open = r;
      });
    },
    release: () => {
      gate = null;
      open?.();
    },
  };
}

/** Two ends of a loopback TCP connection, as channels. */
async function channelPair(): Promise<{ backup: Channel; primary: Channel; inbox: Message[] }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const socket = await accepted;
  const conn = (s: net.Socket, peer: string): Connection => ({ stream: s, raw: s, peer });
  const inbox: Message[] = [];
  const backup = new Channel(conn(socket, 'east'), { onClose: () => {} });
  const primary = new Channel(conn(client, 'west'), { onClose: () => {}, onMessage: (m) => inbox.push(m) });
  cleanup.push(() => {
    backup.close(null);
    primary.close(null);
    server.close();
  });
  return { backup, primary, inbox };
}

it('records being cut stay unconfirmed until the cut is done, even if their write completes meanwhile', async () => {
  const d = holdingDisk();
  const journal = await tempJournal(d.disk);
  // Applied up to 5; 6-10 were sent ahead by east before it crashed, and their write here is
  // still in flight when east, restarted with other records at 7-10, connects again.
  for (let p = 1; p <= 5; p++) await journal.append(rec(p));
  d.hold();
  for (let p = 6; p <= 10; p++) void journal.append(rec(p)).catch(() => {});

  const logged: string[] = [];
  const { receiver, primary, inbox } = await attached({
    journal,
    applied: 5,
    sourceDurable: 12,
    log: pino({ level: 'info' }, { write: (line: string) => void logged.push(line) }),
  });
  const welcome = inbox.find((m) => m.type === MsgType.Welcome) as { nextPosition: number };
  expect(welcome.nextPosition).toBe(6);
  expect(receiver.sourceDurable).toBe(5);

  // What apply would be allowed the moment this journal holds the old 6-10 durably.
  const limits: number[] = [];
  journal.onDurable((p) => {
    if (p >= 10 && limits.length === 0) limits.push(receiver.sourceDurable);
  });
  // east sends 6 (the same record) and its own 7-12.
  const again = [rec(6), ...[7, 8, 9, 10, 11, 12].map((p) => rec(p, 1))];
  const raw = frameRecords(again);
  await primary.send({
    type: MsgType.Batch,
    first: 6,
    count: again.length,
    sourceDurable: 12,
    compression: Compression.None,
    rawLength: raw.length,
    data: raw,
  });
  // The cut waits for the held write; then it completes.
  await until('the cut started', () => logged.some((l) => l.includes('journal cut back')));
  await sleep(20);
  d.release();
  await until('the cut and the new records', () => journal.durablePosition === 12);
  expect(limits).toHaveLength(1);
  expect(limits[0]).toBeLessThanOrEqual(6);
  for (let p = 6; p <= 12; p++) {
    expect(journal.read(p, { maxBytes: 1, maxRecords: 1 })[0]!.equals(again[p - 6]!)).toBe(true);
  }
  await until('apply may take them now', () => receiver.sourceDurable === 12);
});

/** A journal in a fresh folder (fsync off), on `disk`. */
async function tempJournal(disk?: Disk): Promise<Journal> {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-receiver-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const journal = await Journal.open({ dir, fsync: false, disk });
  cleanup.push(() => journal.close().catch(() => {}));
  return journal;
}

/**
 * west's receiver of group "shop" (`mode`, async by default) on `journal`, its database applied
 * up to `applied`, attached to a hand-driven east at epoch 1 whose HELLO says its journal is
 * durable up to `sourceDurable`; resolves once WELCOME has arrived.
 */
async function attached(o: {
  mode?: 'async' | 'sync';
  journal: Journal;
  applied: number;
  sourceDurable: number;
  log: Logger;
}) {
  const cfg = await writeClusterConfig({
    cluster: 'test',
    group: 'shop',
    mode: o.mode,
    endpoints: { east: 'sqlite:./e.db', west: 'sqlite:./w.db' },
    prefix: 'tandem-test-',
  });
  cleanup.push(() => rmSync(cfg.dir, { recursive: true, force: true }));
  const target = { appliedPosition: o.applied, appliedHlc: 0n, seeded: true, seedState: null, seedLanes: 1 };
  const receiver = new LinkReceiver({
    group: loadConfig(cfg.file).groups.shop!,
    cluster: 'test',
    node: 'west',
    journal: o.journal,
    target: target as unknown as Apply,
    role: () => ({ epoch: 1, primary: 'east' }),
    adopt: () => {},
    control: async () => ({ body: {} }),
    log: o.log,
  });
  cleanup.push(() => receiver.close());
  const { backup, primary, inbox } = await channelPair();
  receiver.attach(backup, eastHello({ durablePosition: o.sourceDurable }));
  await until('WELCOME', () => inbox.some((m) => m.type === MsgType.Welcome));
  return { receiver, primary, inbox };
}

/** A receiver in `mode` on an empty journal: the ACKs it sent, and a way to send it one record. */
async function receiverIn(mode: 'async' | 'sync') {
  const journal = await tempJournal();
  const { primary, inbox } = await attached({
    mode,
    journal,
    applied: 0,
    sourceDurable: 0,
    log: pino({ level: 'silent' }),
  });
  const acks = () => inbox.filter((m) => m.type === MsgType.Ack) as { durable: number }[];
  /** Sends record `p` alone in a batch. */
  const send = (p: number) => {
    const raw = frameRecords([rec(p)]);
    return primary.send({
      type: MsgType.Batch,
      first: p,
      count: 1,
      sourceDurable: p,
      compression: Compression.None,
      rawLength: raw.length,
      data: raw,
    });
  };
  return { acks, send };
}

it('acknowledges every fsync at once in sync mode', async () => {
  const { acks, send } = await receiverIn('sync');
  for (let p = 1; p <= 20; p++) {
    await send(p);
    await until(`ACK of ${p}`, () => acks().some((a) => a.durable === p));
  }
  expect(acks().map((a) => a.durable)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
});

it('coalesces its ACKs in async mode, the last one carrying everything', async () => {
  const { acks, send } = await receiverIn('async');
  const started = performance.now();
  for (let p = 1; p <= 40; p++) {
    await send(p);
    await sleep(1);
  }
  const elapsed = performance.now() - started;
  await until('the ACK of everything', () => acks().some((a) => a.durable === 40));
  // At most one per 5 ms (and the last): one per batch would be 40.
  expect(acks().length).toBeLessThanOrEqual(Math.ceil(elapsed / 5) + 2);
  expect(acks().length).toBeLessThan(40);
});

it('refuses a connection once, at its first failing message, and drops what was queued behind it', async () => {
  const logged: string[] = [];
  const { primary, inbox } = await attached({
    journal: await tempJournal(),
    applied: 0,
    sourceDurable: 0,
    log: pino({ level: 'info' }, { write: (line: string) => void logged.push(line) }),
  });
  // Chunks of a seed this backup never began: each one alone would fail.
  for (let chunk = 0; chunk < 20; chunk++) {
    void primary.send({
      type: MsgType.SeedRows,
      table: 't',
      chunk,
      final: true,
      format: 0,
      rows: 0,
      columns: ['id'],
      compression: Compression.None,
      rawLength: 0,
      data: Buffer.alloc(0),
    });
  }
  await until('REFUSE', () => inbox.some((m) => m.type === MsgType.Refuse));
  await sleep(200); // the connection closes 50 ms after the REFUSE
  expect(inbox.filter((m) => m.type === MsgType.Refuse)).toHaveLength(1);
  expect(logged.filter((l) => l.includes('link from source failed'))).toHaveLength(1);
  expect(logged.join('')).toContain('SEED_ROWS outside a seed');
});
