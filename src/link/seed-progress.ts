/** Progress of one seed, table by table, with rates and an estimate of the time left. */
import { monoNow } from '../core/mono.js';

export interface SeedTableProgress {
  table: string;
  rows: number;
  /** Rows expected (exact for SQLite, the planner's estimate for PostgreSQL). */
  total: number;
  /** Since the seed began (0 once the table is done). */
  rowsPerSec: number;
  /** Seconds left for this table at its rate, or null before a rate is known. */
  etaSec: number | null;
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

interface TableCount {
  table: string;
  rows: number;
  total: number;
  /** Rows a resumed seed's earlier run copied, not counted in the rate. */
  before: number;
}

/** Rows per second over `secs`, and the seconds `left` rows take at that rate. */
function rateOf(rows: number, secs: number, left: number): { rowsPerSec: number; etaSec: number | null } {
  const rate = secs > 0 ? rows / secs : 0;
  return { rowsPerSec: Math.round(rate), etaSec: rate > 0 ? Math.max(0, Math.round(left / rate)) : null };
}

export class SeedProgress {
  readonly position: number;
  readonly #started = monoNow();
  readonly #tables: TableCount[];
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
    this.#tables = tables.map((t) => ({ table: t.table, rows: 0, total: t.total, before: 0 }));
    for (const d of done) this.add(d.table, d.rows);
    for (const t of this.#tables) t.before = t.rows;
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
    const total = this.total;
    const secs = (now - this.#started) / 1000;
    return {
      position: this.position,
      rows: this.rows,
      total,
      resumed: this.#resumed,
      ...rateOf(this.rows - this.#resumed, secs, total - this.rows),
      // A chunk's rows count when it is done, not when its copy began, so each table's rate runs
      // from the seed's start: right for tables copied side by side; one that waited its turn
      // for a worker shows less than it has.
      tables: this.#tables.map((t) => {
        const left = Math.max(t.total, t.rows) - t.rows;
        const rate = left === 0 ? { rowsPerSec: 0, etaSec: 0 } : rateOf(t.rows - t.before, secs, left);
        return { table: t.table, rows: t.rows, total: Math.max(t.total, t.rows), ...rate };
      }),
    };
  }
}

/** `name [#######.............]  35%  1,200 / 3,400 rows` for a terminal. */
export function progressBar(label: string, done: number, total: number, width = 20): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const filled = Math.round(frac * width);
  return `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(frac * 100)).padStart(3)}%  ${done.toLocaleString('en-US')} / ${total.toLocaleString('en-US')} rows`;
}

/** `12,000 rows/s, ETA 3 s` (or `ETA unknown` before a rate is known). */
export function rateText(r: { rowsPerSec: number; etaSec: number | null }): string {
  return `${r.rowsPerSec.toLocaleString('en-US')} rows/s, ${r.etaSec === null ? 'ETA unknown' : `ETA ${r.etaSec} s`}`;
}

/** One line per table: its bar, rate and time left. */
export function tableBars(view: SeedProgressView): string[] {
  const width = Math.max(12, ...view.tables.map((t) => t.table.length));
  return view.tables.map(
    (t) =>
      `${progressBar(t.table.padEnd(width), t.rows, t.total)}${t.rows >= t.total ? '' : `  ${rateText(t)}`}`,
  );
}

/**
 * While a seed runs, its bars on a terminal (`out`, standard error by default: standard output
 * holds the logs), redrawn every second below a heading; nothing when `out` is not a terminal.
 * Returns the function that stops it.
 */
export function showSeedOnTerminal(
  heading: string,
  progress: SeedProgress,
  out: NodeJS.WriteStream = process.stderr,
): () => void {
  if (!out.isTTY) return () => {};
  const draw = () => {
    const v = progress.view();
    out.write(
      `${[
        `${heading}: ${v.rows.toLocaleString('en-US')} / ${v.total.toLocaleString('en-US')} rows, ${rateText(v)}`,
        ...tableBars(v).map((l) => `  ${l}`),
      ].join('\n')}\n`,
    );
  };
  const timer = setInterval(draw, 1000);
  timer.unref();
  return () => {
    clearInterval(timer);
    draw();
  };
}
