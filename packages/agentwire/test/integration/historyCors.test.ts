import { afterEach, describe, expect, it } from 'vitest';
import type { GatewayOptions } from '../../src/transport/index.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { brokenStore, httpCall, type HttpReply } from '../helpers/historyHttp.js';

/**
 * CORS of the history routes (PROTOCOL.md section 14): a browser app on another origin than the
 * gateway may call them when `AGENTWIRE_ALLOWED_ORIGINS` (the WebSocket's allow-list) lets it.
 * Before, a preflight got 405 and no answer named an origin.
 */

const APP = 'https://app.example';
const OTHER = 'https://evil.example';

let gateway: TestGateway | undefined;
afterEach(async () => {
  await gateway?.stop();
  gateway = undefined;
});

async function start(options: Partial<GatewayOptions> = {}): Promise<TestGateway> {
  gateway = await startGateway(options);
  return gateway;
}

/** A browser's preflight of `method` from `origin`. */
function preflight(env: TestGateway, path: string, origin: string, method = 'GET'): Promise<HttpReply> {
  return httpCall(env.port, 'OPTIONS', path, {
    headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': 'authorization,content-type' },
  });
}

/** The answer's `access-control-*` headers. */
function corsOf(reply: HttpReply): Record<string, unknown> {
  return Object.fromEntries(Object.entries(reply.headers).filter(([name]) => name.startsWith('access-control-')));
}

const PREFLIGHT = {
  'access-control-allow-methods': 'GET, PATCH, DELETE',
  'access-control-allow-headers': 'Authorization, Content-Type',
  'access-control-max-age': '600',
};

describe('history routes with an Origin allow-list', () => {
  it('a preflight from a listed origin is 204 naming it, the methods and the headers', async () => {
    const env = await start({ allowedOrigins: [APP] });
    for (const [path, method] of [
      ['/v1/threads', 'GET'],
      ['/v1/threads/t1/messages', 'GET'],
      ['/v1/threads/t1', 'PATCH'],
      ['/v1/threads/t1', 'DELETE'],
    ] as const) {
      const reply = await preflight(env, path, APP, method);
      expect(reply.status).toBe(204);
      expect(corsOf(reply)).toEqual({ 'access-control-allow-origin': APP, ...PREFLIGHT });
      expect(reply.headers.vary).toBe('Origin');
    }
  });

  it('a preflight from an unlisted origin is 403 without CORS headers', async () => {
    const env = await start({ allowedOrigins: [APP] });
    const reply = await preflight(env, '/v1/threads', OTHER);
    expect(reply.status).toBe(403);
    expect(corsOf(reply)).toEqual({});
  });

  it('answers a listed origin, compared like the WebSocket (case-insensitively), with its Origin', async () => {
    const env = await start({ allowedOrigins: [APP] });
    const token = await env.token('alice');
    const reply = await httpCall(env.port, 'GET', '/v1/threads', { token, headers: { origin: APP } });
    expect(reply).toMatchObject({ status: 200, body: { threads: [] } });
    expect(corsOf(reply)).toEqual({ 'access-control-allow-origin': APP });
    expect(reply.headers.vary).toBe('Origin');
    const upper = await httpCall(env.port, 'GET', '/v1/threads', { token, headers: { origin: 'https://APP.example' } });
    expect(corsOf(upper)).toEqual({ 'access-control-allow-origin': 'https://APP.example' });
  });

  it('errors carry the CORS headers too, so the app can read them', async () => {
    const env = await start({ allowedOrigins: [APP] });
    const token = await env.token('alice');
    const headers = { origin: APP };
    const answers = [
      await httpCall(env.port, 'GET', '/v1/threads', { headers }),
      await httpCall(env.port, 'GET', '/v1/threads/none/messages', { token, headers }),
      await httpCall(env.port, 'GET', '/v1/threads?limit=0', { token, headers }),
      await httpCall(env.port, 'PATCH', '/v1/threads/none', { token, headers, body: '{}' }),
      await httpCall(env.port, 'DELETE', '/v1/threads/none', { token, headers }),
      await httpCall(env.port, 'POST', '/v1/threads', { token, headers }),
    ];
    expect(answers.map((reply) => reply.status)).toEqual([401, 404, 400, 400, 404, 405]);
    for (const reply of answers) expect(corsOf(reply)).toEqual({ 'access-control-allow-origin': APP });
  });

  it('a failing store answers 503 with the CORS headers', async () => {
    const env = await start({ allowedOrigins: [APP], history: brokenStore(true) });
    const reply = await httpCall(env.port, 'GET', '/v1/threads', { token: await env.token('alice'), headers: { origin: APP } });
    expect(reply.status).toBe(503);
    expect(corsOf(reply)).toEqual({ 'access-control-allow-origin': APP });
  });

  it('an unlisted origin, or none, gets the answer of today without CORS headers', async () => {
    const env = await start({ allowedOrigins: [APP] });
    const token = await env.token('alice');
    const unlisted = await httpCall(env.port, 'GET', '/v1/threads', { token, headers: { origin: OTHER } });
    expect(unlisted).toMatchObject({ status: 200, body: { threads: [] } });
    expect(corsOf(unlisted)).toEqual({});
    const noOrigin = await httpCall(env.port, 'GET', '/v1/threads', { token });
    expect(noOrigin.status).toBe(200);
    expect(corsOf(noOrigin)).toEqual({});
    // An OPTIONS that is not a preflight is still a method these paths do not have.
    expect((await httpCall(env.port, 'OPTIONS', '/v1/threads', { headers: { origin: APP } })).status).toBe(405);
  });
});

