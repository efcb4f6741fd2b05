// How long `tandem run` takes to start: from spawning the process to its admin API answering,
// for one node of a config, with several builds of the command alternated (RUNS starts each).
//   node scripts/startup-time.mjs tandem.yaml east 127.0.0.1:7501 dist/bin/tandem.js [other.js ...]
// The node's database must be reachable and TANDEM_SECRET set; each start ends with SIGKILL.
import { spawn } from 'node:child_process';

const [config, node, admin, ...commands] = process.argv.slice(2);
if (!config || !node || !admin || commands.length === 0) {
  console.error(
    'usage: node scripts/startup-time.mjs CONFIG NODE ADMIN_HOST:PORT COMMAND.js [COMMAND.js ...]',
  );
  process.exit(2);
}
const runs = Number(process.env.RUNS ?? 8);
const times = new Map(commands.map((c) => [c, []]));
for (let i = 0; i < runs; i++) {
  for (const command of commands) {
    const t0 = performance.now();
    const flags = ['--max-semi-space-size=32', '--initial-old-space-size=128'];
    const child = spawn(process.execPath, [...flags, command, 'run', '--config', config, '--node', node], {
      stdio: 'ignore',
    });
    for (;;) {
      const ok = await fetch(`http://${admin}/status`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (child.exitCode !== null) throw new Error(`${command} exited with ${child.exitCode}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    times.get(command).push(performance.now() - t0);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
}
for (const [command, t] of times) {
  t.sort((a, b) => a - b);
  console.log(
    `${command}: median ${t[t.length >> 1].toFixed(0)} ms, min ${t[0].toFixed(0)}, all ${t.map((x) => x.toFixed(0)).join(' ')}`,
  );
}
