#!/usr/bin/env -S node --max-semi-space-size=32 --initial-old-space-size=128
/**
 * The `tandem` command. Exit codes: 0 success, 1 failure, 2 bad usage or bad config.
 */
import path from 'node:path';
import { Command, CommanderError } from 'commander';
import type { Config } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import { VERSION } from '../version.js';

// Each command loads what it needs when it runs: `tandem status` or `--help` do not load the
// node, its database drivers or the demo.
async function loadConfig(file: string): Promise<Config> {
  return (await import('../config/index.js')).loadConfig(file);
}

function fail(err: unknown): never {
  if (err instanceof TandemError) {
    process.stderr.write(`tandem: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  process.stderr.write(`tandem: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
}

// A reader that stops early (`tandem divergence ... --show ID --format sql | head`) closes the
// pipe: what it did not read is not wanted, and that is no error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  fail(err);
});

const program = new Command();
program
  .name('tandem')
  .description('Hot, switch-ready replicas of live data: journal every change, ship it, apply it.')
  .version(VERSION, '-V, --version')
  .showHelpAfterError()
  .exitOverride();

program
  .command('run')
  .description('Run every group this node takes part in, until SIGTERM (drains, exits 0).')
  .requiredOption('-c, --config <file>', 'path to tandem.yaml')
  .requiredOption('-n, --node <name>', 'which node of the config this process is')
  .option(
    '--drain-timeout <ms>',
    'how long SIGTERM waits for connected backups to confirm what is captured',
    '5000',
  )
  .action(async (opts: { config: string; node: string; drainTimeout: string }) => {
    const config = await loadConfig(opts.config);
    const [{ createLogger }, { TandemNode }] = await Promise.all([
      import('../node/logger.js'),
      import('../node/node.js'),
    ]);
    const log = createLogger({ cluster: config.cluster, node: opts.node });
    const node = new TandemNode(config, opts.node, log);
    const stop = (signal: string) => {
      log.info({ signal }, 'signal received, draining');
      node.stop(Number(opts.drainTimeout)).then(
        () => process.exit(0),
        (err: Error) => {
          log.error({ err: err.message }, 'stop failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    try {
      await node.start();
    } catch (err) {
      log.error({ err: (err as Error).message }, 'node failed to start');
      await node.stop(0).catch(() => {});
      throw err;
    }
  });

program
  .command('status')
  .description("Ask every node's admin API and show roles, epochs, links, positions and lag per group.")
  .requiredOption('-c, --config <file>', 'path to tandem.yaml')
  .option('--json', 'print JSON instead of a table')
  .option('--timeout <ms>', 'how long to wait for each node', '2000')
  .action(async (opts: { config: string; json?: boolean; timeout: string }) => {
    const config = await loadConfig(opts.config);
    const { fetchStatus, renderStatus } = await import('./status.js');
    const answers = await fetchStatus(config, Number(opts.timeout));
    if (opts.json)
      process.stdout.write(`${JSON.stringify({ cluster: config.cluster, nodes: answers }, null, 2)}\n`);
    else process.stdout.write(`${renderStatus(config, answers)}\n`);
    if (answers.some((a) => !a.reachable)) process.exitCode = 1;
  });

program
  .command('switchover')
  .description(
    'Planned switchover under load: fence the primary, drain, hand over sequences, promote the backup, reverse the direction, run reroute hooks.',
  )
  .argument('<group>', 'the group to switch')
  .requiredOption('-c, --config <file>', 'path to tandem.yaml')
  .option('--to <node>', 'the backup to promote (needed when the group has several)')
  .option('--verify', 'compare row counts and checksums of every table before promoting')
  .option('--json', 'print the report as JSON')
  .action(async (group: string, opts: { config: string; to?: string; verify?: boolean; json?: boolean }) => {
    const config = await loadConfig(opts.config);
    const { renderSwitch, requestSwitchover } = await import('./switchover.js');
    const report = await requestSwitchover(config, group, { to: opts.to, verify: opts.verify });
    process.stdout.write(`${opts.json ? JSON.stringify(report, null, 2) : renderSwitch(report)}\n`);
    if (!report.ok) process.exitCode = 1;
  });

program
  .command('failover')
  .description(
    'Unplanned failover: the backup named by --to takes over a group whose primary is gone (allowed by the witness, or by --force when the group has none).',
  )
  .argument('<group>', 'the group whose primary is gone')
  .requiredOption('-c, --config <file>', 'path to tandem.yaml')
  .requiredOption('--to <node>', 'the backup to promote')
  .option('--force', 'without a witness: take over although nothing proves the primary is gone')
  .option('--json', 'print the report as JSON')
  .action(async (group: string, opts: { config: string; to: string; force?: boolean; json?: boolean }) => {
    const config = await loadConfig(opts.config);
    const { renderFailover, requestFailover } = await import('./failover.js');
    const report = await requestFailover(config, group, { to: opts.to, force: opts.force });
    process.stdout.write(`${opts.json ? JSON.stringify(report, null, 2) : renderFailover(report)}\n`);
  });

program
  .command('divergence')
  .description(
    "An old primary's divergence reports: the transactions it committed that never reached the node that took over. List, show (JSON or SQL), re-apply on the primary, or discard.",
  )
  .argument('<group>', 'the group')
  .requiredOption('-c, --config <file>', 'path to tandem.yaml')
  .requiredOption('--node <node>', 'the old primary that holds the reports')
  .option('--show <id>', 'print one report')
  .option('--format <format>', 'with --show: json (default) or sql')
  .option('--reapply <id>', "write the report's transactions on the group's primary")
  .option('--discard <id>', 'mark the report resolved without applying it')
  .action(
    async (
      group: string,
      opts: {
        config: string;
        node: string;
        show?: string;
        format?: string;
        reapply?: string;
        discard?: string;
      },
    ) => {
      if (opts.format && opts.format !== 'json' && opts.format !== 'sql') {
        throw new TandemError(
          'CONFIG_INVALID',
          `--format ${opts.format}: not json or sql`,
          'Use --format json or --format sql',
        );
      }
      const { divergence } = await import('./divergence.js');
      process.stdout.write(`${await divergence(await loadConfig(opts.config), group, opts)}\n`);
    },
  );

program
  .command('virtual-switch')
  .description(
    'Test on a backup while production runs: start makes it writable (apply holds, changes keep arriving in its journal); end reverts every test write and applies what was held.',
  )
  .argument('<op>', 'start or end')
  .argument('<group>', 'the group')
  .requiredOption('-c, --config <file>', 'path to tandem.yaml')
  .option('--on <node>', 'the backup (needed to start)')
  .action(async (op: string, group: string, opts: { config: string; on?: string }) => {
    if (op !== 'start' && op !== 'end') {
      throw new TandemError(
        'CONFIG_INVALID',
        `virtual-switch ${op}: not start or end`,
        'Use: tandem virtual-switch start|end GROUP',
      );
    }
    const { virtualSwitch } = await import('./virtual-switch.js');
    process.stdout.write(`${await virtualSwitch(await loadConfig(opts.config), group, op, opts.on)}\n`);
  });

program
  .command('demo')
  .description(
    'Two nodes on loopback replicate a live SQLite shop; the backup is killed and restarted; the copies are compared.',
  )
  .option('--seconds <n>', 'how long the writer runs', '12')
  .option('--rate <n>', 'orders per second', '200')
  .option('--keep', 'keep the temporary folder')
  .action(async (opts: { seconds: string; rate: string; keep?: boolean }) => {
    const { runDemo } = await import('../demo/demo.js');
    const ok = await runDemo({
      seconds: Number(opts.seconds),
      rate: Number(opts.rate),
      keep: Boolean(opts.keep),
    });
    process.exitCode = ok ? 0 : 1;
  });

program
  .command('certs')
  .description('Make a CA and a certificate per node (openssl, EC P-256) for security.tls.')
  .requiredOption('-c, --config <file>', 'path to tandem.yaml (for the cluster and node names)')
  .option('-o, --out <dir>', 'folder for the files (default: tls/ beside the config)')
  .option('--days <n>', 'validity in days', '825')
  .option('--force', 'remake node certificates that already exist')
  .action(async (opts: { config: string; out?: string; days: string; force?: boolean }) => {
    const config = await loadConfig(opts.config);
    const { makeCerts } = await import('./certs.js');
    const out = path.resolve(opts.out ?? path.join(config.dir, 'tls'));
    const r = makeCerts(config, out, Number(opts.days), Boolean(opts.force));
    process.stdout.write(
      `made: ${r.made.join(', ') || 'nothing'}${r.kept.length ? `; kept: ${r.kept.join(', ')}` : ''} in ${out}\n`,
    );
    const rel = path.relative(config.dir, out) || '.';
    process.stdout.write(
      `Use them in ${path.basename(config.file)} (keep ca.key offline; copy each node only its own key):\n` +
        `security:\n  tls:\n    ca: ./${rel}/ca.pem\n    cert: ./${rel}/{node}.pem\n    key: ./${rel}/{node}.key\n`,
    );
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    if (
      err.code === 'commander.helpDisplayed' ||
      err.code === 'commander.version' ||
      err.code === 'commander.help'
    )
      process.exit(0);
    process.exit(2);
  }
  fail(err);
}
