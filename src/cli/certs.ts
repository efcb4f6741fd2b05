/**
 * `tandem certs`: a CA and one certificate per node for `security.tls`, for users without a PKI.
 * Uses the openssl command (EC P-256 keys). An existing CA in the folder is reused, so nodes
 * added later get certificates from the same CA; existing node certificates are kept unless
 * --force.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/index.js';
import { TandemError } from '../core/errors.js';

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.error) {
    throw new TandemError(
      'CONFIG_INVALID',
      `tandem certs needs the openssl command, which cannot be run (${(r.error as NodeJS.ErrnoException).code})`,
      'Install it (Debian: apt-get install openssl) or bring certificates from your own CA',
    );
  }
  if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr.trim()}`);
}

export interface CertsResult {
  dir: string;
  made: string[];
  kept: string[];
}

export function makeCerts(config: Config, outDir: string, days: number, force: boolean): CertsResult {
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  const made: string[] = [];
  const kept: string[] = [];
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  if (!existsSync(path.join(outDir, 'ca.pem')) || !existsSync(path.join(outDir, 'ca.key'))) {
    openssl(
      [
        'req',
        '-x509',
        ...key,
        '-keyout',
        'ca.key',
        '-out',
        'ca.pem',
        '-days',
        String(days),
        '-subj',
        `/CN=tandem ${config.cluster} CA`,
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ],
      outDir,
    );
    made.push('ca.pem', 'ca.key');
  } else kept.push('ca.pem');
  for (const node of Object.keys(config.nodes)) {
    if (
      !force &&
      existsSync(path.join(outDir, `${node}.pem`)) &&
      existsSync(path.join(outDir, `${node}.key`))
    ) {
      kept.push(`${node}.pem`);
      continue;
    }
    const ext = path.join(outDir, `${node}.ext`);
    writeFileSync(
      ext,
      `subjectAltName=DNS:${node}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n`,
    );
    try {
      openssl(
        ['req', ...key, '-keyout', `${node}.key`, '-out', `${node}.csr`, '-subj', `/CN=${node}`],
        outDir,
      );
      openssl(
        [
          'x509',
          '-req',
          '-in',
          `${node}.csr`,
          '-CA',
          'ca.pem',
          '-CAkey',
          'ca.key',
          '-CAcreateserial',
          '-out',
          `${node}.pem`,
          '-days',
          String(days),
          '-extfile',
          ext,
        ],
        outDir,
      );
    } finally {
      rmSync(ext, { force: true });
      rmSync(path.join(outDir, `${node}.csr`), { force: true });
    }
    made.push(`${node}.pem`, `${node}.key`);
  }
  for (const f of ['ca.key', ...Object.keys(config.nodes).map((n) => `${n}.key`)]) {
    const p = path.join(outDir, f);
    if (existsSync(p)) chmodSync(p, 0o600);
  }
  return { dir: outDir, made, kept };
}
