import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { DeltaCoalescer, type DeltaKind, type MergedDelta } from '../../src/runs/deltaCoalescer.js';
import { ManualClock } from '../helpers/manualClock.js';
import { fcParams } from '../helpers/fastCheck.js';

/** What the run manager feeds a run's coalescer: fragments, other events of the run, time passing. */
type Op =
  { readonly op: 'fragment'; readonly kind: DeltaKind; readonly text: string } | { readonly op: 'other' } | { readonly op: 'wait'; readonly ms: number };

type Input =
  { readonly kind: 'fragment'; readonly type: DeltaKind; readonly text: string; readonly at: number } | { readonly kind: 'other'; readonly id: number };
type Output = { readonly kind: 'delta'; readonly delta: MergedDelta; readonly at: number } | { readonly kind: 'other'; readonly id: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('fragment' as const),
      kind: fc.constantFrom<DeltaKind>('agent_text_delta', 'agent_thinking_delta'),
      text: fc.string({ unit: 'binary', maxLength: 12 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('other' as const) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 30 }) }) },
);

/**
 * Plays the ops against a coalescer the way the run manager drives it (flush before every other
 * event and at the run's end) and checks every output against the inputs: each delta is a run
 * of whole consecutive fragments of its kind, in order, not crossing another event, sent no later
 * than the window after its first fragment, and within the byte cap unless it is one fragment.
 */
async function play(ops: readonly Op[], flushMs: number, maxBytes: number): Promise<void> {
  const clock = new ManualClock(1000);
  const outputs: Output[] = [];
  const coalescer = new DeltaCoalescer({ clock, flushMs, maxBytes, emit: (delta) => outputs.push({ kind: 'delta', delta, at: clock.now() }) });
  const inputs: Input[] = [];
  let others = 0;
  for (const op of ops) {
    if (op.op === 'fragment') {
      if (op.text.length > 0) inputs.push({ kind: 'fragment', type: op.kind, text: op.text, at: clock.now() });
      coalescer.add(op.kind, op.text);
    } else if (op.op === 'other') {
      coalescer.flush();
      inputs.push({ kind: 'other', id: ++others });
      outputs.push({ kind: 'other', id: others });
    } else {
      await clock.advance(op.ms);
    }
  }
  coalescer.flush(); // the run's end
  expect(coalescer.holding).toBe(false);
  expect(clock.pendingTimers).toBe(0);

  let next = 0;
  for (const output of outputs) {
    if (output.kind === 'other') {
      expect(inputs[next++]).toEqual({ kind: 'other', id: output.id });
      continue;
    }
    const { delta, at } = output;
    expect(delta.text.length).toBeGreaterThan(0);
    const first = inputs[next];
    if (first?.kind !== 'fragment') throw new Error(`delta ${JSON.stringify(delta)} where ${JSON.stringify(first)} was due`);
    let text = '';
    let fragments = 0;
    while (text.length < delta.text.length) {
      const input = inputs[next++];
      if (input?.kind !== 'fragment' || input.type !== delta.type) throw new Error(`delta ${JSON.stringify(delta)} spans ${JSON.stringify(input)}`);
      text += input.text;
      fragments++;
    }
    expect(text).toBe(delta.text);
    expect(at - first.at).toBeLessThanOrEqual(flushMs);
    if (fragments > 1) expect(Buffer.byteLength(delta.text)).toBeLessThanOrEqual(maxBytes);
  }
  expect(next).toBe(inputs.length);
}

describe('DeltaCoalescer', () => {
  it('keeps every fragment exactly once, in order, never across another event, never past the window or the byte cap', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 60 }), fc.integer({ min: 0, max: 25 }), fc.integer({ min: 4, max: 40 }), async (ops, flushMs, maxBytes) =>
        play(ops, flushMs, maxBytes),
      ),
      fcParams(300, 20_000),
    );
  });

  it('merges fragments that arrive within the window into one delta', async () => {
    const clock = new ManualClock();
    const deltas: MergedDelta[] = [];
    const coalescer = new DeltaCoalescer({ clock, flushMs: 20, emit: (d) => deltas.push(d) });
    for (let i = 0; i < 100; i++) {
      coalescer.add('agent_text_delta', `w${i} `);
      await clock.advance(1);
    }
    coalescer.flush();
    // 100 fragments 1 ms apart: one delta per 20 ms window.
    expect(deltas).toHaveLength(5);
    expect(deltas.map((d) => d.text).join('')).toBe(Array.from({ length: 100 }, (_, i) => `w${i} `).join(''));
  });

  it('sends a delta as soon as it reaches the byte cap, and a larger fragment alone', async () => {
    const clock = new ManualClock();
    const deltas: string[] = [];
    const coalescer = new DeltaCoalescer({ clock, flushMs: 1000, maxBytes: 8, emit: (d) => deltas.push(d.text) });
    coalescer.add('agent_text_delta', 'abcd');
    coalescer.add('agent_text_delta', 'é€'); // 2 + 3 bytes: would pass 8, so 'abcd' goes first
    coalescer.add('agent_text_delta', 'xyz'); // 5 + 3 = 8 bytes: sent at once
    coalescer.add('agent_text_delta', '0123456789'); // over the cap by itself
    expect(deltas).toEqual(['abcd', 'é€xyz', '0123456789']);
    expect(coalescer.holding).toBe(false);
  });

  it('with a window of 0 sends every fragment at once', () => {
    const clock = new ManualClock();
    const deltas: string[] = [];
    const coalescer = new DeltaCoalescer({ clock, flushMs: 0, emit: (d) => deltas.push(d.text) });
    coalescer.add('agent_thinking_delta', 'a');
    coalescer.add('agent_thinking_delta', 'b');
    expect(deltas).toEqual(['a', 'b']);
    expect(clock.pendingTimers).toBe(0);
  });
});
