import { describe, it, expect } from 'vitest';
import type { AgentStep } from '../../src/runs/agent.js';
import { createDemoAgent } from '../../src/runs/demoAgent.js';
import { ManualClock } from '../helpers/manualClock.js';

const STEP_MS = 20;

interface TimedStep {
  step: AgentStep;
  at: number;
}

/** Consumes a run in the background, recording each step with the manual time it appeared at. */
function startRun(text: string, options: { stepMs?: number } = {}) {
  const clock = new ManualClock();
  const controller = new AbortController();
  const agent = createDemoAgent({ clock, stepMs: options.stepMs ?? STEP_MS });
  const steps: TimedStep[] = [];
  let settled = false;
  const outcome = (async () => {
    try {
      const run = agent.run({
        runId: 'run-1',
        userId: 'user-1',
        threadId: 'thread-1',
        messageId: 'message-1',
        text,
        history: [],
        signal: controller.signal,
      });
      for await (const step of run) steps.push({ step, at: clock.now() });
      return { error: undefined };
    } catch (error) {
      return { error };
    } finally {
      settled = true;
    }
  })();
  return { clock, controller, steps, outcome, isSettled: () => settled };
}

describe('demo agent', () => {
  it('uses the calculator for an arithmetic expression, pausing before every step', async () => {
    const run = startRun('what is 2+3*4?');
    await run.clock.advance(5 * STEP_MS);

    expect(await run.outcome).toEqual({ error: undefined });
    expect(run.steps).toEqual([
      { at: 20, step: { type: 'thinking', text: 'Reading your message (3 words).' } },
      { at: 40, step: { type: 'tool_call', callId: 'run-1:1', tool: 'calculator', args: { expression: '2+3*4' } } },
      { at: 60, step: { type: 'tool_result', callId: 'run-1:1', tool: 'calculator', ok: true, result: 14 } },
      { at: 80, step: { type: 'thinking', text: 'Writing the answer from the calculator result.' } },
      { at: 100, step: { type: 'answer', text: '2+3*4 = 14' } },
    ]);
    expect(run.clock.pendingTimers).toBe(0);
  });

  it('counts words when there is no arithmetic', async () => {
    const run = startRun('hello there world');
    await run.clock.advance(5 * STEP_MS);

    expect(await run.outcome).toEqual({ error: undefined });
    expect(run.steps.map(({ step }) => step)).toEqual([
      { type: 'thinking', text: 'Reading your message (3 words).' },
      { type: 'tool_call', callId: 'run-1:1', tool: 'word_count', args: { text: 'hello there world' } },
      { type: 'tool_result', callId: 'run-1:1', tool: 'word_count', ok: true, result: 3 },
      { type: 'thinking', text: 'Writing the answer from the word_count result.' },
      { type: 'answer', text: 'Your message has 3 words.' },
    ]);
  });

  it('reports a calculator error as a failed tool result and still answers', async () => {
    const run = startRun('what is 1/0');
    await run.clock.advance(5 * STEP_MS);

    expect(await run.outcome).toEqual({ error: undefined });
    const steps = run.steps.map(({ step }) => step);
    expect(steps[2]).toEqual({
      type: 'tool_result',
      callId: 'run-1:1',
      tool: 'calculator',
      ok: false,
      result: { error: 'division by zero' },
    });
    expect(steps.at(-1)).toEqual({ type: 'answer', text: 'I could not evaluate 1/0: division by zero.' });
  });

  it('does not advance before the step time has passed', async () => {
    const run = startRun('hello');
    await run.clock.advance(STEP_MS - 1);
    expect(run.steps).toHaveLength(0);
    await run.clock.advance(1);
    expect(run.steps).toHaveLength(1);
  });

  it('/slow <ms> replaces the step time and is not part of the message', async () => {
    const run = startRun('/slow 200 hello there world');
    await run.clock.advance(199);
    expect(run.steps).toHaveLength(0);
    await run.clock.advance(1);
    expect(run.steps).toHaveLength(1);
    await run.clock.advance(4 * 200);

    expect(await run.outcome).toEqual({ error: undefined });
    expect(run.steps.map(({ at }) => at)).toEqual([200, 400, 600, 800, 1000]);
    expect(run.steps.at(-1)?.step).toEqual({ type: 'answer', text: 'Your message has 3 words.' });
  });

  it('/fail throws after the tool result', async () => {
    const run = startRun('/fail 2+2');
    await run.clock.advance(10 * STEP_MS);

    const { error } = await run.outcome;
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toBe('demo agent failure requested by /fail');
    expect(run.steps.map(({ step }) => step.type)).toEqual(['thinking', 'tool_call', 'tool_result']);
    expect(run.steps[2]?.step).toMatchObject({ tool: 'calculator', ok: true, result: 4 });
    expect(run.clock.pendingTimers).toBe(0);
  });

  it('accepts several directives in a row', async () => {
    const run = startRun('/slow 50 /fail   one two');
    await run.clock.advance(49);
    expect(run.steps).toHaveLength(0);
    await run.clock.advance(10 * 50);

    const { error } = await run.outcome;
    expect((error as Error).message).toBe('demo agent failure requested by /fail');
    expect(run.steps.map(({ at }) => at)).toEqual([50, 100, 150]);
    expect(run.steps[1]?.step).toMatchObject({ tool: 'word_count', args: { text: 'one two' } });
  });

  it('/hang never finishes on its own and ends promptly on abort, leaving no timers', async () => {
    const run = startRun('/hang 2+3');
    await run.clock.advance(60_000);

    expect(run.steps.map(({ step }) => step.type)).toEqual(['thinking']);
    expect(run.isSettled()).toBe(false);

    const reason = new Error('cancelled');
    run.controller.abort(reason);
    expect(await run.outcome).toEqual({ error: reason });
    expect(run.steps).toHaveLength(1);
    expect(run.clock.pendingTimers).toBe(0);
  });

  it('aborting during a pause rejects promptly and cancels the pending timer', async () => {
    const run = startRun('hello there world');
    await run.clock.advance(STEP_MS + 5);
    expect(run.steps).toHaveLength(1);
    expect(run.clock.pendingTimers).toBe(1);

    const reason = new Error('run timeout');
    run.controller.abort(reason);
    expect(await run.outcome).toEqual({ error: reason });
    expect(run.steps).toHaveLength(1);
    expect(run.clock.pendingTimers).toBe(0);
  });

  it('runs without any clock time when stepMs is 0', async () => {
    const run = startRun('6*7', { stepMs: 0 });

    expect(await run.outcome).toEqual({ error: undefined });
    expect(run.steps.map(({ at }) => at)).toEqual([0, 0, 0, 0, 0]);
    expect(run.steps.at(-1)?.step).toEqual({ type: 'answer', text: '6*7 = 42' });
    expect(run.clock.pendingTimers).toBe(0);
  });

  it('stops with stepMs 0 once aborted', async () => {
    const run = startRun('/hang hello', { stepMs: 0 });
    await run.clock.advance(0);
    expect(run.steps).toHaveLength(1);

    run.controller.abort(new Error('cancelled'));
    expect(await run.outcome).toEqual({ error: new Error('cancelled') });
    expect(run.steps).toHaveLength(1);
  });
});
