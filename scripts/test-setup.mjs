#!/usr/bin/env node
// Makes sure what the tests need is on this machine before vitest starts, and fails loudly
// (exit 1, saying what is missing and how to get it) when it cannot: no test is ever skipped.
// Needs now: the sqlite3 shell (an outside writer) and openssl (`tandem certs`).
import { spawnSync } from 'node:child_process';

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

function aptInstall(pkgs) {
  if (process.getuid?.() !== 0) return false;
  console.log(`test-setup: installing ${pkgs.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  return spawnSync('apt-get', ['install', '-y', '-qq', ...pkgs], { stdio: 'inherit', env }).status === 0;
}

const needs = [
  { cmd: 'sqlite3', pkg: 'sqlite3', why: 'end-to-end tests use the sqlite3 shell as an outside writer' },
  { cmd: 'openssl', pkg: 'openssl', why: '`tandem certs` and the TLS certificate tests use it' },
];
const missing = needs.filter((n) => !have(n.cmd));
if (missing.length > 0) aptInstall(missing.map((n) => n.pkg));
const still = needs.filter((n) => !have(n.cmd));
if (still.length > 0) {
  for (const n of still)
    console.error(`test-setup: MISSING ${n.cmd} (${n.why}). Install it: apt-get install ${n.pkg}`);
  process.exit(1);
}
console.log(`test-setup: ok (${needs.map((n) => n.cmd).join(', ')})`);
