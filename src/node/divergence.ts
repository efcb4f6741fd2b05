/**
 * Divergence reports: the transactions an old primary committed that never reached the node
 * that took over (docs/failover.md, rejoin). Written by the rejoin before it undoes them, one file
 * per rejoin in `<state>/divergence/`, kept until discarded: they are what an operator looks at,
 * exports (JSON or SQL) and re-applies on the new primary, or drops.
 */
import path from 'node:path';
import type { Endpoint } from '../config/index.js';
import { HybridLogicalClock } from '../core/hlc.js';
import type { JournalRecord, RowChange, Value } from '../core/record.js';
import type { Disk } from '../journal/index.js';

/** A value in JSON: integers as text, bytes as base64, non-finite floats by name. */
export type JsonValue =
  | null
  | number
  | string
  | boolean
  | { int: string }
  | { bytes: string }
  | { float: string };

export function toJsonValue(v: Value): JsonValue {
  if (typeof v === 'bigint') return { int: v.toString() };
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString('base64') };
  if (typeof v === 'number' && !Number.isFinite(v)) return { float: String(v) };
  return v;
}

export function fromJsonValue(j: JsonValue): Value {
  if (j === null || typeof j !== 'object') return j;
  if ('int' in j) return BigInt(j.int);
  if ('bytes' in j) return new Uint8Array(Buffer.from(j.bytes, 'base64'));
  return Number(j.float);
}

export interface DivergentChange {
  op: 'insert' | 'update' | 'delete';
  table: string;
  columns: string[];
  before: JsonValue[] | null;
  after: JsonValue[] | null;
}

export interface DivergentTransaction {
  /** Journal positions on the old primary (the new primary has other records there). */
  first: number;
  last: number;
  /** The node that captured it and its epoch (absent in reports written before 2026-12-07). */
  origin?: string;
  epoch?: number;
  /** When the old primary captured it. */
  at: string;
  changes: DivergentChange[];
}

export interface DivergenceReport {
  id: string;
  group: string;
  /** The old primary (this node), its epoch, and its engine. */
  node: string;
  epoch: number;
  engine: Endpoint['engine'];
  /** Who took over, at which epoch, and the last position both histories share. */
  primary: string;
  newEpoch: number;
  fork: number;
  createdAt: string;
  transactions: DivergentTransaction[];
  /** Re-applied or discarded, and when (null while open). */
  resolved: { how: 'reapplied' | 'discarded'; at: string; detail: string } | null;
}

export function reportDir(stateDir: string): string {
  return path.join(stateDir, 'divergence');
}

/** Groups the tail's records into source transactions (a record with txCount 0 continues). */
export function transactionsOf(tail: JournalRecord[]): DivergentTransaction[] {
  const out: DivergentTransaction[] = [];
  let open: DivergentTransaction | null = null;
  for (const rec of tail) {
    open ??= {
      first: rec.position,
      last: rec.position,
      origin: rec.origin,
      epoch: rec.epoch,
      at: new Date(HybridLogicalClock.millis(rec.hlc)).toISOString(),
      changes: [],
    };
    open.last = rec.position;
    for (const c of rec.changes) {
      if (c.op !== 'insert' && c.op !== 'update' && c.op !== 'delete') continue;
      open.changes.push({
        op: c.op,
        table: c.table,
        columns: c.columns,
        before: c.before?.map(toJsonValue) ?? null,
        after: c.after?.map(toJsonValue) ?? null,
      });
    }
    if (rec.txCount > 0) {
      if (open.changes.length > 0) out.push(open);
      open = null;
    }
  }
  if (open && open.changes.length > 0) out.push(open);
  return out;
}

/** A transaction as every node names it: who captured it, at which epoch, at which positions. */
export interface ReportedTransaction {
  origin: string;
  epoch: number;
  first: number;
  last: number;
}

/** What this node's reports of `group` name (open or resolved), for a rejoining node to leave out. */
export function reportedTransactions(disk: Disk, stateDir: string, group: string): ReportedTransaction[] {
  return listReports(disk, stateDir, group).flatMap((r) =>
    r.transactions.flatMap((t) =>
      t.origin === undefined || t.epoch === undefined
        ? []
        : [{ origin: t.origin, epoch: t.epoch, first: t.first, last: t.last }],
    ),
  );
}

/**
 * The transactions another node's report names already, left out of this one's: two old
 * primaries can hold the same lost transactions (the second took over holding the first's, and
 * both lost their epochs to a third), and each lost write must be re-applied once. Only an exact
 * match (origin, epoch, first and last position) is left out: a report too long, never one too
 * short.
 */
