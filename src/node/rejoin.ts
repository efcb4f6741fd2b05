/**
 * Rejoin of an old primary (docs/failover.md): a node that learns another became primary at a
 * newer epoch has fenced its database and journaled everything it had committed. It then
 *   1. asks the new primary where their histories fork (the last position of its epoch there)
 *      and checks both hold the same record at that position;
 *   2. writes its divergent tail, the transactions after the fork, to a divergence report;
 *   3. records the new role with the rejoin still to finish (roles.json `rejoin`);
 *   4. removes capture's objects, undoes the tail in one transaction (from the before images,
 *      or, for rows whose images hold only the key, from the new primary's current rows),
 *      cuts its journal back to the fork, and starts as a backup streaming from fork + 1.
 * Steps 4 are idempotent: a crash in the middle repeats them from the journal, which is cut last.
 *
 * A backup can hold a divergent tail too (realignBackup): records an old primary sent it and not
 * the node that took over. It cuts them off the same way before it follows the new primary.
 */
import { createHash } from 'node:crypto';
import type { GroupConfig } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import { HybridLogicalClock } from '../core/hlc.js';
import { decodeRecord, type JournalRecord, type RowChange, type Value } from '../core/record.js';
import type { Journal } from '../journal/index.js';
import {
  type DivergenceReport,
  fromJsonValue,
  type JsonValue,
  type ReportedTransaction,
  saveReport,
  toJsonValue,
  transactionsOf,
  withoutReported,
} from './divergence.js';
import type { TandemNode } from './node.js';
import { ANSWER_BYTES } from './take-back.js';

/** The journal's records after `position`. */
export function tailAfter(j: Journal, position: number): JournalRecord[] {
  const out: JournalRecord[] = [];
  for (let p = position + 1; p <= j.lastPosition; ) {
    const batch = j.read(p, { maxBytes: 8 << 20, maxRecords: 1024 });
    if (batch.length === 0) break;
    for (const b of batch) out.push(decodeRecord(b));
    p += batch.length;
  }
  return out;
}

export function recordHash(j: Journal, position: number): string | null {
  if (position < j.firstPosition || position > j.lastPosition) return null;
  return createHash('sha256')
    .update(j.read(position, { maxBytes: 1, maxRecords: 1 })[0]!)
    .digest('hex');
}

/**
 * Where this primary's history (at epoch `epoch`) ends in its own journal: the last record
 * before the first one of a later epoch. Answered by the current primary to an old one.
 */
export function forkPoint(j: Journal, epoch: number): { position: number; hash: string | null } {
  let lo = j.firstPosition;
  let hi = j.lastPosition + 1;
  const epochAt = (p: number) => decodeRecord(j.read(p, { maxBytes: 1, maxRecords: 1 })[0]!).epoch;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (epochAt(mid) > epoch) hi = mid;
    else lo = mid + 1;
  }
  const position = lo - 1;
  return { position, hash: recordHash(j, position) };
}

/** The primary's answer to `records`: its journal's records after `after`, up to `upTo`, base64. */
export function recordsOf(j: Journal, after: number, upTo: number): { records: string[]; more: boolean } {
  const records: string[] = [];
  let bytes = 0;
  for (let p = Math.max(after + 1, j.firstPosition); p <= Math.min(upTo, j.lastPosition); ) {
    const batch = j.read(p, { maxBytes: 1 << 20, maxRecords: 256 });
    for (const payload of batch) {
      if (p > upTo) break;
      if (bytes + payload.length > ANSWER_BYTES && records.length > 0) return { records, more: true };
      records.push(payload.toString('base64'));
      bytes += payload.length;
      p++;
    }
  }
  return { records, more: false };
}

/**
 * Where this node's journal and the primary's history part, for this journal's records of
 * `epoch`: the last position both hold the same record at, and the primary's records of that
 * epoch after it. Usually the fork is where the epoch ends at the primary. They differ when the
 * epoch's primary crashed before an fsync, lost records it had sent ahead to a backup, and
 * captured the same transactions again (take-back.ts) while that backup, not asked, became
 * primary holding the originals: then the records are compared back from the end, in windows
 * that widen, until both hold the same one.
 */
