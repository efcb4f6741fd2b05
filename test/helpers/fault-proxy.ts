/**
 * A TCP fault proxy for tests: listens on a loopback port, forwards every connection to `target`,
 * and injects the faults a test sets, live, on the connections open now and later:
 *
 * - `delay(ms, jitterMs)`: each chunk is delivered `ms` (+/- jitter) after it arrived, in order;
 * - `slice(bytes, gapMs)`: chunks leave in pieces of at most `bytes`, `gapMs` apart;
 * - `throttle(bytesPerSecond)`: a bandwidth cap per direction of each connection;
 * - `drop(probability)`: each chunk is discarded with that probability (the byte stream breaks:
 *   framing, checksums and TLS must notice);
 * - `blackhole(direction)`: bytes in that direction vanish, connections stay open (silence);
 * - `refuse()`: new connections are reset at once;
 * - `reset()`: every open connection is reset (RST) now;
 * - `heal()`: no faults from now on (connections stay as they are).
 *
 * Directions: `up` is client to server, `down` server to client. Counters tell a test that a
 * fault took effect (connections accepted, bytes discarded).
 */
import net from 'node:net';

export type Direction = 'up' | 'down' | 'both';

interface Faults {
  delayMs: number;
  jitterMs: number;
  sliceBytes: number;
  sliceGapMs: number;
  bytesPerSecond: number;
  dropProbability: number;
  blackhole: { up: boolean; down: boolean };
  refuse: boolean;
}

const none = (): Faults => ({
  delayMs: 0,
  jitterMs: 0,
  sliceBytes: 0,
  sliceGapMs: 0,
  bytesPerSecond: 0,
  dropProbability: 0,
  blackhole: { up: false, down: false },
  refuse: false,
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One direction of one connection: chunks leave in arrival order, each after its faults. */
class Pipe {
  readonly #queue: { chunk: Buffer; at: number }[] = [];
  #queued = 0;
  #running = false;

  constructor(
    readonly from: net.Socket,
    readonly to: net.Socket,
    readonly dir: 'up' | 'down',
    readonly proxy: FaultProxy,
  ) {
    from.on('data', (chunk: Buffer) => this.#take(chunk));
  }

  #take(chunk: Buffer): void {
    const f = this.proxy.faults;
    if (f.blackhole[this.dir] || Math.random() < f.dropProbability) {
      this.proxy.discarded += chunk.length;
      return;
    }
    this.#queue.push({ chunk, at: Date.now() });
    this.#queued += chunk.length;
    if (this.#queued > 1 << 20) this.from.pause();
    if (!this.#running) void this.#run();
  }

  async #run(): Promise<void> {
    this.#running = true;
    while (this.#queue.length > 0 && !this.to.destroyed) {
      const { chunk, at } = this.#queue.shift()!;
      const f = this.proxy.faults;
      const jitter = f.jitterMs ? (Math.random() * 2 - 1) * f.jitterMs : 0;
      const due = at + Math.max(0, f.delayMs + jitter);
      if (due > Date.now()) await sleep(due - Date.now());
      const piece = f.sliceBytes > 0 ? f.sliceBytes : chunk.length;
      for (let i = 0; i < chunk.length && !this.to.destroyed; i += piece) {
        const part = chunk.subarray(i, i + piece);
        // A fault set while this chunk waited applies to it too.
        if (this.proxy.faults.blackhole[this.dir]) {
          this.proxy.discarded += part.length;
          continue;
        }
        if (!this.to.write(part)) await new Promise((r) => this.to.once('drain', r));
        const cur = this.proxy.faults;
        const paced = cur.bytesPerSecond > 0 ? (part.length * 1000) / cur.bytesPerSecond : 0;
        const wait = paced + (i + piece < chunk.length ? cur.sliceGapMs : 0);
        if (wait > 0) await sleep(wait);
      }
      this.#queued -= chunk.length;
      if (this.#queued <= 1 << 19) this.from.resume();
    }
    this.#running = false;
  }
}

export class FaultProxy {
  faults: Faults = none();
  /** Connections accepted (and forwarded or refused) since the start. */
  accepted = 0;
  /** Bytes discarded (drop, blackhole), both directions. */
  discarded = 0;
  readonly #server: net.Server;
  readonly #open = new Set<net.Socket>();

  private constructor(
    readonly port: number,
    server: net.Server,
  ) {
    this.#server = server;
  }

  /** A proxy on a free loopback port forwarding to `target` (host:port). */
  static async start(target: { host: string; port: number }): Promise<FaultProxy> {
    let proxy: FaultProxy | null = null;
    const server = net.createServer((client) => proxy!.#accept(client, target));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    proxy = new FaultProxy((server.address() as net.AddressInfo).port, server);
    return proxy;
  }

  #accept(client: net.Socket, target: { host: string; port: number }): void {
    this.accepted++;
    if (this.faults.refuse) {
      client.resetAndDestroy();
      return;
    }
    const server = net.connect(target.port, target.host);
    for (const s of [client, server]) {
      s.setNoDelay(true);
      this.#open.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        this.#open.delete(s);
        // One side gone: the other goes too, as a reset (a proxy that died would do no better).
        const other = s === client ? server : client;
        if (!other.destroyed) other.resetAndDestroy();
      });
    }
    new Pipe(client, server, 'up', this);
    new Pipe(server, client, 'down', this);
  }

  delay(ms: number, jitterMs = 0): void {
    this.faults.delayMs = ms;
    this.faults.jitterMs = jitterMs;
  }
  slice(bytes: number, gapMs = 0): void {
    this.faults.sliceBytes = bytes;
    this.faults.sliceGapMs = gapMs;
  }
  throttle(bytesPerSecond: number): void {
    this.faults.bytesPerSecond = bytesPerSecond;
  }
  drop(probability: number): void {
    this.faults.dropProbability = probability;
  }
  blackhole(direction: Direction = 'both'): void {
    this.faults.blackhole = { up: direction !== 'down', down: direction !== 'up' };
  }
  refuse(): void {
    this.faults.refuse = true;
  }
  /** Resets every open connection now. */
  reset(): void {
    for (const s of this.#open) s.resetAndDestroy();
  }
  heal(): void {
    this.faults = none();
  }

  async close(): Promise<void> {
    this.reset();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
