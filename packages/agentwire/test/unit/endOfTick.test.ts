import { afterEach, describe, expect, it, vi } from 'vitest';
import { atEndOfTick } from '../../src/endOfTick.js';

afterEach(() => {
  vi.restoreAllMocks();
});

const nextTick = () => new Promise<void>((resolve) => process.nextTick(resolve));

describe('atEndOfTick', () => {
  it("runs a tick's jobs in order at the end of the tick, on one process.nextTick", async () => {
    const scheduled = vi.spyOn(process, 'nextTick');
    const order: number[] = [];
    atEndOfTick(() => order.push(1));
    atEndOfTick(() => order.push(2));
    atEndOfTick(() => order.push(3));
    expect(order).toEqual([]);
    expect(scheduled).toHaveBeenCalledTimes(1);
    scheduled.mockRestore();
    await nextTick();
    expect(order).toEqual([1, 2, 3]);
  });

  it('runs a job queued by a job in the same pass, before a nextTick that job scheduled', async () => {
    const order: string[] = [];
    atEndOfTick(() => {
      order.push('append');
      process.nextTick(() => order.push('a later tick job'));
      atEndOfTick(() => order.push('uncork'));
    });
    await nextTick();
    await nextTick();
    expect(order).toEqual(['append', 'uncork', 'a later tick job']);
    // The queue is empty again: the next job schedules a pass of its own.
    atEndOfTick(() => order.push('next tick'));
    await nextTick();
    expect(order.at(-1)).toBe('next tick');
  });

  it('a job that throws costs no other job its run; the first error is thrown once all ran', () => {
    const passes: Array<() => void> = [];
    vi.spyOn(process, 'nextTick').mockImplementation((callback) => void passes.push(callback as () => void));
    const order: number[] = [];
    atEndOfTick(() => order.push(1));
    atEndOfTick(() => {
      throw new Error('first');
    });
    atEndOfTick(() => {
      throw new Error('second');
    });
    atEndOfTick(() => order.push(4));
    expect(passes).toHaveLength(1);
    expect(() => passes[0]!()).toThrow('first');
    expect(order).toEqual([1, 4]);
    // The queue was emptied: a new job schedules a new pass.
    atEndOfTick(() => order.push(5));
    expect(passes).toHaveLength(2);
    passes[1]!();
    expect(order).toEqual([1, 4, 5]);
  });
});
