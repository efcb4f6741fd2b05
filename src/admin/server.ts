/**
 * The node's admin API over HTTP (node:http; a few routes do not need a framework):
 *   GET  /                            the web dashboard: every node's status (dashboard.ts)
 *   GET  /status                      what `tandem status --json` shows for this node
 *   GET  /metrics                     Prometheus text
 *   GET  /healthz                     200 when every group runs, 503 otherwise
 *   POST /v1/groups/:group/sync?seq=N sync-mode commit wait (used by the library API)
 *   POST /v1/groups/:group/switchover  a planned switchover from this primary; body
 *                                      {"to": node?, "verify": bool?}; answers its report
 *   POST /v1/groups/:group/failover    this backup takes over (the primary is gone); body
 *                                      {"force": bool?}; answers its report
 *   POST /v1/groups/:group/virtual-switch/start|end   a virtual switch on this backup
 *   GET  /v1/groups/:group/divergence  this node's divergence reports (an old primary's tails)
 *   GET  /v1/groups/:group/divergence/:id[?format=sql]   one report, as JSON or SQL
 *   POST /v1/groups/:group/divergence/:id/reapply|discard   resolve it
 */
import http from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { fetchStatus } from '../cli/status.js';
import { TandemError } from '../core/errors.js';
import { toSql } from '../node/divergence.js';
import type { TandemNode } from '../node/node.js';
import { switchover } from '../node/switchover.js';
import { dashboardBody, dashboardPage } from './dashboard.js';

export class AdminServer {
  readonly #node: TandemNode;
  readonly #log: Logger;
  /** Made at the first scrape: prom-client is not loaded at start-up (about 20 ms of it). */
  #metrics: Promise<Registry> | null = null;
  readonly #server: http.Server;

