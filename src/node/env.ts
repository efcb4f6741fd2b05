/**
 * What a group reaches outside its process through: the database adapters and the network.
 * Nodes use the real ones; the deterministic simulation (test/sim, docs/simulation.md) runs the
 * same groups against in-memory databases and a virtual network.
 */
import { createApply, createCapture, createSnapshot, readSchemas } from '../adapters/index.js';
import { connectSecure } from '../link/transport.js';

export interface GroupEnv {
  createCapture: typeof createCapture;
  createApply: typeof createApply;
  createSnapshot: typeof createSnapshot;
  readSchemas: typeof readSchemas;
  /** Dials a peer node and authenticates it. */
  connect: typeof connectSecure;
}

export const realEnv: GroupEnv = {
  createCapture,
  createApply,
  createSnapshot,
  readSchemas,
  connect: connectSecure,
};
