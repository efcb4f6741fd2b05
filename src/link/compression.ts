/**
 * Compression on the link: raw deflate at level 1. Small payloads (a few transactions, the
 * common case when keeping up) are compressed at once: a trip through libuv's thread pool costs
 * more than the compression and adds to every commit's latency in sync mode. Large ones go to
 * the pool.
 *
 * BATCH payloads (compression code 2) use the last DICTIONARY_BYTES of the connection's earlier
 * batches as deflate's preset dictionary: a batch of one or two transactions has little to
 * compress against by itself, while the batches before it name the same tables and columns and
 * hold similar rows (pgbench: 61 -> 17 bytes per change for one-transaction batches). Both ends
 * keep one BatchCodec per connection, start it empty, and pass every code-2 batch through it in
 * stream order; a lost or reordered batch cannot happen within a connection (TCP), and one that
 * decompresses wrong fails its length check or its records' CRCs, which ends the connection
 * (and both dictionaries with it). SEED_ROWS chunks (code 1) are large and compressed alone.
 */
import { promisify } from 'node:util';
import { deflateRaw as deflateRawCb, deflateRawSync, inflateRawSync, type ZlibOptions } from 'node:zlib';

const deflateRawAsync = promisify(deflateRawCb);

/** Bytes of earlier batches the dictionary holds. */
export const DICTIONARY_BYTES = 4096;

/** Compression codes of BATCH and SEED_ROWS messages. */
export const Compression = { None: 0, Deflate: 1, DeflateWithDictionary: 2 } as const;

/** Raw deflate at level 1, at once or in the thread pool by size (see the module note). */
export function deflateRaw(raw: Buffer, dictionary?: Buffer): Buffer | Promise<Buffer> {
  const o: ZlibOptions = dictionary && dictionary.length > 0 ? { level: 1, dictionary } : { level: 1 };
  return raw.length <= 64 * 1024 ? deflateRawSync(raw, o) : deflateRawAsync(raw, o);
}

/** One connection's batch dictionary, at either end. */
export class BatchCodec {
  #tail: Buffer = Buffer.alloc(0);

  /** The sender's side: `raw` compressed against the batches before it. */
  deflate(raw: Buffer): Buffer | Promise<Buffer> {
    const out = deflateRaw(raw, this.#tail);
    this.#remember(raw);
    return out;
  }

  /** The receiver's side: the batch `data` holds, at most `maxOutputLength` bytes. */
  inflate(data: Buffer, maxOutputLength: number): Buffer {
    const o: ZlibOptions = { maxOutputLength };
    if (this.#tail.length > 0) o.dictionary = this.#tail;
    const raw = inflateRawSync(data, o);
    this.#remember(raw);
    return raw;
  }

  #remember(raw: Buffer): void {
    // A new buffer each time: a deflate still running in the pool keeps reading the old one.
    this.#tail =
      raw.length >= DICTIONARY_BYTES
        ? Buffer.from(raw.subarray(raw.length - DICTIONARY_BYTES))
        : Buffer.concat([this.#tail, raw]).subarray(-DICTIONARY_BYTES);
  }
}
