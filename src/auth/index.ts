export type { AuthFailureReason, TokenVerifier, VerifierOptions, VerifyResult } from './types.js';
export { createTokenVerifier } from './verifier.js';
export { signToken, type SignClaims } from './sign.js';
export {
  AGENTWIRE_SUBPROTOCOL,
  extractUpgradeCredentials,
  selectSubprotocol,
  type UpgradeCredentials,
} from './upgrade.js';
export { BypassGuessLimiter, bypassKeyMatches, type GuessLimiterOptions, type GuessVerdict } from './bypass.js';
