import { jwtVerify, type JWTVerifyOptions } from 'jose';
import { classifyVerifyError } from './errors.js';
import { resolveKey } from './keys.js';
import type { TokenVerifier, VerifierOptions, VerifyResult } from './types.js';

const DEFAULT_CLOCK_TOLERANCE_SEC = 5;

/**
 * Builds a verifier for exactly one key source (HS256 secret, RS256/ES256 PEM, or JWKS).
 * Throws an Error naming the setting when the configuration is unusable.
 */
export function createTokenVerifier(options: VerifierOptions): TokenVerifier {
  const { key, algorithms } = resolveKey(options);
  const clockTolerance = options.clockToleranceSec ?? DEFAULT_CLOCK_TOLERANCE_SEC;
  if (!Number.isFinite(clockTolerance) || clockTolerance < 0) {
    throw new Error(`clockToleranceSec must be a non-negative number of seconds, got ${String(clockTolerance)}`);
  }
  // An explicit algorithm list refuses `alg: none` and algorithm confusion (e.g. HS256 with a public key).
  const verifyOptions: JWTVerifyOptions = { algorithms, clockTolerance };
  if (options.issuer !== undefined) verifyOptions.issuer = options.issuer;
  if (options.audience !== undefined) verifyOptions.audience = options.audience;

  return {
    async verify(token): Promise<VerifyResult> {
      if (typeof token !== 'string' || token.trim().length === 0) {
        return { ok: false, reason: 'token_missing', detail: 'no token presented' };
      }
      let payload;
      try {
        ({ payload } = await jwtVerify(token, key, verifyOptions));
      } catch (err) {
        return { ok: false, ...classifyVerifyError(err, token) };
      }
      const { sub, exp } = payload;
      if (typeof sub !== 'string' || sub.length === 0) {
        return { ok: false, reason: 'token_invalid', detail: 'claim "sub" missing or not a non-empty string' };
      }
      return { ok: true, userId: sub, expiresAt: typeof exp === 'number' ? exp * 1000 : null };
    },
  };
}
