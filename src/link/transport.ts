/**
 * Authenticated, encrypted connections between nodes.
 *
 * - psk: TLS 1.2 with ECDHE-PSK (forward secrecy). The key is HKDF-SHA256 of the shared secret
 *   with the cluster name as salt; the PSK identity is the node name. Node 20 offers PSK only up
 *   to TLS 1.2.
 * - tls: TLS 1.3 with certificates on both sides, checked against the configured CA; the peer's
 *   certificate must name the node (CN or DNS SAN).
 * - plaintext: only when the config says `security.plaintext: true`.
 *
 * The raw TCP socket is kept so that bytes on the wire (after TLS) can be counted.
 */
import { hkdfSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Address, SecurityConfig } from '../config/index.js';
import { TandemError } from '../core/errors.js';

const PSK_CIPHERS = 'ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256';

export interface SecureContext {
  security: SecurityConfig;
  cluster: string;
  /** This node's name. */
  node: string;
  /** Every node of the cluster; a peer must be one of them. */
  nodes: ReadonlySet<string>;
}

export interface Connection {
  /** The application stream (TLS or the raw socket). */
  stream: net.Socket;
  /** The TCP socket underneath, for byte counts. */
  raw: net.Socket;
  /** The authenticated peer node name (null in plaintext mode until HELLO names it). */
  peer: string | null;
}

function pskKey(ctx: SecureContext): Buffer {
  if (ctx.security.mode !== 'psk') throw new Error('not a psk context');
  const secret = ctx.security.secret.resolve();
  return Buffer.from(hkdfSync('sha256', secret, ctx.cluster, 'tandem link psk v1', 32));
}

function certName(cert: tls.PeerCertificate | undefined): string[] {
  if (!cert || Object.keys(cert).length === 0) return [];
  const names = [cert.subject?.CN].filter((x): x is string => typeof x === 'string');
  for (const part of (cert.subjectaltname ?? '').split(',')) {
    const m = /^\s*DNS:(.+)$/.exec(part);
    if (m) names.push(m[1]!.trim());
  }
  return names;
}

/**
 * The CA, certificate and key of `node`; `{node}` in a configured path stands for the node's
 * name. Errors name the config field and the file.
 */
export function tlsFiles(security: SecurityConfig, node: string): { ca: Buffer; cert: Buffer; key: Buffer } {
  if (security.mode !== 'tls') throw new Error('not a tls context');
  const read = (field: 'ca' | 'cert' | 'key') => {
    const file = security[field].replaceAll('{node}', node);
    try {
      return readFileSync(file);
    } catch (err) {
      throw new TandemError(
        'CONFIG_INVALID',
        `security.tls.${field}: ${file} cannot be read for node ${node} (${(err as NodeJS.ErrnoException).code ?? err})`,
        'Create the certificates, for example with `tandem certs --config tandem.yaml`',
      );
    }
  };
  return { ca: read('ca'), cert: read('cert'), key: read('key') };
}

/**
 * A failed TLS handshake. TLS itself failing (an alert, a bad certificate) means the two nodes
 * do not share credentials; the connection breaking or going silent half-way is more often the
 * network, and says so (a peer that drops the connection on bad credentials looks the same).
 */
function handshakeFailed(who: string, err: Error): TandemError {
  const code = (err as NodeJS.ErrnoException).code;
  const broken =
    code === 'ECONNRESET' || code === 'EPIPE' || code === 'ETIMEDOUT' || /timed out/.test(err.message);
  return broken
    ? new TandemError(
        'LINK_AUTH',
        `${who}: the connection broke during the TLS handshake (${err.message})`,
        'Usually a network fault between the nodes (resets, loss, a proxy or firewall): the link retries on its own. If it repeats with a healthy network, check that both nodes use the same cluster name and secret (or certificates from the same CA)',
      )
    : new TandemError(
        'LINK_AUTH',
        `${who} failed authentication: ${err.message}`,
        'Check that both nodes use the same cluster name and secret (or certificates from the same CA)',
      );
}

