/**
 * Taking back records a primary lost (docs/link.md, "Sending ahead of the source's fsync").
 *
 * A primary sends records to its backups while its own journal's fsync is in flight. If it
 * crashes in between, a backup may hold records of the primary's epoch that the primary's
 * journal lost. They are committed transactions of its database, captured once: at its next
 * start, before capture resumes, the primary asks the group's other nodes for its own records after
 * its journal's end and appends them, so capture resumes after them (PostgreSQL: after their
 * LSN; SQLite: after their change sequence) and the histories stay one. A node that cannot be
 * asked is skipped: a backup cuts such records at the next connection (they were never
 * applied), and capture journals those transactions again. If that backup becomes primary
 * first, it keeps them, and this node's rejoin finds the fork by comparing records
 * (rejoin.ts, findFork).
 *
 * Every sender sends the same records in the same order, so any two answers are prefixes of one
 * lost tail: the longest is taken.
 */
import type { Logger } from 'pino';
import { decodeRecord } from '../core/record.js';
import type { Journal } from '../journal/index.js';

/** At most this many bytes of records per answer (a frame holds 32 MiB; base64 adds a third). */
export const ANSWER_BYTES = 16 << 20;

export type TailRequest = {
  op: 'tail';
  group: string;
  /** The asking primary and its epoch: only its own records of that epoch are answered. */
  origin: string;
  epoch: number;
  /** Its journal's last position. */
  after: number;
};

/** The answer of a node holding the group's journal: durable records of `origin` at `epoch` after `after`. */
export function tailOf(j: Journal, r: TailRequest): { records: string[]; more: boolean } {
  const records: string[] = [];
  let bytes = 0;
  if (r.after + 1 < j.firstPosition) return { records, more: false };
  for (let p = r.after + 1; p <= j.durablePosition; ) {
    const batch = j.read(p, { maxBytes: 1 << 20, maxRecords: 256 });
    if (batch.length === 0) break;
    for (const payload of batch) {
      const rec = decodeRecord(payload);
      if (rec.origin !== r.origin || rec.epoch !== r.epoch) return { records, more: false };
      if (bytes + payload.length > ANSWER_BYTES && records.length > 0) return { records, more: true };
      records.push(payload.toString('base64'));
      bytes += payload.length;
      p++;
    }
  }
  return { records, more: false };
}

/**
 * Asks `peers` (the group's other nodes) for this primary's records after its journal's end and
 * appends the longest answer, durably.
 */
export async function takeBack(o: {
  journal: Journal;
  group: string;
  node: string;
  epoch: number;
  peers: string[];
  ask: (peer: string, request: TailRequest) => Promise<Record<string, unknown>>;
  log: Logger;
}): Promise<void> {
  const j = o.journal;
  const askTail = (peer: string) =>
    o
      .ask(peer, { op: 'tail', group: o.group, origin: o.node, epoch: o.epoch, after: j.lastPosition })
      .then((a) => ({ peer, records: a.records as string[], more: a.more === true }));
  const answers = await Promise.all(o.peers.map((peer) => askTail(peer).catch(() => null)));
  let best = answers.reduce((a, b) => (b && b.records.length > (a?.records.length ?? 0) ? b : a), null);
  if (!best) return;
  const from = best.peer;
  let taken = 0;
  while (best && best.records.length > 0) {
    let last: Promise<void> | null = null;
    for (const b64 of best.records) {
      const payload = Buffer.from(b64, 'base64');
      const rec = decodeRecord(payload);
      if (rec.position !== j.nextPosition || rec.origin !== o.node || rec.epoch !== o.epoch) {
        throw new Error(
          `${from} answered record ${rec.position} (origin ${rec.origin}, epoch ${rec.epoch}) where position ${j.nextPosition} of ${o.node} at epoch ${o.epoch} was asked for`,
        );
      }
      last = j.append(payload);
      taken++;
    }
    await last;
    best = best.more ? await askTail(from) : null;
  }
  if (taken > 0) {
    o.log.warn(
      { from, records: taken, last: j.lastPosition },
      'took back records a backup holds that this journal lost in a crash (sent before its fsync)',
    );
  }
}
