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
 * - A table is folded only when the caller says the order of writes to different rows inside a
 *   transaction cannot matter (no other unique index or exclusion constraint, no foreign key
 *   checked per statement); its changes otherwise stay in `sequential`, in source order. So does every change
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
  /**
   * Values the row ends with, by the target column's index (UNSET where no change set the
   * column), or null: absent.
   */
  values: (Value | typeof UNSET)[] | null;
}

const UNSET: unique symbol = Symbol('unset');

/** A foldable table while folding: its rows, and where each change's columns go. */
interface TableState {
  shape: FoldShape;
  order: Map<string, number>;
  /** Rows by their RowId (see rowState). */
  rows: Map<RowId, RowState>;
  /** The last column list seen and its target indexes (decoded changes share column lists). */
  lastColumns: readonly string[] | null;
  lastIndexes: number[];
  /** The last column list seen by keyAt, and where the key's columns are in it. */
  lastKeyColumns: readonly string[] | null;
  lastKeyAt: number[];
}

/** A row's identity in its table: distinct keys give distinct ids. */
type RowId = string | number | bigint;

/** A key value as text (distinct values give distinct text). */
export function keyText(v: Value): string {
  if (v === null) return 'N';
  if (v instanceof Uint8Array) return `b${Buffer.from(v).toString('hex')}`;
  return `${typeof v}${String(v)}`;
}

/**
 * A one-column key value as a map key: numbers and bigints as themselves (a map tells them
 * apart from each other and from strings, and hashes them without building text), the rest as
 * keyText.
 */
function oneKeyId(v: Value): RowId {
  return typeof v === 'number' || typeof v === 'bigint' ? v : keyText(v);
}

/** `shapeOf` gives a table's shape when its changes may be folded, null when they may not. */
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
  const tables = new Map<string, TableState>();
  for (const c of changes) {
    const shape = foldable.get(c.table);
    if (!shape) {
      sequential.push(c);
      continue;
    }
    const t = entry(tables, c.table, () => ({
      shape,
      order: new Map(shape.columns.map((col, i) => [col, i])),
      rows: new Map<RowId, RowState>(),
      lastColumns: null,
      lastIndexes: [],
      lastKeyColumns: null,
      lastKeyAt: [],
    }));
    const from = c.before ?? c.after!;
    if (c.op === 'delete') {
      const s = rowState(t, c, from);
      s.deleted = true;
      s.values = null;
      continue;
    }
    const s = rowState(t, c, c.after!);
    if (c.op === 'update' && c.before && s !== rowState(t, c, c.before)) {
      // A full row moves: the old key ends absent, the new one holds exactly the after image.
      const old = rowState(t, c, c.before);
      old.deleted = true;
      old.values = null;
      s.deleted = true;
      s.values = null;
    }
    if (!s.values) s.values = new Array<Value | typeof UNSET>(shape.columns.length).fill(UNSET);
    const values = s.values;
    const at = indexes(t, c);
    for (let i = 0; i < at.length; i++) values[at[i]!] = c.after![i]!;
  }
  const out: TableFold[] = [];
  for (const [table, t] of tables) {
    const fold: TableFold = { table, deletes: [], upserts: [] };
    // Rows grouped by the set of columns they set: a bit mask of it up to 31 columns.
    const bySet = new Map<number | string, { at: number[]; group: Upserts }>();
    const narrow = t.shape.columns.length <= 31;
    for (const s of t.rows.values()) {
      if (s.deleted) fold.deletes.push(s.key);
      const values = s.values;
      if (!values) continue;
      let id: number | string;
      if (narrow) {
        let mask = 0;
        for (let i = 0; i < values.length; i++) if (values[i] !== UNSET) mask |= 1 << i;
        id = mask;
      } else {
        let bits = '';
        for (let i = 0; i < values.length; i++) bits += values[i] === UNSET ? '0' : '1';
        id = bits;
      }
      const set = entry(bySet, id, () => {
        const at = values.flatMap((v, i) => (v === UNSET ? [] : [i]));
        return { at, group: { columns: at.map((i) => t.shape.columns[i]!), rows: [] } };
      });
      const at = set.at;
      const row = new Array<Value>(at.length);
      for (let i = 0; i < at.length; i++) row[i] = values[at[i]!] as Value;
      set.group.rows.push(row);
    }
    fold.upserts = [...bySet.values()].map((x) => x.group);
    out.push(fold);
  }
  return { sequential, tables: out };
}

/** The state of the row `image` (of change `c`) names by its key. */
function rowState(t: TableState, c: RowChange, image: readonly Value[]): RowState {
  const at = keyAt(t, c);
  let id: RowId;
  if (at.length === 1) id = oneKeyId(image[at[0]!]!);
  else id = at.map((i) => keyText(image[i]!)).join('\u0001');
  let s = t.rows.get(id);
  if (!s) {
    s = { key: at.map((i) => image[i]!), deleted: false, values: null };
    t.rows.set(id, s);
  }
  return s;
}

function keyIndex(c: RowChange, column: string): number {
  const i = c.columns.indexOf(column);
  if (i < 0) throw new Error(`change for table "${c.table}" lacks key column "${column}"`);
  return i;
}

/** Where the key's columns are among a change's columns (cached while changes share a list). */
function keyAt(t: TableState, c: RowChange): number[] {
  if (t.lastKeyColumns !== c.columns) {
    t.lastKeyAt = t.shape.key.map((k) => keyIndex(c, k));
    t.lastKeyColumns = c.columns;
  }
  return t.lastKeyAt;
}

/** Target column indexes of a change's columns (cached while changes share a column list). */
function indexes(t: TableState, c: RowChange): number[] {
  if (t.lastColumns === c.columns) return t.lastIndexes;
  t.lastIndexes = c.columns.map((col) => {
    const i = t.order.get(col);
    if (i === undefined) throw new Error(`target table ${c.table} has no column "${col}"`);
    return i;
  });
  t.lastColumns = c.columns;
  return t.lastIndexes;
}

function entry<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let v = map.get(key);
  if (v === undefined) {
    v = make();
    map.set(key, v);
  }
  return v;
}

/** An update that changes the key without carrying every column of the target row. */
function movesPartialRow(c: RowChange, shape: FoldShape): boolean {
  if (!c.before) return false;
  const before = c.before;
  const moves = shape.key.some(
    (k) => keyText(before[keyIndex(c, k)]!) !== keyText(c.after![keyIndex(c, k)]!),
  );
  return moves && shape.columns.some((col) => !c.columns.includes(col));
}
