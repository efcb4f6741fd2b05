/**
 * Milliseconds on the monotonic clock: it never steps when the wall clock is set (NTP, an
 * operator, a VM resumed), so every timeout, heartbeat, lease, deadline and rate here measures
 * with it. The wall clock (Date.now) is only for instants that leave the process: hybrid logical
 * clock timestamps (hlc.ts) and the SQLite lease, which the database checks against its own clock.
 */
export function monoNow(): number {
  return performance.now();
}
