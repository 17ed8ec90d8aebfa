/** Why a token was refused; these are also the WebSocket close reasons sent with code 4401. */
export type AuthFailureReason = 'token_missing' | 'token_invalid' | 'token_expired';

/** A verified token's user and expiry, or why it was refused. */
export type VerifyResult =
  | { ok: true; userId: string; /** `exp` in ms since the epoch (every accepted token has one). */ expiresAt: number }
  | { ok: false; reason: AuthFailureReason; /** Short text for logs; never contains the token. */ detail: string };

/** Checks the token of an upgrade (and of `refresh_token`); bring your own or use `createTokenVerifier`. */
export interface TokenVerifier {
  verify(token: string | undefined | null): Promise<VerifyResult>;
  /**
   * Resolves once the keys are loaded (at once for a secret or PEM; after the first JWKS fetch,
   * which starts when the verifier is created); rejects with why the JWKS could not be loaded.
   */
  ready?(): Promise<void>;
}

/** Exactly one of `secret`, `publicKey` and `jwksUrl` must be given. */
export interface VerifierOptions {
  /** HS256 shared secret. */
  secret?: string;
  /** PEM public key (SPKI); an RSA key (>= 2048 bits) means RS256, an EC P-256 key means ES256. */
  publicKey?: string;
  /** URL of a JWKS document; its RSA keys verify RS256 and its EC P-256 keys ES256. */
  jwksUrl?: string;
  /** Fetch timing and bounds of the JWKS (defaults in JwksPolicy). */
  jwks?: JwksPolicy;
  issuer?: string;
  audience?: string;
  /** Leeway for `exp` and `nbf`, in seconds. Default 5. */
  clockToleranceSec?: number;
}

/** How a JWKS is fetched: timeouts, refresh and cool-down intervals, size bounds. */
export interface JwksPolicy {
  /** One fetch may take this long. Default 3000 (below the default auth timeout of 5000). */
  readonly timeoutMs?: number;
  /** A token naming an unknown key refetches at most this often. Default 30 000. */
  readonly cooldownMs?: number;
  /** The document is refetched in the background once it is this old. Default 600 000. */
  readonly maxAgeMs?: number;
  /** Largest JWKS response read, in bytes. Default 64 KiB. */
  readonly maxBytes?: number;
  readonly now?: () => number;
}
