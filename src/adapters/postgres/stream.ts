/**
 * A logical replication stream: PostgreSQL's streaming replication protocol (CopyBoth on a
 * `replication=database` connection) carrying pgoutput. XLogData and keepalives come in,
 * standby status updates go out; pg does the connection, TLS and message framing.
 *
 * Invariants
 * - Data messages reach the consumer one at a time, in stream order. A handler that returns a
 *   promise holds the next ones until it settles; a handler that returns nothing is followed by
 *   the next message in the same turn (no promise or wake-up per message).
 * - Memory is bounded: while a handler waits and more than `HIGH_WATER` decoded messages are
 *   queued, the socket is not read (TCP holds the server back); reading resumes when the queue is
 *   empty. A large transaction therefore never sits in memory whole.
 * - `pending` counts messages received and not yet handled (the one being handled included): a
 *   keepalive's end of WAL is as good as confirmed only when it is 0.
 * - A status update reports one position as written, flushed and applied; nothing is reported
 *   before the server has started streaming.
 */
import pg from 'pg';
import { type PgMessage, PgoutputDecoder } from './pgoutput.js';

/** Decoded messages queued past which the socket stops being read while a handler waits. */
const HIGH_WATER = 1024;
/** Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 00:00 UTC). */
const PG_EPOCH_US = 946_684_800_000_000n;

export interface StreamHandlers {
  /** A data message; a returned promise holds the stream's next messages until it settles. */
  data(msg: PgMessage): Promise<void> | undefined;
  /** The server's keepalive: its end of WAL, and whether it asks for a status update now. */
  keepalive(walEnd: bigint, replyRequested: boolean): void;
}

/** pg's connection with the one method it has for CopyData that its types leave out. */
interface CopyConnection {
  stream: { pause(): void; resume(): void };
  sendCopyFromChunk(chunk: Buffer): void;
  on(event: 'copyData', listener: (msg: { chunk: Buffer }) => void): void;
  once(event: 'replicationStart', listener: () => void): void;
}

export class ReplicationStream {
  readonly #config: pg.ClientConfig;
  readonly #handlers: StreamHandlers;
  readonly #decoder = new PgoutputDecoder();
  #client: pg.Client | null = null;
  #connection: CopyConnection | null = null;
  #streaming = false;
  /** Stopped by its owner: whatever the connection does from now on is not an error. */
  #stopped = false;
  /** Stopped or failed: nothing more is handed over. */
  #ended = false;
  #queue: (PgMessage | undefined)[] = [];
  #head = 0;
  #busy = false;
  #paused = false;
  #failed: ((err: Error) => void) | null = null;

  constructor(config: pg.ClientConfig, handlers: StreamHandlers) {
    this.#config = config;
    this.#handlers = handlers;
  }

  /** Messages received and not yet handled, the one being handled included. */
  get pending(): number {
    return this.#queue.length - this.#head + (this.#busy ? 1 : 0);
  }

  /**
   * Connects and streams `slot` from `from` with pgoutput `options` (the text inside the
   * parentheses of START_REPLICATION). Settles when the stream ends: resolves when stopped,
   * rejects on anything else (a connection or protocol error, a handler's failure, the server
   * ending the stream).
   */
  async run(slot: string, from: string, options: string): Promise<void> {
    const client = new pg.Client({ ...this.#config, replication: 'database' } as pg.ClientConfig);
    this.#client = client;
    const failed = new Promise<never>((_, reject) => {
      this.#failed = reject;
    });
    failed.catch(() => {});
    client.on('error', (err) => this.#failed?.(err));
    // Whichever settles first decides; the other's rejection is expected and handled here.
    const settled = <T>(p: Promise<T>): Promise<T> => {
      p.catch(() => {});
      return Promise.race([p, failed]);
    };
    try {
      await settled(client.connect());
      const connection = client.connection as unknown as CopyConnection;
      this.#connection = connection;
      connection.once('replicationStart', () => {
        this.#streaming = true;
      });
      connection.on('copyData', ({ chunk }) => this.#received(chunk));
      await settled(client.query(`START_REPLICATION SLOT ${slot} LOGICAL ${from} (${options})`));
    } catch (err) {
      if (!this.#stopped) throw err;
    }
    if (!this.#stopped) throw new Error('the server ended the replication stream');
  }

  /** Tells the server everything before `lsn` is written, flushed and applied here. */
  status(lsn: bigint, replyRequested = false): void {
    if (!this.#streaming || this.#ended) return;
    const m = Buffer.allocUnsafe(34);
    m[0] = 0x72; // 'r'
    m.writeBigUInt64BE(lsn, 1);
    m.writeBigUInt64BE(lsn, 9);
    m.writeBigUInt64BE(lsn, 17);
    m.writeBigInt64BE(BigInt(Date.now()) * 1000n - PG_EPOCH_US, 25);
    m[33] = replyRequested ? 1 : 0;
    this.#connection!.sendCopyFromChunk(m);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#end();
  }

  async #end(): Promise<void> {
    this.#ended = true;
    this.#queue = [];
    this.#head = 0;
    await this.#client?.end().catch(() => {});
  }

  #received(chunk: Buffer): void {
    if (this.#ended) return;
    try {
      const kind = chunk[0];
      if (kind === 0x77) {
        // XLogData: 'w', start, end of WAL, send time (three u64), then the plugin's message.
        this.#queue.push(this.#decoder.decode(chunk.subarray(25)));
        if (!this.#busy) this.#drain();
        else if (!this.#paused && this.#queue.length - this.#head > HIGH_WATER) {
          this.#paused = true;
          this.#connection!.stream.pause();
        }
      } else if (kind === 0x6b) {
        // Keepalive: 'k', end of WAL, send time, reply requested.
        this.#handlers.keepalive(chunk.readBigUInt64BE(1), chunk[17] === 1);
      } else {
        throw new Error(`replication stream: unknown message type 0x${kind?.toString(16)}`);
      }
    } catch (err) {
      this.#fail(err as Error);
    }
  }

  /** Hands queued messages over in order until one makes it wait or the queue is empty. */
  #drain(): void {
    this.#busy = true;
    while (this.#head < this.#queue.length) {
      if (this.#ended) return;
      const msg = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined;
      let wait: Promise<void> | undefined;
      try {
        wait = this.#handlers.data(msg);
      } catch (err) {
        this.#fail(err as Error);
        return;
      }
      if (wait) {
        wait.then(
          () => this.#drain(),
          (err: Error) => this.#fail(err),
        );
        return;
      }
    }
    this.#queue = [];
    this.#head = 0;
    this.#busy = false;
    if (this.#paused) {
      this.#paused = false;
      this.#connection?.stream.resume();
    }
  }

  #fail(err: Error): void {
    if (this.#ended) return;
    this.#failed?.(err);
    void this.#end();
  }
}
