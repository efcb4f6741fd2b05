/**
 * A framed, heartbeated message channel over an authenticated connection. Used by both ends
 * of a link. Any malformed frame, oversized length or silence longer than `deadMs` closes the
 * channel with a reason; the owner decides whether to reconnect.
 */

import { monoNow } from '../core/mono.js';
import { decodeMessage, encodeMessage, FrameReader, type Message, MsgType, type Refuse } from './messages.js';
import type { Connection } from './transport.js';

export interface ChannelOptions {
  heartbeatMs?: number;
  deadMs?: number;
  onMessage?: (m: Message) => void;
  onClose: (reason: string | null) => void;
}

export class Channel {
  readonly conn: Connection;
  readonly #o: ChannelOptions;
  readonly #reader: FrameReader;
  #closed = false;
  #lastRx = monoNow();
  #lastTx = monoNow();
  #timer: NodeJS.Timeout;
  #onMessage: (m: Message) => void;
  #corked = false;
  /** Round trip of the last heartbeat, in ms. */
  rttMs = 0;
  /** When (monoNow) the latest PING the peer answered was sent: the peer heard this side then. */
  answeredPingAt = 0;

  constructor(conn: Connection, o: ChannelOptions) {
    this.conn = conn;
    this.#o = o;
    this.#onMessage = o.onMessage ?? (() => {});
    this.#reader = new FrameReader(
      (frame) => this.#frame(frame),
      (err) => this.close(`protocol error: ${err.message}`),
    );
    conn.stream.on('data', (chunk: Buffer) => {
      this.#lastRx = monoNow();
      this.#reader.push(chunk);
    });
    conn.stream.on('error', (err) => this.close(`socket error: ${err.message}`));
    conn.stream.on('close', () => this.close('connection closed by peer'));
    const hb = o.heartbeatMs ?? 1000;
    const dead = o.deadMs ?? 5000;
    this.#timer = setInterval(
      () => {
        const now = monoNow();
        if (now - this.#lastRx > dead) this.close(`peer silent for ${Math.round(now - this.#lastRx)} ms`);
        else if (now - this.#lastTx >= hb) this.send({ type: MsgType.Ping, time: BigInt(Math.floor(now)) });
      },
      Math.min(hb, 250),
    );
    this.#timer.unref();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes on the wire (after TLS) in each direction. */
  get bytesOut(): number {
    return this.conn.raw.bytesWritten;
  }
  get bytesIn(): number {
    return this.conn.raw.bytesRead;
  }

  #frame(frame: Buffer): void {
    if (this.#closed) return;
    let m: Message;
    try {
      m = decodeMessage(frame);
    } catch (err) {
      this.close(`protocol error: ${(err as Error).message}`);
      return;
    }
    if (m.type === MsgType.Ping) {
      this.send({ type: MsgType.Pong, time: m.time });
      return;
    }
    if (m.type === MsgType.Pong) {
      this.rttMs = Math.round(monoNow() - Number(m.time));
      this.answeredPingAt = Math.max(this.answeredPingAt, Number(m.time));
      return;
    }
    this.#onMessage(m);
  }

  /** When (monoNow) anything last arrived from the peer. */
  get lastReceivedAt(): number {
    return this.#lastRx;
  }

  /** Sends a PING now (heartbeats send one only after a second without traffic). */
  ping(): void {
    void this.send({ type: MsgType.Ping, time: BigInt(Math.floor(monoNow())) });
  }

  /** Hands the channel's messages to a new owner (the listener passes it to a group). */
  setHandler(fn: (m: Message) => void): void {
    this.#onMessage = fn;
  }

  setOnClose(fn: (reason: string | null) => void): void {
    this.#o.onClose = fn;
  }

  /**
   * Sends a message; resolves when the socket can take more (backpressure). Messages sent in one
   * tick leave in one socket write (and one TLS record run): each write costs a syscall and a
   * wake-up of the peer.
   */
  send(m: Message): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#lastTx = monoNow();
    const stream = this.conn.stream;
    if (!this.#corked) {
      this.#corked = true;
      stream.cork();
      process.nextTick(() => {
        this.#corked = false;
        stream.uncork();
      });
    }
    const ok = stream.write(encodeMessage(m));
    if (ok) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.conn.stream.off('drain', done);
        this.conn.stream.off('close', done);
        resolve();
      };
      this.conn.stream.on('drain', done);
      this.conn.stream.on('close', done);
    });
  }

  /**
   * Refuses the peer: nothing more it sends is handled (another HELLO must not slip in), the
   * REFUSE is sent, and the channel closes 50 ms later so that it arrives.
   */
  refuse(r: Omit<Refuse, 'type'>): void {
    this.setHandler(() => {});
    void this.send({ type: MsgType.Refuse, ...r }).then(() => setTimeout(() => this.close(null), 50));
  }

  pause(): void {
    this.conn.stream.pause();
  }
  resume(): void {
    this.conn.stream.resume();
  }

  /**
   * Closes the channel at once for its owner; what was already sent is still flushed to the
   * peer (the socket ends gracefully, and is destroyed after 1 s if the peer does not read).
   */
  close(reason: string | null): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    const destroy = () => {
      this.conn.stream.destroy();
      this.conn.raw.destroy();
    };
    this.conn.stream.pause();
    this.conn.stream.end(destroy);
    setTimeout(destroy, 1000).unref();
    this.#o.onClose(reason);
  }
}
