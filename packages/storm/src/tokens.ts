import { createSigner } from 'fast-jwt';
import type { WorkerPlan } from './types.js';

/** The http(s) URL of `POST /v1/auth/test-token` on the host of a ws(s) endpoint URL. */
export function testTokenUrl(wsUrl: string): string {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = '/v1/auth/test-token';
  url.search = '';
  url.hash = '';
  return url.toString();
}

/** One token per user: signed locally (HS256) or fetched from the test-token route. */
export async function tokensFor(plan: Pick<WorkerPlan, 'auth' | 'testTokenUrl' | 'tokenTtlSec'>, users: string[]): Promise<Map<string, string>> {
  const tokens = new Map<string, string>();
  const auth = plan.auth;
  const one =
    auth.kind === 'secret'
      ? async (user: string) => signHs256(auth.secret, user, plan.tokenTtlSec)
      : (user: string) => fetchTestToken(plan.testTokenUrl, auth.key, user, plan.tokenTtlSec);
  let next = 0;
  const lanes = Array.from({ length: Math.min(auth.kind === 'secret' ? 64 : 16, users.length) }, async () => {
    while (next < users.length) {
      const user = users[next++]!;
      tokens.set(user, await one(user));
    }
  });
  await Promise.all(lanes);
  return tokens;
}

async function fetchTestToken(url: string, key: string, user: string, ttlSec: number): Promise<string> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-e2e-bypass-key': key },
      body: JSON.stringify({ user_id: user, ttl_s: ttlSec }),
    });
  } catch (error) {
    throw new Error(`POST ${url} failed: ${(error as Error).message}`, { cause: error });
  }
  const text = await response.text();
  if (response.status !== 200) throw new Error(`POST ${url} for ${user} answered ${response.status}: ${text.slice(0, 200)}`);
  let token: unknown;
  try {
    token = (JSON.parse(text) as { token?: unknown }).token;
  } catch {
    token = undefined;
  }
  if (typeof token !== 'string' || token.length === 0) throw new Error(`POST ${url} for ${user} returned no token: ${text.slice(0, 200)}`);
  return token;
}

/** An HS256 token for `user` valid for `ttlSec`, as the gateway's own dev tokens are. */
function signHs256(secret: string, user: string, ttlSec: number): string {
  const iat = Math.floor(Date.now() / 1000);
  return createSigner({ key: secret, algorithm: 'HS256' })({ sub: user, iat, exp: iat + Math.ceil(ttlSec) });
}
