/**
 * Which tables are replicated and how their rows are matched: table patterns, tables without a
 * primary key (refused unless the config names a key), and schema changes made by the
 * application while replication runs (drop, rename a column, indexes, drop and create again).
 */
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { TandemNode } from '../../src/node/node.js';
import { dump, localCluster, sleep, type TestCluster, until } from '../helpers/cluster.js';

describe('tables, keys and schema changes', () => {
  const local = localCluster(500);
  const { start } = local;
  let c: TestCluster;

  const caughtUp = async (east: TandemNode) => {
    await sleep(30); // let capture see the last commit
    await until('caught up', () => {
      const g = east.status().groups[0]!;
      return g.positions.captured > 0 && g.links.every((l) => l.applied === g.positions.captured);
    });
  };

  const tables = (file: string) =>
    (
      new Database(file, { readonly: true })
        .prepare(
          "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name",
        )
        .all() as { name: string }[]
    ).map((r) => r.name);

  it('refuses a table without a primary key, naming it and the fix', async () => {
    c = await local.make();
    new Database(c.db('east')).exec('CREATE TABLE log (at INTEGER, msg TEXT)');
    await expect(start('east')).rejects.toThrow(
      /TABLE_NO_KEY.*table "log".*no primary key.*keys: \{ log: \[at\] \}/s,
    );
  });

  it('matches rows by the configured key, and replicates only tables matching the patterns', async () => {
    c = await local.make({ groupExtra: '    keys: { app_log: [at, msg] }' });
    const config = c.config;
    const { readFileSync, writeFileSync } = await import('node:fs');
    writeFileSync(config, readFileSync(config, 'utf8').replace('tables: ["*"]', 'tables: ["app_*"]'));
    const db = new Database(c.db('east'));
    db.exec(`CREATE TABLE app_log (at INTEGER NOT NULL, msg TEXT NOT NULL, level TEXT);
             CREATE TABLE app_users (id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE scratch (id INTEGER PRIMARY KEY, junk TEXT)`);
    const east = await start('east');
    await start('west');
    db.exec(`INSERT INTO app_log VALUES (1, 'a', 'info'), (2, 'b', 'warn'), (3, 'c', 'info');
             UPDATE app_log SET level = 'error' WHERE at = 2;
             DELETE FROM app_log WHERE at = 3;
             INSERT INTO app_users (name) VALUES ('ann'), ('bob');
             INSERT INTO scratch (junk) VALUES ('not replicated')`);
    await caughtUp(east);
    expect(tables(c.db('west'))).toEqual(['app_log', 'app_users']);
    expect(dump(c.db('west'), ['app_log', 'app_users'])).toEqual(
      dump(c.db('east'), ['app_log', 'app_users']),
    );
    db.close();
  }, 30_000);

  /** A table's indexes: name, unique, partial, key columns. */
  const indexes = (file: string, table: string) => {
    const d = new Database(file, { readonly: true });
    const rows = d
      .prepare(
        `SELECT l.name, l."unique" AS u, l.partial AS p, group_concat(x.name || ' ' || x.coll || (CASE x."desc" WHEN 1 THEN ' DESC' ELSE '' END), ', ') AS cols
           FROM pragma_index_list(?) l, pragma_index_xinfo(l.name) x
          WHERE l.origin <> 'pk' AND x.key = 1 GROUP BY l.name ORDER BY l.name`,
      )
      .all(table);
    d.close();
    return rows;
  };

  it('follows drops, renamed columns, indexes, and a table dropped and created again', async () => {
    c = await local.make();
    const db = new Database(c.db('east'));
    db.exec(`CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT, n INTEGER, UNIQUE (n));
             CREATE INDEX a_v ON a (v COLLATE NOCASE DESC);
             CREATE INDEX a_part ON a (v) WHERE v IS NOT NULL;
             CREATE TABLE b (id INTEGER PRIMARY KEY, w TEXT);
             CREATE TABLE gone (id INTEGER PRIMARY KEY);
             INSERT INTO a (v) VALUES ('a1'), ('a2'); INSERT INTO b (w) VALUES ('b1'); INSERT INTO gone VALUES (1);`);
    const east = await start('east');
    await start('west');
    await caughtUp(east);
    expect(tables(c.db('west'))).toEqual(['a', 'b', 'gone']);
    // The source's indexes, its UNIQUE constraint as an index named as PostgreSQL would.
    expect(indexes(c.db('west'), 'a')).toEqual([
      { name: 'a_n_key', u: 1, p: 0, cols: 'n BINARY' },
      { name: 'a_part', u: 0, p: 1, cols: 'v BINARY' },
      { name: 'a_v', u: 0, p: 0, cols: 'v NOCASE DESC' },
    ]);

    db.exec('DROP TABLE gone');
    db.exec('ALTER TABLE a RENAME COLUMN v TO value; DROP INDEX a_part; CREATE INDEX a_n ON a (n, id)');
    db.exec("INSERT INTO a (value) VALUES ('a3')");
    db.exec(
      "DROP TABLE b; CREATE TABLE b (id INTEGER PRIMARY KEY, w TEXT, extra INTEGER); INSERT INTO b VALUES (7, 'new', 1)",
    );
    await caughtUp(east);
    expect(tables(c.db('west'))).toEqual(['a', 'b']);
    expect(dump(c.db('west'), ['a', 'b'])).toEqual(dump(c.db('east'), ['a', 'b']));
    // The backup's tables have the new shape too.
    const cols = new Database(c.db('west'), { readonly: true }).prepare('PRAGMA table_info(a)').all() as {
      name: string;
    }[];
    expect(cols.map((x) => x.name)).toEqual(['id', 'value', 'n']);
    expect(indexes(c.db('west'), 'a')).toEqual([
      { name: 'a_n', u: 0, p: 0, cols: 'n BINARY, id BINARY' },
      { name: 'a_n_key', u: 1, p: 0, cols: 'n BINARY' },
      { name: 'a_v', u: 0, p: 0, cols: 'value NOCASE DESC' },
    ]);
    db.close();
  }, 30_000);

  it('starts on a database that does not exist yet, and copies a table created later with its rows', async () => {
    c = await local.make();
    const { rmSync } = await import('node:fs');
    rmSync(`${c.dir}/data`, { recursive: true }); // the folder is created by the nodes
    const east = await start('east');
    await start('west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    const db = new Database(c.db('east'));
    // One transaction: the rows exist before capture can notice the table.
    db.exec(
      "BEGIN; CREATE TABLE late (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO late (v) VALUES ('x'), ('y'); COMMIT",
    );
    db.exec("INSERT INTO late (v) VALUES ('z')");
    await caughtUp(east);
    expect(dump(c.db('west'), ['late'])).toEqual(dump(c.db('east'), ['late']));
    expect(dump(c.db('west'), ['late']).late).toHaveLength(3);
    db.close();
  }, 30_000);
});
