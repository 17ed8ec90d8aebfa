import { createVerifier, type VerifierOptions as FastJwtOptions } from 'fast-jwt';
import { classifyVerifyError } from './errors.js';
import { JwksKeys, type TokenCheck } from './jwks.js';
import { resolveKey, type PinnedAlgorithm } from './keys.js';
import type { TokenVerifier, VerifierOptions, VerifyResult } from './types.js';

const DEFAULT_CLOCK_TOLERANCE_SEC = 5;
/** Longer tokens are refused unparsed: real ones are well under 2 KiB. */
export const MAX_TOKEN_CHARS = 16 * 1024;
/** `sub` is an opaque id of 1..1024 characters (code points). */
export const MAX_SUB_CHARS = 1024;
/** The latest `exp` a Date can represent (ms 8.64e15), so expiry arithmetic stays finite. */
const LATEST_EXP_SEC = 8.64e12;
/** Header parameters that point at a key inside or outside the token: never trusted, so refused. */
const KEY_POINTING_HEADERS = ['jku', 'x5u', 'jwk', 'x5c'] as const;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const UNPAIRED_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Builds a verifier for exactly one key source: an HS256 secret, an RS256/ES256 PEM, or a
 * JWKS URL. Algorithms are pinned to the key (HS256 for a secret, RS256 for RSA, ES256 for EC
 * P-256) and keys are imported once, when the verifier (or the JWKS document) is loaded.
 * Throws an Error naming the setting when the configuration is unusable.
 */
export function createTokenVerifier(options: VerifierOptions): TokenVerifier {
  const source = resolveKey(options);
  const toleranceSec = options.clockToleranceSec ?? DEFAULT_CLOCK_TOLERANCE_SEC;
  if (!Number.isFinite(toleranceSec) || toleranceSec < 0) {
    throw new Error(`clockToleranceSec must be a non-negative number of seconds, got ${String(toleranceSec)}`);
  }
  // fast-jwt checks iss/aud only when present, so configured ones are also required.
  const requiredClaims = ['exp', 'sub'];
  const claimOptions: FastJwtOptions = { clockTolerance: toleranceSec * 1000, requiredClaims };
  if (options.issuer !== undefined) {
    claimOptions.allowedIss = options.issuer;
    requiredClaims.push('iss');
  }
  if (options.audience !== undefined) {
    claimOptions.allowedAud = options.audience;
    requiredClaims.push('aud');
  }
  const buildCheck = (key: string, algorithm: PinnedAlgorithm): TokenCheck => createVerifier({ ...claimOptions, key, algorithms: [algorithm] }) as TokenCheck;

  let algorithms: readonly PinnedAlgorithm[];
  let checkFor: (header: CheckedHeader) => TokenCheck | string | Promise<TokenCheck | string>;
  let ready: () => Promise<void>;
  if (source.kind === 'fixed') {
    const check = buildCheck(source.key, source.algorithm);
    algorithms = [source.algorithm];
    checkFor = () => check;
    ready = async () => {};
  } else {
    const jwks = new JwksKeys(source.url, buildCheck, options.jwks);
    algorithms = ['RS256', 'ES256'];
    checkFor = (header) => jwks.checkFor(header);
    ready = () => jwks.ready();
  }

  return {
    ready,
    async verify(token): Promise<VerifyResult> {
      if (typeof token !== 'string' || token.trim().length === 0) {
        return { ok: false, reason: 'token_missing', detail: 'no token presented' };
      }
      if (token.length > MAX_TOKEN_CHARS) {
        return invalid(`token longer than ${MAX_TOKEN_CHARS} characters`);
      }
      const header = checkHeader(token, algorithms);
      if (typeof header === 'string') return invalid(header);
      const check = await checkFor(header);
      if (typeof check === 'string') return invalid(check);
      let payload: Record<string, unknown>;
      try {
        payload = check(token);
      } catch (err) {
        return { ok: false, ...classifyVerifyError(err, token) };
      }
      const { sub, exp } = payload;
      if (typeof exp !== 'number' || !(exp <= LATEST_EXP_SEC)) return invalid('claim "exp" is not a usable time');
      if (typeof sub !== 'string' || sub.length === 0 || codePointsOver(sub, MAX_SUB_CHARS)) {
        return invalid(`claim "sub" is not a string of 1..${MAX_SUB_CHARS} characters`);
      }
      // An unpaired surrogate (a JSON escape such as \ud800) is no character: written as UTF-8
      // (PostgreSQL; Redis keys escape it) it becomes U+FFFD, which would make it another user's
      // id, and x-agentwire-user (encodeURIComponent) cannot carry it.
      if (UNPAIRED_SURROGATE.test(sub)) return invalid('claim "sub" holds an unpaired surrogate');
      return { ok: true, userId: sub, expiresAt: exp * 1000 };
    },
  };
}

interface CheckedHeader {
  readonly alg: PinnedAlgorithm;
  readonly kid?: string;
}

/**
 * Reads the header before any key is chosen or fetched: the algorithm must be one pinned to
 * the configured key, `crit` is refused (no extension is understood), and headers that point
 * at a key (`jku`, `x5u`, `jwk`, `x5c`) are refused rather than ignored.
 */
function checkHeader(token: string, algorithms: readonly PinnedAlgorithm[]): CheckedHeader | string {
  const end = token.indexOf('.');
  const segment = end > 0 ? token.slice(0, end) : '';
  if (!BASE64URL.test(segment)) return 'token is not three base64url segments';
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    return 'token header is not JSON';
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return 'token header is not a JSON object';
  const fields = header as Record<string, unknown>;
  const alg = Object.hasOwn(fields, 'alg') ? fields.alg : undefined;
  if (typeof alg !== 'string' || !(algorithms as readonly string[]).includes(alg)) {
    return `header "alg" is not ${algorithms.join(' or ')}`;
  }
  if (Object.hasOwn(fields, 'crit')) return 'header "crit" is not supported';
  for (const name of KEY_POINTING_HEADERS) {
    if (Object.hasOwn(fields, name)) return `header "${name}" refused: keys are never taken from a token`;
  }
  const kid = Object.hasOwn(fields, 'kid') ? fields.kid : undefined;
  if (kid !== undefined && typeof kid !== 'string') return 'header "kid" is not a string';
  return kid === undefined ? { alg: alg as PinnedAlgorithm } : { alg: alg as PinnedAlgorithm, kid };
}

/** Whether `text` has more than `limit` code points (counted only when its length allows it). */
function codePointsOver(text: string, limit: number): boolean {
  if (text.length <= limit) return false;
  if (text.length > 2 * limit) return true;
  let count = 0;
  for (const _ of text) if (++count > limit) return true;
  return false;
}

function invalid(detail: string): VerifyResult {
  return { ok: false, reason: 'token_invalid', detail };
}
