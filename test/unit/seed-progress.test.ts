import { describe, expect, it } from 'vitest';
import { renderStatus } from '../../src/cli/status.js';
import type { Config } from '../../src/config/index.js';
import { progressBar, SeedProgress } from '../../src/link/seed-progress.js';
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
    expect(v.tables).toEqual([
      { table: 'a', rows: 1000, total: 1000 },
      { table: 'b', rows: 1000, total: 3000 },
    ]);
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
    expect(v.tables).toEqual([{ table: 'a', rows: 800, total: 1000 }]);
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
    expect(text).toMatch(/orders\s+\[#####\.+\]\s+25%\s+25 \/ 100 rows/);
  });
});
