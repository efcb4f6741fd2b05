/**
 * Link protocol frames. Every frame is `u32 length | u8 type | body`, where length counts the
 * type byte and the body and may not exceed MAX_FRAME_BYTES: a longer claim is a protocol
 * violation and closes the connection before any allocation.
 *
 * The first frame on a connection is HELLO (source -> target), answered by WELCOME or REFUSE.
 * HELLO carries the protocol version; a target refuses versions it does not speak.
 * Batches carry journal frames (`u32 length | u32 crc32c | record`), the same bytes the journal
 * stores, so the target checks every record's checksum before appending it.
 * See docs/link.md.
 */
import { BufferReader, BufferWriter, DecodeError } from '../core/bytes.js';
import { readValue, type Value, writeValue } from '../core/record.js';

export const PROTOCOL_VERSION = 6;
export const MAGIC = 0x544e444d; // "TNDM"
export const MAX_FRAME_BYTES = 32 << 20;

export enum MsgType {
  Hello = 1,
  Welcome = 2,
  Refuse = 3,
  Batch = 4,
  Ack = 5,
  Ping = 6,
  Pong = 7,
  SeedBegin = 8,
  SeedRows = 9,
  SeedEnd = 10,
  SeedDone = 11,
  Control = 12,
  ControlReply = 13,
  Durable = 14,
  Unseed = 15,
  Unseeded = 16,
}

export interface Hello {
  type: MsgType.Hello;
  version: number;
  cluster: string;
  group: string;
  node: string;
  epoch: number;
  firstPosition: number;
  durablePosition: number;
}
export interface Welcome {
  type: MsgType.Welcome;
  node: string;
  epoch: number;
  /** The position the target's journal needs next: streaming resumes exactly here. */
  nextPosition: number;
  applied: number;
  seeded: boolean;
  /** JSON of the target's unfinished seed (SeedState), or '' when there is none. */
  seed: string;
  /** Seed chunks the target writes at once: the source keeps at most this many open. */
  seedLanes: number;
}
export interface Refuse {
  type: MsgType.Refuse;
  code: string;
  message: string;
  /** The refusing node's view of the group: its epoch and primary (0 and '' when it has none). */
  epoch: number;
  primary: string;
}
/** A request of the primary to a backup (switchover steps); JSON body. */
export interface Control {
  type: MsgType.Control;
  id: number;
  body: string;
}
/** The backup's answer to CONTROL `id`: a JSON body, or an error message. */
export interface ControlReply {
  type: MsgType.ControlReply;
  id: number;
  ok: boolean;
  body: string;
}
export interface Batch {
  type: MsgType.Batch;
  first: number;
  count: number;
  /**
   * The source journal's durable position when the batch was sent. Batches may run ahead of it
   * (records sent while the source's own fsync is in flight): the target applies nothing beyond
   * the durable position it last heard (docs/link.md, "Sending ahead of the source's fsync").
   */
  sourceDurable: number;
  /** 0: none, 1: deflate-raw. */
  compression: number;
  rawLength: number;
  data: Buffer;
}
/** The source journal's durable position moved past what the batches sent so far said. */
export interface Durable {
  type: MsgType.Durable;
  position: number;
}
export interface Ack {
  type: MsgType.Ack;
  durable: number;
  applied: number;
  appliedHlc: bigint;
}
export interface Ping {
  type: MsgType.Ping | MsgType.Pong;
  time: bigint;
}
export interface SeedBegin {
  type: MsgType.SeedBegin;
  position: number;
  epoch: number;
  /** Continues the target's unfinished seed (same plan) instead of starting over. */
  resume: boolean;
  /** JSON of the SeedPlan. */
  plan: string;
}
/** One part of one chunk of a seed. */
export interface SeedRows {
  type: MsgType.SeedRows;
  table: string;
  chunk: number;
  /** The chunk's last part: the target commits the chunk. */
  final: boolean;
  /** 0: journal values (encodeRows), 1: PostgreSQL COPY text. */
  format: number;
  rows: number;
  columns: string[];
  compression: number;
  rawLength: number;
  data: Buffer;
}
/**
 * SEED_END / SEED_DONE: the seed at `position` is complete / committed. UNSEED / UNSEEDED: a
 * seeded backup needs records the source released (`position`: the source journal's first) and
 * must give up its copy before a new seed; UNSEEDED says its database holds that durably.
 */
