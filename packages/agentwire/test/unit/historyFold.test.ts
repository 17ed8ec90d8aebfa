import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DurableEvent, EventBody } from '@agentwire/protocol';
import {
  conversationTurns,
  createFold,
  cutTitle,
  dropRunsBefore,
  foldEvents,
  messagePage,
  parseEvent,
  threadMessages,
  threadPage,
  type HistoryFold,
} from '../../src/history/fold.js';
import type { AssistantMessageView } from '../../src/history/types.js';
import { fcParams } from '../helpers/fastCheck.js';

type Step =
  | { kind: 'thinking'; text: string }
  | { kind: 'thinking_delta'; text: string }
  | { kind: 'text_delta'; text: string }
  | { kind: 'tool'; tool: string; ok: boolean; completes: boolean };
type Ending = 'completed' | 'cancelled' | 'error' | 'none';
interface RunSpec {
  readonly text: string;
  readonly steps: Step[];
  readonly ending: Ending;
}

const fragment = fc.string({ minLength: 1, maxLength: 6 });
const step: fc.Arbitrary<Step> = fc.oneof(
  fragment.map((text) => ({ kind: 'thinking' as const, text })),
  fragment.map((text) => ({ kind: 'thinking_delta' as const, text })),
  fragment.map((text) => ({ kind: 'text_delta' as const, text })),
  fc.record({ kind: fc.constant('tool' as const), tool: fc.constantFrom('calculator', 'word_count'), ok: fc.boolean(), completes: fc.boolean() }),
);
const runSpec: fc.Arbitrary<RunSpec> = fc.record({
  text: fc.string({ minLength: 1, maxLength: 120 }),
  steps: fc.array(step, { maxLength: 8 }),
  ending: fc.constantFrom<Ending>('completed', 'cancelled', 'error', 'none'),
});

/** Runs per thread (run after run, as section 7 says), the threads interleaved by `order`. */
const streamSpec = fc.record({
  threads: fc.array(fc.array(runSpec, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 3 }),
  order: fc.array(fc.nat(), { maxLength: 400 }),
});

/** The durable events of the spec, seqs from 1; only a thread's last run may end 'none'. */
function buildEvents(spec: { threads: RunSpec[][]; order: number[] }): DurableEvent[] {
  const perThread = spec.threads.map((runs, t) =>
    runs.flatMap((run, r) => runEvents(`t${t}`, `run_${t}_${r}`, run, r === runs.length - 1 ? run.ending : run.ending === 'none' ? 'completed' : run.ending)),
  );
  const cursors = perThread.map(() => 0);
  const bodies: EventBody[] = [];
  const next = (t: number) => bodies.push(perThread[t]![cursors[t]!++]!);
  for (const choice of spec.order) {
    const open = perThread.map((_, t) => t).filter((t) => cursors[t]! < perThread[t]!.length);
    if (open.length === 0) break;
    next(open[choice % open.length]!);
  }
  perThread.forEach((events, t) => {
    while (cursors[t]! < events.length) next(t);
  });
  return bodies.map((body, i) => ({ ...body, seq: i + 1, ts: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString() }) as DurableEvent);
}

function runEvents(threadId: string, runId: string, run: RunSpec, ending: Ending): EventBody[] {
  const base = { run_id: runId, thread_id: threadId, ts: '' };
  const events: EventBody[] = [{ ...base, type: 'agent_started', message_id: `m_${runId}`, text: run.text }];
  let answer = '';
  run.steps.forEach((s, i) => {
    if (s.kind === 'thinking') events.push({ ...base, type: 'agent_thinking', text: s.text });
    else if (s.kind === 'thinking_delta') events.push({ ...base, type: 'agent_thinking_delta', text: s.text });
    else if (s.kind === 'text_delta') {
      answer += s.text;
      events.push({ ...base, type: 'agent_text_delta', text: s.text });
    } else {
      events.push({ ...base, type: 'tool_executing', call_id: `c${i}`, tool: s.tool, args: { i } });
      if (s.completes) events.push({ ...base, type: 'tool_completed', call_id: `c${i}`, tool: s.tool, ok: s.ok, result: { i } });
    }
  });
  if (ending === 'completed' || ending === 'cancelled') events.push({ ...base, type: 'agent_completed', status: ending, text: answer });
  if (ending === 'error') events.push({ ...base, type: 'agent_error', code: 'agent_failed', message: 'boom' });
  return events;
}

/** Every thread, most recently updated first. */
function threadSummaries(fold: HistoryFold) {
  return threadPage(fold, Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY).items;
}

function views(fold: HistoryFold) {
  return threadSummaries(fold).map((summary) => ({ summary, messages: threadMessages(fold, summary.threadId) }));
}

