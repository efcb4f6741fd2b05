import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  formatAddress,
  globToRegExp,
  parseAddress,
  parseDuration,
  parseSize,
  tableMatches,
} from '../../src/config/index.js';

const sizeUnits: [string, number][] = [
  ['', 1],
  ['B', 1],
  ['KiB', 1024],
  ['MiB', 1024 ** 2],
  ['GiB', 1024 ** 3],
  ['KB', 1000],
  ['MB', 1000 ** 2],
  ['GB', 1000 ** 3],
];
const durationUnits: [string, number][] = [
  ['ms', 1],
  ['s', 1000],
  ['m', 60_000],
  ['h', 3_600_000],
  ['d', 86_400_000],
];

describe('config value parsers', () => {
  it('sizes: N<unit> is N times the unit', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4096 }), fc.constantFrom(...sizeUnits), (n, [unit, mult]) => {
        expect(parseSize(`${n}${unit}`)).toEqual({ ok: true, value: n * mult });
      }),
    );
  });

  it('durations: N<unit> is N times the unit', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10_000 }),
        fc.constantFrom(...durationUnits),
        (n, [unit, mult]) => {
          expect(parseDuration(`${n}${unit}`)).toEqual({ ok: true, value: n * mult });
        },
      ),
    );
  });

  it('never throws on arbitrary input: a value or a problem', () => {
    fc.assert(
      fc.property(fc.anything(), (v) => {
        for (const parse of [parseSize, parseDuration, parseAddress]) {
          const r = parse(v);
          expect(typeof r.ok).toBe('boolean');
          if (!r.ok) expect(r.problem.length).toBeGreaterThan(0);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('addresses round-trip through formatAddress', () => {
    const host = fc.oneof(fc.ipV4(), fc.constant('localhost'), fc.constant('::1'), fc.domain());
    fc.assert(
      fc.property(host, fc.integer({ min: 1, max: 65535 }), (h, port) => {
        const r = parseAddress(formatAddress({ host: h, port }));
        expect(r).toEqual({ ok: true, value: { host: h, port } });
      }),
    );
  });

  it('table globs match like shell globs on whole names', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[a-z_]{1,12}$/), (name) => {
        expect(tableMatches(['*'], name)).toBe(true);
        expect(tableMatches([name], name)).toBe(true);
        expect(tableMatches([`${name}?`], name)).toBe(false);
        expect(globToRegExp(`${name.slice(0, 1)}*`).test(name)).toBe(true);
      }),
    );
  });
});
