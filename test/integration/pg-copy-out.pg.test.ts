/**
 * The COPY reader (src/adapters/postgres/copy-out.ts) against a real PostgreSQL 15: the same
 * text as pg-copy-streams gives, whatever the rows hold and however the socket cuts them, with a
 * slow consumer too; errors before and in the middle of the data; the connection usable after.
 */
import { to as copyTo } from 'pg-copy-streams';
import { describe, expect, it } from 'vitest';
import { copyOut } from '../../src/adapters/postgres/copy-out.js';
import { sleep } from '../helpers/cluster.js';
import { usePgClient } from '../helpers/pg.js';

async function collect(stream: AsyncIterable<Buffer>, slow = false): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of stream) {
    parts.push(Buffer.from(b));
    if (slow) await sleep(1);
  }
  return Buffer.concat(parts);
}

describe('COPY TO STDOUT reader', () => {
  // Rows of every length from empty to 100 kB, with tabs, newlines, backslashes and non-ASCII.
  const client = usePgClient(async (c) => {
    await c.query(`CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, b bytea);
      INSERT INTO t SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE repeat(E'a\\tb\\nc\\\\é€', (g * 37) % 60) END,
        g * 1.5, decode(md5(g::text), 'hex') FROM generate_series(1, 20000) g;
      INSERT INTO t VALUES (20001, repeat('x', 100000), 0, ''::bytea), (20002, '', NULL, NULL)`);
  });

  const sql = 'COPY (SELECT * FROM t ORDER BY id) TO STDOUT';

  it('gives the text pg-copy-streams gives, with a fast and with a slow consumer, and the row count', async () => {
    const c = client();
    const expected = await collect(c.query(copyTo(sql)));
    expect(expected.length).toBeGreaterThan(5_000_000);
    const fast = c.query(copyOut(sql));
    // Buffer.equals: a deep equality of megabytes takes vitest minutes.
    expect((await collect(fast)).equals(expected)).toBe(true);
    expect(fast.rowCount).toBe(20002);
    expect((await collect(c.query(copyOut(sql)), true)).equals(expected)).toBe(true);
    const empty = c.query(copyOut('COPY (SELECT * FROM t WHERE false) TO STDOUT'));
    expect((await collect(empty)).length).toBe(0);
    expect(empty.rowCount).toBe(0);
    expect((await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(20002);
  });

  it('fails with the server error, at the start or after rows were sent, and leaves the connection usable', async () => {
    const c = client();
    await expect(collect(c.query(copyOut('COPY (SELECT * FROM missing) TO STDOUT')))).rejects.toThrow(
      /relation "missing" does not exist/,
    );
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    const got: Buffer[] = [];
    const failing = c.query(
      copyOut('COPY (SELECT 100 / (50000 - g) FROM generate_series(1, 60000) g) TO STDOUT'),
    );
    await expect(
      (async () => {
        for await (const b of failing) got.push(b);
      })(),
    ).rejects.toThrow(/division by zero/);
    expect(Buffer.concat(got).length).toBeGreaterThan(0);
    expect((await c.query('SELECT 2 AS two')).rows[0].two).toBe(2);
  });
});
