import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { DeltaCoalescer, FlushScheduler, type DeltaKind, type MergedDelta } from '../../src/runs/deltaCoalescer.js';
import type { Clock } from '@agentwire/protocol';
import { ManualClock } from '../helpers/manualClock.js';
import { fcParams } from '../helpers/fastCheck.js';

/** What the run manager feeds its runs' coalescers: fragments, other events of a run, time passing. */
type Op =
  | { readonly op: 'fragment'; readonly run: number; readonly kind: DeltaKind; readonly text: string }
  | { readonly op: 'other'; readonly run: number }
  | { readonly op: 'wait'; readonly ms: number };

type Input =
  { readonly kind: 'fragment'; readonly type: DeltaKind; readonly text: string; readonly at: number } | { readonly kind: 'other'; readonly id: number };
type Output = { readonly kind: 'delta'; readonly delta: MergedDelta; readonly at: number } | { readonly kind: 'other'; readonly id: number };

/** Runs sharing one scheduler in the property. */
const RUNS = 3;

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('fragment' as const),
      run: fc.integer({ min: 0, max: RUNS - 1 }),
      kind: fc.constantFrom<DeltaKind>('agent_text_delta', 'agent_thinking_delta'),
      text: fc.string({ unit: 'binary', maxLength: 12 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('other' as const), run: fc.integer({ min: 0, max: RUNS - 1 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 30 }) }) },
);

/**
 * Plays the ops against coalescers sharing one scheduler, the way the run manager drives them
 * (flush before every other event of a run and at its end), and checks every run's output
 * against its inputs: each delta is a run of whole consecutive fragments of its kind, in order,
 * not crossing another event, sent no later than the window after its first fragment, and
 * within the byte cap unless it is one fragment. Once nothing is held, no timer is left.
 */
async function play(ops: readonly Op[], flushMs: number, maxBytes: number): Promise<void> {
  const clock = new ManualClock(1000);
  const scheduler = new FlushScheduler(clock, flushMs);
  const runs = Array.from({ length: RUNS }, () => {
    const outputs: Output[] = [];
    const coalescer = new DeltaCoalescer({ scheduler, maxBytes, emit: (delta) => outputs.push({ kind: 'delta', delta, at: clock.now() }) });
    return { coalescer, outputs, inputs: [] as Input[] };
  });
  let others = 0;
  for (const op of ops) {
    if (op.op === 'fragment') {
      const run = runs[op.run]!;
      if (op.text.length > 0) run.inputs.push({ kind: 'fragment', type: op.kind, text: op.text, at: clock.now() });
      run.coalescer.add(op.kind, op.text);
    } else if (op.op === 'other') {
      const run = runs[op.run]!;
      run.coalescer.flush();
      run.inputs.push({ kind: 'other', id: ++others });
      run.outputs.push({ kind: 'other', id: others });
    } else {
      await clock.advance(op.ms);
    }
  }
  for (const run of runs) run.coalescer.flush(); // the runs' ends
  for (const run of runs) expect(run.coalescer.holding).toBe(false);
  expect(clock.pendingTimers).toBe(0);
  for (const run of runs) check(run.inputs, run.outputs, flushMs, maxBytes);
}

