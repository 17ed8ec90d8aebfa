import { TokenError } from 'fast-jwt';
import type { AuthFailureReason } from './types.js';

const MAX_DETAIL = 160;

/**
 * Maps an error thrown by fast-jwt's verifier to a failure reason and a short log line. Only
 * fast-jwt's own fixed messages are used (they name the claim, never echo the token), and the
 * token is scrubbed out defensively.
 */
export function classifyVerifyError(err: unknown, token: string): { reason: AuthFailureReason; detail: string } {
  if (err instanceof TokenError && err.code === TokenError.codes.expired) {
    return { reason: 'token_expired', detail: 'token expired ("exp" claim in the past)' };
  }
  return { reason: 'token_invalid', detail: scrub(describe(err), token) };
}

function describe(err: unknown): string {
  if (err instanceof TokenError) {
    if (err.code === TokenError.codes.invalidSignature) return 'signature verification failed';
    if (err.code === TokenError.codes.inactive) return `claim "nbf" in the future: ${err.message}`;
    return `${err.code}: ${err.message}`;
  }
  if (err instanceof Error) return `verification failed: ${err.name}: ${err.message}`;
  return 'verification failed';
}

function scrub(detail: string, token: string): string {
  const clean = token.length > 0 ? detail.split(token).join('[token]') : detail;
  return clean.length > MAX_DETAIL ? `${clean.slice(0, MAX_DETAIL - 1)}…` : clean;
}
