/**
 * Failpoints for crash tests: with `TANDEM_FAILPOINTS=name[,name...]` in its environment, a
 * process SIGKILLs itself when it reaches a named point, so a test can stop it at an exact
 * instant (between two steps of a switchover, say). Unset in normal runs: a lookup in an empty set.
 *
 * Points: `promote-before-record`, `promote-before-answer` (the backup being promoted),
 * `switchover-after-pending` (the primary running the switchover).
 */
const points = new Set((process.env.TANDEM_FAILPOINTS ?? '').split(',').filter(Boolean));

export function failpoint(name: string): void {
  if (points.has(name)) process.kill(process.pid, 'SIGKILL');
}
