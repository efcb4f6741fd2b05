/**
 * The replication stream (src/adapters/postgres/stream.ts) against a real PostgreSQL 15: messages
 * in stream order whether handlers answer at once or make it wait, the socket left unread while a
 * slow handler has a long queue, positions confirmed by status updates, and how it ends.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PgMessage } from '../../src/adapters/postgres/pgoutput.js';
import { ReplicationStream } from '../../src/adapters/postgres/stream.js';
import { until } from '../helpers/cluster.js';
import { type PgCluster, startPg } from '../helpers/pg.js';

const OPTIONS = "proto_version '1', publication_names 'p'";

describe('replication stream', () => {
  let pg: PgCluster;
  const config = () => ({ host: '127.0.0.1', port: pg.port, user: 'postgres', database: 'postgres' });

  beforeAll(async () => {
    pg = await startPg({ settings: { wal_level: 'logical' } });
    await pg.sql('CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t');
  }, 120_000);

  afterAll(async () => {
    await pg?.stop();
  });

  const slot = async (name: string) => {
    await pg.sql(`SELECT pg_create_logical_replication_slot('${name}', 'pgoutput')`);
  };
  const confirmed = async (name: string) =>
    BigInt(
      (
        await pg.sql(
          `SELECT confirmed_flush_lsn - '0/0' AS lsn FROM pg_replication_slots WHERE slot_name = '${name}'`,
        )
      ).rows[0].lsn,
    );

  it('hands a large transaction over in order through a slow handler, reading no further ahead than its bound', async () => {
    await slot('s_order');
    const rows = 60_000;
    await pg.sql(`INSERT INTO t SELECT g, repeat('x', 20) FROM generate_series(1, ${rows}) g`);
    await pg.sql("INSERT INTO t VALUES (0, 'second')");
    const seen: PgMessage[] = [];
    let maxPending = 0;
    let slow = 0;
    const stream = new ReplicationStream(config(), {
      data: (msg) => {
        seen.push(msg);
        maxPending = Math.max(maxPending, stream.pending);
        // Every 500th message waits a turn: the queue grows behind it meanwhile.
        if (seen.length % 500 === 0) {
          slow++;
          return new Promise<void>((resolve) => setTimeout(resolve, 5));
        }
        return undefined;
      },
      keepalive: () => {},
    });
    const running = stream.run('s_order', '0/0', OPTIONS);
    await until('both commits', () => seen.filter((m) => m.tag === 'commit').length === 2, 60_000);
    await stream.stop();
    await running; // resolves: stopped by its owner

    const inserts = seen.filter((m) => m.tag === 'insert');
    expect(inserts).toHaveLength(rows + 1);
    const ids = inserts.map((m) => (m.tag === 'insert' ? Number(m.new[0]) : -1));
    expect(ids.slice(0, rows)).toEqual(Array.from({ length: rows }, (_, i) => i + 1));
    expect(ids[rows]).toBe(0);
    expect(seen.map((m) => m.tag).filter((t) => t === 'begin' || t === 'commit')).toEqual([
      'begin',
      'commit',
      'begin',
      'commit',
    ]);
    expect(slow).toBeGreaterThan(100);
    // 1,024 queued, plus what one socket read already held when reading stopped.
    expect(maxPending).toBeGreaterThan(1);
    expect(maxPending).toBeLessThan(1_024 + 4_000);
  }, 90_000);

  it('confirms what the status update names, answers keepalives, and fails loudly', async () => {
    await slot('s_status');
    await pg.sql("INSERT INTO t VALUES (-1, 'a')");
    const commits: bigint[] = [];
    const keepalives: bigint[] = [];
    const stream = new ReplicationStream(config(), {
      data: (msg) => {
        if (msg.tag === 'commit') commits.push(msg.endLsn);
        return undefined;
      },
      keepalive: (walEnd, replyRequested) => {
        keepalives.push(walEnd);
        if (replyRequested) stream.status(commits.at(-1) ?? 0n);
      },
    });
    const before = await confirmed('s_status');
    // How the run ends, caught as it happens (it is asserted below).
    const ended = stream.run('s_status', '0/0', OPTIONS).then(
      () => null,
      (err: Error) => err,
    );
    await until('the commit', () => commits.length === 1, 30_000);
    expect(stream.pending).toBe(0);
    stream.status(commits[0]!);
    await until('the slot confirmed', async () => (await confirmed('s_status')) === commits[0], 10_000);
    expect(commits[0]!).toBeGreaterThan(before);
    // A keepalive asked for at once (wal_sender_timeout is 60 s: the server asks at half of it,
    // so ask it by sending one of our own that requests a reply).
    stream.status(commits[0]!, true);
    await until('a keepalive', () => keepalives.length > 0, 10_000);
    expect(keepalives.at(-1)!).toBeGreaterThanOrEqual(commits[0]!);
    // The server ending the stream is an error, not a quiet stop.
    await pg.sql(
      "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 's_status'",
    );
    expect((await ended)?.message).toMatch(/terminating connection/);
    await stream.stop();

    // A slot that does not exist: the server's own error.
    const missing = new ReplicationStream(config(), { data: () => undefined, keepalive: () => {} });
    await expect(missing.run('s_none', '0/0', OPTIONS)).rejects.toThrow(/s_none/);
    await missing.stop();
  }, 60_000);
});
