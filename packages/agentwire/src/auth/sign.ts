import { createSigner } from 'fast-jwt';

/** The claims `signToken` writes: subject, lifetime, optional issuer and audience. */
export interface SignClaims {
  sub: string;
  ttlSec: number;
  issuer?: string;
  audience?: string;
}

/** Issues an HS256 token with `iat` and `exp` (dev mode, the E2E test-token route, the CLI, the bench). */
export async function signToken(secret: string, claims: SignClaims): Promise<{ token: string; expiresAt: Date }> {
  if (secret.length === 0) throw new Error('signToken: secret is empty');
  if (claims.sub.length === 0) throw new Error('signToken: sub is empty');
  if (!Number.isFinite(claims.ttlSec) || claims.ttlSec <= 0) {
    throw new RangeError(`signToken: ttlSec must be a positive number, got ${String(claims.ttlSec)}`);
  }
  const iat = Math.floor(Date.now() / 1000);
  const exp = iat + Math.ceil(claims.ttlSec);
  const payload: Record<string, unknown> = { sub: claims.sub, iat, exp };
  if (claims.issuer !== undefined) payload.iss = claims.issuer;
  if (claims.audience !== undefined) payload.aud = claims.audience;
  // fast-jwt keeps a payload's own iat (noTimestamp would drop it).
  const sign = createSigner({ key: secret, algorithm: 'HS256' });
  return { token: sign(payload), expiresAt: new Date(exp * 1000) };
}
