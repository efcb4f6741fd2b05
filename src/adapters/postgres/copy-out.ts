/**
 * `COPY ... TO STDOUT` as a stream of the rows' text, read off pg's connection. PostgreSQL sends
 * one CopyData message per row; their 5-byte headers are stripped in place (`copyWithin` inside
 * each chunk the socket gives), so a chunk of rows costs one view, where pg-copy-streams makes
 * one per row and then concatenates them (about 280 ms of the primary's CPU per million-row seed).
 *
 * While the COPY runs this stream reads the socket instead of pg's parser, as pg-copy-streams
 * does: at CopyDone, or at any message that is neither data nor one PostgreSQL may send in
 * between (ErrorResponse first of all), it hands the connection back with the bytes from that
 * message on, and pg goes on as usual: an error reaches `handleError`, and the query ends at
 * ReadyForQuery. Backpressure: the socket is read only while the consumer wants more.
 */
import type { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';

const COPY_DATA = 0x64; // 'd'
const COPY_DONE = 0x63; // 'c'
/** Messages that may come before or between CopyData: CopyOutResponse, ParameterStatus, NoticeResponse, NotificationResponse. */
const SKIPPED = new Set([0x48, 0x53, 0x4e, 0x41]);

interface PgConnection {
  stream: EventEmitter & { read(): Buffer | null; pause(): void; resume(): void };
  query(text: string): void;
}

export class CopyOut extends Readable {
  /** Rows copied, from the CommandComplete that ends the COPY. */
  rowCount = 0;
  readonly text: string;
  #stream: PgConnection['stream'] | null = null;
  #pgOnData: ((b: Buffer) => void) | null = null;
  /** The start of a message header cut at the end of the last chunk. */
  #carry: Buffer | null = null;
  /** Bytes of the current message's body still to come, and whether they are row text. */
  #left = 0;
  #keep = false;
  #wanted = false;
  #attached = false;
  readonly #onReadable = () => this.#forward();

  constructor(text: string) {
    super();
    this.text = text;
  }

  /** pg's Submittable: called when the query's turn comes on the connection (an error returned fails the query). */
  submit(connection: PgConnection): Error | undefined {
    const s = connection.stream;
    const handlers = s.listeners('data') as ((b: Buffer) => void)[];
    if (handlers.length !== 1)
      return new Error(`pg's connection has ${handlers.length} data handlers, expected 1`);
    this.#stream = s;
    this.#pgOnData = handlers[0]!;
    s.removeListener('data', this.#pgOnData);
    s.pause();
    s.on('readable', this.#onReadable);
    this.#attached = true;
    connection.query(this.text);
    return undefined;
  }

  override _read(): void {
    this.#wanted = true;
    this.#forward();
  }

  #forward(): void {
    const s = this.#stream;
    if (!s) return;
    for (let chunk = this.#wanted && this.#attached ? s.read() : null; chunk; ) {
      this.#parse(chunk);
      chunk = this.#wanted && this.#attached ? s.read() : null;
    }
  }

  #parse(chunk: Buffer): void {
    const buf = this.#carry ? Buffer.concat([this.#carry, chunk]) : chunk;
    this.#carry = null;
    let out = 0;
    let i = 0;
    while (i < buf.length) {
      if (this.#left > 0) {
        const n = Math.min(this.#left, buf.length - i);
        if (this.#keep) {
          if (out !== i) buf.copyWithin(out, i, i + n);
          out += n;
        }
        i += n;
        this.#left -= n;
        continue;
      }
      if (buf.length - i < 5) {
        this.#carry = Buffer.from(buf.subarray(i));
        break;
      }
      const code = buf[i]!;
      if (code === COPY_DATA || SKIPPED.has(code)) {
        this.#keep = code === COPY_DATA;
        this.#left = buf.readUInt32BE(i + 1) - 4;
        i += 5;
        continue;
      }
      // CopyDone is ours (pg never saw the COPY start); anything else goes to pg from its start.
      if (out > 0) this.push(buf.subarray(0, out));
      this.#detach(buf.subarray(code === COPY_DONE ? i + 5 : i));
      if (code === COPY_DONE) this.push(null);
      return;
    }
    if (out > 0) this.#wanted = this.push(buf.subarray(0, out));
  }

  /** Hands the connection back to pg's parser with the bytes it has not seen. */
  #detach(rest: Buffer): void {
    const s = this.#stream!;
    this.#attached = false;
    s.removeListener('readable', this.#onReadable);
    s.on('data', this.#pgOnData!);
    this.#pgOnData!(rest);
    // pg's handler may pause the stream; it flows again once this turn is over.
    process.nextTick(() => s.resume());
  }

  handleCommandComplete(msg: { text?: string }): void {
    const m = /^COPY (\d+)/.exec(msg.text ?? '');
    if (m) this.rowCount = Number(m[1]);
  }

  handleReadyForQuery(): void {}

  handleError(err: Error): void {
    this.destroy(err);
  }
}

export function copyOut(text: string): CopyOut {
  return new CopyOut(text);
}
