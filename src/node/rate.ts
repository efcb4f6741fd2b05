/**
 * Per-second rate of a growing counter, over a sliding window of samples taken each second;
 * unknown (null) until there are two. A group's meters start with its role: right after a
 * switchover the rate is unknown for a second, not 0.
 */
import { monoNow } from '../core/mono.js';
export class RateMeter {
  #samples: { t: number; v: number }[] = [];
  readonly #windowMs: number;

  constructor(windowMs = 5000) {
    this.#windowMs = windowMs;
  }

  sample(value: number, now = monoNow()): void {
    this.#samples.push({ t: now, v: value });
    while (this.#samples.length > 2 && now - this.#samples[0]!.t > this.#windowMs) this.#samples.shift();
  }

  get perSecond(): number | null {
    const s = this.#samples;
    if (s.length < 2) return null;
    const a = s[0]!;
    const b = s[s.length - 1]!;
    return b.t > a.t ? ((b.v - a.v) * 1000) / (b.t - a.t) : null;
  }
}
