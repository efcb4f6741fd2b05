/**
 * The fence of a PostgreSQL database: a statement trigger `tandem_fence` on every table of the
 * group (BEFORE INSERT, UPDATE, DELETE, TRUNCATE) calling the group's function
 * `tandem.fence_<group>()`. The function's body is the fence's state, so fencing and unfencing
 * are one CREATE OR REPLACE FUNCTION: no table lock, effective for every session's next
 * statement.
 *
 * - open (a primary taking writes): returns at once; on a primary guarded by a witness's lease,
 *   only while `tandem.lease` runs (docs/failover.md), else refuses as below.
 * - fenced (a backup, a switchover, a newer epoch): refuses with SQLSTATE 25006 (read-only transaction) unless the
 *   session is Tandem's apply (its role, with `tandem.apply = on`); the message names the
 *   primary writers should use.
 * The function runs as its owner (SECURITY DEFINER, fixed search_path): application roles need
 * no rights on Tandem's schema for the lease check.
 */
import type pg from 'pg';
import { TandemError } from '../../core/errors.js';
import { monoNow } from '../../core/mono.js';
import { quoteIdent, quoteLiteral, tableRef } from './schema.js';

/**
 * Open (a primary taking writes; with `lease`, only while tandem.lease runs, else refusing with
 * that message), or refusing with `message` all but Tandem's apply (`user`).
 */
export type FenceState =
  | { kind: 'open'; lease: string | null }
  | { kind: 'fenced'; message: string; user: string };

/** The group's fence function's name in schema tandem, unquoted. */
export function fenceName(group: string): string {
  return `fence_${group.replaceAll('-', '_').toLowerCase()}`;
}

export function fenceFunction(group: string): string {
  return `tandem.${quoteIdent(fenceName(group))}`;
}

/** The first line of a fenced function's body, which fencedSql looks for. */
const FENCED_MARK = '-- fenced';

/**
 * SQL that is true while the group's database is fenced (a backup, a switchover's old primary):
 * the body of its fence function says so, which only its owner can change.
 */
export function fencedSql(group: string): string {
  return `EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'tandem' AND p.proname = ${quoteLiteral(fenceName(group))} AND p.pronargs = 0
                     AND p.prosrc LIKE ${quoteLiteral(`%${FENCED_MARK}%`)})`;
}

/** Sets the group's fence function to `state` (creating the tandem schema if needed). */
export async function setFence(client: pg.Client, group: string, state: FenceState): Promise<void> {
  let body = 'RETURN NULL;';
  if (state.kind === 'open' && state.lease !== null) {
    // Refused also while the clock reads earlier than the last extension: it was set back.
    body = `IF (SELECT until >= clock_timestamp() AND set_at <= clock_timestamp() FROM tandem.lease WHERE grp = ${quoteLiteral(group)}) THEN
          RETURN NULL;
        END IF;
        RAISE EXCEPTION USING MESSAGE = ${quoteLiteral(state.lease)}, ERRCODE = 'read_only_sql_transaction';`;
  }
  if (state.kind === 'fenced') {
    const { message } = state;
    body = `${FENCED_MARK}
        IF session_user = ${quoteLiteral(state.user)} AND current_setting('tandem.apply', true) = 'on' THEN
          RETURN NULL;
        END IF;
        RAISE EXCEPTION USING MESSAGE = ${quoteLiteral(message)}, ERRCODE = 'read_only_sql_transaction';`;
  }
  // Tandem's own DDL needs local durability only: with synchronous_standby_names naming a
  // capture that is not streaming (yet), a synchronous commit would wait for it.
  await client.query(`BEGIN; SET LOCAL synchronous_commit = local;
    CREATE SCHEMA IF NOT EXISTS tandem;
    CREATE OR REPLACE FUNCTION ${fenceFunction(group)}() RETURNS trigger LANGUAGE plpgsql
      SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
      BEGIN
        ${body}
      END $f$;
    COMMIT`);
}

