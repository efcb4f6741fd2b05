/**
 * Tandem's own tables inside a replicated SQLite database, and the triggers it installs.
 * Everything here is plain built-in SQL so that any writer (the sqlite3 shell included) fires
 * the capture triggers and hits the backup fence.
 */
import type Database from 'better-sqlite3';
import type { TableSchema } from '../../core/record.js';
import { quoteIdent, quoteText } from './schema.js';

/** Source side: the change table, the column layouts the triggers write, and the group tag. */
export function createSourceTables(db: Database.Database): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS _tandem_changes (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a captured seq stays captured
      tbl TEXT NOT NULL,
      op TEXT NOT NULL,                       -- I U D (rows), S (schema), X (drop)
      lv INTEGER NOT NULL,                    -- layout version of old/new
      old TEXT,                               -- quote()d values joined by ','
      new TEXT
    );
    CREATE TABLE IF NOT EXISTS _tandem_layout (
      tbl TEXT NOT NULL,
      lv INTEGER NOT NULL,
      schema TEXT,                            -- TableSchema JSON; NULL once the table is dropped
      PRIMARY KEY (tbl, lv)
    );
    CREATE TABLE IF NOT EXISTS _tandem_journaled (  -- the journal position of the last changes deleted above
      grp TEXT PRIMARY KEY,
      position INTEGER NOT NULL
    );
  `);
}

/** Target side: the applied position (written in the same transaction as the data) and the fence. */
export function createTargetTables(db: Database.Database): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS _tandem_applied (
      grp TEXT PRIMARY KEY,
      position INTEGER NOT NULL,
      epoch INTEGER NOT NULL,
      seeded INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS _tandem_fence (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      open INTEGER NOT NULL                   -- 1 only inside the apply transaction, never committed
    );
    INSERT OR IGNORE INTO _tandem_fence (id, open) VALUES (1, 0);
    CREATE TABLE IF NOT EXISTS _tandem_tables (  -- the source definition each table was last brought to
      grp TEXT NOT NULL,
      name TEXT NOT NULL,
      schema TEXT NOT NULL,
      PRIMARY KEY (grp, name)
    );
    CREATE TABLE IF NOT EXISTS _tandem_unique_after (  -- after a resumed seed: unique indexes wait for apply to pass this
      grp TEXT PRIMARY KEY,
      position INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS _tandem_seed (  -- a seed begun and not finished: its plan
      grp TEXT PRIMARY KEY,
      plan TEXT NOT NULL,
      verify TEXT NOT NULL                    -- JSON list of tables compared, not written
    );
    CREATE TABLE IF NOT EXISTS _tandem_seed_chunks (
      grp TEXT NOT NULL,
      tbl TEXT NOT NULL,
      chunk INTEGER NOT NULL,
      rows INTEGER NOT NULL,
      PRIMARY KEY (grp, tbl, chunk)
    );
  `);
}

function image(prefix: 'OLD' | 'NEW', cols: readonly string[]): string {
  return cols.map((c) => `quote(${prefix}.${quoteIdent(c)})`).join(" || ',' || ");
}

function triggerName(kind: string, table: string): string {
  return quoteIdent(`_tandem_${kind}_${table}`);
}

/**
 * Drops Tandem's triggers on `table`: every one (also stale ones left by a rename), or only the
 * capture (`cap`) or fence (`fence`) triggers.
 */
export function dropTandemTriggers(
  db: Database.Database,
  table: string,
  kind: 'cap' | 'fence' | 'lease' | 'vs' | '' = '',
): void {
  const rows = db
    .prepare(
      "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ? AND name LIKE ? ESCAPE '\\'",
    )
    .all(table, `\\_tandem\\_${kind ? `${kind}\\_` : ''}%`) as { name: string }[];
  for (const r of rows) db.exec(`DROP TRIGGER IF EXISTS ${quoteIdent(r.name)}`);
}

/**
 * AFTER triggers that log each row change of `schema`'s table, with its images, into a log
 * table: `_tandem_changes` with the layout version (capture), or `_tandem_vs_changes` (a virtual
 * switch's test writes).
 */
function installLogTriggers(
  db: Database.Database,
  schema: TableSchema,
  kind: 'cap' | 'vs',
  into: string,
  lv: number | null,
): void {
  const t = quoteIdent(schema.name);
  const tbl = quoteText(schema.name);
  const cols = schema.columns.map((c) => c.name);
  const lvCol = lv === null ? '' : ', lv';
  const lvVal = lv === null ? '' : `, ${lv}`;
  dropTandemTriggers(db, schema.name, kind);
  const row = (op: string, old: string, neu: string) =>
    `INSERT INTO ${into} (tbl, op${lvCol}, old, new) VALUES (${tbl}, '${op}'${lvVal}, ${old}, ${neu});`;
  db.exec(`
    CREATE TRIGGER ${triggerName(`${kind}_i`, schema.name)} AFTER INSERT ON ${t} BEGIN
      ${row('I', 'NULL', image('NEW', cols))}
    END;
    CREATE TRIGGER ${triggerName(`${kind}_u`, schema.name)} AFTER UPDATE ON ${t} BEGIN
      ${row('U', image('OLD', cols), image('NEW', cols))}
    END;
    CREATE TRIGGER ${triggerName(`${kind}_d`, schema.name)} AFTER DELETE ON ${t} BEGIN
      ${row('D', image('OLD', cols), 'NULL')}
    END;
  `);
}

