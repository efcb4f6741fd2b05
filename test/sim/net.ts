/**
 * A virtual network between simulated nodes, standing where TCP and TLS stand for real nodes
 * (the sender dials through GroupEnv.connect; the harness accepts through `listen`).
 *
 * Model: a connection is an ordered, reliable byte stream each way (TCP), delivered after a
 * random latency per chunk (never overtaking the chunk before it); chunks of different
 * connections and of the two directions interleave freely. A cut between two hosts holds
 * every chunk between them (TCP retransmits) until it heals; dials across it time out. A reset
 * destroys both ends. When a process is killed its host resets its connections (the peers see
 * them close); when its machine dies the peers hear nothing and must notice by themselves.
 */

import type net from 'node:net';
import { Duplex } from 'node:stream';
import type { Connection } from '../../src/link/transport.js';
import type { Proc, World } from './world.js';

type Chunk = Buffer | null | 'reset';

export class SimSocket extends Duplex {
  peer!: SimSocket;
  bytesWritten = 0;
  bytesRead = 0;
  /** Delivery time of the last chunk sent, so later ones never overtake it. */
  lastAt = 0;
  readonly remoteAddress: string;
  readonly remotePort = 7000;

  constructor(
    readonly net: Network,
    readonly host: string,
    readonly remote: string,
    readonly proc: Proc,
  ) {
    super({ allowHalfOpen: false });
    this.remoteAddress = remote;
    net.sockets.add(this);
    this.once('close', () => net.sockets.delete(this));
  }

  setNoDelay(): this {
    return this;
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.bytesWritten += chunk.length;
    this.net.transmit(this, Buffer.from(chunk));
    cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.net.transmit(this, null);
    cb();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.net.transmit(this, 'reset');
    cb(err);
  }

  /** A chunk from the peer arrived. */
  deliver(c: Chunk): void {
    if (this.destroyed) return;
    if (c === 'reset') this.destroy();
    else if (c === null) this.push(null);
    else {
      this.bytesRead += c.length;
      this.push(c);
    }
  }
}

export class Network {
  readonly #world: World;
  readonly #listeners = new Map<string, { proc: Proc; accept: (conn: Connection) => void }>();
  readonly #cuts = new Set<string>();
  /** Chunks held by a cut, per pair, in send order. */
  readonly #held = new Map<string, { from: SimSocket; c: Chunk }[]>();
  readonly sockets = new Set<SimSocket>();
  /** Connections established. */
  connections = 0;
  /** One-way latency of a chunk, ms. */
  latency: [number, number] = [0.05, 1.5];

  constructor(world: World) {
    this.#world = world;
  }

  listen(host: string, proc: Proc, accept: (conn: Connection) => void): void {
    this.#listeners.set(host, { proc, accept });
  }
  unlisten(host: string): void {
    this.#listeners.delete(host);
  }

  #pair(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }
  isCut(a: string, b: string): boolean {
    return this.#cuts.has(this.#pair(a, b));
  }

  cut(a: string, b: string): void {
    this.#cuts.add(this.#pair(a, b));
  }

  heal(a: string, b: string): void {
    const key = this.#pair(a, b);
    this.#cuts.delete(key);
    const held = this.#held.get(key) ?? [];
    this.#held.delete(key);
    for (const h of held) this.transmit(h.from, h.c);
  }

  healAll(): void {
    for (const key of [...this.#cuts]) {
      const [a, b] = key.split('|') as [string, string];
      this.heal(a, b);
    }
  }

  /** Resets one live connection between the two hosts (both ends close). */
  reset(a: string, b: string): boolean {
    const s = [...this.sockets].find((x) => x.host === a && x.remote === b && !x.destroyed);
    if (!s) return false;
    s.proc.run(() => s.destroy());
    return true;
  }

  /** A process died: its host resets its connections (`machine`: the machine died, silence). */
  killed(proc: Proc, machine: boolean): void {
    for (const s of [...this.sockets]) {
      if (s.proc !== proc) continue;
      this.sockets.delete(s);
      if (!machine) this.transmit(s, 'reset', true);
    }
  }

  /** Sends a chunk from `from` to its peer, in order after the previous ones. */
  transmit(from: SimSocket, c: Chunk, evenIfDead = false): void {
    const w = this.#world;
    if (!evenIfDead && !from.proc.alive) return;
    const key = this.#pair(from.host, from.remote);
    if (this.#cuts.has(key)) {
      const held = this.#held.get(key) ?? [];
      held.push({ from, c });
      this.#held.set(key, held);
      return;
    }
    const at = Math.max(from.lastAt, w.now + w.rng.real(...this.latency));
    from.lastAt = at;
    const to = from.peer;
    w.schedule(
      at - w.now,
      c === null ? 'net:fin' : c === 'reset' ? 'net:rst' : 'net:data',
      () => to.deliver(c),
      to.proc,
    );
  }

  /**
   * Dials `to` from the current process: resolves with an open connection, or rejects when
   * nothing listens there (refused) or the hosts are cut apart (after `timeoutMs`).
   */
  connect(from: string, to: string, timeoutMs = 5000): Promise<Connection> {
    const w = this.#world;
    const proc = w.current!;
    return new Promise((resolve, reject) => {
      if (this.isCut(from, to)) {
        w.schedule(timeoutMs, 'net:dial-timeout', () => reject(new Error(`connecting to ${to} timed out`)));
        return;
      }
      // SYN, SYN-ACK, then the TLS handshake: about two round trips.
      w.schedule(
        w.rng.real(...this.latency) * 2,
        'net:syn',
        () => {
          const l = this.#listeners.get(to);
          if (!l?.proc.alive || this.isCut(from, to)) {
            w.schedule(
              w.rng.real(...this.latency),
              'net:refused',
              () => reject(Object.assign(new Error(`connect ECONNREFUSED ${to}`), { code: 'ECONNREFUSED' })),
              proc,
            );
            return;
          }
          this.connections++;
          const client = new SimSocket(this, from, to, proc);
          const server = new SimSocket(this, to, from, l.proc);
          client.peer = server;
          server.peer = client;
          const serverConn: Connection = {
            stream: server as unknown as net.Socket,
            raw: server as unknown as net.Socket,
            peer: from,
          };
          l.proc.run(() => l.accept(serverConn));
          w.schedule(
            w.rng.real(...this.latency) * 2,
            'net:established',
            () => {
              // A reset before the handshake completed fails the dial, as with TCP.
              if (client.destroyed) {
                reject(Object.assign(new Error(`connect ECONNRESET ${to}`), { code: 'ECONNRESET' }));
                return;
              }
              resolve({
                stream: client as unknown as net.Socket,
                raw: client as unknown as net.Socket,
                peer: to,
              });
            },
            proc,
          );
        },
        proc,
      );
    });
  }
}
