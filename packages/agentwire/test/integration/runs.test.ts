import { afterEach, describe, expect, it } from 'vitest';
import { MemoryEngine } from '../../src/engine/index.js';
import type { Agent, AgentRunInput, AgentStep } from '../../src/runs/agent.js';
import { createDemoAgent } from '../../src/runs/demoAgent.js';
import { RunManager, type RunOutcome, type SubmitReply } from '../../src/runs/runManager.js';
import { sleep, systemClock } from '@agentwire/protocol';
import { startGateway, stopAdvancing, type TestGateway } from '../helpers/gateway.js';
import { ManualClock } from '../helpers/manualClock.js';
import { demoRunTypes, isTerminal, runProblem, waitUntil } from '../helpers/runInvariants.js';
import { within } from '../helpers/waitFor.js';
import { seqProblem, type Frame, type TestClient } from '../helpers/wsClient.js';

/**
 * Runs over real sockets (PROTOCOL.md sections 6 and 7): failures, timeouts, cancel, per-thread
 * FIFO and reject, idempotent message ids, one terminal event per run, and the run metric.
 * Where time matters the gateway runs on a ManualClock; agents that must be held mid-run wait
 * on gates the test opens.
 */

let env: TestGateway | undefined;
let clock: ManualClock | undefined;

afterEach(async () => {
  // A run left live by a failed test would hold the drain on the manual clock.
  if (env) await stopAdvancing(env, clock, 10_000, 20);
  env = undefined;
  clock = undefined;
});

interface Gate {
  readonly opened: Promise<void>;
  open(): void;
}

function gate(): Gate {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

/** Waits for the gate, or rejects with the signal's reason once the run is aborted. */
function gateOrAbort(g: Gate, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
    void g.opened.then(resolve);
  });
}

function agentOf(run: (input: AgentRunInput) => AsyncGenerator<AgentStep>): Agent {
  return { run };
}

/**
 * A round trip: the pong comes after every frame the server sent before it read the ping,
 * so after it the test knows what the server has (not) sent so far.
 */
let barrierCount = 0;
async function barrier(client: TestClient): Promise<void> {
  const id = `barrier-${++barrierCount}`;
  client.send({ type: 'ping', id });
  await client.waitFor((f) => f.type === 'pong' && f.id === id, 5000, `pong ${id}`);
}

/** Sends a frame and resolves with the first ack or error for `id` that arrives after it. */
function reply(client: TestClient, frame: Frame, what: string): Promise<Frame> {
  const from = client.frames.length;
  client.send(frame);
  const id = frame.id;
  return client.waitFor((f) => (f.type === 'ack' || f.type === 'error') && (f.id === id || f.ref === id), 5000, what, from);
}

/** Like TestClient.message, but a reused id is answered by a new frame, not the first one. */
function message(client: TestClient, id: string, threadId: string, text: string): Promise<Frame> {
  return reply(client, { type: 'user_message', id, thread_id: threadId, text }, `reply to message ${id}`);
}

function cancel(client: TestClient, id: string, runId: string): Promise<Frame> {
  return reply(client, { type: 'cancel', id, run_id: runId }, `reply to cancel ${id}`);
}

function eventsOf(client: TestClient, runId: string): Frame[] {
  return client.events().filter((e) => e.run_id === runId);
}

function indexOf(client: TestClient, predicate: (f: Frame) => boolean): number {
  return client.frames.findIndex(predicate);
}

/** The client's whole event stream: contiguous from 1, and every run in it well formed. */
function expectWellFormed(client: TestClient): Map<string, Frame[]> {
  const events = client.events();
  expect(seqProblem(events, 0)).toBeNull();
  const runs = new Map<string, Frame[]>();
  for (const event of events) {
    if (!runs.has(event.run_id)) runs.set(event.run_id, []);
    runs.get(event.run_id)!.push(event);
  }
  for (const [runId, runEvents] of runs) expect(runProblem(runEvents), runId).toBeNull();
  return runs;
}

async function runsMetric(testEnv: TestGateway): Promise<Record<string, number>> {
  const values: Record<string, number> = {};
  for (const { labels, value } of (await testEnv.gateway.metrics.runs.get()).values) values[String(labels.outcome)] = value;
  return values;
}

/** Steps the manual clock 1 ms at a time until `client` has the run's terminal event. */
async function clockUntilTerminal(client: TestClient, runId: string, maxSteps = 50): Promise<Frame[]> {
  for (let i = 0; i < maxSteps; i++) {
    const events = eventsOf(client, runId);
    if (events.some(isTerminal)) return events;
    await clock!.advance(1);
    await barrier(client);
  }
  throw new Error(`run ${runId} did not end within ${maxSteps} clock steps`);
}

