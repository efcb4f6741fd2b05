import { describe, expect, it } from 'vitest';
import { renderStatus } from '../../src/cli/status.js';
import type { Config } from '../../src/config/index.js';
import { progressBar, SeedProgress, showSeedOnTerminal, tableBars } from '../../src/link/seed-progress.js';
import { groupStatus, nodeAnswer } from '../helpers/status.js';

describe('seed progress', () => {
  it('counts rows per table, with a rate and the time left', () => {
    const p = new SeedProgress(42, [
      { table: 'a', total: 1000 },
      { table: 'b', total: 3000 },
    ]);
    p.add('a', 1000);
    p.add('b', 1000);
    const v = p.view(performance.now() + 2000);
    expect(v.rows).toBe(2000);
    expect(v.total).toBe(4000);
    // Per table too: a is done; b copied 1,000 rows in about 2 s, 2,000 are left.
    expect(v.tables).toEqual([
      { table: 'a', rows: 1000, total: 1000, rowsPerSec: 0, etaSec: 0 },
      { table: 'b', rows: 1000, total: 3000, rowsPerSec: expect.any(Number), etaSec: expect.any(Number) },
    ]);
    expect(v.tables[1]!.rowsPerSec).toBeGreaterThan(450);
    expect(v.tables[1]!.rowsPerSec).toBeLessThanOrEqual(500);
    expect(v.tables[1]!.etaSec).toBe(4);
    expect(v.rowsPerSec).toBeGreaterThan(900);
    expect(v.etaSec).toBeGreaterThanOrEqual(1);
    // An estimate that was too low never makes the total smaller than what was copied.
    p.add('a', 500);
    expect(p.view().total).toBe(4500);
  });

  it("counts a resumed seed's earlier rows, but not in its rate", () => {
    const p = new SeedProgress(42, [{ table: 'a', total: 1000 }], [{ table: 'a', rows: 600 }]);
    p.add('a', 200);
    const v = p.view(performance.now() + 2000);
    expect(v.rows).toBe(800);
    expect(v.resumed).toBe(600);
    expect(v.rowsPerSec).toBeLessThanOrEqual(100);
    expect(v.tables).toMatchObject([{ table: 'a', rows: 800, total: 1000, etaSec: 2 }]);
    expect(v.tables[0]!.rowsPerSec).toBeLessThanOrEqual(100);
  });

  it('draws each table with its rate and time left on a terminal, and nothing elsewhere', async () => {
    const p = new SeedProgress(7, [
      { table: 'orders', total: 100 },
      { table: 'customers_with_a_long_name', total: 10 },
    ]);
    p.add('orders', 25);
    p.add('customers_with_a_long_name', 10);
    const lines = tableBars(p.view(performance.now() + 1000));
    expect(lines[0]).toMatch(
      /^orders {21}\[#####\.{15}\] {2}25% {2}25 \/ 100 rows {2}2\d rows\/s, ETA [34] s$/,
    );
    expect(lines[1]).toBe('customers_with_a_long_name [####################] 100%  10 / 10 rows');
    const written: string[] = [];
    const out = (isTTY: boolean) =>
      ({ isTTY, write: (t: string) => written.push(t) }) as unknown as NodeJS.WriteStream;
    showSeedOnTerminal('shop: seeding west', p, out(false))();
    expect(written).toEqual([]);
    const stop = showSeedOnTerminal('shop: seeding west', p, out(true));
    await new Promise((r) => setTimeout(r, 1100));
    stop(); // draws the last figures once more
    expect(written.length).toBe(2);
    expect(written[1]).toMatch(
      /^shop: seeding west: 35 \/ 110 rows, [\d,]+ rows\/s, ETA \d+ s\n {2}orders .*\n {2}customers_with_a_long_name .* 100% {2}10 \/ 10 rows\n$/,
    );
  });

  it('draws a bar', () => {
    expect(progressBar('t', 5, 10, 10)).toBe('t [#####.....]  50%  5 / 10 rows');
    expect(progressBar('t', 0, 0, 4)).toBe('t [####] 100%  0 / 0 rows');
  });

  it('tandem status shows a bar per table while a backup is seeded', () => {
    const p = new SeedProgress(7, [{ table: 'orders', total: 100 }]);
    p.add('orders', 25);
    const status = nodeAnswer('east', [
      groupStatus({
        links: [
          {
            peer: 'west',
            state: 'seeding',
            lastError: null,
            durable: 0,
            applied: 0,
            lag: { records: 7, bytes: 100, ms: 5 },
            wire: { bytesOut: 0, bytesIn: 0 },
            rttMs: 0,
            seed: p.view(),
            seeds: 0,
            lastSeed: null,
          },
        ],
      }),
    ]);
    const text = renderStatus({ cluster: 'c' } as Config, [status]);
    expect(text).toMatch(/west:seeding 25%/);
    expect(text).toMatch(/shop@east -> west: seeding at position 7/);
    expect(text).toMatch(/orders\s+\[#####\.+\]\s+25%\s+25 \/ 100 rows {2}[\d,]+ rows\/s, ETA \d+ s/);
  });
});