/** Wraps an accepted TCP socket; resolves once the peer has authenticated. */
export function acceptSecure(raw: net.Socket, ctx: SecureContext, timeoutMs = 5000): Promise<Connection> {
  const { security } = ctx;
  if (security.mode === 'plaintext') return Promise.resolve({ stream: raw, raw, peer: null });
  return new Promise((resolve, reject) => {
    let identity: string | null = null;
    // TLSSocket takes pskCallback at run time (as tls.createServer does); @types/node omits it.
    const opts: tls.TLSSocketOptions & Pick<tls.TlsOptions, 'pskCallback'> =
      security.mode === 'psk'
        ? {
            isServer: true,
            minVersion: 'TLSv1.2',
            maxVersion: 'TLSv1.2',
            ciphers: PSK_CIPHERS,
            pskCallback: (_socket: tls.TLSSocket, id: string) => {
              if (!ctx.nodes.has(id)) return null;
              identity = id;
              return pskKey(ctx);
            },
          }
        : {
            isServer: true,
            minVersion: 'TLSv1.3',
            requestCert: true,
            rejectUnauthorized: true,
            ...tlsFiles(security, ctx.node),
          };
    const sock = new tls.TLSSocket(raw, opts);
    const timer = setTimeout(() => fail(new Error('TLS handshake timed out')), timeoutMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      sock.destroy();
      raw.destroy();
      reject(handshakeFailed(`peer ${raw.remoteAddress}:${raw.remotePort}`, err));
    };
    sock.once('error', fail);
    sock.once('secure', () => {
      clearTimeout(timer);
      sock.off('error', fail);
      let peer = identity;
      if (security.mode === 'tls') {
        const names = certName(sock.getPeerCertificate());
        peer = names.find((n) => ctx.nodes.has(n)) ?? null;
        if (!peer)
          return fail(
            new Error(`certificate names ${names.join(', ') || 'nothing'}, not a node of the cluster`),
          );
      }
      resolve({ stream: sock, raw, peer });
    });
  });
}

/** Connects to `peer` at `addr`; resolves once both sides have authenticated. */
export function connectSecure(
  addr: Address,
  peer: string,
  ctx: SecureContext,
  timeoutMs = 5000,
): Promise<Connection> {
  const { security } = ctx;
  return new Promise((resolve, reject) => {
    const raw = net.connect({ host: addr.host, port: addr.port });
    raw.setNoDelay(true);
    const timer = setTimeout(
      () => fail(new Error(`connecting to ${addr.host}:${addr.port} timed out`)),
      timeoutMs,
    );
    const fail = (err: Error) => {
      clearTimeout(timer);
      raw.destroy();
      reject(err);
    };
    raw.once('error', fail);
    raw.once('connect', () => {
      if (security.mode === 'plaintext') {
        clearTimeout(timer);
        raw.off('error', fail);
        resolve({ stream: raw, raw, peer });
        return;
      }
      const opts: tls.ConnectionOptions =
        security.mode === 'psk'
          ? {
              socket: raw,
              minVersion: 'TLSv1.2',
              maxVersion: 'TLSv1.2',
              ciphers: PSK_CIPHERS,
              checkServerIdentity: () => undefined,
              pskCallback: () => ({ psk: pskKey(ctx), identity: ctx.node }),
            }
          : {
              socket: raw,
              minVersion: 'TLSv1.3',
              servername: peer,
              ...tlsFiles(security, ctx.node),
              checkServerIdentity: (_host, cert) =>
                certName(cert).includes(peer)
                  ? undefined
                  : new Error(`certificate does not name node ${peer}`),
            };
      const sock = tls.connect(opts);
      sock.once('error', (err) => fail(handshakeFailed(`node ${peer} at ${addr.host}:${addr.port}`, err)));
      sock.once('secureConnect', () => {
        clearTimeout(timer);
        raw.off('error', fail);
        sock.removeAllListeners('error');
        resolve({ stream: sock, raw, peer });
      });
    });
  });
}
