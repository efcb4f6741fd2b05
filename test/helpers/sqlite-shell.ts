/** The sqlite3 shell as an outside writer of a test database (needs the sqlite3 command). */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';

/** Runs `sql` in the sqlite3 shell against `db`. */
export function sqlite(db: string, sql: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('sqlite3', [db], { input: `.timeout 5000\n${sql}\n`, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A sqlite3 shell fed a stream of transactions into `items` (inserts, some updates and deletes),
 * each with a transfer between two rows of `acct` when `transfers` (its row count) is given;
 * `count` is the number of inserts sent.
 */
export function startWriter(db: string, opts: { perBatch: number; intervalMs: number; transfers?: number }) {
  const child: ChildProcess = spawn('sqlite3', ['-bail', db], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr += String(d);
  });
  child.stdin!.write('.timeout 10000\n');
  let n = 0;
  let stopped = false;
  const timer = setInterval(() => {
    if (stopped) return;
    const lines = ['BEGIN;'];
    for (let i = 0; i < opts.perBatch; i++) {
      n++;
      lines.push(
        `INSERT INTO items (name, qty, price, data) VALUES ('item ${n} it''s', ${n % 97}, ${n / 7}, randomblob(${n % 16}));`,
      );
      if (n % 3 === 0)
        lines.push(`UPDATE items SET qty = qty + 1, name = name || '+' WHERE id = ${Math.max(1, n - 50)};`);
      if (n % 11 === 0) lines.push(`DELETE FROM items WHERE id = ${Math.max(1, n - 77)};`);
    }
    // Transfers between accounts of `acct` (ids 1..transfers) in the same transaction: the total
    // stays what it was, at every commit.
    if (opts.transfers) {
      const a = 1 + (n % opts.transfers);
      const b = 1 + ((n * 7 + 3) % opts.transfers);
      lines.push(`UPDATE acct SET balance = balance - ${n % 50} WHERE id = ${a};`);
      lines.push(`UPDATE acct SET balance = balance + ${n % 50} WHERE id = ${b};`);
    }
    lines.push('COMMIT;');
    child.stdin!.write(`${lines.join('\n')}\n`);
  }, opts.intervalMs);
  return {
    get count() {
      return n;
    },
    async stop(): Promise<void> {
      stopped = true;
      clearInterval(timer);
      child.stdin!.end();
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      if (code !== 0) throw new Error(`sqlite3 writer exited ${code}: ${stderr}`);
    },
  };
}
