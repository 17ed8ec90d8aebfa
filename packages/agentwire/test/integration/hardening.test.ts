/**
 * Regression tests for problems found in review: replies that bypassed the outbound limit,
 * long ids echoed in every error, a rate-limit abuse counter that a trickle of passing frames
 * reset, a run that went on after one of its events could not be written, and a seq gap in a
 * replay that escaped as an unhandled rejection instead of closing one socket with 1011.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '@agentwire/protocol';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import type { EventEngine } from '../../src/engine/types.js';
import type { EventBody, LogEntry } from '@agentwire/protocol';
import { createDemoAgent } from '../../src/runs/demoAgent.js';
import { RunManager, type RunOutcome } from '../../src/runs/runManager.js';
import type { RunStore } from '../../src/runs/runStore.js';
import { ManualClock } from '../helpers/manualClock.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { within } from '../helpers/waitFor.js';

let env: TestGateway | undefined;
afterEach(async () => {
  await env?.stop();
  env = undefined;
});

/** The memory engine with some methods replaced (private fields rule out Object.create). */
function engineWith(base: MemoryEngine, overrides: Partial<EventEngine>): EventEngine {
  return {
    ready: () => base.ready(),
    append: (userId, events) => base.append(userId, events),
    subscribe: (userId, listener) => base.subscribe(userId, listener),
    read: (userId, from, to) => base.read(userId, from, to),
    head: (userId) => base.head(userId),
    close: () => base.close(),
    ...overrides,
  };
}

const closingCount = async (gateway: TestGateway['gateway']) =>
  (await gateway.metrics.connections.get()).values.find((v) => v.labels.state === 'CLOSING')?.value ?? 0;

