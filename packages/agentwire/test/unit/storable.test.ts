import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nestsDeeperThan } from '../../src/postgres/storable.js';
import { fcParams } from '../helpers/fastCheck.js';

/** Nesting depth of objects and arrays in a JSON value (a scalar is 0). */
function depth(value: unknown): number {
  if (value === null || typeof value !== 'object') return 0;
  const children = Array.isArray(value) ? value : Object.values(value);
  return 1 + Math.max(0, ...children.map(depth));
}

describe('nestsDeeperThan', () => {
  it('is true exactly when the JSON nests deeper than the limit, whatever brackets, quotes and escapes its strings hold (property)', () => {
    // Strings full of the characters the scan must not count: brackets, quotes, backslashes.
    const tricky = fc.string({ unit: fc.constantFrom('[', ']', '{', '}', '"', '\\\\', 'a', ':', ',') });
    const value = fc.letrec((tie) => ({
      node: fc.oneof({ depthSize: 'small' }, tricky, fc.integer(), fc.array(tie('node'), { maxLength: 3 }), fc.dictionary(tricky, tie('node'), { maxKeys: 3 })),
    })).node;
    fc.assert(
      fc.property(value, fc.integer({ min: 0, max: 6 }), (v, limit) => {
        expect(nestsDeeperThan(JSON.stringify(v), limit)).toBe(depth(v) > limit);
      }),
      fcParams(1000, 20_000),
    );
  });

  it('takes the default limit of 1000 levels', () => {
    expect(nestsDeeperThan(`${'['.repeat(1000)}${']'.repeat(1000)}`)).toBe(false);
    expect(nestsDeeperThan(`${'['.repeat(1001)}${']'.repeat(1001)}`)).toBe(true);
  });
});