/** What the fold of `prefix` must show, computed from the events directly. */
function checkPrefix(prefix: DurableEvent[]): void {
  const fold = foldEvents(createFold(), prefix);
  const starts = prefix.filter((e) => e.type === 'agent_started');
  const threads = threadSummaries(fold);
  expect(threads.map((t) => t.threadId).sort()).toEqual([...new Set(starts.map((e) => e.thread_id))].sort());
  // Most recently updated first: by the seq of each thread's newest event.
  const newest = (threadId: string) => Math.max(...prefix.filter((e) => e.thread_id === threadId).map((e) => e.seq));
  expect(threads.map((t) => t.lastSeq)).toEqual(threads.map((t) => newest(t.threadId)));
  expect([...threads.map((t) => t.lastSeq)]).toEqual([...threads.map((t) => t.lastSeq)].sort((a, b) => b - a));
  for (const thread of threads) {
    const threadStarts = starts.filter((e) => e.thread_id === thread.threadId);
    expect(thread.title).toBe(cutTitle(threadStarts[0]!.type === 'agent_started' ? threadStarts[0]!.text : ''));
    expect(thread.lastRun?.runId).toBe(threadStarts.at(-1)!.run_id);
    const messages = threadMessages(fold, thread.threadId)!;
    expect(messages.map((m) => m.message.role)).toEqual(threadStarts.flatMap(() => ['user', 'assistant']));
    expect(messages.map((m) => m.position)).toEqual([...messages.map((m) => m.position)].sort((a, b) => a - b));
    for (const { message } of messages) {
      if (message.role !== 'assistant') continue;
      checkAnswer(
        message,
        prefix.filter((e) => e.run_id === message.runId),
      );
    }
  }
}

function checkAnswer(answer: AssistantMessageView, events: DurableEvent[]): void {
  const terminal = events.find((e) => e.type === 'agent_completed' || e.type === 'agent_error');
  const deltas = events.flatMap((e) => (e.type === 'agent_text_delta' ? [e.text] : [])).join('');
  expect(answer.status).toBe(!terminal ? 'running' : terminal.type === 'agent_error' ? 'error' : terminal.status);
  expect(answer.text).toBe(terminal?.type === 'agent_completed' && terminal.text !== '' ? terminal.text : deltas);
  expect(answer.completedAt).toBe(terminal ? terminal.ts : null);
  expect(answer.error).toEqual(terminal?.type === 'agent_error' ? { code: terminal.code, message: terminal.message } : null);
  // Thinking: whole steps one each, a run of consecutive thinking deltas merged into one.
  const thinking: string[] = [];
  let open = false;
  for (const e of events) {
    if (e.type === 'agent_thinking_delta') {
      if (open) thinking[thinking.length - 1] += e.text;
      else thinking.push(e.text);
    } else if (e.type === 'agent_thinking') thinking.push(e.text);
    open = e.type === 'agent_thinking_delta';
  }
  expect(answer.thinking).toEqual(thinking);
  const calls = events.filter((e) => e.type === 'tool_executing');
  expect(answer.toolCalls.map((c) => c.callId)).toEqual(calls.map((c) => (c.type === 'tool_executing' ? c.call_id : '')));
  for (const call of answer.toolCalls) {
    const result = events.find((e) => e.type === 'tool_completed' && e.call_id === call.callId);
    expect(call.ok).toBe(result?.type === 'tool_completed' ? result.ok : undefined);
  }
}

/**
 * Runs interleaved freely (also runs of one thread, as a `parallel` thread policy allows), some
 * `agent_started` repeated later (a log is storage: a run may appear to start twice).
 */
const looseStreamSpec = fc.record({
  runs: fc.array(fc.record({ thread: fc.nat({ max: 2 }), run: runSpec }), { minLength: 1, maxLength: 8 }),
  order: fc.array(fc.nat(), { maxLength: 200 }),
  restarts: fc.array(fc.record({ at: fc.nat(), run: fc.nat(), thread: fc.nat({ max: 2 }) }), { maxLength: 2 }),
});

type LooseStreamSpec = typeof looseStreamSpec extends fc.Arbitrary<infer T> ? T : never;

