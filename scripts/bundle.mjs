// Bundles the built CLI (dist/cli/main.js) into dist/bin/, the `tandem` command: Node 20 has no
// compile cache, and loading some 200 modules one by one is most of a start-up. What a command
// imports when it runs (cli/main.ts) goes into chunks loaded then, so `tandem --help` or
// `tandem status` do not parse the node and its database drivers. Left outside: the
// native better-sqlite3, pg's optional pg-native, and pino with pino-pretty (pino loads its
// transports by file name in a worker thread).
import { chmodSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

const outdir = 'dist/bin';
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { tandem: 'dist/cli/main.js' },
  outdir,
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['better-sqlite3', 'pg-native', 'pino', 'pino-pretty'],
  // CommonJS dependencies call require() for Node's own modules.
  banner: {
    js: "import { createRequire as tandemRequire } from 'node:module'; const require = tandemRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
chmodSync(`${outdir}/tandem.js`, 0o755);