  constructor(node: TandemNode, log: Logger) {
    this.#node = node;
    this.#log = log;
    this.#server = http.createServer((req, res) => {
      this.#handle(req, res).catch((err: Error) => {
        this.#log.error({ err: err.message, url: req.url }, 'admin request failed');
        send(res, 500, { error: err.message });
      });
    });
    this.#server.keepAliveTimeout = 1000;
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new TandemError(
            'CONFIG_INVALID',
            `nodes.${this.#node.name}.admin: cannot listen on ${host}:${port}: ${err.code ?? err.message}`,
            'Another process uses the port: stop it or choose another port',
          ),
        ),
      );
      this.#server.listen(port, host, () => resolve());
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  async #divergence(
    res: http.ServerResponse,
    method: string,
    group: string,
    id: string | undefined,
    action: string | undefined,
    url: URL,
  ): Promise<void> {
    if (!Object.hasOwn(this.#node.config.groups, group))
      return send(res, 404, { error: `no group "${group}"` });
    if (method === 'POST' && id && action) {
      try {
        return send(
          res,
          200,
          await this.#node.resolveDivergence(
            group,
            decodeURIComponent(id),
            action === 'reapply' ? 'reapplied' : 'discarded',
          ),
        );
      } catch (err) {
        return tandemError(res, err);
      }
    }
    if (method !== 'GET' || action) return send(res, 405, { error: 'GET a report, POST reapply or discard' });
    const reports = this.#node.divergence(group);
    if (!id) {
      return send(res, 200, {
        reports: reports.map((r) => ({
          id: r.id,
          node: r.node,
          epoch: r.epoch,
          primary: r.primary,
          newEpoch: r.newEpoch,
          fork: r.fork,
          createdAt: r.createdAt,
          transactions: r.transactions.length,
          changes: r.transactions.reduce((a, t) => a + t.changes.length, 0),
          resolved: r.resolved,
        })),
      });
    }
    const r = reports.find((x) => x.id === decodeURIComponent(id));
    if (!r) return send(res, 404, { error: `no divergence report "${id}" on node ${this.#node.name}` });
    if (url.searchParams.get('format') === 'sql') {
      const keys = await this.#node.tableKeys(group);
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(toSql(r, (t) => keys[t] ?? []));
      return;
    }
    return send(res, 200, r);
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = `${req.method} ${url.pathname}`;
    if (route === 'GET /status') return send(res, 200, this.#node.status());
    if (route === 'GET /') {
      // Every node's status, asked as `tandem status` asks; this node's own without a request.
      const answers = await fetchStatus(this.#node.config, 1000, this.#node.status());
      const at = new Date();
      const html =
        url.searchParams.get('part') === 'body'
          ? dashboardBody(answers, at)
          : dashboardPage(this.#node.config, this.#node.name, answers, at);
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(html);
      return;
    }
    if (route === 'GET /healthz') {
      const s = this.#node.status();
      const bad = s.groups.filter((g) => g.state !== 'running');
      return send(res, bad.length ? 503 : 200, {
        ok: bad.length === 0,
        failed: bad.map((g) => ({ group: g.group, error: g.error })),
      });
    }
    if (route === 'GET /metrics') {
      this.#metrics ??= import('./metrics.js').then((m) => m.createMetrics(() => this.#node.status()));
      const registry = await this.#metrics;
      const text = await registry.metrics();
      res.writeHead(200, { 'content-type': registry.contentType });
      res.end(text);
      return;
    }
    const sw = /^POST \/v1\/groups\/([^/]+)\/switchover$/.exec(route);
    if (sw) {
      let body: { to?: unknown; verify?: unknown };
      try {
        body = JSON.parse((await readBody(req)) || '{}') as typeof body;
      } catch {
        return send(res, 400, { error: 'the body must be JSON: {"to": "node", "verify": true}' });
      }
      if (body.to !== undefined && typeof body.to !== 'string')
        return send(res, 400, { error: '"to" must be a node name' });
      try {
        const report = await switchover(this.#node, decodeURIComponent(sw[1]!), {
          to: body.to as string | undefined,
          verify: body.verify === undefined ? undefined : body.verify === true,
        });
        return send(res, report.ok ? 200 : 409, report);
      } catch (err) {
        if (!(err instanceof TandemError)) throw err;
        return send(res, err.code === 'GROUP_UNKNOWN' ? 404 : 409, {
          error: err.message,
          code: err.code,
          what: err.what,
          fix: err.fix,
        });
      }
    }
    const dv = /^(GET|POST) \/v1\/groups\/([^/]+)\/divergence(?:\/([^/]+))?(?:\/(reapply|discard))?$/.exec(
      route,
    );
    if (dv) return this.#divergence(res, dv[1]!, decodeURIComponent(dv[2]!), dv[3], dv[4], url);
    const vs = /^POST \/v1\/groups\/([^/]+)\/virtual-switch\/(start|end)$/.exec(route);
    if (vs) {
      try {
        return send(
          res,
          200,
          await this.#node.virtualSwitch(decodeURIComponent(vs[1]!), vs[2] as 'start' | 'end'),
        );
      } catch (err) {
        return tandemError(res, err);
      }
    }
    const fo = /^POST \/v1\/groups\/([^/]+)\/failover$/.exec(route);
    if (fo) {
      let body: { force?: unknown };
      try {
        body = JSON.parse((await readBody(req)) || '{}') as typeof body;
      } catch {
        return send(res, 400, { error: 'the body must be JSON: {"force": true}' });
      }
      try {
        return send(
          res,
          200,
          await this.#node.failover(decodeURIComponent(fo[1]!), { force: body.force === true }),
        );
      } catch (err) {
        if (!(err instanceof TandemError)) throw err;
        return send(res, 409, { error: err.message, code: err.code, what: err.what, fix: err.fix });
      }
    }
    const m = /^POST \/v1\/groups\/([^/]+)\/sync$/.exec(route);
    if (m) {
      const group = decodeURIComponent(m[1]!);
      const sg = this.#node.sources.get(group);
      if (!sg)
        return send(res, 404, { error: `node ${this.#node.name} is not the primary of group "${group}"` });
      const seq = url.searchParams.get('seq');
      if (!seq || !/^\d+$/.test(seq)) return send(res, 400, { error: 'seq must be a non-negative integer' });
      try {
        const r = await sg.waitDurable(BigInt(seq));
        return send(res, 200, r);
      } catch (err) {
        const code = (err as TandemError).code;
        return send(res, code === 'SYNC_TIMEOUT' ? 504 : 503, { error: (err as Error).message, code });
      }
    }
    send(res, 404, { error: `no route ${route}; try GET / (dashboard), /status, /metrics or /healthz` });
  }
}

function tandemError(res: http.ServerResponse, err: unknown): void {
  if (!(err instanceof TandemError)) throw err;
  send(res, err.code === 'GROUP_UNKNOWN' ? 404 : 409, {
    error: err.message,
    code: err.code,
    what: err.what,
    fix: err.fix,
  });
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (b: Buffer) => {
      size += b.length;
      if (size > 65536) req.destroy(new Error('request body over 64 KiB'));
      else parts.push(b);
    });
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(text);
}
