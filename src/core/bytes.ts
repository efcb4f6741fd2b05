/**
 * Binary writer and reader shared by the record codec and the link frame codec.
 * Integers are unsigned LEB128 varints unless a method says otherwise; signed values use zigzag.
 * The reader never trusts a length it reads: every read is bounds-checked and a short or
 * malformed buffer raises DecodeError, never a RangeError from deep inside Node.
 */

export class DecodeError extends Error {
  override name = 'DecodeError';
}

/** |v| up to this is exact as a double, and so is its zigzag (2|v|). */
const SMALL = BigInt(2 ** 51);
const textDecoder = new TextDecoder('utf-8', { fatal: true });

export class BufferWriter {
  #buf: Buffer;
  #len = 0;

  constructor(initial = 256) {
    this.#buf = Buffer.allocUnsafe(initial);
  }

  get length(): number {
    return this.#len;
  }

  #ensure(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#len + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
  }

  u8(v: number): this {
    this.#ensure(1);
    this.#buf[this.#len++] = v;
    return this;
  }

  u32(v: number): this {
    this.#ensure(4);
    this.#buf.writeUInt32BE(v, this.#len);
    this.#len += 4;
    return this;
  }

  u64(v: bigint): this {
    this.#ensure(8);
    this.#buf.writeBigUInt64BE(v, this.#len);
    this.#len += 8;
    return this;
  }

  f64(v: number): this {
    this.#ensure(8);
    this.#buf.writeDoubleBE(v, this.#len);
    this.#len += 8;
    return this;
  }

  /** Unsigned varint for values up to Number.MAX_SAFE_INTEGER. */
  uv(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint out of range: ${v}`);
    this.#ensure(8);
    while (v >= 0x80) {
      this.#buf[this.#len++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.#buf[this.#len++] = v;
    return this;
  }

  /** Signed 64-bit integer as a zigzag varint. */
  sv64(v: bigint): this {
    // Most values fit a double exactly: zigzag them without allocating BigInts.
    if (v >= -SMALL && v <= SMALL) {
      const n = Number(v);
      return this.uv(n >= 0 ? n * 2 : -n * 2 - 1);
    }
    let z = BigInt.asUintN(64, (v << 1n) ^ (v >> 63n));
    this.#ensure(10);
    while (z >= 0x80n) {
      this.#buf[this.#len++] = Number(z & 0x7fn) | 0x80;
      z >>= 7n;
    }
    this.#buf[this.#len++] = Number(z);
    return this;
  }

  bytes(b: Uint8Array): this {
    this.uv(b.length);
    return this.raw(b);
  }

  raw(b: Uint8Array): this {
    this.#ensure(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    return this;
  }

  str(s: string): this {
    const n = Buffer.byteLength(s, 'utf8');
    this.uv(n);
    this.#ensure(n);
    this.#len += this.#buf.write(s, this.#len, n, 'utf8');
    return this;
  }

  /** Overwrite a u32 at an earlier offset (for length prefixes). */
  patchU32(offset: number, v: number): void {
    this.#buf.writeUInt32BE(v, offset);
  }

  /** A copy of the written bytes. */
  finish(): Buffer {
    return Buffer.from(this.#buf.subarray(0, this.#len));
  }
}

export class BufferReader {
  #buf: Buffer;
  #pos: number;
  #end: number;

  constructor(buf: Buffer, start = 0, end = buf.length) {
    this.#buf = buf;
    this.#pos = start;
    this.#end = end;
  }

  get offset(): number {
    return this.#pos;
  }

  get remaining(): number {
    return this.#end - this.#pos;
  }

  #need(n: number): void {
    if (this.#pos + n > this.#end) {
      throw new DecodeError(
        `truncated: need ${n} bytes at offset ${this.#pos}, have ${this.#end - this.#pos}`,
      );
    }
  }

  u8(): number {
    this.#need(1);
    return this.#buf[this.#pos++]!;
  }

  u32(): number {
    this.#need(4);
    const v = this.#buf.readUInt32BE(this.#pos);
    this.#pos += 4;
    return v;
  }

  u64(): bigint {
    this.#need(8);
    const v = this.#buf.readBigUInt64BE(this.#pos);
    this.#pos += 8;
    return v;
  }

  f64(): number {
    this.#need(8);
    const v = this.#buf.readDoubleBE(this.#pos);
    this.#pos += 8;
    return v;
  }

  uv(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      result += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (!Number.isSafeInteger(result)) throw new DecodeError('varint exceeds 2^53');
        return result;
      }
      mul *= 0x80;
    }
    throw new DecodeError('varint too long');
  }

  sv64(): bigint {
    // Up to 7 bytes (49 bits) the zigzag value fits a double: no BigInt until the result.
    let n = 0;
    let mul = 1;
    const start = this.#pos;
    for (let i = 0; i < 7; i++) {
      const b = this.u8();
      n += (b & 0x7f) * mul;
      if (b < 0x80) return BigInt(n % 2 === 0 ? n / 2 : -(n + 1) / 2);
      mul *= 0x80;
    }
    this.#pos = start;
    let z = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      const b = this.u8();
      z |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) {
        if (z > 0xffffffffffffffffn) throw new DecodeError('zigzag varint exceeds 64 bits');
        return BigInt.asIntN(64, (z >> 1n) ^ -(z & 1n));
      }
      shift += 7n;
    }
    throw new DecodeError('zigzag varint too long');
  }

  raw(n: number): Buffer {
    this.#need(n);
    const b = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return b;
  }

  bytes(): Buffer {
    return this.raw(this.uv());
  }

  /** Passes over a length-prefixed field (as bytes() reads). */
  skip(): void {
    const n = this.uv();
    this.#need(n);
    this.#pos += n;
  }

  /** Whether the bytes from `start` (an earlier offset) to here are `bytes`. */
  sameSince(start: number, bytes: Buffer): boolean {
    return bytes.length === this.#pos - start && bytes.compare(this.#buf, start, this.#pos) === 0;
  }

  /** The bytes from `start` (an earlier offset) to here, not copied. */
  since(start: number): Buffer {
    return this.#buf.subarray(start, this.#pos);
  }

  /** Goes back to `offset`, an earlier offset of this reader. */
  seek(offset: number): void {
    this.#pos = offset;
  }

  str(): string {
    const n = this.uv();
    this.#need(n);
    const start = this.#pos;
    const end = start + n;
    const buf = this.#buf;
    // ASCII (names, most text) is read straight into a string; the rest is checked UTF-8.
    let i = start;
    while (i < end && buf[i]! < 0x80) i++;
    if (i === end) {
      this.#pos = end;
      return buf.toString('latin1', start, end);
    }
    const b = this.raw(n);
    try {
      return textDecoder.decode(b);
    } catch {
      throw new DecodeError(`invalid UTF-8 string at offset ${this.#pos - b.length}`);
    }
  }
}
