/**
 * Heterogeneous groups against a real PostgreSQL 15: SQLite -> PostgreSQL and PostgreSQL ->
 * SQLite, with the documented type mapping, and a SQLite column without a type refused at start.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TandemError } from '../../src/core/errors.js';
import type { TandemNode } from '../../src/node/node.js';
import { writeClusterConfig } from '../../src/testing/cluster-config.js';
import { Nodes, until } from '../helpers/cluster.js';
import { type PgCluster, startPg } from '../helpers/pg.js';

describe('heterogeneous groups', () => {
  let pgc: PgCluster;
  let dir: string;
  const nodes = new Nodes();
  let n = 0;

  beforeAll(async () => {
    pgc = await startPg({ settings: { wal_level: 'logical' } });
    process.env.TANDEM_SECRET = randomBytes(24).toString('hex');
  }, 60_000);
  afterAll(async () => {
    await pgc?.stop();
  });
  afterEach(async () => {
    await nodes.stopAll(500);
    rmSync(dir, { recursive: true, force: true });
  });

  /** A config where `east` is the primary; endpoints given per node. */
  async function config(east: string, west: string): Promise<string> {
    const cfg = await writeClusterConfig({ cluster: `het${n}`, group: `g${n}`, endpoints: { east, west } });
    n++;
    dir = cfg.dir;
    return cfg.file;
  }

  const start = (file: string, name: string) => nodes.start(file, name);

  // Everything committed at the source is journaled (a barrier), then applied at the backup.
  const applied = async (east: TandemNode) => {
    await east.sources.get(east.status().groups[0]!.group)!.capture.barrier();
    return until('applied', () => {
      const g = east.status().groups[0]!;
      return (
        g.positions.captured > 0 &&
        g.links[0]!.applied === g.positions.captured &&
        g.links[0]!.state === 'streaming'
      );
    });
  };

  it('SQLite -> PostgreSQL: types are mapped, values arrive exactly', async () => {
    await pgc.sql('CREATE DATABASE het1');
    const file = await config('sqlite:./data/east.db', pgc.url('het1'));
    const db = new Database(path.join(dir, 'data', 'east.db'));
    db.exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, big INTEGER, name TEXT, price REAL, data BLOB,
                             ok BOOLEAN, day DATE, at DATETIME, amount NUMERIC, label VARCHAR(20),
                             UNIQUE (label, day));
             CREATE INDEX "t by Price" ON t (price DESC, name);
             CREATE INDEX t_lower ON t (lower(name));
             CREATE INDEX t_nocase ON t (name COLLATE NOCASE);`);
    const ins = db.prepare('INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
    ins.run(
      1,
      9007199254740993n,
      "it's",
      1.5,
      Buffer.from([0, 1, 255]),
      1,
      '2026-11-25',
      '2026-11-25 10:11:12',
      '12.50',
      'x',
    );
    const east = await start(file, 'east');
    await start(file, 'west');
    ins.run(2, -5n, 'tab\there\nnewline \\ back', -0.25, null, 0, null, null, '7', null);
    db.exec("UPDATE t SET name = 'upd' WHERE id = 1");
    await applied(east);
    const r = await pgc.sql(
      "SELECT id, big::text, name, price, encode(data, 'hex') AS data, ok, day::text, at::text, amount::text, label FROM t ORDER BY id",
      'het1',
    );
    expect(r.rows).toEqual([
      {
        id: '1',
        big: '9007199254740993',
        name: 'upd',
        price: 1.5,
        data: '0001ff',
        ok: true,
        day: '2026-11-25',
        at: '2026-11-25 10:11:12',
        amount: '12.5', // NUMERIC affinity: SQLite itself stored 12.5
        label: 'x',
      },
      {
        id: '2',
        big: '-5',
        name: 'tab\there\nnewline \\ back',
        price: -0.25,
        data: null,
        ok: false,
        day: null,
        at: null,
        amount: '7',
        label: null,
      },
    ]);
    const types = await pgc.sql(
      "SELECT attname, format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0 ORDER BY attnum",
      'het1',
    );
    expect(types.rows.map((x) => x.t)).toEqual([
      'bigint',
      'bigint',
      'text',
      'double precision',
      'bytea',
      'boolean',
      'date',
      'timestamp without time zone',
      'numeric',
      'text',
    ]);
    // The source's indexes on plain columns and its UNIQUE constraint, in PostgreSQL's own
    // form; the expression and NOCASE ones have no PostgreSQL equivalent.
    const indexes = async () =>
      (
        await pgc.sql(
          "SELECT indexdef FROM pg_indexes WHERE tablename = 't' AND indexname <> 't_pkey' ORDER BY indexname",
          'het1',
        )
      ).rows.map((x) => x.indexdef);
    expect(await indexes()).toEqual([
      'CREATE INDEX "t by Price" ON public.t USING btree (price DESC, name)',
      'CREATE UNIQUE INDEX t_label_day_key ON public.t USING btree (label, day)',
    ]);
    // An index made at the source mid-stream follows, and one dropped goes.
    db.exec('CREATE INDEX t_at ON t (at); DROP INDEX "t by Price"');
    ins.run(3, 3n, 'three', 3, null, 1, null, null, '3', 'z');
    await applied(east);
    expect(await indexes()).toEqual([
      'CREATE INDEX t_at ON public.t USING btree (at)',
      'CREATE UNIQUE INDEX t_label_day_key ON public.t USING btree (label, day)',
    ]);
    db.close();
  }, 60_000);

  it('PostgreSQL -> SQLite: values keep their exact text', async () => {
    await pgc.sql('CREATE DATABASE het2');
    await pgc.sql(
      `CREATE DOMAIN qty AS bigint CHECK (VALUE >= 0);
       CREATE DOMAIN small_qty AS qty CHECK (VALUE < 100);
       CREATE TYPE state AS ENUM ('new', 'done');
       CREATE DOMAIN flag AS boolean;
       CREATE DOMAIN bin AS bytea;
       CREATE TABLE p (id bigint PRIMARY KEY, amount numeric(20,6), at timestamptz, ok boolean, data bytea, f float8, doc jsonb, tags text[],
         q small_qty, st state, fl flag, bn bin);
       INSERT INTO p VALUES (1, 123456789012.345678, '2026-01-02 03:04:05.678901+00', true, '\\x00ff', 0.1, '{"a": [1, 2]}', '{x,y}', 42, 'done', true, '\\x00ff');
       CREATE INDEX p_at ON p (at DESC);
       CREATE UNIQUE INDEX p_f ON p (f);
       CREATE INDEX p_lower ON p (lower(amount::text));
       ALTER TABLE p ADD CONSTRAINT p_data_key UNIQUE (data), ADD CONSTRAINT p_f_check CHECK (f > -100);`,
      'het2',
    );
    const file = await config(pgc.url('het2'), 'sqlite:./data/west.db');
    const east = await start(file, 'east');
    await start(file, 'west');
    await pgc.sql(
      "INSERT INTO p VALUES (2, -1, NULL, false, NULL, 'Infinity', NULL, NULL, NULL, NULL, false, '\\x01')",
      'het2',
    );
    await applied(east);
    const west = new Database(path.join(dir, 'data', 'west.db'), { readonly: true });
    west.defaultSafeIntegers(true);
    const rows = west.prepare('SELECT * FROM p ORDER BY id').all();
    expect(rows).toEqual([
      {
        id: 1n,
        amount: '123456789012.345678',
        at: '2026-01-02 03:04:05.678901+00',
        ok: 1n,
        data: Buffer.from([0, 255]),
        f: 0.1,
        doc: '{"a": [1, 2]}',
        tags: '{x,y}',
        q: 42n,
        st: 'done',
        fl: 1n,
        bn: Buffer.from([0, 255]),
      },
      {
        id: 2n,
        amount: '-1.000000',
        at: null,
        ok: 0n,
        data: null,
        f: Number.POSITIVE_INFINITY,
        doc: null,
        tags: null,
        q: null,
        st: null,
        fl: 0n,
        bn: Buffer.from([1]),
      },
    ]);
    // A domain is stored as its base type (through a domain over a domain), an enum as TEXT.
    expect(
      west
        .prepare(
          "SELECT name, type FROM pragma_table_info('p') WHERE name IN ('q', 'st', 'fl', 'bn') ORDER BY cid",
        )
        .all(),
    ).toEqual([
      { name: 'q', type: 'INTEGER' },
      { name: 'st', type: 'TEXT' },
      { name: 'fl', type: 'INTEGER' },
      { name: 'bn', type: 'BLOB' },
    ]);
    // The source's indexes and UNIQUE constraints on plain columns, created after the copy;
    // the expression index and the CHECK have no SQLite form.
    const indexes = (d: Database.Database) =>
      d
        .prepare(
          `SELECT l.name, l."unique" AS u, group_concat(x.name || (CASE x."desc" WHEN 1 THEN ' DESC' ELSE '' END), ', ') AS cols
             FROM pragma_index_list('p') l, pragma_index_xinfo(l.name) x
            WHERE l.origin = 'c' AND x.key = 1 GROUP BY l.name ORDER BY l.name`,
        )
        .all();
    expect(indexes(west)).toEqual([
      { name: 'p_at', u: 0n, cols: 'at DESC' },
      { name: 'p_data_key', u: 1n, cols: 'data' },
      { name: 'p_f', u: 1n, cols: 'f' },
    ]);
    west.close();

    // Schema changes keep the backup's rows: a column added with a default (PostgreSQL fills
    // existing rows without writing them), renamed, retyped, dropped.
    await pgc.sql(
      `ALTER TABLE p ADD COLUMN score int NOT NULL DEFAULT 7;
       ALTER TABLE p ADD COLUMN label text DEFAULT 'none'::text;
       ALTER TABLE p RENAME COLUMN f TO ratio;
       ALTER TABLE p ADD COLUMN twice float8 GENERATED ALWAYS AS (ratio * 2) STORED;
       CREATE INDEX p_twice ON p (twice);
       ALTER TABLE p ALTER COLUMN amount TYPE text;
       ALTER TABLE p DROP COLUMN doc;
       DROP INDEX p_at;
       CREATE INDEX p_ok_score ON p (ok, score DESC);
       INSERT INTO p (id, amount, ok, score) VALUES (3, 'three', true, 9);`,
      'het2',
    );
    await applied(east);
    const after = new Database(path.join(dir, 'data', 'west.db'), { readonly: true });
    expect(after.prepare('SELECT id, amount, ratio, score, label, tags FROM p ORDER BY id').all()).toEqual([
      { id: 1, amount: '123456789012.345678', ratio: 0.1, score: 7, label: 'none', tags: '{x,y}' },
      { id: 2, amount: '-1.000000', ratio: Number.POSITIVE_INFINITY, score: 7, label: 'none', tags: null },
      { id: 3, amount: 'three', ratio: null, score: 9, label: 'none', tags: null },
    ]);
    // (A generated column is PostgreSQL's: the SQLite backup has neither it nor its index.)
    expect(
      after.prepare("SELECT count(*) AS n FROM pragma_table_info('p') WHERE name IN ('doc', 'twice')").get(),
    ).toEqual({ n: 0 });
    // Index changes follow (the table was rebuilt: the unique index on f is now on ratio).
    expect(indexes(after)).toEqual([
      { name: 'p_data_key', u: 1, cols: 'data' },
      { name: 'p_f', u: 1, cols: 'ratio' },
      { name: 'p_ok_score', u: 0, cols: 'ok, score DESC' },
    ]);
    after.close();
    // A generated column made plain reaches the backup with its values (its rows are sent).
    await pgc.sql('ALTER TABLE p ALTER COLUMN twice DROP EXPRESSION', 'het2');
    await applied(east);
    const plain = new Database(path.join(dir, 'data', 'west.db'), { readonly: true });
    expect(plain.prepare('SELECT id, twice FROM p ORDER BY id').all()).toEqual([
      { id: 1, twice: 0.2 },
      { id: 2, twice: Number.POSITIVE_INFINITY },
      { id: 3, twice: null },
    ]);
    plain.close();
  }, 60_000);

  it('a float NaN crosses both ways: TEXT NaN in SQLite, NaN in PostgreSQL, also NOT NULL', async () => {
    // PostgreSQL -> SQLite: SQLite stores a NaN REAL as NULL, so NaN goes as the TEXT 'NaN'
    // (REAL affinity keeps text that is not a number); seeded, then streamed.
    await pgc.sql('CREATE DATABASE het4');
    await pgc.sql(
      `CREATE TABLE f (id int PRIMARY KEY, x double precision NOT NULL, y real NOT NULL);
       INSERT INTO f VALUES (1, 1.0, 1), (2, 'NaN', 'NaN'), (3, '-Infinity', 3);`,
      'het4',
    );
    const file = await config(pgc.url('het4'), 'sqlite:./data/west.db');
    const east = await start(file, 'east');
    await start(file, 'west');
    await pgc.sql(
      `INSERT INTO f VALUES (4, 'NaN', 'NaN'), (5, 5, 5);
       UPDATE f SET x = 'NaN' WHERE id = 1;
       UPDATE f SET y = 'NaN' WHERE id = 5;`,
      'het4',
    );
    await applied(east);
    const west = new Database(path.join(dir, 'data', 'west.db'), { readonly: true });
    expect(
      west.prepare('SELECT id, x, typeof(x) AS tx, y, typeof(y) AS ty FROM f ORDER BY id').all(),
    ).toEqual([
      { id: 1, x: 'NaN', tx: 'text', y: 1, ty: 'real' },
      { id: 2, x: 'NaN', tx: 'text', y: 'NaN', ty: 'text' },
      { id: 3, x: Number.NEGATIVE_INFINITY, tx: 'real', y: 3, ty: 'real' },
      { id: 4, x: 'NaN', tx: 'text', y: 'NaN', ty: 'text' },
      { id: 5, x: 5, tx: 'real', y: 'NaN', ty: 'text' },
    ]);
    west.close();
    await nodes.stopAll(500);
    rmSync(dir, { recursive: true, force: true });

    // SQLite -> PostgreSQL: that TEXT 'NaN' in a REAL column is NaN again (seeded, then streamed).
    await pgc.sql('CREATE DATABASE het5');
    const back = await config('sqlite:./data/east.db', pgc.url('het5'));
    const db = new Database(path.join(dir, 'data', 'east.db'));
    db.exec(`CREATE TABLE f (id INTEGER PRIMARY KEY, x REAL NOT NULL);
             INSERT INTO f VALUES (1, 1.0), (2, 'NaN');`);
    db.prepare('INSERT INTO f VALUES (3, ?)').run(Number.NEGATIVE_INFINITY);
    const east2 = await start(back, 'east');
    await start(back, 'west');
    db.exec(`INSERT INTO f VALUES (4, 'NaN'), (5, 5); UPDATE f SET x = 'NaN' WHERE id = 1;`);
    await applied(east2);
    const r = await pgc.sql('SELECT id, x::text FROM f ORDER BY id', 'het5');
    expect(r.rows).toEqual([
      { id: '1', x: 'NaN' },
      { id: '2', x: 'NaN' },
      { id: '3', x: '-Infinity' },
      { id: '4', x: 'NaN' },
      { id: '5', x: '5' },
    ]);
    db.close();
  }, 60_000);

  it('refuses at start every SQLite column that has no PostgreSQL type, in one error naming the group', async () => {
    await pgc.sql('CREATE DATABASE het3');
    const file = await config('sqlite:./data/east.db', pgc.url('het3'));
    const group = `g${n - 1}`;
    new Database(path.join(dir, 'data', 'east.db')).exec(
      `CREATE TABLE loose (id INTEGER PRIMARY KEY, anything);
       CREATE TABLE api (id INTEGER PRIMARY KEY, body JSON, ref UUID, name STRING, price MONEY, note TEXT);`,
    );
    // Before: only the first column, and "groups.*.tables".
    const err = await start(file, 'east').then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TandemError);
    expect((err as TandemError).code).toBe('TYPE_UNMAPPABLE');
    expect((err as TandemError).what).toBe(
      '5 SQLite columns have no PostgreSQL type to be replicated as: column "body" of table "api" (SQLite type "JSON"); column "ref" of table "api" (SQLite type "UUID"); column "name" of table "api" (SQLite type "STRING"); column "price" of table "api" (SQLite type "MONEY"); column "anything" of table "loose" (no declared type: it may hold values of any kind)',
    );
    expect((err as TandemError).fix).toMatch(
      new RegExp(`or leave their tables out of groups\\.${group}\\.tables$`),
    );
  }, 30_000);
});