export async function findFork(
  node: TandemNode,
  g: GroupConfig,
  primary: string,
  epoch: number,
): Promise<{ position: number; theirs: JournalRecord[] }> {
  const j = node.journal(g.name);
  const f = await node.askNode(primary, { op: 'fork', group: g.name, epoch });
  const end = Number(f.position);
  // (The primary may not hold that record: a seed's position, or released by retention.)
  if (end <= j.lastPosition && (f.hash === null || end < j.firstPosition || f.hash === recordHash(j, end)))
    return { position: end, theirs: [] };
  const cannot = (why: string) =>
    new TandemError(
      'STATE_CORRUPT',
      `group ${g.name}: ${why}`,
      'The histories cannot be joined: stop this node, delete its state folder and database, and start it to be seeded',
    );
  const top = Math.min(end, j.lastPosition);
  for (let window = 64; ; window *= 4) {
    const lo = Math.max(j.firstPosition - 1, top - window);
    const theirs: Buffer[] = [];
    for (let more = true; more; ) {
      const a = await node.askNode(primary, {
        op: 'records',
        group: g.name,
        after: lo + theirs.length,
        upTo: end,
      });
      for (const b64 of a.records as string[]) theirs.push(Buffer.from(b64, 'base64'));
      more = a.more === true && (a.records as string[]).length > 0;
    }
    if (theirs.length !== end - lo)
      throw cannot(`${primary} no longer holds its records ${lo + 1} to ${end} to compare with this node's`);
    let same = 0;
    while (lo + same < top && j.read(lo + same + 1, { maxBytes: 1, maxRecords: 1 })[0]!.equals(theirs[same]!))
      same++;
    if (same > 0 || lo === top)
      return { position: lo + same, theirs: theirs.slice(same).map((b) => decodeRecord(b)) };
    if (lo === j.firstPosition - 1 || window > 1 << 20)
      throw cannot(
        `this node's records of epoch ${epoch} differ from ${primary}'s from position ${lo + 1} on`,
      );
  }
}

/**
 * This node's divergent tail without the changes the new primary holds too: records of this
 * node at `epoch` it lost in a crash and captured again, which the primary got as originals
 * (findFork). Both are the same stretch of this node's database changes in the same order, cut
 * into records differently, so the primary's and the tail's start alike, change by change. A
 * start that does not match keeps the whole tail: a report too long, never one too short.
 */
export function withoutKept(
  tail: JournalRecord[],
  theirs: JournalRecord[],
  node: string,
  epoch: number,
): JournalRecord[] {
  const rows = (rs: JournalRecord[]) =>
    rs.flatMap((r) => r.changes.filter((c): c is RowChange => 'columns' in c));
  const kept = rows(theirs.filter((r) => r.origin === node && r.epoch === epoch));
  if (kept.length === 0) return tail;
  const key = (c: RowChange) =>
    JSON.stringify([c.op, c.table, c.before?.map(toJsonValue), c.after?.map(toJsonValue)]);
  const mine = rows(tail);
  // The primary may hold more of them than this node captured again: then all of the tail is kept.
  let drop = Math.min(kept.length, mine.length);
  for (let i = 0; i < drop; i++) if (key(kept[i]!) !== key(mine[i]!)) return tail;
  return tail.map((r) => {
    const changes = r.changes.filter((c) => !('columns' in c) || drop-- <= 0);
    return { ...r, changes };
  });
}

