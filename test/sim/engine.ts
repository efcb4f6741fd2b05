/**
 * In-memory databases for the simulation, behind the real Capture and Apply interfaces, so the
 * real SourceGroup, TargetGroup, link, journal and node run against them.
 *
 * The workload is a bank: each transaction moves an amount between two of ten accounts and
 * inserts its id into a ledger. Every node has one database (SimDb), durable at each commit (as
 * SQLite with synchronous=FULL); the simulation's disk faults hit the journals and state files.
 * A database takes application transactions unless it is fenced (a backup, a deposed primary) or
 * its lease has run out on its machine's wall clock (a primary with a witness, docs/failover.md).
 *
 * SimCapture behaves as the SQLite trigger capture does: an application transaction lands in
 * the change table with the next sequence number; changes wait there until the group confirms
 * them (durable in the journal here and at every backup), and capture resumes after the change
 * named by the journal's last record of this node and epoch. It writes one record per 1-3
 * transactions, and sometimes splits a transaction over two records (the first with txCount 0),
 * so apply must commit only at transaction boundaries. `retire` drops the change table.
 *
 * SimApply uses the shared StepRecords and Stepper and commits each step whole, with its
 * applied position, as the SQLite apply does. Row images are whole rows (an account's balance
 * before and after), so an old primary's divergent tail can be undone from its journal. Every
 * commit is checked: the accounts' total is unchanged, no ledger row is inserted twice, and an
 * account holds what the record's before image says (no update lost or applied out of order).
 */
import pino, { type Logger } from 'pino';
import { StepRecords } from '../../src/adapters/step-records.js';
import { Stepper } from '../../src/adapters/stepper.js';
import type { Apply, ApplyOptions, Capture, CaptureOptions } from '../../src/adapters/types.js';
import { TandemError } from '../../src/core/errors.js';
import { type Change, decodeRecord, encodeRecord, type RowChange } from '../../src/core/record.js';
import type { Rng } from './world.js';

export const ACCOUNTS = 10;
export const OPENING_BALANCE = 1000;

/** An application transaction: `amount` from account `from` to `to`, ledger row `id`. */
export interface Transfer {
  id: number;
  from: number;
  to: number;
  amount: number;
}

export function randomTransfer(rng: Rng, id: number): Transfer {
  const from = rng.int(0, ACCOUNTS - 1);
  return { id, from, to: (from + rng.int(1, ACCOUNTS - 1)) % ACCOUNTS, amount: rng.int(1, 50) };
}

/** Why a database refused an application transaction. */
export type Refusal = 'fenced' | 'lease';

/** One node's database: rows, the capture's change table, the applied position, fence and lease. */
export class SimDb {
  balances = Array.from({ length: ACCOUNTS }, () => OPENING_BALANCE);
  /** Ledger rows in the order they were committed. */
  ledger: number[] = [];
  /** The change table: application transactions with their sequence number (from `released` + 1). */
  changes: { seq: number; changes: RowChange[] }[] = [];
  seq = 0;
  /** Changes up to here are confirmed (or retired) and gone from the change table. */
  released = 0;
  applied = 0;
  appliedHlc = 0n;
  /** Application writes refused (a backup's apply, a switchover or newer epoch fence). */
  fenced = false;
  /**
   * With a lease guard, application writes only while the machine's wall clock is in
   * [leaseSet, leaseUntil) (a clock set back before the lease was written refuses too).
   */
  guarded = false;
  leaseSet = 0;
  leaseUntil = 0;
  /** Atomicity or order broken at a commit. */
  readonly violations: string[] = [];

  /** `wall()`: the machine's wall clock, ms (the lease is checked on it, as SQLite's julianday('now')). */
  constructor(readonly wall: () => number) {}

