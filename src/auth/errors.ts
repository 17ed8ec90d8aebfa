import { errors } from 'jose';
import type { AuthFailureReason } from './types.js';

const MAX_DETAIL = 160;

/**
 * Maps an error thrown during verification to a failure reason and a short log line.
 * Only jose's own fixed messages are used, and the token is scrubbed out defensively.
 */
export function classifyVerifyError(err: unknown, token: string): { reason: AuthFailureReason; detail: string } {
  if (err instanceof errors.JWTExpired) {
    return { reason: 'token_expired', detail: 'token expired ("exp" claim in the past)' };
  }
  return { reason: 'token_invalid', detail: scrub(describe(err), token) };
}

function describe(err: unknown): string {
  if (err instanceof errors.JWTClaimValidationFailed) return `claim check failed: ${err.message}`;
  if (err instanceof errors.JOSEAlgNotAllowed) return `algorithm not allowed: ${err.message}`;
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'signature verification failed';
  if (err instanceof errors.JWKSNoMatchingKey) return 'no key in the JWKS matches the token';
  if (err instanceof errors.JWKSTimeout) return 'JWKS request timed out';
  if (err instanceof errors.JOSEError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) return `verification failed: ${err.name}: ${err.message}`;
  return 'verification failed';
}

function scrub(detail: string, token: string): string {
  const clean = token.length > 0 ? detail.split(token).join('[token]') : detail;
  return clean.length > MAX_DETAIL ? `${clean.slice(0, MAX_DETAIL - 1)}…` : clean;
}
