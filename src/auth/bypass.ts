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
