/**
 * An in-process agent's steps are checked before they become events: a tool call or result
 * nested too deep, not serialisable as JSON, or too large ends that run at once with
 * `agent_failed` naming the fault. Before the check, encodeEvent threw inside the engine's
 * append, the run manager retried it as an unavailable log for 30 s, and the run hung. Text is
 * held to an upstream agent's bounds too: a string of at most 1 MiB per step, 16 MiB per run
 * (before, a delta of any size went to the log and every connection, and a run kept all its text).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Agent, AgentStep } from '../../src/runs/agent.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { startRun } from '../helpers/wsClient.js';

let env: TestGateway | undefined;
afterEach(async () => {
  await env?.stop();
  env = undefined;
});

function nested(levels: number): Record<string, unknown> {
  let value: Record<string, unknown> = {};
  for (let i = 1; i < levels; i++) value = { a: value };
  return value;
}

function cyclic(): Record<string, unknown> {
  const value: Record<string, unknown> = { name: 'loop' };
  value.self = value;
  return value;
}

const MiB = 1024 * 1024;

/** The steps a message's text asks for, the last of them bad; anything else is a plain answer. */
const badSteps: Record<string, () => AgentStep[]> = {
  deep: () => [{ type: 'tool_call', callId: 'c1', tool: 'lookup', args: nested(50_000) }],
  cyclic: () => [{ type: 'tool_result', callId: 'c1', tool: 'lookup', ok: true, result: cyclic() }],
  bigint: () => [{ type: 'tool_result', callId: 'c1', tool: 'lookup', ok: true, result: { count: 10n } }],
  huge: () => [{ type: 'tool_result', callId: 'c1', tool: 'lookup', ok: true, result: 'x'.repeat(2 * MiB) }],
  hugeDelta: () => [{ type: 'text_delta', text: 'é'.repeat(MiB / 2 + 1) }],
  notText: () => [{ type: 'answer', text: 42 as unknown as string }],
  // 16 answers of 1 MiB each pass (only the last would be kept); the 17th is past the run's 16 MiB.
  manyAnswers: () => Array.from({ length: 17 }, (): AgentStep => ({ type: 'answer', text: 'a'.repeat(MiB) })),
};

/** Steps after the bad one that must never appear. */
let stepsAfterTheBadOne = 0;
const agent: Agent = {
  historyTurns: 0,
  async *run({ text }) {
    const bad = badSteps[text];
    if (!bad) {
      yield { type: 'tool_call', callId: 'c0', tool: 'lookup', args: { when: new Date(0), deep: nested(120) } };
      yield { type: 'tool_result', callId: 'c0', tool: 'lookup', ok: true, result: 'y'.repeat(512 * 1024) };
      yield { type: 'answer', text: `answer to ${text}` };
      return;
    }
    yield { type: 'thinking', text: 'before the bad step' };
    yield* bad();
    stepsAfterTheBadOne++;
    yield { type: 'thinking', text: 'after the bad step' };
  },
};

describe('steps of an in-process agent', () => {
  it.each([
    ['deep', 'the agent yielded a tool_call step nested deeper than 128 levels'],
    ['cyclic', 'the agent yielded a tool_result step that is not serialisable as JSON (Converting circular structure to JSON'],
    ['bigint', 'the agent yielded a tool_result step that is not serialisable as JSON (Do not know how to serialize a BigInt)'],
    ['huge', 'the agent yielded a tool_result step over 1 MiB as JSON'],
    ['hugeDelta', 'the agent yielded a text_delta step with over 1 MiB of text'],
    ['notText', 'the agent yielded an answer step whose text is not a string'],
    ['manyAnswers', 'the agent yielded an answer step past 16 MiB of text in the run'],
  ])('a %s step ends its run at once with agent_failed; other runs and users go on', async (kind, message) => {
    env = await startGateway({ agent });
    const [alice, bob] = await Promise.all([env.ready('alice'), env.ready('bob')]);
    const bobRun = await startRun(bob, 'hello');
    const badRun = await startRun(alice, kind);
    // Well under the 30 s the run manager retries an unavailable log for.
    const events = await alice.runEvents(badRun, 5000);
    expect(events.map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'agent_error']);
    expect(events.at(-1)).toMatchObject({ code: 'agent_failed' });
    expect(events.at(-1)!.message).toContain(message);
    expect(stepsAfterTheBadOne).toBe(0);

    const bobEvents = await bob.runEvents(bobRun, 5000);
    expect(bobEvents.map((e) => e.type)).toEqual(['agent_started', 'tool_executing', 'tool_completed', 'agent_completed']);
    expect(bobEvents[1]!.args.when).toBe('1970-01-01T00:00:00.000Z');
    // The same user's next run, on the same connection, works.
    const next = await startRun(alice, 'again');
    expect((await alice.runEvents(next, 5000)).at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed', text: 'answer to again' });
    expect(alice.closeCode).toBeNull();
  });

  it('a tool step is logged as it was when yielded, even if the agent changes its object before the append', async () => {
    const changing: Agent = {
      historyTurns: 0,
      async *run() {
        const args: Record<string, unknown> = { q: 1 };
        yield { type: 'tool_call', callId: 'c1', tool: 'lookup', args };
        // The agent goes on using its object (here: a cycle) before the end of the tick, when the append encodes it.
        args.self = args;
        yield { type: 'answer', text: 'done' };
      },
    };
    env = await startGateway({ agent: changing });
    const alice = await env.ready('alice');
    const events = await alice.runEvents(await startRun(alice, 'go'), 5000);
    expect(events.map((e) => [e.seq, e.type])).toEqual([
      [1, 'agent_started'],
      [2, 'tool_executing'],
      [3, 'agent_completed'],
    ]);
    expect(events[1]!.args).toEqual({ q: 1 });
  });
});
