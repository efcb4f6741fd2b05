// Throwaway PostgreSQL clusters live in src/testing/ so that benchmarks (npm run bench) use them too.
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { type PgCluster, startPg } from '../../src/testing/pg-cluster.js';

export { type PgCluster, type PgOptions, startPg } from '../../src/testing/pg-cluster.js';

/**
 * A throwaway cluster and one connected client for the tests of the calling `describe`; `setup`
 * runs once the client is connected. The client is the getter's, valid inside the tests.
 */
export function usePgClient(setup?: (c: pg.Client) => Promise<void>): () => pg.Client {
  let server: PgCluster | undefined;
  let client: pg.Client | undefined;
  beforeAll(async () => {
    server = await startPg();
    client = new pg.Client({ connectionString: server.url() });
    await client.connect();
    await setup?.(client);
  }, 120_000);
  afterAll(async () => {
    await client?.end();
    await server?.stop();
  });
  return () => client!;
}
