import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BypassGuessLimiter } from '../../src/auth/index.js';

/** The test-token route's throttle of wrong bypass keys (PROTOCOL.md section 2), on an injected time. */
describe('BypassGuessLimiter', () => {
  it('refuses an address after 20 misses in its window, with the seconds left, and forgets it when the window passes', () => {
    const limiter = new BypassGuessLimiter();
    const t0 = 5_000;
    for (let i = 1; i <= 20; i++) {
      expect(limiter.check('10.0.0.1', t0 + i * 100)).toEqual({ allowed: true });
      expect(limiter.recordMiss('10.0.0.1', t0 + i * 100)).toBe(i);
    }
    expect(limiter.check('10.0.0.1', t0 + 2_100)).toEqual({ allowed: false, retryAfterSec: 58 });
    expect(limiter.check('10.0.0.1', t0 + 100 + 59_001)).toEqual({ allowed: false, retryAfterSec: 1 });
    // Another address is not affected.
    expect(limiter.check('10.0.0.2', t0 + 2_100)).toEqual({ allowed: true });
    // The window started with the first miss (t0 + 100) and lasts 60 s.
    expect(limiter.check('10.0.0.1', t0 + 100 + 60_000)).toEqual({ allowed: true });
    expect(limiter.recordMiss('10.0.0.1', t0 + 100 + 60_000)).toBe(1);
  });

  it('19 misses per window never refuse', () => {
    const limiter = new BypassGuessLimiter();
    for (let minute = 0; minute < 5; minute++) {
      for (let i = 0; i < 19; i++) {
        const now = minute * 60_000 + i;
        expect(limiter.check('a', now).allowed).toBe(true);
        limiter.recordMiss('a', now);
      }
    }
  });

  it('tracks at most maxAddresses, pruning ended windows first and then the oldest', () => {
    const limiter = new BypassGuessLimiter({ maxAddresses: 1000 });
    // An attacker with 50,000 addresses, one miss each, all within one minute.
    for (let i = 0; i < 50_000; i++) limiter.recordMiss(`addr-${i}`, i);
    expect(limiter.trackedAddresses).toBe(1000);
    // The newest are kept, the oldest gave way.
    expect(limiter.recordMiss('addr-49999', 50_000)).toBe(2);
    expect(limiter.recordMiss('addr-0', 50_000)).toBe(1);
    expect(limiter.trackedAddresses).toBe(1000);
    // After the windows ended one new miss prunes them all.
    limiter.recordMiss('late', 200_000);
    expect(limiter.trackedAddresses).toBe(1);
  });

  it('a refused address stays refused while the table churns below its cap (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 59_999 }), { maxLength: 200 }), (others) => {
        const limiter = new BypassGuessLimiter({ maxAddresses: 500 });
        for (let i = 0; i < 20; i++) limiter.recordMiss('guesser', 0);
        [...others].sort((a, b) => a - b).forEach((at, i) => limiter.recordMiss(`other-${i}`, at));
        expect(limiter.check('guesser', 59_999)).toEqual({ allowed: false, retryAfterSec: 1 });
        expect(limiter.trackedAddresses).toBeLessThanOrEqual(500);
      }),
      { numRuns: 50 },
    );
  });
});
