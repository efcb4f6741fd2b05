/**
 * The PostgreSQL engine as adapters/index.ts dispatches to it (loaded only by nodes and commands
 * that meet a PostgreSQL endpoint). `url` is the endpoint's.
 */
import pg from 'pg';
import { tableMatches } from '../../config/index.js';
import type { TableSchema, Value } from '../../core/record.js';
import type { EngineAdapter, TableSum } from '../types.js';
import { PgApply } from './apply.js';
import { checkSyncSetup, PgCapture } from './capture.js';
import { checkPostgres, connectPostgres, pgClientConfig } from './endpoint.js';
import { listTables, quoteIdent, readTableSchema, slotName, tableRef, writtenColumns } from './schema.js';
import { PgSnapshot } from './snapshot.js';
import { fromPgText, toPgParam } from './values.js';

export const engine: EngineAdapter = {
  createCapture: (url, o) => new PgCapture({ ...o, url }),
  createApply: (url, o) => new PgApply({ ...o, url }),
  createSnapshot: (url, group, cut, log) => PgSnapshot.take(url, group, cut, log),

  async readSchemas(url, group) {
    const client = await connectPostgres(url, `groups.${group.name}.endpoints`);
    try {
      const out: TableSchema[] = [];
      for (const t of (await listTables(client)).filter((x) => tableMatches(group.tables, x))) {
        out.push(await readTableSchema(client, t, group.name, group.keys[t]));
      }
      return out;
    } finally {
      await client.end();
    }
  },

  async checkPromotable(url, group, node, log) {
    const field = `groups.${group.name}.endpoints.${node}`;
    await checkPostgres({
      url,
      field,
      role: 'source',
      tables: group.tables,
      keys: group.keys,
      group: group.name,
      slot: slotName(group.name, node),
      after: 'ask for the switchover again',
    });
    if (group.mode !== 'sync') return;
    const client = await connectPostgres(url, field);
    try {
      await checkSyncSetup(client, group, node, field, log, true);
    } finally {
      await client.end();
    }
  },

  async tableSums(url, group) {
    const client = await connectPostgres(url, `groups.${group.name}.endpoints`);
    const tables: TableSum[] = [];
    try {
      for (const t of (await listTables(client)).filter((x) => tableMatches(group.tables, x))) {
        // The first 60 bits of each row's md5, summed (sum of bigint is numeric: no overflow).
        const r = await client.query<{ n: string; s: string }>(
          `SELECT count(*)::text AS n,
                  coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0)::text AS s
             FROM ${tableRef(t)} t`,
        );
        tables.push({ table: t, rows: Number(r.rows[0]!.n), sum: r.rows[0]!.s });
      }
    } finally {
      await client.end();
    }
    return tables;
  },

  async readRowsByKey(url, _group, table, key, keys) {
    const client = new pg.Client({
      ...pgClientConfig(url),
      // Every value as PostgreSQL's text, converted by its type (as capture does).
      types: { getTypeParser: () => (v: string) => v },
    });
    await client.connect();
    try {
      const rows: Value[][] = [];
      // (Not generated columns: the rows are written elsewhere.)
      const columns = await writtenColumns(client, table);
      for (const k of keys) {
        const r = await client.query({
          text: `SELECT ${columns.map(quoteIdent).join(', ')} FROM ${tableRef(table)} WHERE ${key.map((c, i) => `${quoteIdent(c)} = $${i + 1}`).join(' AND ')}`,
          values: k.map(toPgParam),
          rowMode: 'array',
        });
        for (const row of r.rows as (string | null)[][])
          rows.push(row.map((v, i) => fromPgText(v, r.fields[i]!.dataTypeID)));
      }
      return { columns, rows };
    } finally {
      await client.end();
    }
  },

  async fullBeforeImages(url, group, table) {
    const client = await connectPostgres(url, `groups.${group.name}.endpoints`);
    try {
      const r = await client.query<{ full: boolean }>(
        "SELECT relreplident = 'f' AS full FROM pg_class WHERE oid = $1::regclass",
        [tableRef(table)],
      );
      return r.rows[0]?.full === true;
    } finally {
      await client.end();
    }
  },

  async writeSql(url, group, sql) {
    const client = await connectPostgres(url, `groups.${group.name}.endpoints`);
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  },
};
