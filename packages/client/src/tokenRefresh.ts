/**
 * When the client refreshes its token on an open connection, as pure functions. The token's
 * `exp` is read without verifying anything (only the server can verify; the client only needs
 * to know when to ask its provider for a fresher token). Environment-neutral: no Node modules.
 */

/** A refresh is never scheduled sooner than this, so a provider of short-lived tokens cannot spin the client. */
export const MIN_REFRESH_DELAY_MS = 1000;
/** Share of a token's lifetime after which it is refreshed. */
export const REFRESH_AT = 0.8;
/** setTimeout's ceiling (about 24.8 days); a longer delay would fire at once. */
const MAX_TIMER_MS = 2_147_483_647;
/** Tokens longer than this are not decoded (the server refuses tokens over 16 KiB anyway). */
const MAX_TOKEN_CHARS = 16 * 1024;

/** The token's `exp` in ms since the epoch, or null when it has none or cannot be read. */
export function tokenExpiresAt(token: string): number | null {
  if (token.length > MAX_TOKEN_CHARS) return null;
  const payload = token.split('.')[1];
  if (payload === undefined || !/^[A-Za-z0-9_-]+$/.test(payload)) return null;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const claims: unknown = JSON.parse(decodeUtf8(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '='))));
    const exp = typeof claims === 'object' && claims !== null ? (claims as { exp?: unknown }).exp : undefined;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * Delay until the refresh of a token obtained at `obtainedAt` (local clock) that expires at
 * `expiresAt` (local clock, i.e. already corrected by the server's clock offset): at 80 % of
 * its lifetime, no sooner than MIN_REFRESH_DELAY_MS from now. Null when there is nothing to
 * refresh in time (already expired): the server then closes with 4401 and the client
 * reconnects with a fresh token.
 */
export function refreshDelay(obtainedAt: number, expiresAt: number, now: number): number | null {
  if (expiresAt <= now) return null;
  const at = obtainedAt + REFRESH_AT * (expiresAt - obtainedAt);
  return clampDelay(at - now);
}

/**
 * Delay before trying again after a refresh that did not happen (the provider failed or gave
 * nothing fresher, the server answered with a transient error): half of the time left, so the
 * tries thin out; null once less than MIN_REFRESH_DELAY_MS is left.
 */
export function refreshRetryDelay(expiresAt: number, now: number): number | null {
  const left = expiresAt - now;
  return left < 2 * MIN_REFRESH_DELAY_MS ? null : clampDelay(left / 2);
}

function clampDelay(ms: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(MIN_REFRESH_DELAY_MS, Math.floor(ms)));
}

function decodeUtf8(binary: string): string {
  return new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
}
