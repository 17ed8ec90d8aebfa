import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Compares an E2E bypass key in constant time. Both sides are hashed first so that lengths
 * never leak and timingSafeEqual always sees equal-length buffers. An empty expected key
 * never matches.
 */
export function bypassKeyMatches(expected: string, given: string | undefined): boolean {
  if (expected.length === 0 || given === undefined) return false;
  return timingSafeEqual(digest(expected), digest(given));
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

export interface GuessLimiterOptions {
  /** Wrong keys an address may send per window before it is refused. Default 20. */
  readonly maxMisses?: number;
  /** Length of an address's window, from its first wrong key. Default 60 000 ms. */
  readonly windowMs?: number;
  /** Addresses tracked at once; beyond it the oldest window is forgotten. Default 10 000. */
  readonly maxAddresses?: number;
}

export type GuessVerdict = { readonly allowed: true } | { readonly allowed: false; readonly retryAfterSec: number };

interface MissWindow {
  readonly startedAt: number;
  misses: number;
}

/**
 * Counts wrong bypass keys per client address in fixed windows (PROTOCOL.md section 2): after
 * `maxMisses` wrong keys in one window every further request of that address is refused until
 * the window has passed, with the right key too, so a guesser learns nothing from the answer.
 *
 * Memory is bounded: at most `maxAddresses` windows. The Map keeps insertion order, which is
 * window start order (a window that ends is deleted, a new one appended), so expired windows are
 * pruned from the front, and when every window is live the oldest gives way. An attacker who
 * controls more addresses than the cap can thereby reset its own oldest counters, but gains no
 * more than `maxMisses` guesses per address and minute, which it has anyway.
 */
export class BypassGuessLimiter {
  readonly #windows = new Map<string, MissWindow>();
  readonly #maxMisses: number;
  readonly #windowMs: number;
  readonly #maxAddresses: number;

  constructor(options: GuessLimiterOptions = {}) {
    this.#maxMisses = options.maxMisses ?? 20;
    this.#windowMs = options.windowMs ?? 60_000;
    this.#maxAddresses = options.maxAddresses ?? 10_000;
  }

  get trackedAddresses(): number {
    return this.#windows.size;
  }

  /** Whether a request from `address` may try a key at `now`. */
  check(address: string, now: number): GuessVerdict {
    const window = this.#live(address, now);
    if (!window || window.misses < this.#maxMisses) return { allowed: true };
    return { allowed: false, retryAfterSec: Math.max(1, Math.ceil((window.startedAt + this.#windowMs - now) / 1000)) };
  }

  /** Records a wrong key; returns the address's misses in its current window. */
  recordMiss(address: string, now: number): number {
    let window = this.#live(address, now);
    if (!window) {
      this.#makeRoom(now);
      window = { startedAt: now, misses: 0 };
      this.#windows.set(address, window);
    }
    return ++window.misses;
  }

  #live(address: string, now: number): MissWindow | undefined {
    const window = this.#windows.get(address);
    if (window && now - window.startedAt >= this.#windowMs) {
      this.#windows.delete(address);
      return undefined;
    }
    return window;
  }

  #makeRoom(now: number): void {
    for (const [address, window] of this.#windows) {
      if (this.#windows.size < this.#maxAddresses && now - window.startedAt < this.#windowMs) return;
      this.#windows.delete(address);
    }
  }
}
