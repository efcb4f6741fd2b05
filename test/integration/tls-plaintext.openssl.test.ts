/**
 * The other link security modes: TLS 1.3 with certificates made by `tandem certs` (needs the
 * openssl command and dist/), a node whose certificate comes from another CA is refused, and
 * plaintext when the config says so.
 */
import { spawnSync } from 'node:child_process';
import { cpSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI } from '../../src/demo/procs.js';
import type { TandemNode } from '../../src/node/node.js';
import { dump, makeCluster, Nodes, type TestCluster, until } from '../helpers/cluster.js';

describe('link security modes', () => {
  let c: TestCluster | null = null;
  const nodes = new Nodes();
  afterEach(async () => {
    await nodes.stopAll(500);
    c?.cleanup();
    c = null;
  });

  const start = (file: string, name: string) => nodes.start(file, name);

  async function replicates(east: TandemNode): Promise<void> {
    const db = new Database(c!.db('east'));
    db.exec('INSERT INTO t (v) VALUES (1), (2), (3)');
    db.close();
    await until('applied', () => {
      const g = east.status().groups[0]!;
      return g.positions.captured >= 2 && g.positions.applied === g.positions.captured;
    });
    expect(dump(c!.db('west'), ['t'])).toEqual(dump(c!.db('east'), ['t']));
  }

  it('TLS 1.3 with certificates from `tandem certs`; another CA is refused', async () => {
    c = await makeCluster({
      security:
        'security:\n  tls:\n    ca: ./tls/ca.pem\n    cert: ./tls/{node}.pem\n    key: ./tls/{node}.key',
    });
    const r = spawnSync(process.execPath, [CLI, 'certs', '--config', c.config], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/made: ca\.pem, ca\.key, east\.pem, east\.key, west\.pem, west\.key/);
    new Database(c.db('east')).exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)');
    const east = await start(c.config, 'east');
    await start(c.config, 'west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    await replicates(east);

    // A second cluster folder with its own CA: its "east" cannot talk to our west.
    await nodes.stop(nodes.find('east'), 500);
    const other = path.join(c.dir, 'other');
    cpSync(c.config, path.join(other, 'tandem.yaml'));
    const r2 = spawnSync(process.execPath, [CLI, 'certs', '--config', path.join(other, 'tandem.yaml')], {
      encoding: 'utf8',
    });
    expect(r2.status, r2.stderr).toBe(0);
    // Its database with its journal: a database without the journal it fed is refused at start.
    cpSync(c.db('east'), path.join(other, 'data', 'east.db'));
    cpSync(path.join(c.dir, 'state', 'east'), path.join(other, 'state', 'east'), { recursive: true });
    const impostor = await start(path.join(other, 'tandem.yaml'), 'east');
    await until('refused', () => impostor.status().groups[0]!.links[0]!.lastError);
    expect(impostor.status().groups[0]!.links[0]!.state).not.toBe('streaming');
    expect(impostor.status().groups[0]!.links[0]!.lastError).toMatch(/LINK_AUTH|certificate|alert|socket/i);
  }, 60_000);

  it('plaintext only when the config says so', async () => {
    c = await makeCluster({ security: 'security:\n  plaintext: true' });
    new Database(c.db('east')).exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)');
    const east = await start(c.config, 'east');
    await start(c.config, 'west');
    await until('streaming', () => east.status().groups[0]!.links[0]!.state === 'streaming');
    await replicates(east);
  }, 30_000);
});
