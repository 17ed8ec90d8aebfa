/** Why a token was refused; these are also the WebSocket close reasons sent with code 4401. */
export type AuthFailureReason = 'token_missing' | 'token_invalid' | 'token_expired';

export type VerifyResult =
  | { ok: true; userId: string; /** `exp` in ms since the epoch, or null when the token has none. */ expiresAt: number | null }
  | { ok: false; reason: AuthFailureReason; /** Short text for logs; never contains the token. */ detail: string };

export interface TokenVerifier {
  verify(token: string | undefined | null): Promise<VerifyResult>;
}

/** Exactly one of `secret`, `publicKey` and `jwksUrl` must be given. */
export interface VerifierOptions {
  /** HS256 shared secret. */
  secret?: string;
  /** PEM public key (SPKI); an RSA key means RS256, an EC P-256 key means ES256. */
  publicKey?: string;
  /** URL of a JWKS document; RS256 and ES256 keys are accepted. */
  jwksUrl?: string;
  issuer?: string;
  audience?: string;
  /** Leeway for `exp` and `nbf`, in seconds. Default 5. */
  clockToleranceSec?: number;
}