export interface SeedEnd {
  type: MsgType.SeedEnd | MsgType.SeedDone | MsgType.Unseed | MsgType.Unseeded;
  position: number;
}

export type Message =
  | Hello
  | Welcome
  | Refuse
  | Batch
  | Durable
  | Ack
  | Ping
  | SeedBegin
  | SeedRows
  | SeedEnd
  | Control
  | ControlReply;

export function encodeMessage(m: Message): Buffer {
  const w = new BufferWriter(64);
  w.u32(0).u8(m.type);
  switch (m.type) {
    case MsgType.Hello:
      w.u32(MAGIC).uv(m.version).str(m.cluster).str(m.group).str(m.node).u32(m.epoch);
      w.uv(m.firstPosition).uv(m.durablePosition);
      break;
    case MsgType.Welcome:
      w.str(m.node)
        .u32(m.epoch)
        .uv(m.nextPosition)
        .uv(m.applied)
        .u8(m.seeded ? 1 : 0)
        .str(m.seed)
        .uv(m.seedLanes);
      break;
    case MsgType.Refuse:
      w.str(m.code).str(m.message).u32(m.epoch).str(m.primary);
      break;
    case MsgType.Control:
      w.uv(m.id).str(m.body);
      break;
    case MsgType.ControlReply:
      w.uv(m.id)
        .u8(m.ok ? 1 : 0)
        .str(m.body);
      break;
    case MsgType.Batch:
      w.uv(m.first).uv(m.count).uv(m.sourceDurable).u8(m.compression).uv(m.rawLength).bytes(m.data);
      break;
    case MsgType.Durable:
      w.uv(m.position);
      break;
    case MsgType.Ack:
      w.uv(m.durable).uv(m.applied).u64(m.appliedHlc);
      break;
    case MsgType.Ping:
    case MsgType.Pong:
      w.u64(m.time);
      break;
    case MsgType.SeedBegin:
      w.uv(m.position)
        .u32(m.epoch)
        .u8(m.resume ? 1 : 0)
        .str(m.plan);
      break;
    case MsgType.SeedRows:
      w.str(m.table)
        .uv(m.chunk)
        .u8(m.final ? 1 : 0)
        .u8(m.format)
        .uv(m.rows)
        .uv(m.columns.length);
      for (const c of m.columns) w.str(c);
      w.u8(m.compression).uv(m.rawLength).bytes(m.data);
      break;
    case MsgType.SeedEnd:
    case MsgType.SeedDone:
    case MsgType.Unseed:
    case MsgType.Unseeded:
      w.uv(m.position);
      break;
  }
  const buf = w.finish();
  buf.writeUInt32BE(buf.length - 4, 0);
  return buf;
}

