/**
 * The simulation's world: one seeded random source, one virtual clock and one queue of events
 * that every timer, disk completion and network delivery goes through, and the processes that
 * own them. The real code under test calls setTimeout, setInterval, setImmediate, Date.now and
 * performance.now as usual; while a world is installed those globals are the world's.
 *
 * Determinism: events run one at a time in (time, sequence) order, and after each one the
 * microtasks it queued run to completion (a turn of the real event loop with no real I/O
 * pending) before the next event is taken. Nothing else runs: no real timers, files or sockets.
 * So a seed decides the whole run, and `digest` (a hash over every event taken) proves it.
 *
 * Processes: every event belongs to the process that scheduled it (AsyncLocalStorage carries
 * the process through callbacks and promise continuations). A killed process's events never
 * run again: its timers stop, its disk calls and deliveries never complete, as with SIGKILL.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { appendFileSync } from 'node:fs';

/** TANDEM_SIM_TRACE=file: every event run, one line each (slow; for a replay that hangs). */
const TRACE = process.env.TANDEM_SIM_TRACE;

/** sfc32 seeded through splitmix32: small, fast, and the same sequence on every platform. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = next();
    this.#b = next();
    this.#c = next();
    this.#d = next();
    for (let i = 0; i < 12; i++) this.next();
  }

  /** Uniform in [0, 1). */
  next(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** Real in [lo, hi). */
  real(lo: number, hi: number): number {
    return lo + this.next() * (hi - lo);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
}

/** One incarnation of a node's process. */
export class Proc {
  readonly name: string;
  alive = true;
  readonly #world: World;
  /** How far this machine's wall clock is off, ms (the monotonic clock is never off). */
  readonly wallOffset: () => number;

  constructor(world: World, name: string, wallOffset: () => number) {
    this.#world = world;
    this.name = name;
    this.wallOffset = wallOffset;
  }

  /** Runs `fn` as this process: what it schedules belongs to it. */
  run<T>(fn: () => T): T {
    return this.#world.als.run(this, fn);
  }
}

interface Event {
  at: number;
  seq: number;
  proc: Proc | undefined;
  label: string;
  fn: () => void;
  cancelled: boolean;
}

/** What the world's setTimeout and setInterval return (the subset of NodeJS.Timeout code uses). */
class SimTimer {
  ev: Event | null = null;
  constructor(readonly id: number) {}
  unref(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  hasRef(): boolean {
    return true;
  }
  [Symbol.toPrimitive](): number {
    return this.id;
  }
}

const real = {
  setTimeout: globalThis.setTimeout,
  setInterval: globalThis.setInterval,
  setImmediate: globalThis.setImmediate,
  clearTimeout: globalThis.clearTimeout,
  clearInterval: globalThis.clearInterval,
  clearImmediate: globalThis.clearImmediate,
  dateNow: Date.now,
};

/** More events than this at one instant: something loops without ever waiting. */
const LIVELOCK_EVENTS = 200_000;

/** A run that can make no progress in virtual time (a busy loop through timers or immediates). */
export class Livelock extends Error {
  override name = 'Livelock';
}

/** The wall clock reads this much at virtual time 0 (2026-01-01). */
const EPOCH_MS = Date.UTC(2026, 0, 1);

export class World {
  readonly rng: Rng;
  readonly als = new AsyncLocalStorage<Proc | undefined>();
  #now = 0;
  #seq = 0;
  #timerIds = 0;
  /** A binary heap ordered by (at, seq). */
  #heap: Event[] = [];
  #digest = 0x811c9dc5;
  #installed = false;
  #sameInstant = 0;
  /** Errors thrown by event callbacks or unhandled rejections: a real node would have crashed. */
  readonly crashes: string[] = [];
  events = 0;

  constructor(seed: number) {
    this.rng = new Rng(seed);
  }

  get now(): number {
    return this.#now;
  }
  /** FNV-1a over the label and time of every event run: equal digests, equal runs. */
  get digest(): string {
    return (this.#digest >>> 0).toString(16).padStart(8, '0');
  }

  /** The wall clock, ms, of a machine whose clock is `offset` ms off. */
  wall(offset: number): number {
    return EPOCH_MS + Math.floor(this.#now + offset);
  }

  get current(): Proc | undefined {
    return this.als.getStore();
  }

  /** A process on a machine whose wall clock is `wallOffset()` ms off (default: exact). */
  spawn(name: string, wallOffset: () => number = () => 0): Proc {
    return new Proc(this, name, wallOffset);
  }

  /** Schedules `fn` after `delayMs` as `proc`: by default the current process; null, the harness. */
  schedule(delayMs: number, label: string, fn: () => void, proc?: Proc | null): Event {
    const ev: Event = {
      at: this.#now + Math.max(0, delayMs),
      seq: this.#seq++,
      proc: proc === undefined ? this.current : (proc ?? undefined),
      label,
      fn,
      cancelled: false,
    };
    this.#push(ev);
    return ev;
  }

  /** Replaces the timer and clock globals with this world's until `uninstall`. */
  install(): void {
    if (this.#installed) return;
    this.#installed = true;
    const g = globalThis as unknown as Record<string, unknown>;
    const timeout =
      (repeat: boolean) =>
      (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
        const t = new SimTimer(++this.#timerIds);
        const delay = Math.max(1, Math.floor(Number(ms) || 0));
        const arm = () => {
          t.ev = this.schedule(delay, repeat ? 'interval' : 'timeout', () => {
            if (repeat) arm();
            else t.ev = null;
            fn(...args);
          });
        };
        arm();
        return t;
      };
    const clear = (t: unknown) => {
      if (t instanceof SimTimer && t.ev) {
        t.ev.cancelled = true;
        t.ev = null;
      }
    };
    g.setTimeout = timeout(false);
    g.setInterval = timeout(true);
    g.clearTimeout = clear;
    g.clearInterval = clear;
    g.setImmediate = (fn: (...a: unknown[]) => void, ...args: unknown[]) => {
      const t = new SimTimer(++this.#timerIds);
      t.ev = this.schedule(0, 'immediate', () => {
        t.ev = null;
        fn(...args);
      });
      return t;
    };
    g.clearImmediate = clear;
    Date.now = () => this.wall(this.current?.wallOffset() ?? 0);
    Object.defineProperty(performance, 'now', { value: () => this.#now, configurable: true, writable: true });
    process.on('unhandledRejection', this.#onUnhandled);
  }

  uninstall(): void {
    if (!this.#installed) return;
    this.#installed = false;
    Object.assign(globalThis, {
      setTimeout: real.setTimeout,
      setInterval: real.setInterval,
      setImmediate: real.setImmediate,
      clearTimeout: real.clearTimeout,
      clearInterval: real.clearInterval,
      clearImmediate: real.clearImmediate,
    });
    Date.now = real.dateNow;
    delete (performance as unknown as Record<string, unknown>).now;
    process.off('unhandledRejection', this.#onUnhandled);
    // An enabled AsyncLocalStorage stays in Node's list of stores, and every promise and async
    // resource made afterwards copies each of them: left enabled, one world per seed made every
    // later seed slower (2,000 seeds ran 10x slower by the 500th).
    this.als.disable();
  }

  #onUnhandled = (reason: unknown) => {
    this.crashes.push(`unhandled rejection: ${reason instanceof Error ? reason.stack : String(reason)}`);
  };

  /** Runs events until virtual time `untilMs` (or no event is left). */
  async runUntil(untilMs: number): Promise<void> {
    await this.#settle();
    for (;;) {
      const ev = this.#heap[0];
      if (!ev || ev.at > untilMs) break;
      this.#pop();
      if (ev.cancelled || (ev.proc && !ev.proc.alive)) continue;
      if (ev.at === this.#now) {
        if (++this.#sameInstant > LIVELOCK_EVENTS)
          throw new Livelock(
            `${LIVELOCK_EVENTS} events at virtual time ${ev.at.toFixed(3)} ms without time passing (last: ${ev.label} of ${ev.proc?.name ?? 'harness'})`,
          );
      } else this.#sameInstant = 0;
      this.#now = ev.at;
      this.events++;
      if (TRACE) appendFileSync(TRACE, `${ev.at.toFixed(3)} ${ev.proc?.name ?? 'harness'} ${ev.label}\n`);
      this.#mix(`${ev.label}@${ev.at.toFixed(3)}`);
      try {
        if (ev.proc) ev.proc.run(ev.fn);
        else this.als.exit(ev.fn);
      } catch (err) {
        this.crashes.push(`${ev.proc?.name ?? 'harness'}: ${(err as Error).stack ?? err}`);
      }
      await this.#settle();
    }
    if (this.#now < untilMs) this.#now = untilMs;
  }

  /** Runs while `pending()` holds (checked every `stepMs`), at most `maxMs` of virtual time; false if it still holds. */
  async runWhile(pending: () => boolean, maxMs: number, stepMs = 10): Promise<boolean> {
    const end = this.#now + maxMs;
    while (pending()) {
      if (this.#now >= end) return false;
      await this.runUntil(Math.min(end, this.#now + stepMs));
    }
    return true;
  }

  /** Lets the microtasks queued so far (and those they queue) run: one turn of the real loop. */
  #settle(): Promise<void> {
    return new Promise((resolve) => real.setImmediate(resolve));
  }

  #mix(s: string): void {
    let h = this.#digest;
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    this.#digest = h;
  }

  #less(a: Event, b: Event): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }
  #push(ev: Event): void {
    const h = this.#heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }
  #pop(): void {
    const h = this.#heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.#less(h[l]!, h[m]!)) m = l;
      if (r < h.length && this.#less(h[r]!, h[m]!)) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}
