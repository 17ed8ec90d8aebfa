/**
 * A token bucket refilled lazily from the clock on each take: no timer, O(1), two numbers.
 */
export class TokenBucket {
  #tokens: number;
  #refilledAt: number;

  readonly #ratePerSec: number;
  readonly #burst: number;

  constructor(ratePerSec: number, burst: number, now: number) {
    this.#ratePerSec = ratePerSec;
    this.#burst = burst;
    this.#tokens = burst;
    this.#refilledAt = now;
  }

  take(now: number): boolean {
    const elapsed = now - this.#refilledAt;
    if (elapsed > 0) {
      this.#tokens = Math.min(this.#burst, this.#tokens + (elapsed * this.#ratePerSec) / 1000);
      this.#refilledAt = now;
    }
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
