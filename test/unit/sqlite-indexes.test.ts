import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { pgIndexes, sqliteIndexes } from '../../src/adapters/typemap.js';
import type { TableSchema } from '../../src/core/record.js';

// Definitions as pg_get_indexdef and pg_get_constraintdef give them (PostgreSQL 15).
const source = (
  name: string,
  indexes: string[],
  constraints: TableSchema['constraints'] = [],
): TableSchema => ({
  name,
  dialect: 'postgres',
  columns: [
    { name: 'id', type: 'bigint', notNull: true, default: null },
    { name: 'Email', type: 'text', notNull: false, default: null },
    { name: 'at', type: 'timestamp with time zone', notNull: false, default: null },
    { name: 'n', type: 'integer', notNull: false, default: null },
  ],
  primaryKey: ['id'],
  indexes,
  constraints,
});

describe('indexes across engines', () => {
  it('keeps plain-column indexes and UNIQUE constraints, names what it cannot hold', () => {
    const { sql, skipped } = sqliteIndexes(
      source(
        'users',
        [
          'CREATE INDEX users_at ON public.users USING btree (at DESC NULLS LAST)',
          'CREATE UNIQUE INDEX "Users Mail" ON public.users USING btree ("Email" COLLATE "C" text_pattern_ops, n)',
          'CREATE INDEX users_n_hash ON public.users USING hash (n)',
          'CREATE INDEX users_cover ON ONLY public.users USING btree (n) INCLUDE (at)',
          'CREATE INDEX users_lower ON public.users USING btree (lower("Email"))',
          'CREATE INDEX users_recent ON public.users USING btree (at) WHERE (n > 0)',
          'CREATE INDEX users_gin ON public.users USING gin (to_tsvector(\'simple\'::regconfig, "Email"))',
          'CREATE UNIQUE INDEX users_nnd ON public.users USING btree (n) NULLS NOT DISTINCT',
        ],
        [
          { name: 'users_n_key', def: 'UNIQUE (n, id)' },
          { name: 'users_n_check', def: 'CHECK ((n > 0))' },
          { name: 'users_later', def: 'UNIQUE (at) DEFERRABLE INITIALLY DEFERRED' },
          { name: 'users_team', def: 'FOREIGN KEY (n) REFERENCES teams(id)', references: 'teams' },
        ],
      ),
    );
    expect([...sql.entries()]).toEqual([
      ['users_at', 'CREATE INDEX IF NOT EXISTS "users_at" ON "users" ("at" DESC)'],
      ['Users Mail', 'CREATE UNIQUE INDEX IF NOT EXISTS "Users Mail" ON "users" ("Email", "n")'],
      ['users_n_hash', 'CREATE INDEX IF NOT EXISTS "users_n_hash" ON "users" ("n")'],
      ['users_cover', 'CREATE INDEX IF NOT EXISTS "users_cover" ON "users" ("n")'],
      ['users_n_key', 'CREATE UNIQUE INDEX IF NOT EXISTS "users_n_key" ON "users" ("n", "id")'],
    ]);
    expect(skipped.map((s) => s.name)).toEqual([
      'users_lower',
      'users_recent',
      'users_gin',
      'users_nnd',
      'users_n_check',
      'users_later',
      'users_team',
    ]);
    expect(skipped.find((s) => s.name === 'users_later')!.why).toMatch(/deferrable/);
    expect(skipped.find((s) => s.name === 'users_team')!.why).toMatch(/FOREIGN KEY/);

    // What it keeps is SQL SQLite takes, and the unique ones hold.
    const db = new Database(':memory:');
    db.exec('CREATE TABLE users (id INTEGER PRIMARY KEY, "Email" TEXT, at TEXT, n INTEGER)');
    for (const s of sql.values()) db.exec(s);
    db.exec("INSERT INTO users VALUES (1, 'a', NULL, 1)");
    expect(() => db.exec("INSERT INTO users VALUES (2, 'a', NULL, 1)")).toThrow(/UNIQUE/);
    db.close();
  });

  it('leaves out indexes and UNIQUE constraints on generated columns, which a SQLite backup lacks', () => {
    const { sql, skipped } = sqliteIndexes({
      ...source('bills', [
        'CREATE INDEX bills_total ON public.bills USING btree (total)',
        'CREATE INDEX bills_n ON public.bills USING btree (n)',
      ]),
      generated: [{ name: 'total', type: 'integer', notNull: false, expr: '(n * 2)', attnum: 5 }],
      constraints: [{ name: 'bills_n_total_key', def: 'UNIQUE (n, total)' }],
    });
    expect([...sql.keys()]).toEqual(['bills_n']);
    expect(skipped.map((x) => [x.name, x.why])).toEqual([
      ['bills_total', expect.stringMatching(/generated column/)],
      ['bills_n_total_key', expect.stringMatching(/generated column/)],
    ]);
  });

  it('prefixes index names of a table outside public with its schema', () => {
    const { sql } = sqliteIndexes(
      source('sales.orders', ['CREATE INDEX o_n ON sales.orders USING btree (n)']),
    );
    expect([...sql.values()]).toEqual(['CREATE INDEX IF NOT EXISTS "sales.o_n" ON "sales.orders" ("n")']);
  });

  it('gives a SQLite source’s own statements to a SQLite backup as they are', () => {
    const s = {
      ...source('t', ['CREATE INDEX t_n ON t (n) WHERE n > 0', 'create unique index "T U" on t(lower(x))']),
      dialect: 'sqlite' as const,
    };
    expect([...sqliteIndexes(s).sql.entries()]).toEqual([
      ['t_n', 'CREATE INDEX IF NOT EXISTS t_n ON t (n) WHERE n > 0'],
      ['T U', 'CREATE UNIQUE INDEX IF NOT EXISTS "T U" ON t(lower(x))'],
    ]);
  });

  it('gives a SQLite source’s indexes to a PostgreSQL backup in pg_get_indexdef’s form', () => {
    const sqlite = (name: string, indexes: string[]): TableSchema => ({
      name,
      dialect: 'sqlite',
      columns: [],
      primaryKey: ['id'],
      indexes,
    });
    const { sql, skipped } = pgIndexes(
      sqlite('orders', [
        'CREATE INDEX orders_at ON orders(at)',
        'create unique index if not exists "Big Ones" on "orders" ( "Total" desc , [order] )',
        'CREATE INDEX orders_nocase ON orders (note COLLATE NOCASE)',
        'CREATE INDEX orders_bin ON orders (note COLLATE BINARY ASC)',
        'CREATE INDEX orders_open ON orders (at) WHERE closed IS NULL',
        'CREATE INDEX orders_len ON orders (length(note))',
      ]),
    );
    expect(sql).toEqual([
      'CREATE INDEX orders_at ON public.orders USING btree (at)',
      'CREATE UNIQUE INDEX "Big Ones" ON public.orders USING btree ("Total" DESC, "order")',
      'CREATE INDEX orders_bin ON public.orders USING btree (note)',
    ]);
    expect(skipped.map((x) => x.name)).toEqual(['orders_nocase', 'orders_open', 'orders_len']);
    expect(pgIndexes(sqlite('sales.orders', ['CREATE INDEX o ON orders (a)'])).sql).toEqual([
      'CREATE INDEX o ON sales.orders USING btree (a)',
    ]);
  });
});
