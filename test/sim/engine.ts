/**
 * In-memory databases for the simulation, behind the real Capture and Apply interfaces, so the
 * real SourceGroup, TargetGroup, link and journal run against them.
 *
 * The workload is a bank: each source transaction moves an amount between two of ten accounts
 * and inserts its id into a ledger. A database is durable at each commit (as SQLite with
 * synchronous=FULL); the simulation's disk faults hit the journals.
 *
 * SimCapture behaves as the SQLite trigger capture does: changes wait in the source until the
 * group confirms them (durable in the journal here and at every backup), and capture resumes
 * after the source transaction named by the journal's last record of this node and epoch. It
 * writes one record per 1-3 transactions, and sometimes splits a transaction over two records
 * (the first with txCount 0), so apply must commit only at transaction boundaries.
 *
 * SimApply uses the shared StepRecords and Stepper and commits each step whole, with its
 * applied position, as the SQLite apply does. Every commit is checked: the accounts' total is
 * unchanged and the ledger holds exactly the transactions 1..n, in order.
 */
import pino, { type Logger } from 'pino';
import { StepRecords } from '../../src/adapters/step-records.js';
import { Stepper } from '../../src/adapters/stepper.js';
import type { Apply, ApplyOptions, Capture, CaptureOptions } from '../../src/adapters/types.js';
import { TandemError } from '../../src/core/errors.js';
import { decodeRecord, encodeRecord, type RowChange } from '../../src/core/record.js';
import type { Rng } from './world.js';

export const ACCOUNTS = 10;
export const OPENING_BALANCE = 1000;

export interface Txn {
  id: number;
  from: number;
  to: number;
  amount: number;
}

/** The source database: committed transactions and how far the group released its changes. */
export class SourceDb {
  readonly txns: Txn[] = [];
  /** Transactions up to here are confirmed and deleted from the change table. */
  released = 0;

  commit(rng: Rng): Txn {
    const from = rng.int(0, ACCOUNTS - 1);
    const to = (from + rng.int(1, ACCOUNTS - 1)) % ACCOUNTS;
    const t = { id: this.txns.length + 1, from, to, amount: rng.int(1, 50) };
    this.txns.push(t);
    return t;
  }
}

/** Row changes per transaction. */
const CHANGES = 3;

/**
 * A record's `source`: `t/k`, the journal holds the first k changes of source transaction t (and
 * everything before it), as the SQLite capture's change sequence says exactly where it is.
 */
function parseSource(source: string): [number, number] {
  const [t, k] = source.split('/').map(Number) as [number, number];
  return [t, k];
}

/** A transaction's row changes: the ledger row and the two account updates. */
function changesOf(t: Txn): RowChange[] {
  return [
    { op: 'insert', table: 'ledger', columns: ['id'], before: null, after: [t.id] },
    {
      op: 'update',
      table: 'account',
      columns: ['id', 'delta'],
      before: [t.from, 0],
      after: [t.from, -t.amount],
    },
    { op: 'update', table: 'account', columns: ['id', 'delta'], before: [t.to, 0], after: [t.to, t.amount] },
  ];
}

export class SimCapture implements Capture {
  readonly #db: SourceDb;
  readonly #o: CaptureOptions;
  readonly #rng: Rng;
  /** The next transaction to capture, and how many of its changes the journal already holds. */
  #next = 1;
  #change = 0;
  #timer: NodeJS.Timeout | null = null;
  #running = false;
  /** Journal positions of the transactions captured by this capture, for sync waiters. */
  readonly #positions = new Map<number, number>();
  readonly #waiting = new Map<number, ((p: number) => void)[]>();

  constructor(db: SourceDb, o: CaptureOptions, rng: Rng) {
    this.#db = db;
    this.#o = o;
    this.#rng = rng;
  }