  /** Commits an application transaction; returns its change sequence, or why it was refused. */
  write(t: Transfer): number | Refusal {
    if (this.fenced) return 'fenced';
    if (this.guarded && (this.wall() >= this.leaseUntil || this.wall() < this.leaseSet)) return 'lease';
    const from = this.balances[t.from]!;
    const to = this.balances[t.to]!;
    const changes: RowChange[] = [
      { op: 'insert', table: 'ledger', columns: ['id'], before: null, after: [t.id] },
      {
        op: 'update',
        table: 'account',
        columns: ['id', 'balance'],
        before: [t.from, from],
        after: [t.from, from - t.amount],
      },
      {
        op: 'update',
        table: 'account',
        columns: ['id', 'balance'],
        before: [t.to, to],
        after: [t.to, to + t.amount],
      },
    ];
    this.balances[t.from] = from - t.amount;
    this.balances[t.to] = to + t.amount;
    this.ledger.push(t.id);
    this.changes.push({ seq: ++this.seq, changes });
    return this.seq;
  }

  /** Releases the change table up to `seq`. */
  release(seq: number): void {
    if (seq <= this.released) return;
    this.released = seq;
    this.changes = this.changes.filter((c) => c.seq > seq);
  }

  /**
   * Applies row changes to `rows` (a private copy) and says what broke; `strict` for apply, not
   * for an undo, which is idempotent (a row to delete may be gone).
   */
  stage(rows: { balances: number[]; ledger: number[] }, changes: Change[], strict: boolean): string[] {
    const bad: string[] = [];
    for (const c of changes) {
      if (!('columns' in c)) bad.push(`unexpected ${c.op} change`);
      else if (c.table === 'ledger') {
        const id = Number((c.after ?? c.before)![0]);
        const i = rows.ledger.indexOf(id);
        if (c.op === 'insert') {
          if (i >= 0) bad.push(`ledger row ${id} inserted twice`);
          else rows.ledger.push(id);
        } else if (c.op === 'delete') {
          if (i >= 0) rows.ledger.splice(i, 1);
          else if (strict) bad.push(`ledger row ${id} deleted but absent`);
        } else bad.push(`unexpected ${c.op} of the ledger`);
      } else if (c.table === 'account' && c.op === 'update') {
        const id = Number(c.after![0]);
        const was = rows.balances[id]!;
        if (strict && Number(c.before![1]) !== was)
          bad.push(`account ${id} holds ${was}, the record's before image says ${Number(c.before![1])}`);
        rows.balances[id] = Number(c.after![1]);
      } else bad.push(`unexpected ${c.op} on ${c.table}`);
    }
    return bad;
  }

  /** The accounts' total is what it was at the start: no partial transaction. */
  static whole(rows: { balances: number[] }): string[] {
    const total = rows.balances.reduce((a, b) => a + b, 0);
    return total === ACCOUNTS * OPENING_BALANCE ? [] : [`accounts total ${total} (a partial transaction)`];
  }
}

/**
 * A record's `source`: `s/k`, the journal holds the first k changes of change s (and everything
 * before it), as the SQLite capture's change sequence says exactly where it is.
 */
function parseSource(source: string): [number, number] {
  const [t, k] = source.split('/').map(Number) as [number, number];
  return [t, k];
}

/** Row changes per transaction. */
const CHANGES = 3;

export class SimCapture implements Capture {
  readonly #db: SimDb;
  readonly #o: CaptureOptions;
  readonly #rng: Rng;
  /** The next change to capture, and how many of its row changes the journal already holds. */
  #next = 1;
  #change = 0;
  #timer: NodeJS.Timeout | null = null;
  #running = false;
  /** Journal positions of the changes captured by this capture, for sync waiters. */
  readonly #positions = new Map<number, number>();
  readonly #waiting = new Map<number, ((p: number) => void)[]>();

  constructor(db: SimDb, o: CaptureOptions, rng: Rng) {
    this.#db = db;
    this.#o = o;
    this.#rng = rng;
  }

  async open(last: { source: string } | null): Promise<void> {
    const [seq, changes] = last ? parseSource(last.source) : [this.#db.released, CHANGES];
    const done = changes === CHANGES ? seq : seq - 1;
    if (done < this.#db.released) {
      throw new TandemError(
        'JOURNAL_CORRUPT',
        `the journal ends at change ${done}, before ${this.#db.released}, which the group confirmed`,
        'the journal lost records',
      );
    }
    this.#next = changes === CHANGES ? seq + 1 : seq;
    this.#change = changes === CHANGES ? 0 : changes;
  }

  run(): void {
    this.#running = true;
    this.#poll();
  }

  #poll(): void {
    if (!this.#running) return;
    this.#timer = setTimeout(
      () => {
        this.#capture();
        this.#poll();
      },
      this.#rng.int(1, 5),
    );
  }

