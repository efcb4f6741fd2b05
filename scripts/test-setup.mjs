#!/usr/bin/env node
// Makes sure what the tests need is on this machine before vitest starts, and fails loudly
// (exit 1, saying what is missing and how to get it) when it cannot: no test is ever skipped.
// Needs now: the sqlite3 shell (an outside writer), openssl (`tandem certs`), the PostgreSQL
// 15 server binaries (the *.pg.test.ts files start throwaway clusters with initdb and pg_ctl) and
// etcd (failover tests with etcd as the quorum start a throwaway member), and root (network
// namespaces, tmpfs mounts).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const INITDB = '/usr/lib/postgresql/15/bin/initdb';

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

function userExists(name) {
  return spawnSync('id', ['-u', name], { stdio: 'ignore' }).status === 0;
}

const asRoot = process.getuid?.() === 0;

function aptInstall(pkgs) {
  if (!asRoot) return false;
  console.log(`test-setup: installing ${pkgs.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  return spawnSync('apt-get', ['install', '-y', '-qq', ...pkgs], { stdio: 'inherit', env }).status === 0;
}

const needs = [
  {
    name: 'sqlite3',
    pkgs: ['sqlite3'],
    present: () => have('sqlite3'),
    why: 'end-to-end tests use the sqlite3 shell as an outside writer',
  },
  {
    name: 'openssl',
    pkgs: ['openssl'],
    present: () => have('openssl'),
    why: '`tandem certs` and the TLS certificate tests use it',
  },
  {
    name: 'ip (iproute2)',
    pkgs: ['iproute2'],
    present: () => have('ip'),
    why: 'the partition tests (*.netns.*) cut hosts off in network namespaces',
  },
  {
    name: 'nftables',
    pkgs: ['nftables'],
    present: () => have('nft'),
    why: 'the pair partition tests (partition-pairs.netns.*) drop traffic between two hosts',
  },
  {
    name: 'strace',
    pkgs: ['strace'],
    present: () => have('strace'),
    why: "the I/O fault tests (*.strace.*) make a node's N-th write or fsync fail, or kill it there",
  },
  {
    name: 'libfaketime',
    pkgs: ['libfaketime'],
    present: () => existsSync('/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1'),
    why: 'the clock-jump tests (*.faketime.*) set the wall clock of running nodes',
  },
  {
    name: 'etcd',
    pkgs: ['etcd-server'],
    present: () => have('etcd'),
    why: 'the failover tests with etcd as the quorum start a throwaway etcd',
  },
  {
    // Installing the server package may also start Debian's default cluster on port 5432 (the
    // postgresql service): harmless, the tests never use it and make their own clusters.
    name: `PostgreSQL 15 (${INITDB})`,
    pkgs: ['postgresql-15', 'postgresql-client-15'],
    present: () => existsSync(INITDB),
    why: 'the PostgreSQL tests start throwaway clusters with initdb and pg_ctl',
  },
];
const missing = needs.filter((n) => !n.present());
if (missing.length > 0) aptInstall(missing.flatMap((n) => n.pkgs));
const still = needs.filter((n) => !n.present());

// initdb and postgres refuse to run as root, so as root the tests run them as the postgres OS
// user. The Debian package creates it; create it here if a half-done install left it out.
if (asRoot && !userExists('postgres')) {
  console.log('test-setup: creating the postgres OS user');
  spawnSync('useradd', ['--system', '--user-group', '--home-dir', '/var/lib/postgresql', 'postgres'], {
    stdio: 'inherit',
  });
}
const noUser = asRoot && !userExists('postgres');

if (still.length > 0 || noUser || !asRoot) {
  if (!asRoot)
    console.error(
      'test-setup: MISSING root: the partition tests (*.netns.*) make network namespaces, the full-disk and fault-injection tests mount tmpfs and trace nodes. Run the tests as root (CI does), for example in a throwaway VM or container',
    );
  for (const n of still)
    console.error(
      `test-setup: MISSING ${n.name} (${n.why}). Install it: apt-get install ${n.pkgs.join(' ')}`,
    );
  if (noUser)
    console.error(
      'test-setup: MISSING the postgres OS user (as root, the tests run PostgreSQL as postgres). Create it: useradd --system --user-group --home-dir /var/lib/postgresql postgres',
    );
  process.exit(1);
}
console.log(`test-setup: ok (${needs.map((n) => n.name).join(', ')}${asRoot ? ', user postgres' : ''})`);
