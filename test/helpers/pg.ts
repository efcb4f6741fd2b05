// Throwaway PostgreSQL clusters live in src/testing/ so that benchmarks (npm run bench) use them too.
export { type PgCluster, type PgOptions, startPg } from '../../src/testing/pg-cluster.js';
