/**
 * The CLI's requests to a node's admin API. node:http rather than fetch: a process's first fetch
 * loads undici, 47-50 ms here, a fifth of a short command. Each request has a connection of its
 * own (no keep-alive), so a command exits as soon as it has its answers.
 */
import http from 'node:http';

export interface AdminReply {
  status: number;
  /** A 2xx status. */
  ok: boolean;
  text: string;
}

/** Five minutes, as fetch waits for an answer's headers: switchovers and failovers take time. */
const DEFAULT_TIMEOUT_MS = 300_000;

/**
 * `method` on `url`, with `body` as JSON when given. Rejects when there is no answer: the error's
 * `code` (ECONNREFUSED, ...) says why, or its name is AbortError after `timeoutMs`.
 */
export function adminRequest(
  url: string,
  o: { method?: 'GET' | 'POST'; body?: unknown; timeoutMs?: number } = {},
): Promise<AdminReply> {
  const payload = o.body === undefined ? null : JSON.stringify(o.body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: o.method ?? 'GET',
        agent: false,
        signal: AbortSignal.timeout(o.timeoutMs ?? DEFAULT_TIMEOUT_MS),
        headers: payload === null ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          resolve({
            status,
            ok: status >= 200 && status < 300,
            text: Buffer.concat(chunks).toString('utf8'),
          });
        });
      },
    );
    req.on('error', reject);
    req.end(payload ?? undefined);
  });
}

/** Why a request got no answer, in a few words. */
export function noAnswer(err: unknown, timeoutMs = DEFAULT_TIMEOUT_MS): string {
  const e = err as Error & { code?: string };
  return e.name === 'AbortError' ? `no answer within ${timeoutMs} ms` : (e.code ?? e.message);
}

/** The answer's JSON body, or an error naming what came instead. */
export function json<T>(reply: AdminReply): T {
  try {
    return JSON.parse(reply.text) as T;
  } catch {
    throw new Error(`HTTP ${reply.status}, not JSON: ${reply.text.slice(0, 200)}`);
  }
}
