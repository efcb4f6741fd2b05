// Bundles the built CLI (dist/cli/main.js) into dist/bin/, the `tandem` command: Node 20 has no
// compile cache, and loading some 200 modules one by one is most of a start-up. What a command
// imports when it runs (cli/main.ts) goes into chunks loaded then, so `tandem --help` or
// `tandem status` do not parse the node and its database drivers. Left outside: the
// native better-sqlite3, pg's optional pg-native, and pino with pino-pretty (pino loads its
// transports by file name in a worker thread).
import { chmodSync, readFileSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

/**
 * pg asks at load whether it runs in a Cloudflare Worker by constructing a `Response`; on Node 20
 * the first touch of that global loads undici, the whole fetch implementation: 50-90 ms of a
 * node's start-up. The bundle only ever runs on Node, so the question is answered here.
 */
const pgOnNode = {
  name: 'pg-on-node',
  setup(b) {
    b.onLoad({ filter: /[\\/]node_modules[\\/]pg[\\/]lib[\\/]stream\.js$/ }, ({ path }) => {
      const source = readFileSync(path, 'utf8');
      const asked = 'if (isCloudflareRuntime()) {';
      if (!source.includes(asked))
        throw new Error(`${path}: "${asked}" not found; check pg-on-node against this pg`);
      return { contents: source.replace(asked, 'if (false) {'), loader: 'js' };
    });
  },
};

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
  plugins: [pgOnNode],
  logLevel: 'warning',
});
chmodSync(`${outdir}/tandem.js`, 0o755);