describe('agent failures and timeouts', () => {
  it('an agent that throws ends its run with agent_error agent_failed and the error message', async () => {
    const agent = agentOf(async function* (input) {
      if (input.text === 'throw at once') throw new Error('broken before any step');
      yield { type: 'thinking', text: 'about to call a tool' };
      yield { type: 'tool_call', callId: 'c-1', tool: 'lookup', args: { q: input.text } };
      yield { type: 'tool_result', callId: 'c-1', tool: 'lookup', ok: true, result: 42 };
      // eslint-disable-next-line @typescript-eslint/only-throw-error -- an agent that throws a non-Error is the case under test
      if (input.text === 'throw a string') throw 'plain string failure';
      throw new Error('boom after the tool');
    });
    env = await startGateway({ agent });
    const client = await env.ready('alice');

    const late = await message(client, 'm1', 't1', 'throw after the tool');
    const lateEvents = await client.runEvents(late.run_id);
    expect(lateEvents.map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_error']);
    expect(lateEvents[2]).toMatchObject({ call_id: 'c-1', tool: 'lookup', args: { q: 'throw after the tool' } });
    expect(lateEvents[3]).toMatchObject({ call_id: 'c-1', tool: 'lookup', ok: true, result: 42 });
    expect(lateEvents.at(-1)).toMatchObject({ code: 'agent_failed', message: 'boom after the tool' });

    const early = await message(client, 'm2', 't1', 'throw at once');
    const earlyEvents = await client.runEvents(early.run_id);
    expect(earlyEvents.map((e) => e.type)).toEqual(['agent_started', 'agent_error']);
    expect(earlyEvents.at(-1)).toMatchObject({ code: 'agent_failed', message: 'broken before any step' });

    const plain = await message(client, 'm3', 't2', 'throw a string');
    expect((await client.runEvents(plain.run_id)).at(-1)).toMatchObject({ type: 'agent_error', code: 'agent_failed', message: 'plain string failure' });

    await barrier(client);
    expect(expectWellFormed(client).size).toBe(3);
    expect(await runsMetric(env)).toEqual({ agent_failed: 3 });
  });

  it('the demo agent with /fail ends with agent_error agent_failed after its tool call', async () => {
    env = await startGateway();
    const client = await env.ready('alice');
    const ack = await message(client, 'm1', 't1', '/fail what is 2+2?');
    const events = await client.runEvents(ack.run_id);
    expect(events.map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_error']);
    expect(events[2]).toMatchObject({ tool: 'calculator', args: { expression: '2+2' } });
    expect(events[3]).toMatchObject({ tool: 'calculator', ok: true, result: 4, call_id: events[2]!.call_id });
    expect(events.at(-1)).toMatchObject({ code: 'agent_failed', message: 'demo agent failure requested by /fail' });
    expectWellFormed(client);
    expect(await runsMetric(env)).toEqual({ agent_failed: 1 });
  });

  it('/hang past runTimeoutMs (ManualClock) ends with agent_error timeout, exactly at the timeout', async () => {
    clock = new ManualClock(Date.UTC(2025, 0, 1));
    env = await startGateway({ clock, runTimeoutMs: 1000 });
    const client = await env.ready('alice');
    const ack = await message(client, 'm1', 't1', '/hang forever');
    await client.waitFor((f) => f.seq === 1, 5000, 'agent_started');
    await clock.advance(1);
    await client.waitFor((f) => f.seq === 2 && f.type === 'agent_thinking', 5000, 'thinking');
    await clock.advance(998);
    await barrier(client);
    expect(eventsOf(client, ack.run_id).map((e) => e.type)).toEqual(['agent_started', 'agent_thinking']);

    await clock.advance(1);
    const events = await client.runEvents(ack.run_id);
    expect(events.map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'agent_error']);
    expect(events.at(-1)).toMatchObject({ code: 'timeout', message: 'run exceeded 1000 ms', ts: new Date(Date.UTC(2025, 0, 1) + 1000).toISOString() });

    // The thread is free again, and the timed-out run never adds anything.
    const next = await message(client, 'm2', 't1', 'two words');
    expect(next.status).toBe('started');
    const nextEvents = await clockUntilTerminal(client, next.run_id);
    expect(nextEvents.map((e) => e.type)).toEqual(demoRunTypes('two words'));
    expect(nextEvents[0]!.seq).toBe(events.at(-1)!.seq + 1);
    await clock.advance(10_000);
    await barrier(client);
    expect(eventsOf(client, ack.run_id)).toEqual(events);
    expectWellFormed(client);
    expect(await runsMetric(env)).toEqual({ timeout: 1, completed: 1 });
  });

  it('an agent that ignores its abort signal still times out, and what it yields afterwards is dropped', async () => {
    const release = gate();
    const exited = gate();
    let lateYields = 0;
    const agent = agentOf(async function* () {
      try {
        yield { type: 'thinking', text: 'starting' };
        await release.opened; // ignores the signal on purpose
        lateYields++;
        yield { type: 'thinking', text: 'too late' };
        lateYields++;
        yield { type: 'tool_call', callId: 'late', tool: 'noop', args: {} };
        yield { type: 'answer', text: 'too late' };
      } finally {
        exited.open();
      }
    });
    clock = new ManualClock(0);
    env = await startGateway({ clock, agent, runTimeoutMs: 500 });
    const client = await env.ready('alice');
    const ack = await message(client, 'm1', 't1', 'hello');
    await client.waitFor((f) => f.seq === 2, 5000, 'thinking');
    await clock.advance(500);
    const events = await client.runEvents(ack.run_id);
    expect(events.map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'agent_error']);
    expect(events.at(-1)).toMatchObject({ code: 'timeout' });

    expect(env.gateway.runs.liveRuns).toBe(0);
    release.open();
    // The run manager takes the agent's next step, sees the run ended, and stops the agent.
    await within(exited.opened, 'the agent to be stopped', 5000);
    expect(lateYields).toBe(1);
    const other = await message(client, 'm2', 't2', 'after');
    await client.runEvents(other.run_id);
    await barrier(client);
    expect(eventsOf(client, ack.run_id)).toEqual(events);
    expect(eventsOf(client, other.run_id)[0]!.seq).toBe(4);
    expectWellFormed(client);
  });
});

