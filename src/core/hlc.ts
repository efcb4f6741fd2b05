/**
 * Hybrid logical clock (Kulkarni et al.): 48 bits of wall-clock milliseconds, 16 bits of
 * logical counter. Timestamps from one clock strictly increase even if the wall clock steps
 * back, and `observe` keeps a node's clock ahead of every timestamp it has received.
 */

export interface WallClock {
  now(): number;
}

export const systemClock: WallClock = { now: () => Date.now() };

export class HybridLogicalClock {
  #clock: WallClock;
  #last = 0n;

  constructor(clock: WallClock = systemClock) {
    this.#clock = clock;
  }

  now(): bigint {
    const wall = BigInt(Math.floor(this.#clock.now())) << 16n;
    this.#last = wall > this.#last ? wall : this.#last + 1n;
    return this.#last;
  }

  observe(remote: bigint): void {
    if (remote > this.#last) this.#last = remote;
  }

  static millis(ts: bigint): number {
    return Number(ts >> 16n);
  }
}
