/**
 * A PostgreSQL endpoint over TLS, against a real cluster with ssl = on and a self-signed
 * certificate made with the openssl command: sslmode=require encrypts without verifying,
 * verify-full with the certificate as sslrootcert verifies it, and verify-full without it is
 * refused with an error that names sslrootcert.
 */
import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkPostgres, type PgPrereqOptions, pgClientConfig } from '../../src/adapters/postgres/endpoint.js';
import { TandemError } from '../../src/core/errors.js';
import { type PgCluster, startPg } from '../helpers/pg.js';

const FIELD = 'groups.shop.endpoints.west';

const target = (url: string): PgPrereqOptions => ({
  url,
  field: FIELD,
  role: 'target',
  tables: ['*'],
  keys: {},
  group: 'shop',
});

describe('PostgreSQL over TLS', () => {
  let dir: string;
  let cluster: PgCluster;
  let cert: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-pg-tls-'));
    cert = path.join(dir, 'server.crt');
    const key = path.join(dir, 'server.key');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: 'ignore' },
    );
    // The server reads its key as the postgres user, and only from a file no one else may read.
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres']).toString());
    const [uid, gid] = [id('-u'), id('-g')];
    for (const f of [dir, cert, key]) chownSync(f, uid, gid);
    cluster = await startPg({ settings: { ssl: 'on', ssl_cert_file: cert, ssl_key_file: key } });
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const url = (params: string) => `postgres://postgres@127.0.0.1:${cluster.port}/postgres?${params}`;

  it('encrypts with sslmode=require and verifies with verify-full and the CA', async () => {
    for (const params of ['sslmode=require', `sslmode=verify-full&sslrootcert=${cert}`]) {
      await checkPostgres(target(url(params)));
      const c = new pg.Client(pgClientConfig(url(params)));
      await c.connect();
      const r = await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      await c.end();
      expect(r.rows).toEqual([{ ssl: true }]);
    }
  });

  it('refuses a certificate it cannot verify, naming sslrootcert', async () => {
    const err = await checkPostgres(target(url('sslmode=verify-full'))).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TandemError);
    expect((err as TandemError).message).toMatch(
      new RegExp(
        `${FIELD}: cannot connect to PostgreSQL at 127\\.0\\.0\\.1:\\d+/postgres as postgres: the server's TLS certificate is not signed by a CA this node trusts \\(DEPTH_ZERO_SELF_SIGNED_CERT: self-signed certificate\\)\\. Give the CA that signed the server's certificate as sslrootcert=/path/to/ca\\.pem in ${FIELD}`,
      ),
    );
  });
});
