import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { EventBody } from '@agentwire/protocol';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import { decodeCursor, encodeCursor } from '../../src/history/cursor.js';
import { createLogHistoryStore } from '../../src/history/logHistoryStore.js';
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

  it('reads the log back only as far as the turns an agent gets', async () => {
    const memory = new MemoryEngine({ retentionEvents: 100_000 });
    for (let i = 0; i < 3000; i++) await memory.append('u', run('t', i));
    const { engine, counted } = countingEngine(memory);
    const store = createLogHistoryStore({ engine });
    const turns = await store.conversation('u', 't', 4);
    expect(turns.map((t) => t.text)).toEqual(['q2998', 'a2998', 'q2999', 'a2999']);
    expect(counted.read).toBeLessThanOrEqual(1000);
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