describe('hardening', () => {
  it('replies (pongs) count against the outbound limit: a flooding client that does not read gets 4008', async () => {
    env = await startGateway({ slowConsumerBytes: 64 * 1024, rateLimitPerSec: 1_000_000, rateLimitBurst: 1_000_000 });
    const client = await env.ready('alice');
    client.ws.pause();
    const id = 'p'.repeat(1000);
    // Each reply echoes ~1 KB (an invalid_message error whose ref is the id, since a ping id is at
    // most 128 characters); without the check the server buffered replies without bound.
    let sent = 0;
    while ((await closingCount(env.gateway)) === 0 && sent < 20_000) {
      for (let i = 0; i < 500; i++) client.send({ type: 'ping', id });
      sent += 500;
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await closingCount(env.gateway)).toBe(1);
    expect(sent).toBeLessThan(20_000);
    client.ws.resume();
    expect(await client.waitClosed(20_000)).toEqual({ code: 4008, reason: 'slow_consumer' });
  });

  it('an id far beyond the protocol limit is not echoed as ref', async () => {
    env = await startGateway();
    const client = await env.ready('alice');
    client.send({ type: 'nope', id: 'x'.repeat(2000) });
    client.send({ type: 'nope', id: 'y'.repeat(1024) });
    const errors = await client.waitForCount((f) => f.type === 'error', 2);
    expect(errors.map((e) => [e.code, e.ref === null ? null : e.ref.length])).toEqual([
      ['unknown_type', null],
      ['unknown_type', 1024],
    ]);
  });

  it('rate-limit abuse is counted per second, so passing frames in between do not reset it', async () => {
    const clock = new ManualClock();
    env = await startGateway({ clock, heartbeatMs: 3_600_000, rateLimitPerSec: 10, rateLimitBurst: 1, abuseLimit: 5 });
    const client = await env.ready('alice');
    // t=0: one passes, three are limited; t=100 ms: a token refilled, one passes, three limited.
    for (let i = 1; i <= 4; i++) client.send({ type: 'ping', id: i });
    await client.waitForCount((f) => f.type === 'pong' || f.type === 'error', 4);
    await clock.advance(100);
    for (let i = 5; i <= 8; i++) client.send({ type: 'ping', id: i });
    expect(await client.waitClosed()).toEqual({ code: 1008, reason: 'rate_limit_abuse' });
    expect(client.frames.filter((f) => f.type === 'error').map((f) => f.ref)).toEqual([2, 3, 4, 6, 7]);
  });

  it('a run whose step cannot be written is stopped and ends once with agent_error, with no orphan step', async () => {
    const memory = new MemoryEngine();
    // An engine that can never write tool_executing events.
    const engine = engineWith(memory, {
      append: (userId: string, events: readonly EventBody[]) =>
        events.some((e) => e.type === 'tool_executing') ? Promise.reject(new Error('log unavailable')) : memory.append(userId, events),
    });
    const outcomes: RunOutcome[] = [];
    const faults: string[] = [];
    const runs = new RunManager({
      engine,
      agent: createDemoAgent({ clock: systemClock, stepMs: 0 }),
      clock: systemClock,
      threadPolicy: 'enqueue',
      runTimeoutMs: 10_000,
      retryForMs: 30,
      onRunEnded: (outcome) => outcomes.push(outcome),
      onFault: (_error, context) => faults.push(context),
    });
    let ended: () => void = () => {};
    const done = new Promise<void>((resolve) => (ended = resolve));
    const seen: LogEntry[] = [];
    await memory.subscribe('u1', (entry) => {
      seen.push(entry);
      if (entry.type === 'agent_error' || entry.type === 'agent_completed') ended();
    });
    await runs.submit('u1', { id: 'm1', threadId: 't1', text: 'what is 1+2?' }, () => {});
    await done;
    await runs.drain(1000);
    const events = seen.map((e) => JSON.parse(e.json));
    // Steps written before the failed batch may be there (how many depends on batching); the
    // failed tool_executing is not, nor anything after it but the one terminal event.
    const types = events.map((e) => e.type);
    expect(types[0]).toBe('agent_started');
    expect(types.filter((t) => t === 'agent_error' || t === 'agent_completed')).toEqual(['agent_error']);
    expect(types.at(-1)).toBe('agent_error');
    expect(types.filter((t) => t === 'tool_executing' || t === 'tool_completed')).toEqual([]);
    expect(types.every((t) => t === 'agent_started' || t === 'agent_thinking' || t === 'agent_error')).toBe(true);
    expect(events.at(-1)).toMatchObject({ code: 'agent_failed', message: 'the event log was unavailable; the run was stopped' });
    expect(outcomes).toEqual(['agent_failed']);
    expect(faults).toContain('append');
  });

  it('a run whose every append fails gives up after its retries instead of retrying forever', async () => {
    const appends: string[][] = [];
    const engine = engineWith(new MemoryEngine(), {
      append: (_userId: string, events: readonly EventBody[]) => {
        appends.push(events.map((e) => e.type));
        return Promise.reject(new Error('log unavailable'));
      },
    });
    const quickAgent = {
      async *run() {
        yield { type: 'thinking' as const, text: 'one step' };
        yield { type: 'answer' as const, text: 'done' };
      },
    };
    // retryForMs 0: each append is tried once, so the count below does not depend on timing.
    const runs = new RunManager({ engine, agent: quickAgent, clock: systemClock, threadPolicy: 'enqueue', runTimeoutMs: 10_000, retryForMs: 0 });
    await runs.submit('u1', { id: 'm1', threadId: 't1', text: 'go' }, () => {});
    await within(runs.drain(5000), 'the run to be given up', 10_000);
    expect(runs.liveRuns).toBe(0);
    // The whole run in one batch, then agent_started with the failure; then it stops trying.
    expect(appends.map((types) => types.join(','))).toEqual(['agent_started,agent_thinking,agent_completed', 'agent_started,agent_error']);
  });

  it('a run whose agent_started cannot be written is stopped: no step appears without agent_started', async () => {
    const memory = new MemoryEngine();
    let startFailures = 0;
    const engine = engineWith(memory, {
      append: (userId: string, events: readonly EventBody[]) => {
        if (events[0]?.type === 'agent_started' && startFailures++ === 0) return Promise.reject(new Error('log unavailable'));
        return memory.append(userId, events);
      },
    });
    let releaseStep: () => void = () => {};
    const stepReleased = new Promise<void>((resolve) => (releaseStep = resolve));
    // The step follows I/O, so agent_started goes out alone first.
    const ioAgent = {
      async *run() {
        await stepReleased;
        yield { type: 'thinking' as const, text: 'after I/O' };
        yield { type: 'answer' as const, text: 'done' };
      },
    };
    const outcomes: RunOutcome[] = [];
    const runs = new RunManager({
      engine,
      agent: ioAgent,
      clock: systemClock,
      threadPolicy: 'enqueue',
      runTimeoutMs: 10_000,
      retryForMs: 0,
      onRunEnded: (outcome) => outcomes.push(outcome),
    });
    const seen: LogEntry[] = [];
    let ended: () => void = () => {};
    const done = new Promise<void>((resolve) => (ended = resolve));
    await memory.subscribe('u1', (entry) => {
      seen.push(entry);
      if (entry.type === 'agent_error' || entry.type === 'agent_completed') ended();
    });
    await runs.submit('u1', { id: 'm1', threadId: 't1', text: 'go' }, () => {});
    await within(done, 'the run to end');
    releaseStep();
    await within(runs.drain(1000), 'the drain');
    expect(seen.map((e) => e.type)).toEqual(['agent_started', 'agent_error']);
    expect(JSON.parse(seen[1]!.json)).toMatchObject({ code: 'agent_failed' });
    expect(outcomes).toEqual(['agent_failed']);
  });

  it('an enqueue in doubt is settled in the background, and close() stops its retries', async () => {
    const clock = new ManualClock();
    let attempts = 0;
    const failingStore: RunStore = {
      nodeId: 'n1',
      enqueue: async () => {
        attempts++;
        throw new Error('link down');
      },
      advance: async () => null,
      requestCancel: async () => ({ kind: 'not_found' }),
      onCancelRequest: () => {},
      renewLeases: async () => {},
      claimLostRuns: async () => [],
      close: async () => {},
    };
    const faults: string[] = [];
    const runs = new RunManager({
      engine: new MemoryEngine(),
      agent: createDemoAgent({ clock, stepMs: 0 }),
      clock,
      threadPolicy: 'enqueue',
      runTimeoutMs: 10_000,
      store: failingStore,
      onFault: (_error, context) => faults.push(context),
    });
    await expect(runs.submit('u1', { id: 'm1', threadId: 't1', text: 'hi' }, () => {})).rejects.toThrow('link down');
    // The request failed; the settle tried once at once, and again after its first pause.
    expect(attempts).toBe(2);
    await clock.advance(50);
    expect(attempts).toBe(3);
    await runs.close();
    await clock.advance(10_000);
    expect(attempts).toBe(3);
    expect(faults.filter((f) => f.startsWith('enqueue in doubt'))).toEqual(['enqueue in doubt retrying', 'enqueue in doubt']);
  });

  it('a seq gap in a replay closes that socket with 1011 instead of escaping as an unhandled rejection', async () => {
    const memory = new MemoryEngine();
    // A log that answers a range read with a hole in it (a bug in an engine, simulated).
    const engine = engineWith(memory, {
      read: async (userId: string, from: number, to: number) => {
        const entries = await memory.read(userId, from, to);
        return entries.length > 2 ? [entries[0]!, entries[2]!, ...entries.slice(2)] : entries;
      },
    });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      env = await startGateway({ engine });
      const first = await env.ready('alice');
      const ack = await first.message('m1', 't1', 'hello there');
      await first.runEvents(ack.run_id);
      const ready = first.frames[0]!;
      const resumed = await env.connect('alice', { lastSeq: 0, epoch: ready.epoch });
      expect(await resumed.waitClosed()).toEqual({ code: 1011, reason: 'server_fault' });
      expect(resumed.frames[0]).toMatchObject({ type: 'connection_ready', resumed: true });
      // The rest of the gateway is fine.
      const other = await env.ready('bob');
      other.send({ type: 'ping', id: 1 });
      await other.waitForType('pong');
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

describe('appends', () => {
  it('events a fast agent yields while an append is in flight go out together, in order, in fewer engine calls', async () => {
    const memory = new MemoryEngine();
    const calls: number[] = [];
    const engine = engineWith(memory, {
      // A slow log: each append takes a few event-loop turns.
      append: async (userId: string, events: readonly EventBody[]) => {
        calls.push(events.length);
        await new Promise((resolve) => setTimeout(resolve, 5));
        return memory.append(userId, events);
      },
    });
    const fastAgent = {
      async *run() {
        for (let i = 0; i < 20; i++) yield { type: 'thinking' as const, text: `step ${i}` };
        yield { type: 'answer' as const, text: 'done' };
      },
    };
    const runs = new RunManager({ engine, agent: fastAgent, clock: systemClock, threadPolicy: 'enqueue', runTimeoutMs: 10_000 });
    let ended: () => void = () => {};
    const done = new Promise<void>((resolve) => (ended = resolve));
    const seen: LogEntry[] = [];
    await memory.subscribe('u1', (entry) => {
      seen.push(entry);
      if (entry.type === 'agent_completed') ended();
    });
    await runs.submit('u1', { id: 'm1', threadId: 't1', text: 'go' }, () => {});
    await done;
    const events = seen.map((e) => JSON.parse(e.json));
    expect(events.map((e) => e.type)).toEqual(['agent_started', ...Array(20).fill('agent_thinking'), 'agent_completed']);
    expect(events.slice(1, 21).map((e) => e.text)).toEqual(Array.from({ length: 20 }, (_, i) => `step ${i}`));
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 22 }, (_, i) => i + 1));
    expect(calls.reduce((a, b) => a + b, 0)).toBe(22);
    expect(calls.length).toBeLessThan(22);
    await runs.drain(1000);
  });
});
