/**
 * A small network of Linux network namespaces for partition tests (needs root and iproute2):
 * one namespace per host, each joined by a veth pair to a bridge in the root namespace, which
 * also has an address on it (the test reaches every host, and can serve from the bridge address).
 * `cut(host)` takes the host's link down: it is cut off from every other host and from the root
 * namespace, and keeps running; `heal(host)` brings it back. `cutPair(a, b)` drops only the
 * traffic between two hosts (an nftables output rule in each of the two namespaces), so partitions
 * that are not transitive can be made: each of two hosts still reaches a third. `healPairs()`
 * removes those rules.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export interface Network {
  /** The host's address (10.x.y.n). */
  ip(host: string): string;
  /** The address of the root namespace on the bridge. */
  readonly gateway: string;
  /** The command prefix that runs a program inside the host's namespace. */
  wrap(host: string): string[];
  cut(host: string): void;
  heal(host: string): void;
  cutPair(a: string, b: string): void;
  healPairs(): void;
  destroy(): void;
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const nft = (ns: string, rules: string) =>
  execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], {
    input: rules,
    stdio: ['pipe', 'ignore', 'pipe'],
  });

export function makeNetwork(hosts: string[]): Network {
  const tag = randomBytes(2).toString('hex');
  const net = `10.${100 + (Number.parseInt(tag.slice(0, 2), 16) % 100)}.${Number.parseInt(tag.slice(2), 16)}`;
  const bridge = `tb${tag}`;
  const ns = (h: string) => `tnd-${tag}-${h}`;
  const rootSide = (i: number) => `tv${tag}${i}`;
  const made: string[] = [];
  const destroy = () => {
    for (const n of made) {
      try {
        ip('netns', 'del', n);
      } catch {
        // already gone
      }
    }
    try {
      ip('link', 'del', bridge);
    } catch {
      // already gone
    }
  };
  try {
    ip('link', 'add', bridge, 'type', 'bridge');
    ip('addr', 'add', `${net}.254/24`, 'dev', bridge);
    ip('link', 'set', bridge, 'up');
    hosts.forEach((h, i) => {
      const peer = `tp${tag}${i}`;
      ip('netns', 'add', ns(h));
      made.push(ns(h));
      ip('link', 'add', rootSide(i), 'type', 'veth', 'peer', 'name', peer);
      ip('link', 'set', peer, 'netns', ns(h));
      ip('-n', ns(h), 'addr', 'add', `${net}.${i + 1}/24`, 'dev', peer);
      ip('-n', ns(h), 'link', 'set', peer, 'up');
      ip('-n', ns(h), 'link', 'set', 'lo', 'up');
      ip('link', 'set', rootSide(i), 'master', bridge);
      ip('link', 'set', rootSide(i), 'up');
    });
  } catch (err) {
    destroy();
    throw new Error(`cannot make network namespaces (needs root and iproute2): ${(err as Error).message}`);
  }
  const index = (h: string) => {
    const i = hosts.indexOf(h);
    if (i < 0) throw new Error(`no host ${h}`);
    return i;
  };
  const addr = (h: string) => `${net}.${index(h) + 1}`;
  return {
    ip: addr,
    gateway: `${net}.254`,
    wrap: (h) => ['ip', 'netns', 'exec', ns(h)],
    cut: (h) => ip('link', 'set', rootSide(index(h)), 'down'),
    heal: (h) => ip('link', 'set', rootSide(index(h)), 'up'),
    cutPair: (a, b) => {
      for (const [from, to] of [
        [a, b],
        [b, a],
      ] as const) {
        try {
          nft(
            ns(from),
            `table inet tandem_test { chain out { type filter hook output priority 0; ip daddr ${addr(to)} drop; }; }\n`,
          );
        } catch (err) {
          throw new Error(
            `cannot add nftables rules in ${ns(from)} (needs nftables): ${(err as Error).message}`,
          );
        }
      }
    },
    healPairs: () => {
      for (const h of hosts) {
        try {
          nft(ns(h), 'delete table inet tandem_test\n');
        } catch {
          // no rules there
        }
      }
    },
    destroy,
  };
}
