import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { BypassGuessLimiter, bypassKeyMatches, signToken, type GuessLimiterOptions } from '../auth/index.js';
import { systemClock, type Clock } from '@agentwire/protocol';
import { silentLogger, type Logger } from '../observability/logger.js';
import { discardBody, json, MAX_BODY_BYTES, readBody } from './body.js';
import { requestPath } from './requestPath.js';

/** Enables `POST /v1/auth/test-token`: tokens signed with `secret` for callers that present `bypassKey`. */
export interface TestTokenIssuer {
  readonly bypassKey: string;
  readonly secret: string;
  readonly issuer?: string;
  readonly audience?: string;
  /** Longest lifetime a test token may ask for. Default 86400 s. */
  readonly maxTtlSec?: number;
  /** Throttle of wrong keys per client address (defaults: 20 per 60 s, 10 000 addresses). */
  readonly guessLimit?: GuessLimiterOptions;
}

export interface RouteDeps {
  isReady(): boolean;
  readonly registry: Registry;
  readonly testTokens?: TestTokenIssuer;
  /** The browser chat page (src/web), tried after the routes above. */
  readonly chatPage?: (req: IncomingMessage, res: ServerResponse) => boolean;
  readonly logger?: Logger;
  /** Time of the test-token throttle's windows. */
  readonly clock?: Clock;
}

/**
 * The gateway's HTTP routes (PROTOCOL.md section 10). Returns false for any other path so an
 * embedding application can serve its own routes on the same server.
 */
export function createRouteHandler(deps: RouteDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  const testTokens = deps.testTokens && {
    issuer: deps.testTokens,
    limiter: new BypassGuessLimiter(deps.testTokens.guessLimit),
    logger: deps.logger ?? silentLogger,
    clock: deps.clock ?? systemClock,
  };
  return (req, res) => {
    const path = requestPath(req);
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
    } else if (path === '/v1/auth/test-token' && req.method === 'POST' && testTokens) {
      issueTestToken(testTokens, req, res).catch((error: unknown) => {
        testTokens.logger.error({ err: error }, 'test-token route failed');
        if (!res.headersSent) json(res, 500, { detail: 'internal error' });
      });
    } else {
      return deps.chatPage?.(req, res) ?? false;
    }
    return true;
  };
}

interface TestTokenRoute {
  readonly issuer: TestTokenIssuer;
  readonly limiter: BypassGuessLimiter;
  readonly logger: Logger;
  readonly clock: Clock;
}

async function issueTestToken(route: TestTokenRoute, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { issuer, limiter, logger, clock } = route;
  // The socket's peer, never a forwarded-for header: that one is chosen by the client.
  const address = req.socket.remoteAddress ?? 'unknown';
  const verdict = limiter.check(address, clock.now());
  if (!verdict.allowed) {
    discardBody(req, res);
    return json(res, 429, { detail: 'Too many wrong E2E bypass keys' }, { 'Retry-After': String(verdict.retryAfterSec) });
  }
  const key = req.headers['x-e2e-bypass-key'];
  if (!bypassKeyMatches(issuer.bypassKey, typeof key === 'string' ? key : undefined)) {
    const misses = limiter.recordMiss(address, clock.now());
    logger.warn({ address, misses }, 'wrong E2E bypass key');
    discardBody(req, res);
    return json(res, 401, { detail: 'Invalid E2E bypass key' });
  }
  const body = await readBody(req);
  if (body.kind === 'too_large') {
    return json(res, 413, { detail: `body must be at most ${MAX_BODY_BYTES} bytes` }, body.close ? { Connection: 'close' } : {});
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.text);
  } catch {
    return json(res, 400, { detail: 'body must be JSON' });
  }
  const { user_id: userId, ttl_s: ttl = 600 } = (parsed ?? {}) as { user_id?: unknown; ttl_s?: unknown };
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
