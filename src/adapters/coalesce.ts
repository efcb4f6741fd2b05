/**
 * Folds a run of row changes that one target transaction applies into each row's final state,
 * so that the run can be written as a few set statements (a multi-row upsert per table, COPY
 * for long runs) instead of a statement per change. Readers of the target see the transaction
 * whole or not at all, so they cannot tell the difference; a hot row updated 2,000 times in the
 * run is written once (PostgreSQL would otherwise walk a chain of 2,000 versions of it that no
 * one can prune before the commit).
 *
 * Invariants (property-tested in test/unit/coalesce.property.test.ts)
 * - Applying the result (each table's deletes, then its upserts; `sequential` changes in their
 *   order) leaves every table as applying the changes one by one with the apply's idempotent
 *   rules does: insert = upsert of the listed columns, update = update of the listed columns
 *   or insert of the after image when the row is missing, delete = delete if present.
 * - A key appears at most once among a table's deletes and once among its upserts.
 * - A table is folded only when the caller says its rows are independent (no other unique
 *   index, exclusion constraint or foreign key: the order of writes to different rows cannot
 *   matter); its changes otherwise stay in `sequential`, in source order. So does every change
 *   of a table in which some update moves a row to a new key without all of the row's columns
 *   (the columns it leaves out live only in the target's old row).
 */
import type { RowChange, Value } from '../core/record.js';

export interface FoldShape {
  /** Key columns, in key order. */
  key: string[];
  /** Every column of the target table. */
  columns: string[];
}

export interface Upserts {
  /** Columns the rows set, in the target table's order. */
  columns: string[];
  rows: Value[][];
}

export interface TableFold {
  table: string;
  /** Key values (in key order) of rows to delete before the upserts. */
  deletes: Value[][];
  /** Rows that end present, grouped by the columns they set. */
  upserts: Upserts[];
}

export interface Folded {
  /** Changes applied one by one, in source order (tables that cannot be folded). */
  sequential: RowChange[];
  tables: TableFold[];
}

interface RowState {
  key: Value[];
  /** The row was deleted at some point: delete it before writing `values`. */
  deleted: boolean;
  /** Column values the row ends with (only the columns some change set), or null: absent. */
  values: Map<string, Value> | null;
}

/** A key value as text (distinct values give distinct text). */
export function keyText(v: Value): string {
  if (v === null) return 'N';
  if (v instanceof Uint8Array) return `b${Buffer.from(v).toString('hex')}`;
  return `${typeof v}${String(v)}`;
}

/** `shapeOf` gives a table's shape when its rows are independent, null when they are not. */
export function foldChanges(
  changes: readonly RowChange[],
  shapeOf: (table: string) => FoldShape | null,
): Folded {
  const foldable = new Map<string, FoldShape | null>();
  for (const c of changes) {
    if (!foldable.has(c.table)) foldable.set(c.table, shapeOf(c.table));
    const shape = foldable.get(c.table);
    if (shape && c.op === 'update' && movesPartialRow(c, shape)) foldable.set(c.table, null);
  }
  const sequential: RowChange[] = [];
  const rows = new Map<string, Map<string, RowState>>();
  for (const c of changes) {
    const shape = foldable.get(c.table);
    if (!shape) {
      sequential.push(c);
      continue;
    }
    const table = entry(rows, c.table, () => new Map<string, RowState>());
    const from = keyOf(c, c.before ?? c.after!, shape);
    const state = (key: Value[]) => {
      const id = key.map(keyText).join('\u0001');
      return entry(table, id, (): RowState => ({ key, deleted: false, values: null }));
    };
    if (c.op === 'delete') {
      const s = state(from);
      s.deleted = true;
      s.values = null;
      continue;
    }
    const to = keyOf(c, c.after!, shape);
    let s = state(to);
    if (c.op === 'update' && !sameKey(from, to)) {
      // A full row moves: the old key ends absent, the new one holds exactly the after image.
      const old = state(from);
      old.deleted = true;
      old.values = null;
      s = state(to);
      s.deleted = true;
      s.values = null;
    }
    s.values ??= new Map();
    c.columns.forEach((col, i) => {
      s.values!.set(col, c.after![i]!);
    });
  }
  const tables: TableFold[] = [];
  for (const [table, states] of rows) {
    const shape = foldable.get(table)!;
    const order = new Map(shape.columns.map((col, i) => [col, i]));
    const fold: TableFold = { table, deletes: [], upserts: [] };
    const bySet = new Map<string, Upserts>();
    for (const s of states.values()) {
      if (s.deleted) fold.deletes.push(s.key);
      if (!s.values) continue;
      const columns = [...s.values.keys()];
      for (const col of columns) {
        if (!order.has(col)) throw new Error(`target table ${table} has no column "${col}"`);
      }
      columns.sort((a, b) => order.get(a)! - order.get(b)!);
      const group = entry(bySet, columns.join('\0'), (): Upserts => ({ columns, rows: [] }));
      group.rows.push(columns.map((col) => s.values!.get(col)!));
    }
    fold.upserts = [...bySet.values()];
    tables.push(fold);
  }
  return { sequential, tables };
}

function entry<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let v = map.get(key);
  if (v === undefined) {
    v = make();
    map.set(key, v);
  }
  return v;
}

function keyOf(c: RowChange, image: Value[], shape: FoldShape): Value[] {
  return shape.key.map((k) => {
    const i = c.columns.indexOf(k);
    if (i < 0) throw new Error(`change for table "${c.table}" lacks key column "${k}"`);
    return image[i]!;
  });
}

function sameKey(a: Value[], b: Value[]): boolean {
  return a.every((v, i) => keyText(v) === keyText(b[i]!));
}

/** An update that changes the key without carrying every column of the target row. */
function movesPartialRow(c: RowChange, shape: FoldShape): boolean {
  if (!c.before) return false;
  if (sameKey(keyOf(c, c.before, shape), keyOf(c, c.after!, shape))) return false;
  return shape.columns.some((col) => !c.columns.includes(col));
}
