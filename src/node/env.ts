/**
 * What a node and its groups reach outside the process through: the database adapters, the
 * network, the state folder and the admin API. Nodes use the real ones; the deterministic
 * simulation (test/sim, docs/simulation.md) runs the same nodes and groups against in-memory
 * databases, a virtual network and a virtual disk.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import {
  checkPromotable,
  createApply,
  createCapture,
  createSnapshot,
  fullBeforeImages,
  readRowsByKey,
  readSchemas,
  tableChecksums,
  writeSql,
} from '../adapters/index.js';
import { AdminServer } from '../admin/server.js';
import type { Address } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import { type Disk, nodeDisk } from '../journal/index.js';
import { acceptSecure, type Connection, connectSecure, type SecureContext } from '../link/transport.js';
import type { TandemNode } from './node.js';
import { StateLock } from './state-lock.js';

/** What a group (capture, senders, receiver, apply) reaches. */
export interface GroupEnv {
  createCapture: typeof createCapture;
  createApply: typeof createApply;
  createSnapshot: typeof createSnapshot;
  readSchemas: typeof readSchemas;
  /** Dials a peer node and authenticates it. */
  connect: typeof connectSecure;
}

/** A listener or server that can be closed. */
export interface Closer {
  close(): Promise<void>;
}

/** What a node reaches besides its groups' needs. */
export interface NodeEnv extends GroupEnv {
  /** The state folder: journals, roles, the witness's file, divergence reports. */
  disk: Disk;
  /** Holds the state folder for this process (one `tandem run` per node). */
  lock(stateDir: string, node: string): { release(): void };
  /** Accepts peers on the link address; each arrives authenticated. `field` names the address in errors. */
  listen(
    addr: Address,
    field: string,
    ctx: SecureContext,
    log: Logger,
    onPeer: (conn: Connection, where: string) => void,
  ): Promise<Closer>;
  /** Serves the admin API and metrics of `node`. */
  serveAdmin(node: TandemNode, log: Logger, addr: Address): Promise<Closer>;
  // Role changes (promotion checks, switchover checksums, rejoin, divergence re-apply):
  checkPromotable: typeof checkPromotable;
  tableChecksums: typeof tableChecksums;
  readRowsByKey: typeof readRowsByKey;
  fullBeforeImages: typeof fullBeforeImages;
  writeSql: typeof writeSql;
}

export const realEnv: NodeEnv = {
  createCapture,
  createApply,
  createSnapshot,
  readSchemas,
  connect: connectSecure,
  disk: nodeDisk,
  lock: (stateDir, node) => StateLock.acquire(stateDir, node),
  listen: listenTcp,
  serveAdmin: async (node, log, addr) => {
    const admin = new AdminServer(node, log);
    await admin.listen(addr.host, addr.port);
    return admin;
  },
  checkPromotable,
  tableChecksums,
  readRowsByKey,
  fullBeforeImages,
  writeSql,
};

async function listenTcp(
  addr: Address,
  field: string,
  ctx: SecureContext,
  log: Logger,
  onPeer: (conn: Connection, where: string) => void,
): Promise<Closer> {
  // Connections still open when the node closes the server (its groups have stopped): a peer's
  // handshake, a request in flight. server.close() alone would wait for each to end.
  const open = new Set<net.Socket>();
  const server = net.createServer((raw) => {
    open.add(raw);
    raw.once('close', () => open.delete(raw));
    raw.setNoDelay(true);
    const where = `${raw.remoteAddress}:${raw.remotePort}`;
    raw.on('error', () => {});
    acceptSecure(raw, ctx).then(
      (conn) => onPeer(conn, where),
      (err: Error) => log.warn({ peer: where, err: err.message }, 'link refused'),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new TandemError(
          'CONFIG_INVALID',
          `${field}: cannot listen on ${addr.host}:${addr.port}: ${err.code ?? err.message}`,
          err.code === 'EADDRINUSE'
            ? 'Another process uses the port: stop it or choose another port'
            : 'Choose an address of this machine',
        ),
      ),
    );
    server.listen(addr.port, addr.host, () => resolve());
  });
  return {
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        for (const raw of open) raw.destroy();
      }),
  };
}
