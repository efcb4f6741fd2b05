/**
 * One request on a fresh authenticated connection, one answer, closed: a HELLO to learn a peer's
 * view of a group without streaming (a backup answers WELCOME with its epoch; a node that is
 * primary at a newer epoch answers REFUSE with its epoch and primary), or a CONTROL request to a
 * node that is not streaming with this one (the witness of a group's failover).
 */
import type { Address } from '../config/index.js';
import { monoNow } from '../core/mono.js';
import { Channel } from './channel.js';
import {
  type ControlReply,
  type Hello,
  type Message,
  MsgType,
  PROTOCOL_VERSION,
  type Refuse,
  type Welcome,
} from './messages.js';
import { connectSecure, type SecureContext } from './transport.js';

export interface PeerAddress {
  addr: Address;
  peer: string;
  ctx: SecureContext;
  timeoutMs?: number;
  /** How to dial (the simulation's virtual network); connectSecure by default. */
  connect?: typeof connectSecure;
}

/** Sends `first` and resolves with the peer's first answer; the connection is then closed. */
export async function request(to: PeerAddress, first: Message): Promise<Message> {
  // One deadline for dialing, the handshake and the answer: a blackholed peer fails in time too.
  const timeoutMs = to.timeoutMs ?? 5000;
  const deadline = monoNow() + timeoutMs;
  const conn = await (to.connect ?? connectSecure)(to.addr, to.peer, to.ctx, timeoutMs);
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (m: Message | Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ch.close(null);
      if (m instanceof Error) reject(m);
      else resolve(m);
    };
    const ch = new Channel(conn, {
      onMessage: (m) => finish(m),
      onClose: (reason) => finish(new Error(`${to.peer} closed the link: ${reason ?? 'closed'}`)),
    });
    const timer = setTimeout(
      () => finish(new Error(`${to.peer} did not answer within ${timeoutMs} ms`)),
      Math.max(0, deadline - monoNow()),
    );
    ch.send(first).catch((err: Error) => finish(err));
  });
}

export async function probe(
  to: PeerAddress,
  hello: Omit<Hello, 'type' | 'version'>,
): Promise<Welcome | Refuse> {
  const m = await request(to, { type: MsgType.Hello, version: PROTOCOL_VERSION, ...hello });
  if (m.type === MsgType.Welcome || m.type === MsgType.Refuse) return m;
  throw new Error(`unexpected message type ${m.type} from ${to.peer}`);
}

/** A JSON request to a node outside any stream (CONTROL id 0); rejects with its error answer. */
export async function ask(to: PeerAddress, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const m = await request(to, { type: MsgType.Control, id: 0, body: JSON.stringify(body) });
  if (m.type === MsgType.Refuse) throw new Error(`refused by ${to.peer}: [${m.code}] ${m.message}`);
  if (m.type !== MsgType.ControlReply) throw new Error(`unexpected message type ${m.type} from ${to.peer}`);
  const reply = m as ControlReply;
  if (!reply.ok) throw new Error(reply.body);
  return JSON.parse(reply.body) as Record<string, unknown>;
}