export function withoutReported(
  transactions: DivergentTransaction[],
  reported: readonly ReportedTransaction[],
): DivergentTransaction[] {
  const key = (t: { origin?: string; epoch?: number; first: number; last: number }) =>
    `${t.origin}\0${t.epoch}\0${t.first}\0${t.last}`;
  const elsewhere = new Set(reported.map(key));
  return transactions.filter((t) => !elsewhere.has(key(t)));
}

export function saveReport(disk: Disk, stateDir: string, r: DivergenceReport): string {
  const file = path.join(reportDir(stateDir), `${r.id}.json`);
  disk.writeTextDurably(file, `${JSON.stringify(r, null, 2)}\n`);
  return file;
}

export function listReports(disk: Disk, stateDir: string, group: string): DivergenceReport[] {
  const dir = reportDir(stateDir);
  return disk
    .list(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(disk.readText(path.join(dir, f))!) as DivergenceReport)
    .filter((r) => r.group === group)
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** The row changes of a report, as journal row changes (for re-applying). */
export function rowChanges(r: DivergenceReport): RowChange[] {
  return r.transactions.flatMap((t) =>
    t.changes.map((c) => ({
      op: c.op,
      table: c.table,
      columns: c.columns,
      before: c.before?.map(fromJsonValue) ?? null,
      after: c.after?.map(fromJsonValue) ?? null,
    })),
  );
}

function sqlLiteral(v: JsonValue, engine: Endpoint['engine']): string {
  const x = fromJsonValue(v);
  if (x === null) return 'NULL';
  if (typeof x === 'boolean') return engine === 'postgres' ? String(x) : x ? '1' : '0';
  if (typeof x === 'bigint') return x.toString();
  if (typeof x === 'number') {
    if (Number.isFinite(x)) return String(x);
    return engine === 'postgres'
      ? `'${x === Infinity ? 'Infinity' : x === -Infinity ? '-Infinity' : 'NaN'}'::float8`
      : x > 0
        ? '9e999'
        : x < 0
          ? '-9e999'
          : 'NULL';
  }
  if (x instanceof Uint8Array) {
    const hex = Buffer.from(x).toString('hex');
    return engine === 'postgres' ? `'\\x${hex}'::bytea` : `X'${hex}'`;
  }
  return `'${String(x).replaceAll("'", "''")}'`;
}

function ident(name: string): string {
  return name
    .split('.')
    .map((p) => `"${p.replaceAll('"', '""')}"`)
    .join('.');
}

/**
 * The report as SQL a person can read and run on the new primary: one transaction per source
 * transaction; inserts as upserts on the key, updates and deletes by key (`keys` per table).
 */
export function toSql(r: DivergenceReport, keys: (table: string) => string[]): string {
  const out = [
    `-- Tandem divergence report ${r.id}: group ${r.group}, transactions node ${r.node} committed at epoch ${r.epoch}`,
    `-- that never reached ${r.primary} (primary from epoch ${r.newEpoch}, histories shared up to position ${r.fork}).`,
  ];
  for (const t of r.transactions) {
    out.push(`-- positions ${t.first}..${t.last}, captured ${t.at}`, 'BEGIN;');
    for (const c of t.changes) {
      const key = keys(c.table);
      const where = (img: JsonValue[]) =>
        key
          .map((k) => `${ident(k)} = ${sqlLiteral(img[c.columns.indexOf(k)] ?? null, r.engine)}`)
          .join(' AND ');
      if (c.op === 'delete') out.push(`DELETE FROM ${ident(c.table)} WHERE ${where(c.before ?? c.after!)};`);
      else if (c.op === 'insert') {
        const rest = c.columns.filter((x) => !key.includes(x));
        out.push(
          `INSERT INTO ${ident(c.table)} (${c.columns.map(ident).join(', ')}) VALUES (${c.after!.map((v) => sqlLiteral(v, r.engine)).join(', ')}) ON CONFLICT (${key.map(ident).join(', ')}) ${rest.length ? `DO UPDATE SET ${rest.map((x) => `${ident(x)} = excluded.${ident(x)}`).join(', ')}` : 'DO NOTHING'};`,
        );
      } else {
        const set = c.columns.map((x, i) => `${ident(x)} = ${sqlLiteral(c.after![i]!, r.engine)}`).join(', ');
        out.push(`UPDATE ${ident(c.table)} SET ${set} WHERE ${where(c.before ?? c.after!)};`);
      }
    }
    out.push('COMMIT;');
  }
  return `${out.join('\n')}\n`;
}
