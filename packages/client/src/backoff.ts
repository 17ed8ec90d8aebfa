/**
 * Reconnect timing and the reaction to each close code (PROTOCOL.md section 9), as pure
 * functions so that they can be checked without sockets or timers.
 */

export interface BackoffOptions {
  /** Smallest delay of a backoff retry. Default 500. */
  minDelayMs: number;
  /** Largest delay of a backoff retry. Default 20 000. */
  maxDelayMs: number;
  /** Base of the "long" backoff after 4429 (too many connections). Default 60 000. */
  longDelayMs: number;
}

/** The reconnect delays used when `ClientOptions.backoff` leaves them out. */
export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = {
  minDelayMs: 500,
  maxDelayMs: 20_000,
  longDelayMs: 60_000,
};

/**
 * Exponential backoff with full jitter above a floor: retry `attempt` (0-based, counted since
 * the last `connection_ready`) waits a uniformly random time in
 * `[minDelayMs, min(maxDelayMs, minDelayMs * 2^(attempt+1))]`. `random` returns [0, 1).
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number): number {
  const min = Math.max(0, options.minDelayMs);
  const max = Math.max(min, options.maxDelayMs);
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt + 1, 52));
  return Math.floor(min + clampUnit(random()) * (ceiling - min));
}

/** The long backoff after 4429: uniformly random in `[longDelayMs / 2, longDelayMs]`. */
export function longBackoffDelay(options: BackoffOptions, random: () => number): number {
  const long = Math.max(0, options.longDelayMs);
  return Math.floor(long / 2 + clampUnit(random()) * (long / 2));
}

function clampUnit(value: number): number {
  if (!(value >= 0)) return 0;
  return value >= 1 ? 1 - Number.EPSILON : value;
}

/** What the client does after a socket ended (or a dial failed) with `code`. */
export type CloseDecision =
  /** Give up: the client goes to `closed` with this close code and reason. */
  | { readonly action: 'stop' }
  /** Dial again at once (1012 service restart, or a first 4401 with a fresh token). */
  | { readonly action: 'now' }
  /** Dial again after `backoffDelay`. */
  | { readonly action: 'backoff' }
  /** Dial again after `longBackoffDelay` (4429). */
  | { readonly action: 'long' };

export interface CloseContext {
  /** Retries since the last `connection_ready` (0 right after a ready connection ended). */
  readonly attempt: number;
  /** A 4401 has already been answered with one fresh-token retry since the last ready. */
  readonly authRetried: boolean;
}

/**
 * The contract's table: stop on 1000, 1008, 1009, 4403 and on a second 4401 in a row; dial
 * again at once after 1012 (only as the first retry, so a server that keeps refusing cannot
 * cause a tight loop) and after a first 4401; long backoff after 4429; backoff for everything
 * else (1006 network loss, 1011, 1013, 4008, 4408, failed upgrades, watchdog timeouts, gaps).
 */
export function decideAfterClose(code: number, context: CloseContext): CloseDecision {
  switch (code) {
    case 1000:
    case 1008:
    case 1009:
    case 4403:
      return { action: 'stop' };
    case 4401:
      return context.authRetried ? { action: 'stop' } : { action: 'now' };
    case 1012:
      return context.attempt === 0 ? { action: 'now' } : { action: 'backoff' };
    case 4429:
      return { action: 'long' };
    default:
      return { action: 'backoff' };
  }
}

/**
 * The client dropped the socket itself (watchdog timeout, seq gap): dial again at once if it
 * is the first retry since the last ready connection, else back off.
 */
export function decideAfterDrop(context: CloseContext): CloseDecision {
  return context.attempt === 0 ? { action: 'now' } : { action: 'backoff' };
}