function buildLooseEvents(spec: LooseStreamSpec): DurableEvent[] {
  const perRun = spec.runs.map(({ thread, run }, r) => runEvents(`t${thread}`, `run_${r}`, run, run.ending));
  const cursors = perRun.map(() => 0);
  const bodies: EventBody[] = [];
  const next = (r: number) => bodies.push(perRun[r]![cursors[r]!++]!);
  for (const choice of spec.order) {
    const open = perRun.map((_, r) => r).filter((r) => cursors[r]! < perRun[r]!.length);
    if (open.length === 0) break;
    next(open[choice % open.length]!);
  }
  perRun.forEach((events, r) => {
    while (cursors[r]! < events.length) next(r);
  });
  for (const restart of spec.restarts) {
    const r = restart.run % perRun.length;
    bodies.splice(restart.at % (bodies.length + 1), 0, { ...perRun[r]![0]!, thread_id: `t${restart.thread}` });
  }
  return bodies.map((body, i) => ({ ...body, seq: i + 1, ts: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString() }) as DurableEvent);
}

/** Every page of every list the fold answers, walked as a client pages (the PositionedMessage positions are the cursors). */
function pagedViews(fold: HistoryFold, limit: number) {
  const threads = [];
  let before = Number.POSITIVE_INFINITY;
  for (;;) {
    const page = threadPage(fold, before, limit);
    threads.push(page);
    if (!page.more) break;
    before = page.items.at(-1)!.lastSeq;
  }
  const messages = threadSummaries(fold).map((thread) => {
    const pages = [];
    let beforePosition = Number.POSITIVE_INFINITY;
    for (;;) {
      const page = messagePage(fold, thread.threadId, beforePosition, limit)!;
      pages.push(page);
      if (!page.more) break;
      beforePosition = page.items[0]!.position;
    }
    return pages;
  });
  const turns = threadSummaries(fold).map((thread) => [1, 2, 5, 100].map((max) => conversationTurns(fold, thread.threadId, max)));
  return { views: views(fold), threads, messages, turns };
}