describe('cancel', () => {
  it('cancelling a running /hang run: ack cancelling, then agent_completed cancelled, and nothing after', async () => {
    env = await startGateway();
    const client = await env.ready('alice');
    const ack = await message(client, 'm1', 't1', '/hang until cancelled');
    await client.waitFor((f) => f.run_id === ack.run_id && f.type === 'agent_thinking', 5000, 'thinking');
    const reply = await cancel(client, 'c1', ack.run_id);
    expect(reply).toEqual({ type: 'ack', id: 'c1', run_id: ack.run_id, thread_id: 't1', status: 'cancelling' });
    const events = await client.runEvents(ack.run_id);
    expect(events.map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'agent_completed']);
    expect(events.at(-1)).toMatchObject({ status: 'cancelled' });
    expect(indexOf(client, (f) => f.type === 'ack' && f.id === 'c1')).toBeLessThan(indexOf(client, (f) => f === events.at(-1)));

    // The thread runs the next message at once; the cancelled run adds nothing, ever.
    const next = await message(client, 'm2', 't1', 'what is 3*3?');
    expect(next.status).toBe('started');
    const nextEvents = await client.runEvents(next.run_id);
    expect(nextEvents[0]!.seq).toBe(events.at(-1)!.seq + 1);
    expect(nextEvents.at(-1)).toMatchObject({ status: 'completed', text: '3*3 = 9' });
    // An ended run is no longer cancellable.
    expect(await cancel(client, 'c2', ack.run_id)).toMatchObject({ type: 'error', code: 'run_not_found', ref: 'c2' });
    expect(eventsOf(client, ack.run_id)).toEqual(events);
    expectWellFormed(client);
    expect(await runsMetric(env)).toEqual({ cancelled: 1, completed: 1 });
  });

  it('cancelling a queued run: it ends with agent_started + agent_completed cancelled, only after the run before it', async () => {
    env = await startGateway();
    const client = await env.ready('alice');
    const first = await message(client, 'm1', 't1', '/hang first');
    const second = await message(client, 'm2', 't1', 'second in line');
    expect([first.status, second.status]).toEqual(['started', 'queued']);
    await client.waitFor((f) => f.run_id === first.run_id && f.type === 'agent_thinking', 5000, 'first thinking');

    expect(await cancel(client, 'c2', second.run_id)).toEqual({
      type: 'ack',
      id: 'c2',
      run_id: second.run_id,
      thread_id: 't1',
      status: 'cancelling',
    });
    await barrier(client);
    expect(eventsOf(client, second.run_id)).toEqual([]);
    expect(eventsOf(client, first.run_id).some(isTerminal)).toBe(false);

    expect(await cancel(client, 'c1', first.run_id)).toMatchObject({ type: 'ack', status: 'cancelling', run_id: first.run_id });
    const firstEvents = await client.runEvents(first.run_id);
    const secondEvents = await client.runEvents(second.run_id);
    expect(firstEvents.at(-1)).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
    expect(secondEvents.map((e) => e.type)).toEqual(['agent_started', 'agent_completed']);
    expect(secondEvents[0]).toMatchObject({ message_id: 'm2', text: 'second in line', seq: firstEvents.at(-1)!.seq + 1 });
    expect(secondEvents[1]).toMatchObject({ status: 'cancelled', seq: firstEvents.at(-1)!.seq + 2 });
    await barrier(client);
    expectWellFormed(client);
    expect(client.events()).toHaveLength(firstEvents.length + 2);
    expect(await runsMetric(env)).toEqual({ cancelled: 2 });
  });

  it("cancel of another user's run is forbidden and leaves it running; an unknown run is run_not_found", async () => {
    env = await startGateway();
    const alice = await env.ready('alice');
    const bob = await env.ready('bob');
    const ack = await message(alice, 'm1', 't1', '/hang');
    await alice.waitFor((f) => f.run_id === ack.run_id && f.type === 'agent_thinking', 5000, 'thinking');

    expect(await cancel(bob, 'bob-c1', ack.run_id)).toEqual({
      type: 'error',
      code: 'forbidden',
      message: expect.any(String),
      ref: 'bob-c1',
    });
    expect(await cancel(bob, 'bob-c2', 'run_does_not_exist')).toEqual({
      type: 'error',
      code: 'run_not_found',
      message: expect.any(String),
      ref: 'bob-c2',
    });
    await barrier(alice);
    expect(eventsOf(alice, ack.run_id).map((e) => e.type)).toEqual(['agent_started', 'agent_thinking']);
    expect(env.gateway.runs.liveRuns).toBe(1);

    expect(await cancel(alice, 'c1', ack.run_id)).toMatchObject({ type: 'ack', status: 'cancelling' });
    expect((await alice.runEvents(ack.run_id)).at(-1)).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
    await barrier(bob);
    expect(bob.events()).toEqual([]);
    expectWellFormed(alice);
  });
});