/** Steps 1-3: the fork, the report, the new role with the rejoin pending. */
export async function beginRejoin(
  node: TandemNode,
  g: GroupConfig,
  epoch: number,
  primary: string,
): Promise<DivergenceReport | null> {
  const role = node.role(g.name);
  const j = node.journal(g.name);
  const { position, theirs } = await findFork(node, g, primary, role.epoch);
  const tail = tailAfter(j, position);
  const unsupported = tail
    .flatMap((r) => r.changes)
    .find((c) => c.op === 'schema' || c.op === 'drop' || c.op === 'truncate');
  if (unsupported) {
    throw new TandemError(
      'STATE_CORRUPT',
      `group ${g.name}: this node's divergent tail holds a ${unsupported.op} of table ${unsupported.table}, which cannot be undone from the journal`,
      'Stop this node, delete its state folder and database, and start it to be seeded',
    );
  }
  let report: DivergenceReport | null = null;
  const all = transactionsOf(withoutKept(tail, theirs, node.name, role.epoch));
  // Another old primary may have reported some of them already (each is asked, 1 s each; one
  // that cannot be asked is skipped, and what it reported is reported here again).
  const others = all.length === 0 ? [] : Object.keys(g.endpoints).filter((n) => n !== node.name);
  const reported = await Promise.all(
    others.map((peer) =>
      node
        .askNode(peer, { op: 'reported', group: g.name }, 1000)
        .then((a) => a.transactions as ReportedTransaction[])
        .catch(() => []),
    ),
  );
  const transactions = withoutReported(all, reported.flat());
  if (transactions.length < all.length)
    node.log.warn(
      { group: g.name, transactions: all.length - transactions.length },
      "left out of this node's divergence report: transactions another node's report names already",
    );
  if (transactions.length > 0) {
    const at = new Date();
    report = {
      id: `${g.name}-e${role.epoch}-${position + 1}-${at.getTime()}`,
      group: g.name,
      node: node.name,
      epoch: role.epoch,
      engine: g.endpoints[node.name]!.engine,
      primary,
      newEpoch: epoch,
      fork: position,
      createdAt: at.toISOString(),
      transactions,
      resolved: null,
    };
    saveReport(node.env.disk, node.config.nodes[node.name]!.state, report);
    node.log.error(
      { group: g.name, report: report.id, transactions: transactions.length, fork: position },
      'DIVERGENT TAIL: transactions this node committed never reached the new primary; see tandem divergence',
    );
  }
  node.setRole(g.name, {
    epoch,
    primary,
    since: position,
    rejoin: { fork: position, report: report?.id ?? null },
  });
  return report;
}

/** Step 4: undo the tail, cut the journal back, become a backup. Returns the row changes undone. */
export async function finishRejoin(node: TandemNode, g: GroupConfig): Promise<number> {
  const role = node.role(g.name);
  const fork = role.rejoin!.fork;
  const j = node.journal(g.name);
  const endpoint = g.endpoints[node.name]!;
  const capture = await node.env.createCapture(endpoint, {
    group: g,
    node: node.name,
    journal: j,
    hlc: new HybridLogicalClock(),
    epoch: () => role.epoch,
    log: node.log,
    onFatal: () => {},
  });
  await capture.retire();
  const tail = tailAfter(j, fork);
  const apply = await node.env.createApply(endpoint, {
    group: g,
    node: node.name,
    primary: role.primary,
    journal: j,
    log: node.log,
    onFatal: (err) => node.log.error({ err: err.message }, 'undo failed'),
  });
  await apply.open();
  const changes = tail.flatMap((r) => r.changes.filter((c): c is RowChange => 'columns' in c));
  try {
    await apply.applyChanges(await undoOf(node, g, changes, role.primary));
    // The database holds the fork now. Its applied position may say more: this node applied
    // records beyond the fork as a backup before it became primary (seed 1310 of the role
    // simulation); left so, the backup would skip the new primary's records there.
    if (apply.appliedPosition > fork) await apply.adopt(fork, role.epoch);
  } finally {
    await apply.stop();
  }
  if (j.lastPosition > fork) await j.truncateAfter(fork);
  node.setRole(g.name, { epoch: role.epoch, primary: role.primary, since: fork });
  node.log.warn(
    { group: g.name, fork, undone: changes.length },
    'rejoined as a backup: divergent tail undone',
  );
  return changes.length;
}

/**
 * A backup about to follow a primary of a newer epoch than its journal's last record: an old
 * primary may have sent it records that the node which took over never got (with two backups,
 * the one promoted was behind this one). Asks the new primary where this journal's last epoch
 * ends in its history and checks both hold the same record there. A journal that goes further
 * has a divergent tail: the records it applied are undone (idempotent, from their before
 * images) and the applied position is set back to the fork, then the journal is cut there. The
 * caller has stopped the backup's group. These transactions are the old primary's; its own rejoin reports
 * them. Returns the fork and the row changes undone, or null when nothing diverges.
 */