function check(inputs: readonly Input[], outputs: readonly Output[], flushMs: number, maxBytes: number): void {
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

/**
 * One run's coalescer on a 20 ms window whose timer fires late: `holdOnce(lateMs)` holds one
 * fragment with timers that late, then lets 40 ms pass; `heldMs` has how long each was held.
 */
function lateHolds(): { scheduler: FlushScheduler; heldMs: number[]; holdOnce: (lateMs: number) => Promise<void> } {
  const clock = new ManualClock();
  let late = 0;
  const scheduler = new FlushScheduler(
    lateClock(clock, () => late),
    20,
  );
  const heldMs: number[] = [];
  let since = 0;
  const coalescer = new DeltaCoalescer({ scheduler, emit: () => heldMs.push(clock.now() - since) });
  const holdOnce = async (lateMs: number) => {
    late = lateMs;
    since = clock.now();
    coalescer.add('agent_text_delta', 'x');
    await clock.advance(40);
  };
  return { scheduler, heldMs, holdOnce };
}

/** `clock`, but every timer fires `lateMs()` after it is due (a busy event loop). */
function lateClock(clock: ManualClock, lateMs: () => number): Clock {
  return {
    now: () => clock.now(),
    setTimeout: (fn, ms) => clock.setTimeout(fn, ms + lateMs()),
    clearTimeout: (handle) => clock.clearTimeout(handle),
    setInterval: (fn, ms) => clock.setInterval(fn, ms),
    clearInterval: (handle) => clock.clearInterval(handle),
  };
}

/**
 * One run's coalescer on a `flushMs` window: `fragmentsEvery(ms, count)` adds `count` fragments
 * `f<n>` `ms` apart (numbered on from earlier calls), then lets a window pass; `sent` has each
 * delta's text and when it went out.
 */
function paced(flushMs: number) {
  const clock = new ManualClock();
  const sent: Array<[string, number]> = [];
  const coalescer = new DeltaCoalescer({ scheduler: new FlushScheduler(clock, flushMs), emit: (d) => sent.push([d.text, clock.now()]) });
  let next = 0;
  const fragmentsEvery = async (ms: number, count: number) => {
    for (let i = 0; i < count; i++) {
      if (next > 0) await clock.advance(ms);
      coalescer.add('agent_text_delta', `f${next++}`);
    }
    await clock.advance(flushMs);
  };
  return { clock, sent, fragmentsEvery };
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
    const coalescer = new DeltaCoalescer({ scheduler: new FlushScheduler(clock, 20), emit: (d) => deltas.push(d) });
    for (let i = 0; i < 100; i++) {
      coalescer.add('agent_text_delta', `w${i} `);
      await clock.advance(1);
    }
    coalescer.flush();
    // 100 fragments 1 ms apart: one delta per 20 ms window.
    expect(deltas).toHaveLength(5);
    expect(deltas.map((d) => d.text).join('')).toBe(Array.from({ length: 100 }, (_, i) => `w${i} `).join(''));
  });

  it("ends a hold on the fragment after which the run's pace brings none within the window", async () => {
    const { sent, fragmentsEvery } = paced(20);
    // 100 fragments/s: the second fragment of each hold is the last the window could take.
    await fragmentsEvery(10, 6);
    expect(sent).toEqual([
      ['f0f1', 10],
      ['f2f3', 30],
      ['f4f5', 50],
    ]);
  });

  it('holds a single fragment for the window even when the run streams slower than it', async () => {
    const { sent, clock, fragmentsEvery } = paced(20);
    await fragmentsEvery(40, 3);
    // Nothing would join these holds; but a pace this slow is also what a loaded loop makes of a
    // fast run, and sending every fragment alone then would multiply the events.
    expect(sent).toEqual([
      ['f0', 20],
      ['f1', 60],
      ['f2', 100],
    ]);
    expect(clock.pendingTimers).toBe(0);
  });

  it('merges a whole window again as soon as the pace picks up', async () => {
    const { sent, fragmentsEvery } = paced(20);
    await fragmentsEvery(40, 3);
    await fragmentsEvery(1, 40);
    expect(sent.slice(3).map(([text]) => text.split('f').length - 1)).toEqual([20, 20]);
  });

  it('on a loaded loop, whose gaps stretch past the window, still merges what its late timer lets in', async () => {
    const clock = new ManualClock();
    // Every timer fires 12 ms late; the scheduler ends holds 5 ms early (its most), so 7 ms late.
    const scheduler = new FlushScheduler(
      lateClock(clock, () => 12),
      20,
    );
    new DeltaCoalescer({ scheduler, emit: () => {} }).add('agent_text_delta', 'x');
    await clock.advance(40);
    expect(scheduler.lead).toBe(5);
    const sent: Array<[string, number]> = [];
    const coalescer = new DeltaCoalescer({ scheduler, emit: (d) => sent.push([d.text, clock.now() - 40]) });
    for (let i = 0; i < 6; i++) {
      coalescer.add('agent_text_delta', `f${i}`);
      await clock.advance(25);
    }
    await clock.advance(40);
    // Each second fragment ends its hold at once: the third is not due within the window.
    expect(sent).toEqual([
      ['f0f1', 25],
      ['f2f3', 75],
      ['f4f5', 125],
    ]);
  });

  it('sends a delta as soon as it reaches the byte cap, and a larger fragment alone', async () => {
    const clock = new ManualClock();
    const deltas: string[] = [];
    const coalescer = new DeltaCoalescer({ scheduler: new FlushScheduler(clock, 1000), maxBytes: 8, emit: (d) => deltas.push(d.text) });
    coalescer.add('agent_text_delta', 'abcd');
    coalescer.add('agent_text_delta', 'é€'); // 2 + 3 bytes: would pass 8, so 'abcd' goes first
    coalescer.add('agent_text_delta', 'xyz'); // 5 + 3 = 8 bytes: sent at once
    coalescer.add('agent_text_delta', '0123456789'); // over the cap by itself
    expect(deltas).toEqual(['abcd', 'é€xyz', '0123456789']);
    expect(coalescer.holding).toBe(false);
  });

  it('runs share one timer, and a hold that began later is not ended by the window of an earlier one', async () => {
    const clock = new ManualClock();
    const scheduler = new FlushScheduler(clock, 20);
    const sent: Array<[number, string, number]> = [];
    const coalescers = Array.from({ length: 50 }, (_, run) => new DeltaCoalescer({ scheduler, emit: (d) => sent.push([run, d.text, clock.now()]) }));
    for (const coalescer of coalescers) coalescer.add('agent_text_delta', 'a');
    expect(clock.pendingTimers).toBe(1);
    await clock.advance(5);
    // A change of kind ends each run's first hold early and begins another, due at 25 ms.
    for (const coalescer of coalescers) coalescer.add('agent_thinking_delta', 'b');
    expect(sent).toHaveLength(50);
    expect(clock.pendingTimers).toBe(1);
    await clock.advance(15); // 20 ms: the first holds' window, already ended
    expect(sent).toHaveLength(50);
    await clock.advance(4);
    expect(sent).toHaveLength(50);
    await clock.advance(1); // 25 ms
    expect(sent.slice(50)).toEqual(coalescers.map((_, run) => [run, 'b', 25]));
    expect(clock.pendingTimers).toBe(0);
    // Only the second holds were ended by the window, none of them late.
    expect(scheduler.holds).toEqual({ expired: 50, overdue: 0 });
  });

  it('ends holds early by the lateness its timer has shown, so a late timer still keeps the window', async () => {
    // A busy event loop: every timer fires 3 ms after it is due.
    const { scheduler, heldMs, holdOnce } = lateHolds();
    for (let i = 0; i < 5; i++) await holdOnce(3);
    // The first timer was late before anything was known of its lateness; then none is.
    expect(heldMs).toEqual([23, 20, 20, 20, 20]);
    expect(scheduler.lead).toBe(3);
    // Every hold was ended by the window; the first one lasted longer than it.
    expect(scheduler.holds).toEqual({ expired: 5, overdue: 1 });
    // Lateness beyond a quarter of the window is not made up for: holds are never cut shorter.
    for (let i = 0; i < 3; i++) await holdOnce(15);
    expect(heldMs.slice(5)).toEqual([32, 30, 30]);
    expect(scheduler.lead).toBe(5);
    // Once the timer has been on time for two LEAD_MEMORY_MS periods (each hold here takes 40 ms),
    // the lead is gone and holds last the whole window again.
    for (let i = 0; i < 25; i++) await holdOnce(0);
    expect(scheduler.lead).toBe(5);
    for (let i = 0; i < 50; i++) await holdOnce(0);
    expect(scheduler.lead).toBe(0);
    expect(heldMs.at(-1)).toBe(20);
  });

  it("keeps its lead between bursts of lateness a second apart, so the next burst's holds still keep the window", async () => {
    const { scheduler, heldMs, holdOnce } = lateHolds();
    // A loaded loop: on time mostly, 4 ms late in a burst now and then (a GC pause), ~0.9 s apart.
    await holdOnce(4);
    for (let burst = 0; burst < 3; burst++) {
      for (let i = 0; i < 22; i++) await holdOnce(0);
      await holdOnce(4);
    }
    // Only the first burst, before any lateness was known, held a fragment past the window (a lead
    // that decayed by an eighth per firing had forgotten the lateness by the next burst: 24 ms).
    expect(heldMs[0]).toBe(24);
    expect(Math.max(...heldMs.slice(1))).toBe(20);
    expect(scheduler.holds).toEqual({ expired: heldMs.length, overdue: 1 });
  });

  it('ends a hold when its timer fires with the clock a millisecond short, not on a timer for the last millisecond', async () => {
    const clock = new ManualClock();
    // Date.now() and the timers tick apart: a timer armed for n ms may fire when the clock shows n - 1.
    const skewedClock: Clock = {
      now: () => clock.now(),
      setTimeout: (fn, ms) => clock.setTimeout(fn, Math.max(1, ms - 1)),
      clearTimeout: (handle) => clock.clearTimeout(handle),
      setInterval: (fn, ms) => clock.setInterval(fn, ms),
      clearInterval: (handle) => clock.clearInterval(handle),
    };
    const sent: Array<[string, number]> = [];
    const coalescer = new DeltaCoalescer({ scheduler: new FlushScheduler(skewedClock, 20), emit: (d) => sent.push([d.text, clock.now()]) });
    coalescer.add('agent_text_delta', 'first');
    await clock.advance(19);
    // Otherwise a timer for the last millisecond could fire after the run's next fragment and merge it.
    expect(sent).toEqual([['first', 19]]);
    expect(clock.pendingTimers).toBe(0);
  });

  it('with a window of 0 sends every fragment at once', () => {
    const clock = new ManualClock();
    const deltas: string[] = [];
    const coalescer = new DeltaCoalescer({ scheduler: new FlushScheduler(clock, 0), emit: (d) => deltas.push(d.text) });
    coalescer.add('agent_thinking_delta', 'a');
    coalescer.add('agent_thinking_delta', 'b');
    expect(deltas).toEqual(['a', 'b']);
    expect(clock.pendingTimers).toBe(0);
  });
});