  kick(): void {
    setImmediate(() => this.#capture());
  }

  #pending(): { seq: number; changes: RowChange[] }[] {
    return this.#db.changes.filter((c) => c.seq >= this.#next);
  }

  #capture(): void {
    if (!this.#running) return;
    const j = this.#o.journal;
    try {
      for (let pending = this.#pending(); pending.length > 0; pending = this.#pending()) {
        let txns: typeof pending;
        let changes: RowChange[];
        if (this.#change > 0) {
          // The rest of a transaction whose first changes the journal holds.
          txns = pending.slice(0, 1);
          changes = txns[0]!.changes.slice(this.#change);
        } else {
          txns = pending.slice(0, this.#rng.int(1, 3));
          changes = txns.flatMap((t) => t.changes);
          // Sometimes a transaction spans two records: apply must not commit between them.
          if (txns.length === 1 && this.#rng.chance(0.2)) {
            const k = this.#rng.int(1, CHANGES - 1);
            this.#append(j, txns[0]!.changes.slice(0, k), `${txns[0]!.seq}/${k}`, 0);
            this.#change = k;
            continue;
          }
        }
        const last = txns.at(-1)!.seq;
        const position = this.#append(j, changes, `${last}/${CHANGES}`, txns.length);
        for (const t of txns) this.#captured(t.seq, position);
        this.#next = last + 1;
        this.#change = 0;
      }
    } catch (err) {
      this.#running = false;
      this.#o.onFatal(err as Error);
    }
  }

  #append(j: CaptureOptions['journal'], changes: RowChange[], source: string, txCount: number): number {
    const position = j.nextPosition;
    j.append(
      encodeRecord({
        position,
        epoch: this.#o.epoch(),
        origin: this.#o.node,
        hlc: this.#o.hlc.now(),
        source,
        txCount,
        changes,
      }),
    ).catch(() => {});
    return position;
  }

  #captured(seq: number, position: number): void {
    this.#positions.set(seq, position);
    for (const w of this.#waiting.get(seq) ?? []) w(position);
    this.#waiting.delete(seq);
  }

  confirmedUpTo(position: number): void {
    const j = this.#o.journal;
    if (position < j.firstPosition || position > j.durablePosition) return;
    const p = j.read(position, { maxBytes: 1, maxRecords: 1 })[0];
    if (!p) return;
    const rec = decodeRecord(p);
    if (rec.origin !== this.#o.node || rec.epoch !== this.#o.epoch()) return;
    const [seq, changes] = parseSource(rec.source);
    this.#db.release(changes === CHANGES ? seq : seq - 1);
  }

  pendingChanges(): number {
    return this.#pending().length;
  }

  openCut(): never {
    throw new Error('the simulation does not seed');
  }

  describe(): string {
    return 'simulated source';
  }

  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer) clearTimeout(this.#timer);
  }

  positionOf(seq: bigint): Promise<number> {
    const id = Number(seq);
    const p = this.#positions.get(id);
    if (p !== undefined) return Promise.resolve(p);
    return new Promise((resolve) => {
      this.#waiting.set(id, [...(this.#waiting.get(id) ?? []), resolve]);
      this.kick();
    });
  }

  async fence(): Promise<void> {
    this.#db.fenced = true;
  }
  async unfence(): Promise<void> {
    this.#db.fenced = false;
  }
  async guardLease(): Promise<void> {
    this.#db.guarded = true;
    this.#db.leaseUntil = 0;
  }
  async extendLease(ms: number): Promise<void> {
    this.#db.leaseSet = this.#db.wall();
    this.#db.leaseUntil = this.#db.leaseSet + ms;
  }
  async barrier(): Promise<number> {
    this.#capture();
    await this.#o.journal.whenDurable(this.#o.journal.lastPosition);
    return this.#o.journal.lastPosition;
  }
  async handOverSequences(): Promise<number> {
    return 0;
  }
  async retire(): Promise<void> {
    this.#db.release(this.#db.seq);
    this.#db.guarded = false;
  }
}

export class SimApply implements Apply {
  readonly #db: SimDb;
  readonly #o: ApplyOptions;
  #next = 1;
  /** The open transaction: rows as its records leave them. */
  #work: { balances: number[]; ledger: number[] } | null = null;
  #bad: string[] = [];
  #unsubscribe: (() => void) | null = null;
  readonly #stepper: Stepper;
  readonly seedState = null;
  readonly seedLanes = 1;
  readonly seeded = true;