export async function realignBackup(
  node: TandemNode,
  g: GroupConfig,
  primary: string,
  epoch: number,
): Promise<{ fork: number; undone: number } | null> {
  const j = node.journal(g.name);
  const { position } = await findFork(node, g, primary, j.lastEpoch);
  if (position >= j.lastPosition) return null;
  const apply = await node.env.createApply(g.endpoints[node.name]!, {
    group: g,
    node: node.name,
    primary,
    journal: j,
    log: node.log,
    onFatal: (err) => node.log.error({ err: err.message }, 'undo failed'),
  });
  await apply.open();
  let undone = 0;
  try {
    const applied = apply.appliedPosition;
    if (applied > position) {
      const changes = tailAfter(j, position)
        .filter((r) => r.position <= applied)
        .flatMap((r) => r.changes.filter((c): c is RowChange => 'columns' in c));
      await apply.applyChanges(await undoOf(node, g, changes, primary));
      await apply.adopt(position, epoch);
      undone = changes.length;
    }
  } finally {
    await apply.stop();
  }
  const dropped = j.lastPosition - position;
  await j.truncateAfter(position);
  node.log.warn(
    { group: g.name, primary, fork: position, dropped, undone },
    "backup realigned: records of an old primary beyond the new primary's history dropped",
  );
  return { fork: position, undone };
}

/**
 * The row changes that take the database back to the fork: the tail's changes inverted in
 * reverse order; for tables whose before images hold only the key (PostgreSQL without REPLICA
 * IDENTITY FULL), every touched row is set to the new primary's current row instead (the stream
 * from the fork on then brings it where the new primary has it, as after a seed).
 */
async function undoOf(
  node: TandemNode,
  g: GroupConfig,
  tail: RowChange[],
  primary: string,
): Promise<RowChange[]> {
  if (tail.length === 0) return [];
  const endpoint = g.endpoints[node.name]!;
  const schemas = new Map((await node.env.readSchemas(endpoint, g)).map((s) => [s.name, s]));
  const full = new Map<string, boolean>();
  for (const t of new Set(tail.map((c) => c.table)))
    full.set(t, await node.env.fullBeforeImages(endpoint, g, t));
  const out: RowChange[] = [];
  const refetch = new Map<string, { key: string[]; keys: Map<string, Value[]> }>();
  for (const c of [...tail].reverse()) {
    const key = schemas.get(c.table)?.primaryKey ?? [];
    const keyOf = (img: Value[]) => key.map((k) => img[c.columns.indexOf(k)] ?? null);
    if (!full.get(c.table)) {
      const f = refetch.get(c.table) ?? { key, keys: new Map() };
      refetch.set(c.table, f);
      for (const img of [c.before, c.after])
        if (img) f.keys.set(JSON.stringify(keyOf(img).map(toJsonValue)), keyOf(img));
      continue;
    }
    const keyText = (img: Value[]) => JSON.stringify(keyOf(img).map(toJsonValue));
    const same = c.before && c.after && keyText(c.before) === keyText(c.after);
    if (c.op === 'update' && same) {
      // Back to the before image, column by column (columns the change left out stay as they are).
      out.push({ op: 'update', table: c.table, columns: c.columns, before: c.after, after: c.before });
      continue;
    }
    if (c.after) out.push({ op: 'delete', table: c.table, columns: c.columns, before: c.after, after: null });
    if (c.before)
      out.push({ op: 'insert', table: c.table, columns: c.columns, before: null, after: c.before });
  }
  for (const [table, f] of refetch) {
    const keys = [...f.keys.values()];
    const r = await node.askNode(primary, {
      op: 'rows',
      group: g.name,
      table,
      key: f.key,
      keys: keys.map((k) => k.map(toJsonValue)),
    });
    const columns = r.columns as string[];
    const rows = (r.rows as JsonValue[][]).map((row) => row.map(fromJsonValue));
    const found = new Set(
      rows.map((row) => JSON.stringify(f.key.map((k) => toJsonValue(row[columns.indexOf(k)]!)))),
    );
    for (const row of rows) out.push({ op: 'insert', table, columns, before: null, after: row });
    for (const k of keys) {
      if (found.has(JSON.stringify(k.map(toJsonValue)))) continue;
      out.push({ op: 'delete', table, columns: f.key, before: k, after: null });
    }
  }
  return out;
}