/** Puts the fence trigger on `table` unless it is there already. */
export async function fenceTable(client: pg.Client, group: string, table: string): Promise<void> {
  const ref = tableRef(table);
  const have = await client.query(
    `SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = 'tandem_fence'
        AND tgfoid = $2::regprocedure`,
    [ref, `${fenceFunction(group)}()`],
  );
  if (have.rowCount) return;
  await client.query(
    `CREATE OR REPLACE TRIGGER tandem_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${ref}
       FOR EACH STATEMENT EXECUTE FUNCTION ${fenceFunction(group)}()`,
  );
}

/**
 * Fences a primary for a switchover: the fence function refuses writes, every table of the group
 * gets the trigger, and the sessions that hold a transaction id (they wrote, or may commit what
 * they wrote) and are not Tandem's nor of a role in `exceptRoles` are terminated; their open
 * transactions roll back, so none was acknowledged. Resolves once no such session is left.
 * Prepared transactions would commit after the fence: they fail the fence. On failure the
 * database is left unfenced.
 */
export async function fencePrimary(
  client: pg.Client,
  o: {
    group: string;
    tables: string[];
    message: string;
    /** The lease message when the primary is guarded (restored if the fence fails). */
    lease: string | null;
    exceptRoles: readonly string[];
    timeoutMs: number;
    field: string;
  },
): Promise<void> {
  const user = (await client.query<{ u: string }>('SELECT session_user AS u')).rows[0]!.u;
  const deadline = monoNow() + o.timeoutMs;
  const writers = `SELECT pid FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
       AND backend_xid IS NOT NULL AND NOT (usename = ANY($1::text[]))
       AND NOT (usename = session_user AND application_name LIKE 'tandem%')`;
  // A session waiting for synchronous replication has committed: it ends once Tandem confirms.
  const terminate = () =>
    client.query(
      `SELECT pg_terminate_backend(w.pid) FROM (${writers}) w JOIN pg_stat_activity a USING (pid)
        WHERE a.wait_event IS DISTINCT FROM 'SyncRep'`,
      [[...o.exceptRoles]],
    );
  try {
    await setFence(client, o.group, { kind: 'fenced', message: o.message, user });
    const pending = new Set(o.tables);
    for (;;) {
      await terminate();
      // A table without the trigger yet: creating it waits for that table's writers, which the
      // termination above ends; a lock held on (a new writer) is retried after terminating again.
      for (const t of [...pending]) {
        try {
          await client.query("BEGIN; SET LOCAL synchronous_commit = local; SET LOCAL lock_timeout = '200ms'");
          await fenceTable(client, o.group, t);
          await client.query('COMMIT');
          pending.delete(t);
        } catch (err) {
          await client.query('ROLLBACK');
          if ((err as { code?: string }).code !== '55P03') throw err;
        }
      }
      const left = await client.query(writers, [[...o.exceptRoles]]);
      const prepared = await client.query<{ gid: string }>(
        'SELECT gid FROM pg_prepared_xacts WHERE database = current_database()',
      );
      if (prepared.rowCount) {
        throw new TandemError(
          'SWITCH_FAILED',
          `${o.field}: prepared transactions (${prepared.rows.map((r) => r.gid).join(', ')}) could commit after the fence`,
          'COMMIT PREPARED or ROLLBACK PREPARED them, then run the switchover again',
        );
      }
      if (pending.size === 0 && left.rowCount === 0) return;
      if (monoNow() >= deadline) {
        throw new TandemError(
          'SWITCH_FAILED',
          `${o.field}: ${left.rowCount} writing session(s) did not end and ${pending.size} table(s) could not be fenced within ${o.timeoutMs} ms`,
          'Check pg_stat_activity for sessions Tandem may not terminate (another superuser), or allow more time (groups.<group>.switchover.fence_timeout)',
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  } catch (err) {
    await setFence(client, o.group, { kind: 'open', lease: o.lease }).catch(() => {});
    throw err;
  }
}

/** The lease of a primary guarded by a witness (see setFence). */
export const LEASE_TABLE = `CREATE TABLE IF NOT EXISTS tandem.lease (grp text PRIMARY KEY, until timestamptz NOT NULL);
  ALTER TABLE tandem.lease ADD COLUMN IF NOT EXISTS set_at timestamptz NOT NULL DEFAULT '-infinity'`;
