/**
 * One HELLO to a peer, to learn its view of a group without streaming: a backup answers
 * WELCOME (its epoch), a node that is primary at a newer epoch answers REFUSE with its epoch and
 * primary. Used by a primary whose switchover lost touch with the promoted node.
 */
import type { Address } from '../config/index.js';
import { Channel } from './channel.js';
import {
  type Hello,
  type Message,
  MsgType,
  PROTOCOL_VERSION,
  type Refuse,
  type Welcome,
} from './messages.js';
import { connectSecure, type SecureContext } from './transport.js';

export interface ProbeOptions extends Omit<Hello, 'type' | 'version'> {
  addr: Address;
  peer: string;
  ctx: SecureContext;
  timeoutMs?: number;
}

export async function probe(o: ProbeOptions): Promise<Welcome | Refuse> {
  const conn = await connectSecure(o.addr, o.peer, o.ctx);
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (m: Message | Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ch.close(null);
      if (m instanceof Error) reject(m);
      else if (m.type === MsgType.Welcome || m.type === MsgType.Refuse) resolve(m);
      else reject(new Error(`unexpected message type ${m.type} from ${o.peer}`));
    };
    const ch = new Channel(conn, {
      onMessage: (m) => finish(m),
      onClose: (reason) => finish(new Error(`${o.peer} closed the link: ${reason ?? 'closed'}`)),
    });
    const timer = setTimeout(() => finish(new Error(`${o.peer} did not answer`)), o.timeoutMs ?? 5000);
    ch.send({
      type: MsgType.Hello,
      version: PROTOCOL_VERSION,
      cluster: o.cluster,
      group: o.group,
      node: o.node,
      epoch: o.epoch,
      firstPosition: o.firstPosition,
      durablePosition: o.durablePosition,
    }).catch((err: Error) => finish(err));
  });
}