  async open(last: { source: string } | null): Promise<void> {
    const [txn, changes] = last ? parseSource(last.source) : [this.#db.released, CHANGES];
    const done = changes === CHANGES ? txn : txn - 1;
    if (done < this.#db.released) {
      throw new TandemError(
        'JOURNAL_CORRUPT',
        `the journal ends at source transaction ${done}, before ${this.#db.released}, which the group confirmed`,
        'the journal lost records',
      );
    }
    this.#next = changes === CHANGES ? txn + 1 : txn;
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

  #capture(): void {
    if (!this.#running) return;
    const j = this.#o.journal;
    try {
      while (this.#next <= this.#db.txns.length) {
        let txns: Txn[];
        let changes: RowChange[];
        let source: string;
        if (this.#change > 0) {
          // The rest of a transaction whose first changes the journal holds.
          txns = [this.#db.txns[this.#next - 1]!];
          changes = changesOf(txns[0]!).slice(this.#change);
          source = `${this.#next}/${CHANGES}`;
        } else {
          const n = Math.min(this.#rng.int(1, 3), this.#db.txns.length - this.#next + 1);
          txns = this.#db.txns.slice(this.#next - 1, this.#next - 1 + n);
          changes = txns.flatMap(changesOf);
          source = `${txns.at(-1)!.id}/${CHANGES}`;
          // Sometimes a transaction spans two records: apply must not commit between them.
          if (n === 1 && this.#rng.chance(0.2)) {
            const k = this.#rng.int(1, CHANGES - 1);
            this.#append(j, changesOf(txns[0]!).slice(0, k), `${this.#next}/${k}`, 0);
            this.#change = k;
            continue;
          }
        }
        const position = this.#append(j, changes, source, txns.length);
        for (const t of txns) this.#captured(t.id, position);
        this.#next = txns.at(-1)!.id + 1;
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

  #captured(id: number, position: number): void {
    this.#positions.set(id, position);
    for (const w of this.#waiting.get(id) ?? []) w(position);
    this.#waiting.delete(id);
  }

  confirmedUpTo(position: number): void {
    const j = this.#o.journal;
    if (position < j.firstPosition || position > j.durablePosition) return;
    const p = j.read(position, { maxBytes: 1, maxRecords: 1 })[0];
    if (!p) return;
    const [txn, changes] = parseSource(decodeRecord(p).source);
    const whole = changes === CHANGES ? txn : txn - 1;
    if (whole > this.#db.released) this.#db.released = whole;
  }

  pendingChanges(): number {
    return this.#db.txns.length - (this.#next - 1) - (this.#change > 0 ? 1 : 0);
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
    throw new Error('the simulation does not fence (no role changes yet)');
  }
  async unfence(): Promise<void> {}
  async guardLease(): Promise<void> {}
  async extendLease(): Promise<void> {}
  async barrier(): Promise<number> {
    this.#capture();
    await this.#o.journal.whenDurable(this.#o.journal.lastPosition);
    return this.#o.journal.lastPosition;
  }
  async handOverSequences(): Promise<number> {
    return 0;
  }
  async retire(): Promise<void> {}
}

/** The backup database: balances, ledger and the applied position, durable at each commit. */
export class TargetDb {
  applied = 0;
  appliedHlc = 0n;
  balances = Array.from({ length: ACCOUNTS }, () => OPENING_BALANCE);
  ledger: number[] = [];
  /** Atomicity or order broken at a commit. */
  readonly violations: string[] = [];
}

export class SimApply implements Apply {
  readonly #db: TargetDb;
  readonly #o: ApplyOptions;
  #next = 1;
  /** The open transaction: balances as its records leave them, and the ledger rows it adds. */
  #work: { balances: number[]; ledger: number[] } | null = null;
  #unsubscribe: (() => void) | null = null;
  readonly #stepper: Stepper;
  readonly seedState = null;
  readonly seedLanes = 1;
  readonly seeded = true;

  constructor(db: TargetDb, o: ApplyOptions) {
    this.#db = db;
    this.#o = o;
    this.#stepper = new Stepper(
      () => this.#step(),
      (err) => this.#o.onFatal(err),
    );
  }

  async open(): Promise<void> {
    this.#next = this.#db.applied + 1;
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
    this.#unsubscribe = this.#o.journal.onAppend(() => this.kick());
    this.#stepper.start();
  }
  kick(): void {
    this.#stepper.kick();
  }
  async stop(): Promise<void> {
    this.#unsubscribe?.();
    await this.#stepper.stop();
    this.#work = null;
    this.#next = this.#db.applied + 1;
  }

  /** One step, in the open transaction (a private copy), committed at a transaction boundary. */
  #step(): void {
    const db = this.#db;
    const step = new StepRecords(this.#o.journal, this.#next, this.#o);
    for (const rec of step) {
      this.#work ??= { balances: [...db.balances], ledger: [] };
      for (const c of rec.changes) {
        if (c.op === 'insert' && c.table === 'ledger') this.#work.ledger.push(Number(c.after![0]));
        else if (c.op === 'update' && c.table === 'account')
          this.#work.balances[Number(c.after![0])]! += Number(c.after![1]);
        else throw new Error(`unexpected change ${c.op} on ${c.table}`);
      }
      this.#next = rec.position + 1;
    }
    const last = step.last;
    if (this.#work && last && step.atBoundary) {
      const { balances, ledger } = this.#work;
      const total = balances.reduce((a, b) => a + b, 0);
      if (total !== ACCOUNTS * OPENING_BALANCE)
        db.violations.push(
          `commit at position ${last.position}: accounts total ${total} (a partial transaction)`,
        );
      const base = db.ledger.length;
      const bad = ledger.findIndex((id, i) => id !== base + i + 1);
      if (bad >= 0)
        db.violations.push(
          `commit at position ${last.position}: ledger row ${base + bad + 1} is transaction ${ledger[bad]}, expected ${base + bad + 1} (${ledger[bad]! > base + bad + 1 ? 'gap' : 'duplicate'})`,
        );
      this.#work = null;
      db.balances = balances;
      for (const id of ledger) db.ledger.push(id);
      db.applied = last.position;
      db.appliedHlc = last.hlc;
      this.#o.onApplied?.();
    }
    if (step.full) this.#stepper.more();
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
  async adopt(): Promise<void> {
    throw new Error('the simulation has no role changes yet');
  }
  async applyChanges(): Promise<void> {
    throw new Error('the simulation has no role changes yet');
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
