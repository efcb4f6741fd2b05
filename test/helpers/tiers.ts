/**
 * The two test tiers (RELIABILITY.md): `npm test` runs the quick one; `npm run test:long` sets
 * TANDEM_LONG=1 and the fault and fuzz families run many more cases.
 */
export const LONG = process.env.TANDEM_LONG === '1';

/** `quick` runs in `npm test`, `long` in `npm run test:long`. */
export function runs(quick: number, long: number): number {
  return LONG ? long : quick;
}
