import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { EventBody } from '@agentwire/protocol';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import { decodeCursor, encodeCursor } from '../../src/history/cursor.js';
import { createLogHistoryStore, type LogHistoryStore } from '../../src/history/logHistoryStore.js';
import { MemoryThreadMarks } from '../../src/history/threadMarks.js';
import { InvalidCursorError } from '../../src/history/types.js';
import { fcParams } from '../helpers/fastCheck.js';

const ts = '2026-01-01T00:00:00.000Z';

/** One completed run: agent_started, a delta, agent_completed. */
function run(threadId: string, index: number): EventBody[] {
  const base = { run_id: `run_${threadId}_${index}`, thread_id: threadId, ts };
  return [
    { ...base, type: 'agent_started', message_id: `m_${threadId}_${index}`, text: `q${index}` },
    { ...base, type: 'agent_text_delta', text: `a${index}` },
    { ...base, type: 'agent_completed', status: 'completed', text: `a${index}` },
  ];
}

/** An engine that counts the entries it hands out. */
function countingEngine(engine: MemoryEngine) {
  const counted = { read: 0 };
  return {
    counted,
    engine: {
      available: true,
      head: (userId: string) => engine.head(userId),
      read: async (userId: string, from: number, to: number) => {
        const entries = await engine.read(userId, from, to);
        counted.read += entries.length;
        return entries;
      },
    },
  };
}

const THREADS = ['t0', 't1', 't2'];
const RUNS = ['r0', 'r1', 'r2', 'r3', 'r4', 'r5'];

/** What a user of the store does: append events (of runs started or not, in any order), delete a thread, ask. */
const storeOp = fc.oneof(
  fc.record({
    kind: fc.constant('append' as const),
    events: fc.array(
      fc.record({
        type: fc.constantFrom('agent_started', 'agent_text_delta', 'agent_thinking_delta', 'tool_executing', 'agent_completed', 'agent_error'),
        run: fc.nat({ max: RUNS.length - 1 }),
        thread: fc.nat({ max: THREADS.length - 1 }),
        text: fc.string({ maxLength: 4 }),
      }),
      { minLength: 1, maxLength: 6 },
    ),
  }),
  fc.record({ kind: fc.constant('delete' as const), thread: fc.nat({ max: THREADS.length - 1 }) }),
  fc.record({ kind: fc.constant('ask' as const), limit: fc.integer({ min: 1, max: 4 }) }),
);

function bodyOf(e: { type: string; run: number; thread: number; text: string }, i: number): EventBody {
  const base = { run_id: RUNS[e.run]!, thread_id: THREADS[e.thread]!, ts: new Date(Date.UTC(2026, 0, 1) + i).toISOString() };
  switch (e.type) {
    case 'agent_started':
      return { ...base, type: 'agent_started', message_id: `m${i}`, text: e.text };
    case 'agent_text_delta':
    case 'agent_thinking_delta':
      return { ...base, type: e.type, text: e.text };
    case 'tool_executing':
      return { ...base, type: 'tool_executing', call_id: `c${i}`, tool: 'calculator', args: { i } };
    case 'agent_completed':
      return { ...base, type: 'agent_completed', status: 'completed', text: e.text };
    default:
      return { ...base, type: 'agent_error', code: 'agent_failed', message: e.text };
  }
}