describe('history fold', () => {
  it('the fold of every prefix of a valid event stream shows exactly what the prefix holds', () => {
    fc.assert(
      fc.property(streamSpec, fc.nat(), (spec, cut) => {
        const events = buildEvents(spec);
        checkPrefix(events.slice(0, cut % (events.length + 1)));
        checkPrefix(events);
      }),
      fcParams(300, 20_000),
    );
  });

  it('folding in chunks (with overlapping re-reads) equals folding in one pass', () => {
    fc.assert(
      fc.property(streamSpec, fc.array(fc.nat(), { maxLength: 12 }), fc.array(fc.nat({ max: 5 }), { maxLength: 12 }), (spec, cuts, overlaps) => {
        const events = buildEvents(spec);
        const whole = foldEvents(createFold(), events);
        const chunked = createFold();
        const bounds = [...new Set(cuts.map((c) => c % (events.length + 1)))].sort((a, b) => a - b);
        let from = 0;
        bounds.concat(events.length).forEach((to, i) => {
          // A store re-reading from a little before where it stopped: nothing is applied twice.
          foldEvents(chunked, events.slice(Math.max(0, from - (overlaps[i] ?? 0)), to));
          from = to;
        });
        expect(views(chunked)).toEqual(views(whole));
      }),
      fcParams(300, 20_000),
    );
  });

  it('pages are the slices of the whole lists that a client paging them would see', () => {
    fc.assert(
      fc.property(looseStreamSpec, fc.integer({ min: 1, max: 5 }), fc.nat(), (spec, limit, cut) => {
        const events = buildLooseEvents(spec);
        const fold = foldEvents(createFold(), events.slice(0, cut % (events.length + 1)));
        const all = threadSummaries(fold);
        expect(all.map((t) => t.lastSeq)).toEqual([...all.map((t) => t.lastSeq)].sort((a, b) => b - a));
        for (const before of [Number.POSITIVE_INFINITY, ...all.map((t) => t.lastSeq)]) {
          const expected = all.filter((t) => t.lastSeq < before);
          expect(threadPage(fold, before, limit)).toEqual({ items: expected.slice(0, limit), more: expected.length > limit });
        }
        for (const thread of all) {
          const messages = threadMessages(fold, thread.threadId)!;
          for (const before of [Number.POSITIVE_INFINITY, ...messages.map((m) => m.position)]) {
            const older = messages.filter((m) => m.position < before);
            expect(messagePage(fold, thread.threadId, before, limit)).toEqual({ items: older.slice(-limit), more: older.length > limit });
          }
          // The conversation before each run: its ended runs, newest turns last, as the whole list cut.
          const runs = messages.filter((m) => m.message.role === 'assistant').map((m) => m.message as AssistantMessageView);
          runs.forEach((run, i) => {
            const whole = runs.slice(0, i).flatMap((r) =>
              r.status === 'running'
                ? []
                : [
                    {
                      role: 'user',
                      text: (messages.find((m) => m.message.role === 'user' && m.message.runId === r.runId)!.message as { text: string }).text,
                    },
                    ...(r.text !== '' || r.toolCalls.length > 0 ? [{ role: 'assistant', text: r.text, toolCalls: r.toolCalls }] : []),
                  ],
            );
            expect(conversationTurns(fold, thread.threadId, limit, run.runId)).toEqual(whole.slice(-limit));
          });
        }
      }),
      fcParams(300, 20_000),
    );
  });

  it('appended in any chunks, with the oldest runs dropped as the window moves, the fold equals the fold of the window', () => {
    fc.assert(
      fc.property(
        looseStreamSpec,
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 4 }),
        (spec, cuts, window, limit) => {
          const events = buildLooseEvents(spec);
          const fromFloor = (floor: number) =>
            foldEvents(
              createFold(),
              events.filter((e) => e.seq >= floor),
            );
          let incremental = createFold();
          let floor = 1;
          const bounds = [...new Set(cuts.map((c) => c % (events.length + 1)))].sort((a, b) => a - b);
          let from = 0;
          for (const to of bounds.concat(events.length)) {
            foldEvents(incremental, events.slice(Math.max(from, floor - 1), to));
            from = to;
            const newFloor = Math.max(1, to - window + 1);
            if (newFloor > floor) {
              // A fold that cannot drop its oldest runs exactly is folded afresh (as the store does).
              if (!dropRunsBefore(incremental, newFloor)) incremental = foldEvents(createFold(), events.slice(newFloor - 1, to));
              floor = newFloor;
            }
            const fresh = foldEvents(createFold(), events.slice(floor - 1, to));
            expect(pagedViews(incremental, limit)).toEqual(pagedViews(fresh, limit));
          }
          expect(pagedViews(incremental, limit)).toEqual(pagedViews(fromFloor(floor), limit));
        },
      ),
      fcParams(300, 30_000),
    );
  });

  it('ignores events of runs it never saw start, events after the terminal one, and malformed entries', () => {
    const base = { thread_id: 't', ts: '2026-01-01T00:00:00.000Z' };
    const fold = foldEvents(createFold(), [
      { ...base, seq: 1, run_id: 'gone', type: 'agent_text_delta', text: 'orphan' },
      { ...base, seq: 2, run_id: 'r', type: 'agent_started', message_id: 'm', text: 'hi' },
      { ...base, seq: 3, run_id: 'r', type: 'agent_text_delta', text: 'an' },
      { ...base, seq: 4, run_id: 'r', type: 'agent_completed', status: 'cancelled', text: '' },
      { ...base, seq: 5, run_id: 'r', type: 'agent_text_delta', text: 'late' },
    ]);
    const messages = threadMessages(fold, 't')!;
    expect(messages).toHaveLength(2);
    expect(messages[1]!.message).toMatchObject({ status: 'cancelled', text: 'an' });
    for (const bad of [
      '',
      'null',
      '[]',
      '{"seq":1}',
      '{"type":"agent_started","seq":1,"run_id":"r","thread_id":"t","ts":"x"}',
      '{"type":"__proto__","seq":1,"run_id":"r","thread_id":"t","ts":"x"}',
    ]) {
      expect(parseEvent(bad)).toBeNull();
    }
  });

  it('titles are cut to 80 characters without splitting a character', () => {
    expect(cutTitle('a'.repeat(100))).toHaveLength(80);
    expect([...cutTitle('😀'.repeat(100))]).toHaveLength(80);
  });

  it('the conversation is the ended runs before the given one, bounded in turns', () => {
    const events = buildEvents({
      threads: [
        [
          { text: 'one', steps: [{ kind: 'text_delta', text: 'A1' }], ending: 'completed' },
          { text: 'two', steps: [{ kind: 'tool', tool: 'calculator', ok: true, completes: true }], ending: 'error' },
          { text: 'three', steps: [], ending: 'cancelled' },
          { text: 'four', steps: [], ending: 'none' },
        ],
      ],
      order: [],
    });
    const fold = foldEvents(createFold(), events);
    expect(conversationTurns(fold, 't0', 20, 'run_0_3')).toEqual([
      { role: 'user', text: 'one' },
      { role: 'assistant', text: 'A1', toolCalls: [] },
      { role: 'user', text: 'two' },
      { role: 'assistant', text: '', toolCalls: [{ callId: 'c0', tool: 'calculator', args: { i: 0 }, ok: true, result: { i: 0 } }] },
      { role: 'user', text: 'three' },
    ]);
    expect(conversationTurns(fold, 't0', 2, 'run_0_2').map((t) => t.text)).toEqual(['two', '']);
    expect(conversationTurns(fold, 't0', 0)).toEqual([]);
    expect(conversationTurns(fold, 'other', 5)).toEqual([]);
  });
});
