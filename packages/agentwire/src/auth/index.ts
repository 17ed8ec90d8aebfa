export type { AuthFailureReason, TokenVerifier, VerifierOptions, VerifyResult } from './types.js';
export { createTokenVerifier, MAX_SUB_CHARS, MAX_TOKEN_CHARS } from './verifier.js';
export type { JwksPolicy } from './types.js';
export { signToken, type SignClaims } from './sign.js';
export { bearerToken, extractUpgradeCredentials, selectSubprotocol, type UpgradeCredentials } from './upgrade.js';
export { BypassGuessLimiter, bypassKeyMatches, type GuessLimiterOptions, type GuessVerdict } from './bypass.js';