/** Capture: every row change into _tandem_changes, with the layout version it was written in. */
export function installCaptureTriggers(db: Database.Database, schema: TableSchema, lv: number): void {
  installLogTriggers(db, schema, 'cap', '_tandem_changes', lv);
}

/**
 * BEFORE triggers that refuse every write with `message` unless `_tandem_fence.open` is 1. Only
 * the apply connection sets it, inside its own transaction, and resets it before commit, so no
 * other connection ever sees it open. A backup's table loses every other Tandem trigger; a
 * primary fenced for a switchover keeps its capture triggers (`keepCapture`).
 */
export function installFenceTriggers(
  db: Database.Database,
  table: string,
  message: string,
  keepCapture = false,
): void {
  const t = quoteIdent(table);
  dropTandemTriggers(db, table, keepCapture ? 'fence' : '');
  // RAISE takes only a literal message in SQLite before 3.47, so the names are baked in here.
  const body = `BEGIN SELECT RAISE(ABORT, ${quoteText(message)}); END`;
  const when = 'WHEN (SELECT open FROM _tandem_fence) IS NOT 1';
  db.exec(`
    CREATE TRIGGER ${triggerName('fence_i', table)} BEFORE INSERT ON ${t} ${when} ${body};
    CREATE TRIGGER ${triggerName('fence_u', table)} BEFORE UPDATE ON ${t} ${when} ${body};
    CREATE TRIGGER ${triggerName('fence_d', table)} BEFORE DELETE ON ${t} ${when} ${body};
  `);
}

/**
 * The lease of a primary guarded by a witness: writes are refused once `until_ms` has passed, and
 * also while the clock reads earlier than `set_ms`, when it was last extended: the wall clock was
 * set back, and `until_ms` no longer says how long the quorum granted.
 */
export function createLeaseTable(db: Database.Database): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS _tandem_lease (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      until_ms REAL NOT NULL,                 -- unix ms on this machine's clock
      set_ms REAL NOT NULL DEFAULT 0          -- when until_ms was written, same clock
    );
    INSERT OR IGNORE INTO _tandem_lease (id, until_ms) VALUES (1, 0);
  `);
  const cols = db.prepare('PRAGMA table_info(_tandem_lease)').all() as { name: string }[];
  if (!cols.some((c) => c.name === 'set_ms'))
    db.exec('ALTER TABLE _tandem_lease ADD COLUMN set_ms REAL NOT NULL DEFAULT 0');
}

/** SQL for now in unix milliseconds (works on every SQLite version the shell may have). */
export const NOW_MS = "((julianday('now') - 2440587.5) * 86400000.0)";

/** BEFORE triggers that refuse every write with `message` once the lease has run out. */
export function installLeaseTriggers(db: Database.Database, table: string, message: string): void {
  const t = quoteIdent(table);
  dropTandemTriggers(db, table, 'lease');
  const body = `BEGIN SELECT RAISE(ABORT, ${quoteText(message)}); END`;
  const when = `WHEN (SELECT until_ms < ${NOW_MS} OR set_ms > ${NOW_MS} FROM _tandem_lease WHERE id = 1)`;
  db.exec(`
    CREATE TRIGGER ${triggerName('lease_i', table)} BEFORE INSERT ON ${t} ${when} ${body};
    CREATE TRIGGER ${triggerName('lease_u', table)} BEFORE UPDATE ON ${t} ${when} ${body};
    CREATE TRIGGER ${triggerName('lease_d', table)} BEFORE DELETE ON ${t} ${when} ${body};
  `);
}

/** A virtual switch's log of test writes, with before images (see docs/virtual-switch.md). */
export function createTestLog(db: Database.Database): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS _tandem_vs_changes (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      tbl TEXT NOT NULL,
      op TEXT NOT NULL,                       -- I U D
      old TEXT,                               -- quote()d values joined by ','
      new TEXT
    );
  `);
}

/** A virtual switch: each test write of `schema`'s table into _tandem_vs_changes. */
export function installTestTriggers(db: Database.Database, schema: TableSchema): void {
  installLogTriggers(db, schema, 'vs', '_tandem_vs_changes', null);
}
