import { describe, expect, it } from 'vitest';
import { corkForTick, type Corkable } from '../../src/corkForTick.js';

/** A stream that counts how deep it is corked. */
function fakeStream(): Corkable & { depth: number } {
  return {
    depth: 0,
    cork() {
      this.depth++;
    },
    uncork() {
      this.depth--;
    },
  };
}

const nextTick = () => new Promise<void>((resolve) => process.nextTick(resolve));

describe('corkForTick', () => {
  it('holds each stream once per tick and uncorks all of them at the end of the tick', async () => {
    const a = fakeStream();
    const b = fakeStream();
    corkForTick(a);
    corkForTick(a);
    corkForTick(b);
    expect([a.depth, b.depth]).toEqual([1, 1]);
    await nextTick();
    expect([a.depth, b.depth]).toEqual([0, 0]);
    corkForTick(a);
    expect(a.depth).toBe(1);
    await nextTick();
    expect(a.depth).toBe(0);
  });

  it('uncorks every stream of the tick before any callback runs, so a callback cannot keep another stream corked', async () => {
    const a = fakeStream();
    const b = fakeStream();
    const seen: number[][] = [];
    corkForTick(a, () => seen.push([a.depth, b.depth]));
    corkForTick(b, () => seen.push([a.depth, b.depth]));
    await nextTick();
    expect(seen).toEqual([
      [0, 0],
      [0, 0],
    ]);
  });
});
