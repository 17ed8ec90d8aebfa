import { describe, expect, it } from 'vitest';
import { corkForIteration, corkForTick, type Corkable } from '../../src/cork.js';

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
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe.each([
  ['corkForTick', corkForTick, nextTick],
  ['corkForIteration', corkForIteration, nextTurn],
] as const)('%s', (_name, cork, uncorked) => {
  it('holds each stream once and uncorks all of them together', async () => {
    const a = fakeStream();
    const b = fakeStream();
    cork(a);
    cork(a);
    cork(b);
    expect([a.depth, b.depth]).toEqual([1, 1]);
    await uncorked();
    expect([a.depth, b.depth]).toEqual([0, 0]);
    cork(a);
    expect(a.depth).toBe(1);
    await uncorked();
    expect(a.depth).toBe(0);
  });

  it('uncorks every stream before any callback runs, so a callback cannot keep another stream corked', async () => {
    const a = fakeStream();
    const b = fakeStream();
    const seen: number[][] = [];
    cork(a, () => seen.push([a.depth, b.depth]));
    cork(b, () => seen.push([a.depth, b.depth]));
    await uncorked();
    expect(seen).toEqual([
      [0, 0],
      [0, 0],
    ]);
  });
});

describe('corkForIteration', () => {
  it('keeps the stream corked past the end of the tick and across promise jobs, until the check phase of the turn', async () => {
    const a = fakeStream();
    corkForIteration(a);
    await nextTick();
    await Promise.resolve();
    expect(a.depth).toBe(1);
    await nextTurn();
    expect(a.depth).toBe(0);
  });

  it('a stream corked for the tick and for the turn is corked twice and uncorked by each', async () => {
    const a = fakeStream();
    corkForTick(a);
    corkForIteration(a);
    expect(a.depth).toBe(2);
    await nextTick();
    expect(a.depth).toBe(1);
    await nextTurn();
    expect(a.depth).toBe(0);
  });
});