/** Decodes one frame body (the bytes after the u32 length). Throws DecodeError on anything malformed. */
export function decodeMessage(frame: Buffer): Message {
  const r = new BufferReader(frame);
  const type = r.u8();
  let m: Message;
  switch (type) {
    case MsgType.Hello: {
      const magic = r.u32();
      if (magic !== MAGIC) throw new DecodeError(`bad magic 0x${magic.toString(16)}`);
      m = {
        type,
        version: r.uv(),
        cluster: r.str(),
        group: r.str(),
        node: r.str(),
        epoch: r.u32(),
        firstPosition: r.uv(),
        durablePosition: r.uv(),
      };
      break;
    }
    case MsgType.Welcome:
      m = {
        type,
        node: r.str(),
        epoch: r.u32(),
        nextPosition: r.uv(),
        applied: r.uv(),
        seeded: r.u8() === 1,
        seed: r.str(),
        seedLanes: r.uv(),
      };
      break;
    case MsgType.Refuse:
      m = { type, code: r.str(), message: r.str(), epoch: r.u32(), primary: r.str() };
      break;
    case MsgType.Control:
      m = { type, id: r.uv(), body: r.str() };
      break;
    case MsgType.ControlReply:
      m = { type, id: r.uv(), ok: r.u8() === 1, body: r.str() };
      break;
    case MsgType.Batch:
      m = {
        type,
        first: r.uv(),
        count: r.uv(),
        sourceDurable: r.uv(),
        compression: r.u8(),
        rawLength: r.uv(),
        data: r.bytes(),
      };
      break;
    case MsgType.Durable:
      m = { type, position: r.uv() };
      break;
    case MsgType.Ack:
      m = { type, durable: r.uv(), applied: r.uv(), appliedHlc: r.u64() };
      break;
    case MsgType.Ping:
    case MsgType.Pong:
      m = { type, time: r.u64() };
      break;
    case MsgType.SeedBegin:
      m = { type, position: r.uv(), epoch: r.u32(), resume: r.u8() === 1, plan: r.str() };
      break;
    case MsgType.SeedRows: {
      const table = r.str();
      const chunk = r.uv();
      const final = r.u8() === 1;
      const format = r.u8();
      if (format > 1) throw new DecodeError(`unknown seed format ${format}`);
      const rows = r.uv();
      const n = r.uv();
      if (n > r.remaining) throw new DecodeError(`column count ${n} exceeds frame`);
      const columns: string[] = [];
      for (let i = 0; i < n; i++) columns.push(r.str());
      m = {
        type,
        table,
        chunk,
        final,
        format,
        rows,
        columns,
        compression: r.u8(),
        rawLength: r.uv(),
        data: r.bytes(),
      };
      break;
    }
    case MsgType.SeedEnd:
    case MsgType.SeedDone:
    case MsgType.Unseed:
    case MsgType.Unseeded:
      m = { type, position: r.uv() };
      break;
    default:
      throw new DecodeError(`unknown message type ${type}`);
  }
  if (r.remaining !== 0) throw new DecodeError(`${r.remaining} trailing bytes in message type ${type}`);
  return m;
}

/** Rows of a seed chunk: uv row count, then every value of every row. */
export function encodeRows(rows: Value[][]): Buffer {
  const w = new BufferWriter(1024);
  w.uv(rows.length);
  for (const row of rows) for (const v of row) writeValue(w, v);
  return w.finish();
}

export function decodeRows(buf: Buffer, width: number): Value[][] {
  const r = new BufferReader(buf);
  const n = r.uv();
  if (n * Math.max(width, 1) > r.remaining) throw new DecodeError(`row count ${n} exceeds chunk`);
  const rows: Value[][] = [];
  for (let i = 0; i < n; i++) {
    const row: Value[] = new Array(width);
    for (let j = 0; j < width; j++) row[j] = readValue(r);
    rows.push(row);
  }
  if (r.remaining !== 0) throw new DecodeError('trailing bytes in seed chunk');
  return rows;
}

/**
 * Splits a byte stream into frames. A length over MAX_FRAME_BYTES or zero is a protocol error
 * reported through `onError`, and nothing more is read.
 */
export class FrameReader {
  #chunks: Buffer[] = [];
  #have = 0;
  #dead = false;
  readonly #onFrame: (frame: Buffer) => void;
  readonly #onError: (err: Error) => void;

  constructor(onFrame: (frame: Buffer) => void, onError: (err: Error) => void) {
    this.#onFrame = onFrame;
    this.#onError = onError;
  }

  push(chunk: Buffer): void {
    if (this.#dead) return;
    this.#chunks.push(chunk);
    this.#have += chunk.length;
    while (this.#have >= 4 && !this.#dead) {
      const head = this.#peek(4);
      const len = head.readUInt32BE(0);
      if (len === 0 || len > MAX_FRAME_BYTES) {
        this.#dead = true;
        this.#onError(new DecodeError(`frame length ${len} is outside 1..${MAX_FRAME_BYTES}`));
        return;
      }
      if (this.#have < 4 + len) return;
      const all = this.#take(4 + len);
      this.#onFrame(all.subarray(4));
    }
  }

  #peek(n: number): Buffer {
    if (this.#chunks[0]!.length >= n) return this.#chunks[0]!;
    this.#chunks = [Buffer.concat(this.#chunks)];
    return this.#chunks[0]!;
  }

  #take(n: number): Buffer {
    const first = this.#chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#have -= n;
      return out;
    }
    const all = Buffer.concat(this.#chunks);
    this.#chunks = all.length > n ? [all.subarray(n)] : [];
    this.#have -= n;
    return all.subarray(0, n);
  }
}
