/** Opening an endpoint's database: its folder is created, and a failure names the config field. */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { TandemError } from '../../core/errors.js';

export interface OpenOptions {
  /** The config field that names the database, for error messages. */
  field: string;
  /** busy_timeout in ms (0: fail at once with SQLITE_BUSY). */
  timeout: number;
  readonly?: boolean;
}

export function openDatabase(file: string, o: OpenOptions): Database.Database {
  let db: Database.Database;
  try {
    if (!o.readonly) mkdirSync(path.dirname(file), { recursive: true });
    db = new Database(file, {
      timeout: o.timeout,
      readonly: o.readonly ?? false,
      fileMustExist: o.readonly ?? false,
    });
    db.defaultSafeIntegers(true);
    if (!o.readonly) db.pragma('journal_mode = WAL');
  } catch (err) {
    throw new TandemError(
      'ENDPOINT_UNAVAILABLE',
      `${o.field}: cannot open the SQLite database ${file}: ${(err as Error).message}`,
      'Check the path and its permissions (the folder is created if missing; the file must be a SQLite database)',
      { cause: err },
    );
  }
  return db;
}