  constructor(db: SimDb, o: ApplyOptions) {
    this.#db = db;
    this.#o = o;
    this.#stepper = new Stepper(
      () => this.#step(),
      (err) => this.#o.onFatal(err),
    );
  }

  /** A backup's database is fenced (as the SQLite apply's fence triggers). */
  async open(): Promise<void> {
    this.#next = this.#db.applied + 1;
    this.#db.fenced = true;
  }
  get appliedPosition(): number {
    return this.#db.applied;
  }
  get durableAppliedPosition(): number {
    return this.#db.applied;
  }
  get appliedHlc(): bigint {
    return this.#db.appliedHlc;
  }
  run(): void {
    this.#unsubscribe = this.#o.journal.onDurable(() => this.kick());
    this.#stepper.start();
  }
  kick(): void {
    this.#stepper.kick();
  }
  async stop(): Promise<void> {
    this.#unsubscribe?.();
    await this.#stepper.stop();
    this.#work = null;
    this.#bad = [];
    this.#next = this.#db.applied + 1;
  }

  /** One step, in the open transaction (a private copy), committed at a transaction boundary. */
  #step(): void {
    const db = this.#db;
    const step = new StepRecords(this.#o.journal, this.#next, this.#o);
    for (const rec of step) {
      this.#work ??= { balances: [...db.balances], ledger: [...db.ledger] };
      this.#bad.push(...db.stage(this.#work, rec.changes, true));
      this.#next = rec.position + 1;
    }
    const last = step.last;
    if (this.#work && last && step.atBoundary) {
      const bad = [...this.#bad, ...SimDb.whole(this.#work)];
      for (const b of bad) db.violations.push(`commit at position ${last.position}: ${b}`);
      db.balances = this.#work.balances;
      db.ledger = this.#work.ledger;
      this.#work = null;
      this.#bad = [];
      db.applied = last.position;
      db.appliedHlc = last.hlc;
      this.#o.onApplied?.();
    }
    if (step.full) this.#stepper.more();
  }

  unseed(): void {
    throw new Error('the simulation starts backups seeded');
  }
  beginSeed(): void {
    throw new Error('the simulation starts backups seeded');
  }
  seedChunk(): void {
    throw new Error('the simulation starts backups seeded');
  }
  endSeed(): number {
    throw new Error('the simulation starts backups seeded');
  }
  abortSeed(): void {}
  async adopt(position: number): Promise<void> {
    this.#db.applied = position;
    this.#next = position + 1;
    this.#db.fenced = true;
  }
  /** An undo (rejoin): one transaction, idempotent; the accounts' total must hold after it. */
  async applyChanges(changes: RowChange[]): Promise<void> {
    const rows = { balances: [...this.#db.balances], ledger: [...this.#db.ledger] };
    for (const b of [...this.#db.stage(rows, changes, false), ...SimDb.whole(rows)])
      this.#db.violations.push(`undo: ${b}`);
    this.#db.balances = rows.balances;
    this.#db.ledger = rows.ledger;
  }
  async pause(): Promise<void> {}
  resume(): void {}
  async beginTest(): Promise<void> {}
  async endTest(): Promise<number> {
    return 0;
  }
}

/**
 * A pino logger writing synchronously into `lines` (the last `cap` kept), each line stamped with
 * the virtual time (`t`, ms) and the process (`node`); `onLine` sees each message.
 */
export function simLogger(
  lines: string[],
  name: string,
  now: () => number,
  cap = 4000,
  onLine: (msg: string) => void = () => {},
): Logger {
  return pino(
    { base: { node: name }, timestamp: () => `,"t":${now().toFixed(3)}` },
    {
      write(line: string) {
        onLine((JSON.parse(line) as { msg?: string }).msg ?? '');
        lines.push(line.trimEnd());
        if (lines.length > cap) lines.splice(0, lines.length - cap / 2);
      },
    },
  );
}
