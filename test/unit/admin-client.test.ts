/** The CLI's admin API requests against a real local HTTP server: answers, errors, silence. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminRequest, json, noAnswer } from '../../src/cli/admin-client.js';

describe('admin client', () => {
  let server: http.Server;
  let base: string;
  const held: http.ServerResponse[] = [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString('utf8');
      });
      req.on('end', () => {
        if (req.url === '/silent') {
          held.push(res);
          return;
        }
        if (req.url === '/refuse') {
          res.writeHead(409, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: 'no', code: 'SWITCH_REFUSED', what: 'w', fix: 'f' }));
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ method: req.method, type: req.headers['content-type'] ?? null, body }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    for (const r of held) r.destroy();
    await new Promise((r) => server.close(r));
  });

  it('GETs and POSTs JSON, and tells a refusal by its status', async () => {
    const get = await adminRequest(`${base}/status`);
    expect(get.ok).toBe(true);
    expect(json(get)).toEqual({ method: 'GET', type: null, body: '' });
    const post = await adminRequest(`${base}/x`, { method: 'POST', body: { to: 'west' } });
    expect(json(post)).toEqual({ method: 'POST', type: 'application/json', body: '{"to":"west"}' });
    const refused = await adminRequest(`${base}/refuse`, { method: 'POST' });
    expect(refused.ok).toBe(false);
    expect(refused.status).toBe(409);
    expect(json<{ code: string }>(refused).code).toBe('SWITCH_REFUSED');
    expect(() => json({ status: 502, ok: false, text: '<html>bad gateway' })).toThrow(
      'HTTP 502, not JSON: <html>bad gateway',
    );
  });

  it('says why there was no answer: nobody listening, or silence past the timeout', async () => {
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const refused = await adminRequest(`http://127.0.0.1:${port}/status`).catch((e: unknown) => e);
    expect(noAnswer(refused)).toBe('ECONNREFUSED');
    const silent = await adminRequest(`${base}/silent`, { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(noAnswer(silent, 100)).toBe('no answer within 100 ms');
  });
});
