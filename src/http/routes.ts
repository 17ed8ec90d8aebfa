import type { IncomingMessage, ServerResponse } from 'node:http';
import { bypassKeyMatches, signToken } from '../auth/index.js';
import type { Registry } from 'prom-client';

export interface TestTokenIssuer {
  readonly bypassKey: string;
  readonly secret: string;
  readonly issuer?: string;
  readonly audience?: string;
  /** Longest lifetime a test token may ask for. Default 86400 s. */
  readonly maxTtlSec?: number;
}

export interface RouteDeps {
  isReady(): boolean;
  readonly registry: Registry;
  readonly testTokens?: TestTokenIssuer;
  /** The browser chat page (src/web), tried after the routes above. */
  readonly chatPage?: (req: IncomingMessage, res: ServerResponse) => boolean;
}

const MAX_BODY_BYTES = 4096;

/**
 * The gateway's HTTP routes (PROTOCOL.md section 10). Returns false for any other path so an
 * embedding application can serve its own routes on the same server.
 */
export function createRouteHandler(deps: RouteDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path === '/healthz' && req.method === 'GET') {
      json(res, 200, { status: 'ok' });
    } else if (path === '/readyz' && req.method === 'GET') {
      if (deps.isReady()) json(res, 200, { status: 'ready' });
      else json(res, 503, { status: 'not_ready' }, { 'Retry-After': '1' });
    } else if (path === '/metrics' && req.method === 'GET') {
      deps.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'Content-Type': deps.registry.contentType });
          res.end(text);
        },
        () => json(res, 500, { detail: 'metrics unavailable' }),
      );
    } else if (path === '/v1/auth/test-token' && req.method === 'POST' && deps.testTokens) {
      void issueTestToken(deps.testTokens, req, res);
    } else {
      return deps.chatPage?.(req, res) ?? false;
    }
    return true;
  };
}

async function issueTestToken(issuer: TestTokenIssuer, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const key = req.headers['x-e2e-bypass-key'];
  if (!bypassKeyMatches(issuer.bypassKey, typeof key === 'string' ? key : undefined)) {
    req.resume();
    return json(res, 401, { detail: 'Invalid E2E bypass key' });
  }
  let body: unknown;
  try {
    body = JSON.parse(await readBody(req));
  } catch (error) {
    return json(res, 400, { detail: error instanceof BodyTooLarge ? 'body too large' : 'body must be JSON' });
  }
  const { user_id: userId, ttl_s: ttl = 600 } = (body ?? {}) as { user_id?: unknown; ttl_s?: unknown };
  if (typeof userId !== 'string' || userId.length === 0 || userId.length > 128) {
    return json(res, 400, { detail: 'user_id must be a string of 1..128 characters' });
  }
  const maxTtl = issuer.maxTtlSec ?? 86_400;
  if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > maxTtl) {
    return json(res, 400, { detail: `ttl_s must be an integer from 1 to ${maxTtl}` });
  }
  const { token, expiresAt } = await signToken(issuer.secret, {
    sub: userId,
    ttlSec: ttl,
    ...(issuer.issuer ? { issuer: issuer.issuer } : {}),
    ...(issuer.audience ? { audience: issuer.audience } : {}),
  });
  json(res, 200, { token, expires_at: expiresAt.toISOString() });
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new BodyTooLarge());
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}
