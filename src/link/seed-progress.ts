/** Progress of one seed, table by table, with rates and an estimate of the time left. */
import { monoNow } from '../core/mono.js';

export interface SeedTableProgress {
  table: string;
  rows: number;
  /** Rows expected (exact for SQLite, the planner's estimate for PostgreSQL). */
  total: number;
}

export interface SeedProgressView {
  position: number;
  rows: number;
  total: number;
  /** Rows an interrupted seed had copied when this one resumed it (0 for a seed from scratch). */
  resumed: number;
  rowsPerSec: number;
  /** Seconds left at the current rate, or null before a rate is known. */
  etaSec: number | null;
  tables: SeedTableProgress[];
}

export class SeedProgress {
  readonly position: number;
  readonly #started = monoNow();
  readonly #tables: SeedTableProgress[];
  /** Rows copied before a resume (not counted in the rate). */
  readonly #resumed: number;
  rows = 0;

  /** `done`: chunks an interrupted seed already copied, when this one resumes it. */
  constructor(
    position: number,
    tables: { table: string; total: number }[],
    done: readonly { table: string; rows: number }[] = [],
  ) {
    this.position = position;
    this.#tables = tables.map((t) => ({ table: t.table, rows: 0, total: t.total }));
    for (const d of done) this.add(d.table, d.rows);
    this.#resumed = this.rows;
  }

  add(table: string, rows: number): void {
    this.rows += rows;
    const t = this.#tables.find((x) => x.table === table);
    if (t) t.rows += rows;
  }

  get total(): number {
    return this.#tables.reduce((a, t) => a + Math.max(t.total, t.rows), 0);
  }

  view(now = monoNow()): SeedProgressView {
    const secs = (now - this.#started) / 1000;
    const rate = secs > 0 ? (this.rows - this.#resumed) / secs : 0;
    const total = this.total;
    return {
      position: this.position,
      rows: this.rows,
      total,
      resumed: this.#resumed,
      rowsPerSec: Math.round(rate),
      etaSec: rate > 0 ? Math.max(0, Math.round((total - this.rows) / rate)) : null,
      tables: this.#tables.map((t) => ({ ...t })),
    };
  }
}

/** `name [#######.............]  35%  1,200 / 3,400 rows` for a terminal. */
export function progressBar(label: string, done: number, total: number, width = 20): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const filled = Math.round(frac * width);
  return `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(frac * 100)).padStart(3)}%  ${done.toLocaleString('en-US')} / ${total.toLocaleString('en-US')} rows`;
}
