import { describe, expect, it } from 'vitest';
import { RateMeter } from '../../src/node/rate.js';

describe('RateMeter', () => {
  it('is unknown until it has two samples, not 0 (a group that just took its role)', () => {
    const r = new RateMeter(5000);
    expect(r.perSecond).toBeNull();
    r.sample(100, 0);
    expect(r.perSecond).toBeNull();
    r.sample(150, 1000);
    expect(r.perSecond).toBe(50);
  });

  it('rates over the window only', () => {
    const r = new RateMeter(2000);
    for (let t = 0; t <= 10_000; t += 1000) r.sample(t < 5000 ? t * 10 : 50_000 + (t - 5000), t);
    expect(r.perSecond).toBe(1000);
  });
});