/** Everything the store answers for the user, paged as a client pages it (cursors included). */
async function everything(store: LogHistoryStore, limit: number) {
  const threads = [];
  let cursor: string | undefined;
  do {
    const page = await store.listThreads('u', { limit, ...(cursor ? { cursor } : {}) });
    threads.push(page);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  const messages = [];
  for (const threadId of THREADS) {
    let messageCursor: string | undefined;
    do {
      const page = await store.messages('u', threadId, { limit, ...(messageCursor ? { cursor: messageCursor } : {}) });
      messages.push(page);
      messageCursor = page?.nextCursor ?? undefined;
    } while (messageCursor);
  }
  const turns = [];
  for (const threadId of THREADS) {
    for (const before of [undefined, ...RUNS]) turns.push(await store.conversation('u', threadId, limit, before));
  }
  return { threads, messages, turns };
}

describe('log-folded history store', () => {
  it('folds across read chunks and pages a long thread', async () => {
    const engine = new MemoryEngine({ retentionEvents: 100_000 });
    // 900 runs (2700 events) interleaved over two threads: several chunks of 1000.
    for (let i = 0; i < 900; i++) await engine.append('u', run(i % 3 === 0 ? 'other' : 'long', i));
    const store = createLogHistoryStore({ engine });
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.messages('u', 'long', { limit: 200, ...(cursor ? { cursor } : {}) });
      seen.unshift(...page!.items.map((m) => m.text));
      cursor = page!.nextCursor ?? undefined;
    } while (cursor);
    const expected = Array.from({ length: 900 }, (_, i) => i)
      .filter((i) => i % 3 !== 0)
      .flatMap((i) => [`q${i}`, `a${i}`]);
    expect(seen).toEqual(expected);
    await engine.close();
  });

  it('folds at most maxEvents events: older runs are outside the history', async () => {
    const engine = new MemoryEngine({ retentionEvents: 100_000 });
    for (let i = 0; i < 10; i++) await engine.append('u', run('t', i));
    const store = createLogHistoryStore({ engine, maxEvents: 9 });
    const page = await store.messages('u', 't', { limit: 200 });
    expect(page!.items.map((m) => m.text)).toEqual(['q7', 'a7', 'q8', 'a8', 'q9', 'a9']);
    expect(page!.lastSeq).toBe(30);
    await engine.close();
  });

  it('reads and parses only what was appended since its last read of the user', async () => {
    const memory = new MemoryEngine({ retentionEvents: 100_000 });
    for (let i = 0; i < 3000; i++) await memory.append('u', run('t', i));
    const { engine, counted } = countingEngine(memory);
    const store = createLogHistoryStore({ engine });
    expect((await store.conversation('u', 't', 4)).map((t) => t.text)).toEqual(['q2998', 'a2998', 'q2999', 'a2999']);
    expect(counted.read).toBe(9000);
    await memory.append('u', run('t', 3000));
    expect((await store.conversation('u', 't', 2)).map((t) => t.text)).toEqual(['q3000', 'a3000']);
    expect(counted.read).toBe(9003);
    // A bound of 10 000 events: past it, the oldest are dropped from the cache, not re-read.
    const bounded = createLogHistoryStore({ engine, maxEvents: 30 });
    const page = await bounded.messages('u', 't', { limit: 200 });
    expect(page!.items[0]!.text).toBe('q2991');
    await memory.close();
  });

  it('entries evicted before it read them: the kept fold starts over, as a fresh fold of the log', async () => {
    const engine = new MemoryEngine({ retentionEvents: 6 });
    const store = createLogHistoryStore({ engine });
    await engine.append('u', run('gone', 0));
    expect((await store.listThreads('u', { limit: 10 })).items.map((t) => t.threadId)).toEqual(['gone']);
    // Three runs more: the log keeps the last six events, the first run's and part of the next are evicted.
    for (let i = 1; i <= 3; i++) await engine.append('u', run(`t${i}`, i));
    const fresh = createLogHistoryStore({ engine });
    expect((await store.listThreads('u', { limit: 10 })).items.map((t) => t.threadId)).toEqual(['t3', 't2']);
    expect(await store.listThreads('u', { limit: 10 })).toEqual(await fresh.listThreads('u', { limit: 10 }));
    await engine.close();
  });

  it('a new epoch (the log was lost) starts the cache over', async () => {
    let memory = new MemoryEngine();
    const engine = { available: true, head: (u: string) => memory.head(u), read: (u: string, f: number, t: number) => memory.read(u, f, t) };
    const store = createLogHistoryStore({ engine });
    await memory.append('u', run('old', 0));
    expect((await store.listThreads('u', { limit: 10 })).items.map((t) => t.threadId)).toEqual(['old']);
    await memory.close();
    memory = new MemoryEngine();
    await memory.append('u', run('new', 0));
    expect((await store.listThreads('u', { limit: 10 })).items.map((t) => t.threadId)).toEqual(['new']);
    await memory.close();
  });

  it('kept between requests, its answers equal those of a store folding the log afresh', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(storeOp, { maxLength: 25 }), fc.integer({ min: 3, max: 60 }), async (ops, window) => {
        const engine = new MemoryEngine({ retentionEvents: 100_000 });
        const marks = new MemoryThreadMarks();
        const kept = createLogHistoryStore({ engine, marks, maxEvents: window });
        const fresh = () => createLogHistoryStore({ engine, marks, maxEvents: window });
        let appended = 0;
        for (const op of ops) {
          if (op.kind === 'append') {
            // Appended while the kept store answers: its reads interleave with the appends.
            await Promise.all([
              engine.append(
                'u',
                op.events.map((e) => bodyOf(e, appended++)),
              ),
              kept.listThreads('u', { limit: 2 }),
              kept.conversation('u', 't0', 3),
            ]);
          } else if (op.kind === 'delete') {
            await kept.deleteThread('u', THREADS[op.thread]!);
          } else {
            expect(await everything(kept, op.limit)).toEqual(await everything(fresh(), op.limit));
          }
        }
        expect(await everything(kept, 2)).toEqual(await everything(fresh(), 2));
        await engine.close();
      }),
      fcParams(200, 30_000),
    );
  });

  it('a thread list of a user whose fold is kept reads nothing but the head', async () => {
    const memory = new MemoryEngine({ retentionEvents: 100_000 });
    for (let i = 0; i < 300; i++) await memory.append('u', run(`t${i % 50}`, i));
    const { engine, counted } = countingEngine(memory);
    const store = createLogHistoryStore({ engine });
    const first = await store.listThreads('u', { limit: 5 });
    expect(counted.read).toBe(900);
    expect(await store.listThreads('u', { limit: 5 })).toEqual(first);
    expect(counted.read).toBe(900);
    await memory.append('u', run('t7', 300));
    expect((await store.listThreads('u', { limit: 5 })).items.map((t) => t.threadId)).toEqual(['t7', 't49', 't48', 't47', 't46']);
    expect(counted.read).toBe(903);
    await memory.close();
  });

  it('cursors: only its own encodings decode, anything else is InvalidCursorError', () => {
    expect(decodeCursor('threads', encodeCursor('threads', 42))).toBe(42);
    expect(() => decodeCursor('messages', encodeCursor('threads', 42))).toThrow(InvalidCursorError);
    fc.assert(
      fc.property(fc.string({ maxLength: 64 }), (text) => {
        try {
          const position = decodeCursor('threads', text);
          expect(Number.isSafeInteger(position) && position > 0).toBe(true);
        } catch (error) {
          expect(error).toBeInstanceOf(InvalidCursorError);
        }
      }),
      fcParams(2000, 10_000),
    );
  });
});
