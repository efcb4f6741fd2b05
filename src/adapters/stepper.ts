/**
 * Runs an apply step whenever kicked: one step at a time, each on its own turn of the event
 * loop (so journal callbacks stay short and the link keeps answering while a backlog is
 * applied); a kick that arrives during a step, or a step that stopped at its budget, runs
 * another step after it. An error stops the stepper and goes to `onError`.
 */
export class Stepper {
  readonly #step: () => void | Promise<void>;
  readonly #onError: (err: Error) => void | Promise<void>;
  #running = false;
  #busy = false;
  #again = false;
  #idle: Promise<void> = Promise.resolve();

  constructor(step: () => void | Promise<void>, onError: (err: Error) => void | Promise<void>) {
    this.#step = step;
    this.#onError = onError;
  }

  start(): void {
    this.#running = true;
    this.kick();
  }

  kick(): void {
    if (!this.#running) return;
    if (this.#busy) {
      this.#again = true;
      return;
    }
    this.#busy = true;
    this.#idle = new Promise((resolve) =>
      setImmediate(async () => {
        try {
          this.#again = false;
          await this.#step();
        } catch (err) {
          this.#running = false;
          await this.#onError(err as Error);
        } finally {
          this.#busy = false;
          resolve();
        }
        if (this.#again) this.kick();
      }),
    );
  }

  /** The step stopped at its budget: run another. */
  more(): void {
    this.#again = true;
  }

  /** Resolves when no step is running. */
  idle(): Promise<void> {
    return this.#idle;
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.#idle;
  }
}
