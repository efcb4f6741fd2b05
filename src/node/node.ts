/**
 * One `tandem run` process: the link listener, the admin API and every group the node takes
 * part in (as primary: capture and senders; as backup: receiver and apply).
 */
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { AdminServer } from '../admin/server.js';
import { type Config, groupsOfNode } from '../config/index.js';
import { TandemError } from '../core/errors.js';
import { Channel } from '../link/channel.js';
import { type Hello, MsgType } from '../link/messages.js';
import { acceptSecure, type SecureContext, tlsFiles } from '../link/transport.js';
import { VERSION } from '../version.js';
import { SourceGroup } from './source-group.js';
import { StateLock } from './state-lock.js';
import type { NodeStatus } from './status.js';
import { TargetGroup } from './target-group.js';

export class TandemNode {
  readonly config: Config;
  readonly name: string;
  readonly log: Logger;
  readonly #ctx: SecureContext;
  readonly sources = new Map<string, SourceGroup>();
  readonly targets = new Map<string, TargetGroup>();
  #server: net.Server | null = null;
  #admin: AdminServer | null = null;
  readonly #started = Date.now();
  #stopping: Promise<void> | null = null;
  #lock: StateLock | null = null;

  constructor(config: Config, name: string, log: Logger) {
    if (!config.nodes[name]) {
      throw new TandemError(
        'NODE_UNKNOWN',
        `${config.file}: there is no node "${name}" (nodes: ${Object.keys(config.nodes).join(', ')})`,
        `Pass one of them, for example: --node ${Object.keys(config.nodes)[0]}`,
      );
    }
    this.config = config;
    this.name = name;
    this.log = log;
    this.#ctx = {
      security: config.security,
      cluster: config.cluster,
      node: name,
      nodes: new Set(Object.keys(config.nodes)),
    };
  }

  async start(): Promise<void> {
    const me = this.config.nodes[this.name]!;
    mkdirSync(me.state, { recursive: true });
    this.#lock = StateLock.acquire(me.state, this.name);
    // Fail now, not at the first link.
    if (this.config.security.mode === 'psk') this.config.security.secret.resolve();
    if (this.config.security.mode === 'tls') tlsFiles(this.config.security, this.name);
    for (const g of groupsOfNode(this.config, this.name)) {
      if (g.primary === this.name) {
        const sg = new SourceGroup(this.config, this.name, g, this.#ctx, this.log);
        await sg.start();
        this.sources.set(g.name, sg);
      } else {
        const tg = new TargetGroup(this.config, this.name, g, this.log);
        await tg.start();
        this.targets.set(g.name, tg);
      }
    }
    this.#server = net.createServer((raw) => this.#accept(raw));
    await listen(this.#server, me.listen.host, me.listen.port, `nodes.${this.name}.listen`);
    this.#admin = new AdminServer(this, this.log);
    await this.#admin.listen(me.admin.host, me.admin.port);
    this.log.info(
      {
        listen: `${me.listen.host}:${me.listen.port}`,
        admin: `${me.admin.host}:${me.admin.port}`,
        groups: [...this.sources.keys(), ...this.targets.keys()],
      },
      'node running',
    );
  }

  /** A peer connected: authenticate, read its HELLO, hand it to the group it names. */
  async #accept(raw: net.Socket): Promise<void> {
    raw.setNoDelay(true);
    const where = `${raw.remoteAddress}:${raw.remotePort}`;
    raw.on('error', () => {});
    let conn: Awaited<ReturnType<typeof acceptSecure>>;
    try {
      conn = await acceptSecure(raw, this.#ctx);
    } catch (err) {
      this.log.warn({ peer: where, err: (err as Error).message }, 'link refused');
      return;
    }
    const ch = new Channel(conn, {
      onClose: (reason) => {
        if (reason) this.log.warn({ peer: where, reason }, 'link closed before handshake');
      },
    });
    const timer = setTimeout(() => ch.close('no HELLO within 5 s'), 5000);
    ch.setHandler((m) => {
      clearTimeout(timer);
      if (m.type !== MsgType.Hello) {
        ch.close(`first message must be HELLO, got type ${m.type}`);
        return;
      }
      this.#hello(ch, m, where);
    });
  }

  #hello(ch: Channel, hello: Hello, where: string): void {
    const tg = this.targets.get(hello.group);
    const refusal = tg
      ? tg.check(hello, ch.conn.peer)
      : { code: 'GROUP_UNKNOWN', message: `node ${this.name} is not a backup in group "${hello.group}"` };
    if (refusal) {
      this.log.warn({ peer: where, node: hello.node, group: hello.group, ...refusal }, 'link refused');
      void ch.send({ type: MsgType.Refuse, ...refusal }).then(() => setTimeout(() => ch.close(null), 50));
      return;
    }
    tg!.attach(ch, hello);
  }

  status(): NodeStatus {
    return {
      cluster: this.config.cluster,
      node: this.name,
      version: VERSION,
      pid: process.pid,
      uptimeMs: Date.now() - this.#started,
      groups: [
        ...[...this.sources.values()].map((s) => s.status()),
        ...[...this.targets.values()].map((t) => t.status()),
      ],
    };
  }

  /** Drain (capture what is committed, let backups confirm it, up to `drainMs`) and close. */
  stop(drainMs = 5000): Promise<void> {
    this.#stopping ??= (async () => {
      this.log.info('node stopping');
      await Promise.all([...this.sources.values()].map((s) => s.stop(drainMs)));
      await Promise.all([...this.targets.values()].map((t) => t.stop()));
      await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
      await this.#admin?.close();
      this.#lock?.release();
      this.log.info('node stopped');
    })();
    return this.#stopping;
  }
}

function listen(server: net.Server, host: string, port: number, field: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new TandemError(
          'CONFIG_INVALID',
          `${field}: cannot listen on ${host}:${port}: ${err.code ?? err.message}`,
          err.code === 'EADDRINUSE'
            ? 'Another process uses the port: stop it or choose another port'
            : 'Choose an address of this machine',
        ),
      ),
    );
    server.listen(port, host, () => resolve());
  });
}
