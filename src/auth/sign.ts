import { SignJWT } from 'jose';

export interface SignClaims {
  sub: string;
  ttlSec: number;
  issuer?: string;
  audience?: string;
}

/** Issues an HS256 token (dev mode and the E2E test-token route). */
export async function signToken(secret: string, claims: SignClaims): Promise<{ token: string; expiresAt: Date }> {
  if (secret.length === 0) throw new Error('signToken: secret is empty');
  if (claims.sub.length === 0) throw new Error('signToken: sub is empty');
  if (!Number.isFinite(claims.ttlSec) || claims.ttlSec <= 0) {
    throw new RangeError(`signToken: ttlSec must be a positive number, got ${String(claims.ttlSec)}`);
  }
  const iat = Math.floor(Date.now() / 1000);
  const exp = iat + Math.ceil(claims.ttlSec);
  let jwt = new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(claims.sub)
    .setIssuedAt(iat)
    .setExpirationTime(exp);
  if (claims.issuer !== undefined) jwt = jwt.setIssuer(claims.issuer);
  if (claims.audience !== undefined) jwt = jwt.setAudience(claims.audience);
  const token = await jwt.sign(new TextEncoder().encode(secret));
  return { token, expiresAt: new Date(exp * 1000) };
}
