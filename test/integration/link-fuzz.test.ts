/**
 * Fuzzing a live backup's link listener (fast-check) while its primary streams to it: arbitrary
 * bytes before authentication, and after authentication arbitrary frames (short, zero and
 * oversized lengths, unknown types, garbage bodies). The node closes each such
 * connection, never crashes or grows without bound, and keeps applying from its primary.
 */
import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { encodeMessage, MAX_FRAME_BYTES } from '../../src/link/messages.js';
import { connectSecure, type SecureContext } from '../../src/link/transport.js';
import { dump, eastHello, localCluster, until } from '../helpers/cluster.js';
import { runs } from '../helpers/tiers.js';

/** Resolves when `sock` closes; rejects after `ms` (the node left a connection hanging). */
function closed(sock: net.Socket, ms: number): Promise<void> {
  sock.on('error', () => {});
  // Whatever the node answers (a TLS alert, a REFUSE) is read and dropped, so its close is seen.
  sock.resume();
  return new Promise((resolve, reject) => {
    if (sock.destroyed) return resolve();
    const t = setTimeout(() => reject(new Error(`connection still open after ${ms} ms`)), ms);
    sock.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/** A HELLO as east would send it to west. */
const hello = encodeMessage(eastHello());

/** Frames as the link reads them (u32 length, then the body), bent in every way that matters. */
const frames: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)),
  // A well-formed length around an arbitrary type and body.
  fc
    .tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 512 }))
    .map(([type, body]) => Buffer.concat([u32(body.length + 1), Buffer.from([type]), Buffer.from(body)])),
  // Zero, short and oversized lengths with a little body.
  fc
    .tuple(
      fc.oneof(
        fc.constant(0),
        fc.integer({ min: MAX_FRAME_BYTES + 1, max: 0xffffffff }),
        fc.integer({ min: 1, max: 64 }),
      ),
      fc.uint8Array({ maxLength: 32 }),
    )
    .map(([len, body]) => Buffer.concat([u32(len), Buffer.from(body)])),
  // A real HELLO with one byte of its body changed: magic, version, names, epoch, positions.
  fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([at, byte]) => {
    const b = Buffer.from(hello);
    b[4 + (at % (b.length - 4))] = byte;
    return b;
  }),
);

describe('fuzzing a live link listener', () => {
  const local = localCluster(500);

  it(
    'bytes before and frames after authentication: refused and closed, replication goes on',
    async () => {
      const c = await local.make();
      const { db, east, west } = await local.streaming('CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)');
      const link = () => east.status().groups[0]!.links[0]!;
      let n = 0;
      const writer = setInterval(() => db.prepare('INSERT INTO t (v) VALUES (?)').run(n++), 5);
      const config = loadConfig(c.config);
      const addr = config.nodes.west!.listen;
      const ctx: SecureContext = {
        security: config.security,
        cluster: config.cluster,
        // Authenticated as a node of the cluster that is not west's primary.
        node: 'west',
        nodes: new Set(Object.keys(config.nodes)),
      };
      const rss0 = process.memoryUsage().rss;
      try {
        await fc.assert(
          fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 4096 }), async (bytes) => {
            const sock = net.connect(addr.port, addr.host);
            const done = closed(sock, 6000);
            sock.end(Buffer.from(bytes));
            await done;
          }),
          { numRuns: runs(60, 3000) },
        );
        await fc.assert(
          fc.asyncProperty(fc.array(frames, { minLength: 1, maxLength: 4 }), async (list) => {
            const conn = await connectSecure(addr, 'west', ctx);
            conn.stream.on('error', () => {});
            // A REFUSE arrives inside TLS: read it, or the client never processes the close after it.
            conn.stream.resume();
            const done = closed(conn.raw, 6000);
            conn.stream.end(Buffer.concat(list));
            await done;
          }),
          {
            numRuns: runs(80, 4000),
            examples: [
              [[Buffer.from('0000001b01544e444d0404746573740473686f700465617374000000012e00', 'hex')]],
            ],
          },
        );
        // Authenticated as west's own primary: a stale or current epoch and any positions, then bent
        // frames. The node refuses or takes the connection over (the real primary reconnects), and
        // what it applies stays exactly what east committed.
        const asEast: SecureContext = { ...ctx, node: 'east' };
        await fc.assert(
          fc.asyncProperty(
            fc.integer({ min: 0, max: 1 }),
            fc.nat({ max: 1 << 20 }),
            fc.nat({ max: 1 << 20 }),
            fc.array(frames, { maxLength: 3 }),
            async (epoch, firstPosition, durablePosition, after) => {
              const conn = await connectSecure(addr, 'west', asEast);
              conn.stream.on('error', () => {});
              conn.stream.resume();
              const done = closed(conn.raw, 6000);
              const h = encodeMessage(eastHello({ epoch, firstPosition, durablePosition }));
              conn.stream.end(Buffer.concat([h, ...after]));
              await done;
            },
          ),
          { numRuns: runs(30, 1000) },
        );
        await until('streaming again', () => link().state === 'streaming', 15_000);
        // The node served its primary all along, and holds no memory for the refused peers.
        expect(west.status().groups[0]!.state).toBe('running');
        expect(process.memoryUsage().rss - rss0).toBeLessThan(256 << 20);
        clearInterval(writer);
        await east.sources.get('shop')!.drain(5000);
        await until('caught up', () => {
          const g = east.status().groups[0]!;
          return g.positions.captured > 0 && g.links[0]!.applied === g.positions.captured;
        });
        expect(dump(c.db('west'), ['t'])).toEqual(dump(c.db('east'), ['t']));
      } finally {
        clearInterval(writer);
        db.close();
      }
    },
    runs(120_000, 1_800_000),
  );
});