describe('history routes without an allow-list (any origin)', () => {
  it('a preflight is 204 with Access-Control-Allow-Origin: *', async () => {
    const env = await start();
    const reply = await preflight(env, '/v1/threads/t1', OTHER, 'DELETE');
    expect(reply.status).toBe(204);
    expect(corsOf(reply)).toEqual({ 'access-control-allow-origin': '*', ...PREFLIGHT });
  });

  it('answers and errors carry Access-Control-Allow-Origin: *', async () => {
    const env = await start();
    const token = await env.token('alice');
    const ok = await httpCall(env.port, 'GET', '/v1/threads', { token, headers: { origin: OTHER } });
    const unauthorized = await httpCall(env.port, 'GET', '/v1/threads/t1/messages', { headers: { origin: OTHER } });
    expect([ok.status, unauthorized.status]).toEqual([200, 401]);
    for (const reply of [ok, unauthorized]) expect(corsOf(reply)).toEqual({ 'access-control-allow-origin': '*' });
  });
});

describe('the other routes', () => {
  it('have no CORS, preflight or not', async () => {
    const env = await start({ chatPage: true, testTokens: { bypassKey: 'a-bypass-key-of-16-characters', secret: 'test-token-secret-long-enough-0123456789' } });
    const headers = { origin: APP };
    const answers = [
      await httpCall(env.port, 'GET', '/healthz', { headers }),
      await httpCall(env.port, 'GET', '/readyz', { headers }),
      await httpCall(env.port, 'GET', '/metrics', { headers }),
      await httpCall(env.port, 'POST', '/v1/auth/test-token', { headers, body: '{}' }),
      await httpCall(env.port, 'GET', '/', { headers }),
    ];
    expect(answers.map((reply) => reply.status)).toEqual([200, 200, 200, 401, 200]);
    for (const path of ['/healthz', '/readyz', '/metrics', '/v1/auth/test-token', '/']) {
      const reply = await preflight(env, path, APP, 'POST');
      expect(reply.status).not.toBe(204);
      answers.push(reply);
    }
    for (const reply of answers) expect(corsOf(reply)).toEqual({});
  });
});
