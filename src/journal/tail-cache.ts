/**
 * The most recent durable payloads, so a link shipping from the tail reads memory, not disk.
 * Holds a contiguous run of positions [first, first + length); evicts from the front once the
 * payload bytes exceed the budget (a budget of 0 disables the cache).
 */
export class TailCache {
  #budget: number;
  /** Entries before #head are dead (undefined) so their payloads can be collected. */
  #items: (Buffer | undefined)[] = [];
  /** Index in #items of the oldest live entry; the array is compacted once most of it is dead. */
  #head = 0;
  #first = 0;
  #bytes = 0;

  constructor(budgetBytes: number) {
    this.#budget = budgetBytes;
  }

  get(position: number): Buffer | undefined {
    const i = position - this.#first;
    if (i < 0 || i >= this.#items.length - this.#head) return undefined;
    return this.#items[this.#head + i];
  }

  /** Oldest cached position, or Infinity when empty. */
  get first(): number {
    return this.#items.length > this.#head ? this.#first : Number.POSITIVE_INFINITY;
  }

  /** Add the payload of `position`; a position that does not extend the run restarts it. */
  push(position: number, payload: Buffer): void {
    if (this.#budget <= 0 || payload.length > this.#budget) {
      this.clear();
      return;
    }
    if (position !== this.#first + this.#items.length - this.#head) this.clear();
    if (this.#items.length === this.#head) this.#first = position;
    this.#items.push(payload);
    this.#bytes += payload.length;
    while (this.#bytes > this.#budget) {
      this.#bytes -= this.#items[this.#head]!.length;
      this.#items[this.#head++] = undefined;
      this.#first++;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Forget every position after `position`. */
  truncateAfter(position: number): void {
    const keep = Math.max(0, position - this.#first + 1);
    while (this.#items.length - this.#head > keep) this.#bytes -= this.#items.pop()?.length ?? 0;
  }

  clear(): void {
    this.#items = [];
    this.#head = 0;
    this.#bytes = 0;
  }
}
