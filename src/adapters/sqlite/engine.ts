/**
 * The SQLite engine as adapters/index.ts dispatches to it (loaded only by nodes and commands
 * that meet a SQLite endpoint). `path` is the endpoint's database file.
 */
import { createHash } from 'node:crypto';
import { tableMatches } from '../../config/index.js';
import type { Value } from '../../core/record.js';
import type { EngineAdapter, TableSum } from '../types.js';
import { SqliteApply } from './apply.js';
import { SqliteCapture } from './capture.js';
import { toParam } from './literal.js';
import { openDatabase } from './open.js';
import { listTables, quoteIdent, readTableSchema } from './schema.js';
import { SqliteSnapshot } from './snapshot.js';

export const engine: EngineAdapter = {
  createCapture: (path, o) => new SqliteCapture({ ...o, path }),
  createApply: (path, o) => new SqliteApply({ ...o, path }),
  createSnapshot: (path, group, cut) => SqliteSnapshot.take(path, group, cut),

  async readSchemas(path, group) {
    const db = openDatabase(path, { field: `groups.${group.name}.endpoints`, timeout: 5000 });
    try {
      return listTables(db)
        .filter((t) => tableMatches(group.tables, t))
        .map((t) => readTableSchema(db, t, group.name, group.keys[t]));
    } finally {
      db.close();
    }
  },

  async checkPromotable(path, group, node) {
    openDatabase(path, { field: `groups.${group.name}.endpoints.${node}`, timeout: 1000 }).close();
  },

  async tableSums(path, group) {
    const db = openDatabase(path, { field: `groups.${group.name}.endpoints`, timeout: 5000, readonly: true });
    const tables: TableSum[] = [];
    try {
      for (const t of listTables(db).filter((x) => tableMatches(group.tables, x))) {
        let rows = 0;
        let sum = 0n;
        const it = db
          .prepare(`SELECT * FROM ${quoteIdent(t)}`)
          .raw(true)
          .iterate() as Iterable<unknown[]>;
        for (const row of it) {
          rows++;
          sum += rowHash(row.map(canonical).join('\x1f'));
        }
        tables.push({ table: t, rows, sum: sum.toString() });
      }
    } finally {
      db.close();
    }
    return tables;
  },

  async readRowsByKey(path, group, table, key, keys) {
    const db = openDatabase(path, { field: `groups.${group.name}.endpoints`, timeout: 5000, readonly: true });
    db.defaultSafeIntegers(true);
    try {
      const columns = readTableSchema(db, table, group.name, key).columns.map((c) => c.name);
      const q = db
        .prepare(
          `SELECT ${columns.map(quoteIdent).join(', ')} FROM ${quoteIdent(table)} WHERE ${key.map((k) => `${quoteIdent(k)} = ?`).join(' AND ')}`,
        )
        .raw(true);
      const rows: Value[][] = [];
      for (const k of keys) {
        const r = q.get(k.map(toParam)) as unknown[] | undefined;
        if (r) rows.push(r.map((v) => (Buffer.isBuffer(v) ? new Uint8Array(v) : (v as Value))));
      }
      return { columns, rows };
    } finally {
      db.close();
    }
  },

  // Trigger capture always writes whole rows.
  fullBeforeImages: async () => true,

  async writeSql(path, group, sql) {
    const db = openDatabase(path, { field: `groups.${group.name}.endpoints`, timeout: 5000 });
    try {
      db.exec(sql);
    } finally {
      db.close();
    }
  },
};

function canonical(v: unknown): string {
  if (v === null) return 'N';
  if (typeof v === 'bigint') return `i${v}`;
  if (typeof v === 'number') return `r${v}`;
  if (Buffer.isBuffer(v)) return `b${v.toString('hex')}`;
  return `s${String(v)}`;
}

function rowHash(text: string): bigint {
  return BigInt(`0x${createHash('md5').update(text).digest('hex').slice(0, 15)}`);
}
