/**
 * What every backup does with tables that already hold rows when a seed begins: rows Tandem did
 * not put there are verified against the primary's (or replaced with `seed.overwrite`), never
 * overwritten blindly. The adapters compare the rows; the rules and the errors live here.
 */
import type { Logger } from 'pino';
import type { GroupConfig } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import type { SeedPlan, SeedState } from './types.js';

export interface ExistingRows {
  group: GroupConfig;
  /** The backup database, for messages: "on the backup (groups.g.endpoints.n)". */
  where: string;
  log: Logger;
  /**
   * The backup was seeded with this group once (it may have given the copy up for a new seed,
   * UNSEED): its tables were fenced since, their rows are Tandem's.
   */
  everSeeded: boolean;
  /** The seed begun before this one, if any, and the tables it was verifying. */
  previous: SeedState | null;
  verifying: ReadonlySet<string>;
  /** The table exists on the backup and holds at least one row. */
  hasRows: (table: string) => boolean | Promise<boolean>;
}

/** The tables of a new seed to verify instead of writing; throws SEED_FAILED for keyless ones. */
export async function tablesToVerify(plan: SeedPlan, o: ExistingRows): Promise<Set<string>> {
  const g = o.group;
  const verify = new Set<string>();
  for (const s of plan.schemas) {
    // Rows a finished or begun seed of this group wrote are Tandem's own.
    const own =
      !o.verifying.has(s.name) &&
      (o.everSeeded || (o.previous?.plan.schemas.some((x) => x.name === s.name) ?? false));
    if (own || !(await o.hasRows(s.name))) continue;
    if (g.seed.overwrite) {
      o.log.warn({ table: s.name }, 'seed.overwrite: replacing rows Tandem did not put there');
      continue;
    }
    if (s.primaryKey.length === 0) {
      throw new TandemError(
        'SEED_FAILED',
        `group ${g.name}: table "${s.name}" ${o.where} already has rows, and without a key they cannot be verified against the primary`,
        `Empty the table, or set groups.${g.name}.seed.overwrite: true to replace its rows with the primary's`,
      );
    }
    verify.add(s.name);
  }
  if (verify.size > 0) {
    o.log.info(
      { tables: [...verify] },
      'backup tables already hold rows: verifying them against the primary',
    );
  }
  return verify;
}

/**
 * A source resumes a seed: it must be the one this backup began. The begun plan takes the resumed
 * one's newer `consistentAt`; true when it moved (the caller stores the plan).
 */
export function checkResume(begun: SeedState | null, plan: SeedPlan): boolean {
  const p = begun?.plan;
  if (!p || p.position !== plan.position || p.source !== plan.source) {
    throw new Error(`the source resumes a seed at position ${plan.position} that this backup does not hold`);
  }
  if ((plan.consistentAt ?? 0) <= (p.consistentAt ?? 0)) return false;
  p.consistentAt = plan.consistentAt;
  return true;
}

/**
 * The position a seed's unique indexes and constraints wait for (SeedPlan.consistentAt): a
 * resumed seed's newest snapshot when it is past the seed's position, else 0 (none wait).
 */
export function uniqueAfter(plan: SeedPlan): number {
  return (plan.consistentAt ?? 0) > plan.position ? plan.consistentAt! : 0;
}

/** SEED_FAILED for a verified table whose rows differ from the primary's. */
export function rowsDiffer(group: GroupConfig, where: string, table: string, what: string): TandemError {
  return new TandemError(
    'SEED_FAILED',
    `group ${group.name}: table "${table}" ${where} already held rows, and they differ from the primary's: ${what}`,
    `Empty the table (or point the endpoint at an empty database), or set groups.${group.name}.seed.overwrite: true to replace its rows with the primary's`,
  );
}

/** A chunk of a verified table whose rows the backup lacks or holds with other values. */
export function chunkDiffers(
  group: GroupConfig,
  where: string,
  table: string,
  chunk: number,
  missing: number | string,
  differ: number | string,
): TandemError {
  return rowsDiffer(
    group,
    where,
    table,
    `${missing} rows missing and ${differ} rows different in chunk ${chunk}`,
  );
}

/** At the end of a seed: a verified table holds no more rows than the primary sent. */
export async function checkVerifiedCounts(
  state: SeedState,
  verify: ReadonlySet<string>,
  count: (table: string) => number | Promise<number>,
  group: GroupConfig,
  where: string,
): Promise<void> {
  for (const table of verify) {
    const sent = state.done.filter((d) => d.table === table).reduce((a, d) => a + d.rows, 0);
    const extra = (await count(table)) - sent;
    if (extra !== 0) throw rowsDiffer(group, where, table, `${extra} rows the primary does not have`);
  }
}