describe('threads', () => {
  it('FIFO on a busy thread: started, queued, queued; runs in arrival order, never overlapping', async () => {
    env = await startGateway();
    const client = await env.ready('alice');
    const ids = ['m1', 'm2', 'm3'];
    for (const [i, id] of ids.entries()) client.send({ type: 'user_message', id, thread_id: 'busy', text: `what is ${i}+10?` });
    const acks = await Promise.all(ids.map((id) => client.waitFor((f) => f.type === 'ack' && f.id === id, 5000, `ack ${id}`)));
    expect(acks.map((a) => a.status)).toEqual(['started', 'queued', 'queued']);
    expect(new Set(acks.map((a) => a.run_id)).size).toBe(3);

    const runs = [];
    for (const ack of acks) runs.push(await client.runEvents(ack.run_id));
    for (const [i, events] of runs.entries()) {
      expect(events.map((e) => e.type)).toEqual(demoRunTypes(`what is ${i}+10?`));
      expect(events[0]).toMatchObject({ message_id: ids[i], thread_id: 'busy' });
      expect(events.at(-1)!.text).toBe(`${i}+10 = ${i + 10}`);
      // Each run occupies one contiguous range, right after the previous one.
      expect(seqProblem(events, i * demoRunTypes('what is 0+10?').length)).toBeNull();
    }
    expectWellFormed(client);
    expect(await runsMetric(env)).toEqual({ completed: 3 });
  });

  it('runs on different threads go on at the same time', async () => {
    const gates = new Map([
      ['A', gate()],
      ['B', gate()],
    ]);
    const agent = agentOf(async function* (input) {
      yield { type: 'thinking', text: `holding ${input.text}` };
      await gateOrAbort(gates.get(input.text)!, input.signal);
      yield { type: 'answer', text: `released ${input.text}` };
    });
    env = await startGateway({ agent });
    const client = await env.ready('alice');
    const a = await message(client, 'ma', 't-a', 'A');
    const b = await message(client, 'mb', 't-b', 'B');
    expect([a.status, b.status]).toEqual(['started', 'started']);
    // Both runs are under way before either may finish.
    await client.waitFor((f) => f.run_id === a.run_id && f.type === 'agent_thinking', 5000, 'A thinking');
    await client.waitFor((f) => f.run_id === b.run_id && f.type === 'agent_thinking', 5000, 'B thinking');

    gates.get('B')!.open();
    const bEvents = await client.runEvents(b.run_id);
    expect(bEvents.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed', text: 'released B' });
    await barrier(client);
    expect(eventsOf(client, a.run_id).some(isTerminal)).toBe(false);

    gates.get('A')!.open();
    const aEvents = await client.runEvents(a.run_id);
    expect(aEvents.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed', text: 'released A' });
    expect(aEvents[0]!.seq).toBeLessThan(bEvents.at(-1)!.seq);
    expect(bEvents.at(-1)!.seq).toBeLessThan(aEvents.at(-1)!.seq);
    expectWellFormed(client);
  });

  it("threadPolicy 'reject': thread_busy with ref = the message id; the id is released and works later", async () => {
    env = await startGateway({ threadPolicy: 'reject' });
    const client = await env.ready('alice');
    const first = await message(client, 'm1', 't1', '/hang');
    expect(first.status).toBe('started');
    const rejected = await message(client, 'm2', 't1', 'count these words');
    expect(rejected).toEqual({ type: 'error', code: 'thread_busy', message: expect.any(String), ref: 'm2' });
    // Another thread is not busy.
    const other = await message(client, 'm3', 't2', 'other thread');
    expect(other.status).toBe('started');
    await client.runEvents(other.run_id);

    await cancel(client, 'c1', first.run_id);
    await client.runEvents(first.run_id);
    const again = await message(client, 'm2', 't1', 'count these words');
    expect(again).toMatchObject({ type: 'ack', id: 'm2', status: 'started', thread_id: 't1' });
    const events = await client.runEvents(again.run_id);
    expect(events.at(-1)).toMatchObject({ status: 'completed', text: 'Your message has 3 words.' });
    expect(client.events().filter((e) => e.type === 'agent_started' && e.message_id === 'm2')).toHaveLength(1);
    expectWellFormed(client);
    expect(await runsMetric(env)).toEqual({ completed: 2, cancelled: 1 });
  });
});

describe('idempotent message ids', () => {
  it('a duplicate id gets ack duplicate with the original run, from any connection of the user, while running and after', async () => {
    env = await startGateway();
    const c1 = await env.ready('alice');
    const c2 = await env.ready('alice');
    const bob = await env.ready('bob');
    const original = await message(c1, 'm1', 't1', '/hang original');
    expect(original.status).toBe('started');
    await c1.waitFor((f) => f.run_id === original.run_id && f.type === 'agent_thinking', 5000, 'thinking');

    const sameConnection = await message(c1, 'm1', 't1', 'a different text');
    expect(sameConnection).toEqual({ type: 'ack', id: 'm1', run_id: original.run_id, thread_id: 't1', status: 'duplicate' });
    const otherConnection = await message(c2, 'm1', 't9', 'and another thread');
    expect(otherConnection).toEqual({ type: 'ack', id: 'm1', run_id: original.run_id, thread_id: 't1', status: 'duplicate' });

    // The same id from another user is that user's own run.
    const bobs = await message(bob, 'm1', 't1', 'bob words');
    expect(bobs.status).toBe('started');
    expect(bobs.run_id).not.toBe(original.run_id);
    expect((await bob.runEvents(bobs.run_id)).at(-1)).toMatchObject({ status: 'completed', text: 'Your message has 2 words.' });

    await cancel(c2, 'c1', original.run_id);
    const events = await c1.runEvents(original.run_id);
    const afterEnd = await message(c2, 'm1', 't1', 'once more');
    expect(afterEnd).toMatchObject({ status: 'duplicate', run_id: original.run_id });

    await barrier(c1);
    await barrier(c2);
    for (const client of [c1, c2]) {
      expect(client.events()).toEqual(events);
      expect(client.events().filter((e) => e.type === 'agent_started')).toHaveLength(1);
      expectWellFormed(client);
    }
    expect(events[0]).toMatchObject({ message_id: 'm1', text: '/hang original' });
    expect(bob.events().every((e) => e.run_id === bobs.run_id)).toBe(true);
    expectWellFormed(bob);
    expect(await runsMetric(env)).toEqual({ completed: 1, cancelled: 1 });
  });
});

describe('outcomes', () => {
  it('every run ends with exactly one terminal event, and runs_total by outcome matches them', async () => {
    clock = new ManualClock(Date.UTC(2025, 0, 1));
    env = await startGateway({ clock, runTimeoutMs: 1000 });
    const client = await env.ready('alice');
    const acks = {
      completed: await message(client, 'm1', 't1', 'what is 6/3?'),
      failed: await message(client, 'm2', 't2', '/fail count'),
      cancelled: await message(client, 'm3', 't3', '/hang to cancel'),
      timedOut: await message(client, 'm4', 't4', '/hang to time out'),
      queued: await message(client, 'm5', 't1', 'queued behind m1'),
    };
    expect(acks.queued.status).toBe('queued');
    for (let i = 0; i < 20; i++) {
      await clock.advance(1);
      await barrier(client);
    }
    expect(await cancel(client, 'c3', acks.cancelled.run_id)).toMatchObject({ status: 'cancelling' });
    await client.runEvents(acks.cancelled.run_id);
    await clock.advance(1000);
    await client.runEvents(acks.timedOut.run_id);
    await barrier(client);

    const runs = expectWellFormed(client);
    expect(runs.size).toBe(5);
    const terminal = (ack: Frame) => runs.get(ack.run_id)!.at(-1)!;
    expect(terminal(acks.completed)).toMatchObject({ type: 'agent_completed', status: 'completed', text: '6/3 = 2' });
    expect(terminal(acks.failed)).toMatchObject({ type: 'agent_error', code: 'agent_failed' });
    expect(terminal(acks.cancelled)).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
    expect(terminal(acks.timedOut)).toMatchObject({ type: 'agent_error', code: 'timeout' });
    expect(terminal(acks.queued)).toMatchObject({ type: 'agent_completed', status: 'completed' });
    for (const [runId, events] of runs) {
      expect(events.filter(isTerminal), runId).toHaveLength(1);
      const executing = events.filter((e) => e.type === 'tool_executing');
      for (const done of events.filter((e) => e.type === 'tool_completed')) {
        const call = executing.find((e) => e.call_id === done.call_id);
        expect(call, done.call_id).toBeDefined();
        expect(call!.seq).toBeLessThan(done.seq);
        expect(call!.tool).toBe(done.tool);
      }
    }
    const observed: Record<string, number> = {};
    for (const events of runs.values()) {
      const last = events.at(-1)!;
      const outcome = last.type === 'agent_error' ? last.code : last.status;
      observed[outcome] = (observed[outcome] ?? 0) + 1;
    }
    expect(observed).toEqual({ completed: 2, agent_failed: 1, cancelled: 1, timeout: 1 });
    await waitUntil(() => env!.gateway.runs.liveRuns === 0, 5000, 'no live runs');
    expect(await runsMetric(env)).toEqual(observed);
  });
});

describe('streamed answers (section 7)', () => {
  /** The run's events without seq/ts/ids: what a reader of the transcript sees. */
  const shape = (events: Frame[]) => events.map((e) => (e.text === undefined ? e.type : `${e.type}:${e.text}`));

  it('merges fragments that come within the flush window, never across another event; agent_completed.text is their concatenation', async () => {
    clock = new ManualClock(Date.UTC(2025, 0, 1));
    const manual = clock;
    const agent = agentOf(async function* () {
      yield { type: 'thinking_delta', text: 'Let me ' };
      yield { type: 'thinking_delta', text: 'think.' };
      yield { type: 'text_delta', text: 'Hel' };
      yield { type: 'text_delta', text: '' }; // dropped: a delta is never empty
      yield { type: 'text_delta', text: 'lo' };
      yield { type: 'tool_call', callId: 'c1', tool: 'lookup', args: {} };
      yield { type: 'tool_result', callId: 'c1', tool: 'lookup', ok: true, result: 1 };
      yield { type: 'text_delta', text: ' wor' };
      await sleep(manual, 5);
      yield { type: 'text_delta', text: 'ld' };
      yield { type: 'answer', text: 'not what was streamed' }; // ignored: the answer is what streamed
    });
    env = await startGateway({ clock, agent, streamFlushMs: 20 });
    const client = await env.ready('alice');
    const ack = await message(client, 'm1', 't1', 'hi');
    await client.waitFor((f) => f.type === 'tool_completed', 5000, 'the tool result');
    await barrier(client);
    // ' wor' is held (less than the window has passed) until 'ld' joins it and the run ends.
    expect(eventsOf(client, ack.run_id).map((e) => e.type)).not.toContain('agent_completed');
    await clock.advance(5);
    const events = await client.runEvents(ack.run_id);
    expect(shape(events)).toEqual([
      'agent_started:hi',
      'agent_thinking_delta:Let me think.',
      'agent_text_delta:Hello',
      'tool_executing',
      'tool_completed',
      'agent_text_delta: world',
      'agent_completed:Hello world',
    ]);
    expect(seqProblem(events, 0)).toBeNull();
  });

  it('an agent that streams nothing but empty fragments completes with its answer, and no delta is sent', async () => {
    const agent = agentOf(async function* () {
      yield { type: 'text_delta', text: '' };
      yield { type: 'answer', text: 'whole answer' };
    });
    env = await startGateway({ agent, streamFlushMs: 20 });
    const client = await env.ready('alice');
    const ack = await message(client, 'm1', 't1', 'hi');
    expect(shape(await client.runEvents(ack.run_id))).toEqual(['agent_started:hi', 'agent_completed:whole answer']);
  });

  it('never holds a fragment past the flush window', async () => {
    clock = new ManualClock(Date.UTC(2025, 0, 1));
    const manual = clock;
    const agent = agentOf(async function* () {
      yield { type: 'text_delta', text: 'a' };
      await sleep(manual, 30);
      yield { type: 'text_delta', text: 'b' };
    });
    env = await startGateway({ clock, agent, streamFlushMs: 20 });
    const client = await env.ready('alice');
    const ack = await message(client, 'm1', 't1', 'hi');
    await clock.advance(19);
    await barrier(client);
    expect(shape(eventsOf(client, ack.run_id))).toEqual(['agent_started:hi']);
    await clock.advance(1);
    await client.waitFor((f) => f.type === 'agent_text_delta', 5000, 'the first delta, at the window');
    await clock.advance(10);
    expect(shape(await client.runEvents(ack.run_id))).toEqual(['agent_started:hi', 'agent_text_delta:a', 'agent_text_delta:b', 'agent_completed:ab']);
  });

  it('a cancel mid-answer sends the held fragment first; agent_completed cancelled carries what streamed', async () => {
    clock = new ManualClock(Date.UTC(2025, 0, 1));
    const agent = agentOf(async function* ({ signal }) {
      yield { type: 'text_delta', text: 'partial ' };
      yield { type: 'text_delta', text: 'answer' };
      await gateOrAbort(gate(), signal);
    });
    env = await startGateway({ clock, agent, streamFlushMs: 20 });
    const client = await env.ready('alice');
    const ack = await message(client, 'm1', 't1', 'hi');
    await client.waitFor((f) => f.type === 'agent_started', 5000, 'agent_started');
    expect(await cancel(client, 'c1', ack.run_id)).toMatchObject({ type: 'ack', status: 'cancelling' });
    const events = await client.runEvents(ack.run_id);
    expect(shape(events)).toEqual(['agent_started:hi', 'agent_text_delta:partial answer', 'agent_completed:partial answer']);
    expect(events.at(-1)).toMatchObject({ status: 'cancelled' });
  });

  it('a merged delta stops at 4 KiB: a fast agent costs a few events, not one per fragment', async () => {
    const fragments = Array.from({ length: 2000 }, (_, i) => `w${String(i).padStart(4, '0')} `); // 6 bytes each
    const agent = agentOf(async function* () {
      for (const text of fragments) yield { type: 'text_delta', text };
    });
    env = await startGateway({ agent, streamFlushMs: 20 });
    const client = await env.ready('alice');
    const ack = await message(client, 'm1', 't1', 'hi');
    const events = await client.runEvents(ack.run_id);
    const deltas = events.filter((e) => e.type === 'agent_text_delta').map((e) => e.text as string);
    expect(deltas.map((d) => d.length)).toEqual([4092, 4092, 3816]);
    expect(deltas.join('')).toBe(fragments.join(''));
    expect(events.at(-1)).toMatchObject({ type: 'agent_completed', text: fragments.join('') });
  });
});

describe('RunManager.drain (unit, ManualClock)', () => {
  function setup(stepMs: number) {
    const manual = new ManualClock(0);
    const engine = new MemoryEngine({ clock: manual });
    const outcomes: RunOutcome[] = [];
    const faults: unknown[] = [];
    const runs = new RunManager({
      engine,
      agent: createDemoAgent({ clock: manual, stepMs }),
      clock: manual,
      threadPolicy: 'enqueue',
      runTimeoutMs: 60_000,
      streamFlushMs: 0, // one delta per word of the demo's answer, as soon as it comes
      onRunEnded: (outcome) => outcomes.push(outcome),
      onFault: (error) => faults.push(error),
    });
    const submit = async (id: string, threadId: string, text: string) => {
      let reply: SubmitReply | undefined;
      await runs.submit('u1', { id, threadId, text }, (r) => (reply = r));
      if (reply?.kind !== 'ack') throw new Error(`no ack for ${id}`);
      return reply;
    };
    const log = async () => engine.read('u1', 1, (await engine.head('u1')).lastSeq);
    return { manual, engine, runs, outcomes, faults, submit, log };
  }

  it('runs still going at the drain timeout end with agent_error shutdown; finished and queued runs end properly', async () => {
    const { manual, engine, runs, outcomes, faults, submit, log } = setup(10);
    const hanging = await submit('m1', 't1', '/hang');
    const queued = await submit('m2', 't1', 'queued behind the hang');
    const quick = await submit('m3', 't2', 'finishes in time');
    expect([hanging.status, queued.status, quick.status]).toEqual(['started', 'queued', 'started']);

    let drained = false;
    const draining = within(runs.drain(1000), 'drain', 5000).then(() => (drained = true));
    await manual.advance(999);
    expect(drained).toBe(false);
    expect(outcomes).toEqual(['completed']);
    expect(runs.liveRuns).toBe(2);

    await manual.advance(1);
    await draining;
    expect(drained).toBe(true);
    expect(runs.liveRuns).toBe(0);
    expect(outcomes).toEqual(['completed', 'shutdown', 'shutdown']);
    expect(faults).toEqual([]);

    const entries = (await log()).map((e) => JSON.parse(e.json) as Frame);
    expect(seqProblem(entries, 0)).toBeNull();
    const byRun = (runId: string) => entries.filter((e) => e.run_id === runId);
    for (const runId of [hanging.runId, queued.runId, quick.runId]) expect(runProblem(byRun(runId)), runId).toBeNull();
    expect(byRun(quick.runId).map((e) => e.type)).toEqual(demoRunTypes('finishes in time'));
    expect(byRun(hanging.runId).map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'agent_error']);
    expect(byRun(hanging.runId).at(-1)).toMatchObject({ code: 'shutdown', ts: new Date(1000).toISOString() });
    // The queued run never ran its agent, and still got its start and one terminal event, after the hang ended.
    expect(byRun(queued.runId).map((e) => e.type)).toEqual(['agent_started', 'agent_error']);
    expect(byRun(queued.runId).at(-1)).toMatchObject({ code: 'shutdown' });
    expect(byRun(queued.runId)[0]!.seq).toBeGreaterThan(byRun(hanging.runId).at(-1)!.seq);
    await engine.close();
  });

  it('drain resolves as soon as the last run ends, without waiting for the timeout or ending anything', async () => {
    const { manual, engine, runs, outcomes, submit, log } = setup(10);
    await submit('m1', 't1', 'two words');
    let drained = false;
    const draining = within(runs.drain(10_000), 'drain', 5000).then(() => (drained = true));
    // Four steps and five words ("Your message has 2 words."), 10 ms each.
    await manual.advance(89);
    expect(drained).toBe(false);
    await manual.advance(1);
    await draining;
    expect(manual.now()).toBe(90);
    expect(outcomes).toEqual(['completed']);
    expect((await log()).map((e) => e.type)).toEqual(demoRunTypes('two words'));
    expect(manual.pendingTimers).toBe(1); // only the engine's reaper: the drain timer was cleared
    await engine.close();
    expect(manual.pendingTimers).toBe(0);
  });

  it('drain with no live run resolves at once', async () => {
    const { manual, engine, runs, outcomes } = setup(10);
    await within(runs.drain(1000), 'drain', 5000);
    expect(manual.now()).toBe(0);
    expect(outcomes).toEqual([]);
    await engine.close();
  });
});

describe("the run's abort signal (unit)", () => {
  /** A manager whose agent streams one fragment, then waits for `release` (or its signal), then returns. */
  function setup() {
    const engine = new MemoryEngine();
    const signals: AbortSignal[] = [];
    const release = gate();
    const runs = new RunManager({
      engine,
      agent: agentOf(async function* (input) {
        signals.push(input.signal);
        yield { type: 'text_delta', text: 'hello' };
        await gateOrAbort(release, input.signal);
      }),
      clock: systemClock,
      threadPolicy: 'enqueue',
      runTimeoutMs: 60_000,
    });
    const start = async () => {
      let reply: SubmitReply | undefined;
      await runs.submit('u1', { id: `m${signals.length}`, threadId: 't1', text: 'hi' }, (r) => (reply = r));
      if (reply?.kind !== 'ack') throw new Error('no ack');
      await waitUntil(() => signals.length > 0, 5000, 'the agent started');
      return reply.runId;
    };
    return { engine, runs, signals, release, start };
  }

  it('is not aborted when the agent returned on its own: there is nothing left to stop', async () => {
    const { engine, runs, signals, release, start } = setup();
    await start();
    release.open();
    await within(runs.drain(5000), 'drain', 5000);
    expect(signals[0]!.aborted).toBe(false);
    await engine.close();
  });

  it('is aborted, with a reason, when the run is cancelled while the agent runs', async () => {
    const { engine, runs, signals, start } = setup();
    const runId = await start();
    await runs.cancel('u1', runId, () => {});
    expect(signals[0]!.aborted).toBe(true);
    expect(signals[0]!.reason).toBeInstanceOf(Error);
    await within(runs.drain(5000), 'drain', 5000);
    await engine.close();
  });
});

describe('onAppended (unit)', () => {
  it('a throw in it is a fault: the run still completes and its events are all in the log', async () => {
    const engine = new MemoryEngine();
    const faults: string[] = [];
    const outcomes: RunOutcome[] = [];
    const runs = new RunManager({
      engine,
      agent: agentOf(async function* () {
        yield { type: 'text_delta', text: 'hel' };
        yield { type: 'thinking', text: 'between' };
        yield { type: 'text_delta', text: 'lo' };
      }),
      clock: systemClock,
      threadPolicy: 'enqueue',
      runTimeoutMs: 60_000,
      onAppended: () => {
        throw new Error('the archive broke');
      },
      onFault: (_error, context) => faults.push(context),
      onRunEnded: (outcome) => outcomes.push(outcome),
    });
    await runs.submit('u1', { id: 'm1', threadId: 't1', text: 'hi' }, () => {});
    await within(runs.drain(5000), 'drain', 5000);
    expect(outcomes).toEqual(['completed']);
    const log = await engine.read('u1', 1, (await engine.head('u1')).lastSeq);
    expect(log.map((e) => e.type)).toEqual(['agent_started', 'agent_text_delta', 'agent_thinking', 'agent_text_delta', 'agent_completed']);
    expect(faults.length).toBeGreaterThan(0);
    expect(new Set(faults)).toEqual(new Set(['on appended']));
    await engine.close();
  });
});
