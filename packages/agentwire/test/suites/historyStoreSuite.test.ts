/**
 * The HistoryStore contract (PROTOCOL.md section 14), run against both history stores on the
 * same appended events: the one folded from the log and the PostgreSQL archive (one fresh
 * database on the machine's PostgreSQL per run). Store-specific behaviour (archive holes,
 * outages, fold bounds) is tested beside each store.
 */
import type { EventBody } from '@agentwire/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import { createLogHistoryStore } from '../../src/history/logHistoryStore.js';
import { InvalidCursorError, type HistoryStore } from '../../src/history/types.js';
import { PostgresHistoryStore } from '../../src/postgres/index.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { Waiters } from '../helpers/waitFor.js';

interface StoreUnderTest {
  readonly store: HistoryStore;
  /** Resolves once every entry handed to `record` is readable. */
  readonly settle: () => Promise<void>;
}

let database: { url: string; drop: () => Promise<void> } | undefined;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database?.drop();
});

const implementations: [string, (engine: MemoryEngine) => Promise<StoreUnderTest>][] = [
  [
    'LogHistoryStore',
    async (engine) => {
      const store = createLogHistoryStore({ engine });
      return { store, settle: async () => {} };
    },
  ],
  [
    'PostgresHistoryStore',
    async (engine) => {
      const waiters = new Waiters();
      const store = new PostgresHistoryStore({ url: database!.url, engine, batchEvents: 50, holeGraceMs: 20, onChange: () => waiters.notify() });
      await store.ready();
      await waiters.until(() => store.available, 5000, 'store available');
      return { store, settle: () => store.idle() };
    },
  ],
];

let clockTick = Date.parse('2026-12-04T10:00:00.000Z');
const ts = () => new Date(clockTick++).toISOString();

/** A run's events: start, thinking, a tool call, a streamed answer, and its end. */
function runEvents(threadId: string, runId: string, text: string, answer: string[], end: 'completed' | 'cancelled' | 'error' = 'completed'): EventBody[] {
  const base = { run_id: runId, thread_id: threadId };
  const last: EventBody =
    end === 'error'
      ? { ...base, ts: ts(), type: 'agent_error', code: 'agent_failed', message: 'it broke' }
      : { ...base, ts: ts(), type: 'agent_completed', status: end, text: answer.join('') };
  return [
    { ...base, ts: ts(), type: 'agent_started', message_id: `m-${runId}`, text },
    { ...base, ts: ts(), type: 'agent_thinking_delta', text: 'let me ' },
    { ...base, ts: ts(), type: 'agent_thinking_delta', text: 'count' },
    { ...base, ts: ts(), type: 'tool_executing', call_id: `c-${runId}`, tool: 'word_count', args: { text } },
    { ...base, ts: ts(), type: 'tool_completed', call_id: `c-${runId}`, tool: 'word_count', ok: true, result: 2 },
    ...answer.map((part) => ({ ...base, ts: ts(), type: 'agent_text_delta' as const, text: part })),
    last,
  ];
}

let userCounter = 0;

describe.each(implementations)('HistoryStore contract: %s', (_name, make) => {
  const opened: { store: HistoryStore; engine: MemoryEngine }[] = [];
  afterEach(async () => {
    for (const { store, engine } of opened.splice(0)) {
      await store.close();
      await engine.close();
    }
  });

  /** A store over a fresh log with two users' threads; user names are new per test (the database is shared). */
  async function history() {
    const engine = new MemoryEngine();
    const { store, settle } = await make(engine);
    opened.push({ store, engine });
    const alice = `alice${++userCounter}`;
    const bob = `bob${userCounter}`;
    const append = async (userId: string, events: EventBody[]) => store.record(userId, await engine.append(userId, events));
    await append(alice, runEvents('t1', `r1-${alice}`, 'hello there', ['Two ', 'words.']));
    await append(alice, runEvents('t2', `r2-${alice}`, 'x'.repeat(100), ['ok'], 'error'));
    await append(alice, runEvents('t1', `r3-${alice}`, 'and again', ['Two ', 'more.'], 'cancelled'));
    await append(bob, runEvents('t1', `rb-${bob}`, 'bob here', ['hi']));
    await settle();
    return { store, engine, settle, alice, bob };
  }

  it('lists a user’s threads, most recently updated first, with titles and last runs, in pages', async () => {
    const { store, alice, bob } = await history();
    const threads = await store.listThreads(alice, { limit: 20 });
    expect(threads.nextCursor).toBeNull();
    expect(threads.items.map((t) => t.threadId)).toEqual(['t1', 't2']);
    expect(threads.items[0]).toMatchObject({ title: 'hello there', lastRun: { runId: `r3-${alice}`, status: 'cancelled' } });
    expect(threads.items[1]).toMatchObject({ title: 'x'.repeat(80), lastRun: { runId: `r2-${alice}`, status: 'error' } });
    expect(Date.parse(threads.items[0]!.updatedAt)).toBeGreaterThan(Date.parse(threads.items[1]!.updatedAt));
    const firstPage = await store.listThreads(alice, { limit: 1 });
    expect(firstPage.items.map((t) => t.threadId)).toEqual(['t1']);
    const secondPage = await store.listThreads(alice, { limit: 1, cursor: firstPage.nextCursor! });
    expect(secondPage).toMatchObject({ items: [{ threadId: 't2' }], nextCursor: null });
    expect((await store.listThreads(bob, { limit: 20 })).items).toMatchObject([
      { threadId: 't1', title: 'bob here', lastRun: { runId: `rb-${bob}`, status: 'completed' } },
    ]);
    expect((await store.listThreads('nobody', { limit: 20 })).items).toEqual([]);
  });

  it('answers a thread’s messages oldest first, with the log position, and pages to older ones', async () => {
    const { store, engine, alice, bob } = await history();
    const page = await store.messages(alice, 't1', { limit: 20 });
    expect(page).not.toBeNull();
    const head = await engine.head(alice);
    expect(page).toMatchObject({ epoch: head.epoch, lastSeq: head.lastSeq, nextCursor: null });
    expect(page!.items.map((m) => [m.role, m.runId, m.text])).toEqual([
      ['user', `r1-${alice}`, 'hello there'],
      ['assistant', `r1-${alice}`, 'Two words.'],
      ['user', `r3-${alice}`, 'and again'],
      ['assistant', `r3-${alice}`, 'Two more.'],
    ]);
    expect(page!.items[1]).toMatchObject({
      status: 'completed',
      thinking: ['let me count'],
      toolCalls: [{ callId: `c-r1-${alice}`, tool: 'word_count', args: { text: 'hello there' }, ok: true, result: 2 }],
      error: null,
    });
    expect(page!.items[3]).toMatchObject({ status: 'cancelled' });
    const failed = await store.messages(alice, 't2', { limit: 20 });
    expect(failed!.items[1]).toMatchObject({ role: 'assistant', status: 'error', error: { code: 'agent_failed', message: 'it broke' } });

    const newest = await store.messages(alice, 't1', { limit: 2 });
    expect(newest!.items.map((m) => m.text)).toEqual(['and again', 'Two more.']);
    const older = await store.messages(alice, 't1', { limit: 2, cursor: newest!.nextCursor! });
    expect(older!.items.map((m) => m.text)).toEqual(['hello there', 'Two words.']);
    expect(older!.nextCursor).toBeNull();

    // Another user's thread is absent exactly like a missing one.
    expect(await store.messages(alice, 'missing', { limit: 20 })).toBeNull();
    expect(await store.messages(bob, 't2', { limit: 20 })).toBeNull();
    await expect(store.messages(alice, 't1', { limit: 20, cursor: 'not-a-cursor' })).rejects.toBeInstanceOf(InvalidCursorError);
  });

  it('pages through a thread with any page size, every message once, and no empty page', async () => {
    const { store, engine, settle, alice } = await history();
    const runs = Array.from({ length: 7 }, (_, i) => runEvents('long', `rl${i}-${alice}`, `q${i}`, [`a${i}`]));
    for (const events of runs) store.record(alice, await engine.append(alice, events));
    await settle();
    const all = (await store.messages(alice, 'long', { limit: 100 }))!.items.map((m) => m.text);
    expect(all).toEqual(Array.from({ length: 7 }, (_, i) => [`q${i}`, `a${i}`]).flat());
    for (let limit = 1; limit <= 6; limit++) {
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = (await store.messages(alice, 'long', { limit, ...(cursor ? { cursor } : {}) }))!;
        expect(page.items.length, `limit ${limit}`).toBeGreaterThan(0);
        expect(page.items.length).toBeLessThanOrEqual(limit);
        seen.unshift(...page.items.map((m) => m.text));
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      expect(seen, `limit ${limit}`).toEqual(all);
    }
  });

  it('gives agents the conversation so far: the last turns before a run, oldest first', async () => {
    const { store, alice } = await history();
    const all = await store.conversation(alice, 't1', 10);
    expect(all.map((turn) => [turn.role, turn.text])).toEqual([
      ['user', 'hello there'],
      ['assistant', 'Two words.'],
      ['user', 'and again'],
      ['assistant', 'Two more.'],
    ]);
    expect(all[1]!.toolCalls).toMatchObject([{ tool: 'word_count', ok: true, result: 2 }]);
    expect((await store.conversation(alice, 't1', 10, `r3-${alice}`)).map((turn) => turn.text)).toEqual(['hello there', 'Two words.']);
    expect((await store.conversation(alice, 't1', 1)).map((turn) => turn.text)).toEqual(['Two more.']);
    expect(await store.conversation(alice, 'missing', 10)).toEqual([]);
  });

  it('renames and deletes a user’s threads, and nobody else’s', async () => {
    const { store, alice, bob } = await history();
    expect(await store.renameThread(alice, 't1', 'Counting')).toMatchObject({ threadId: 't1', title: 'Counting' });
    expect((await store.listThreads(alice, { limit: 20 })).items.map((t) => t.title)).toEqual(['Counting', 'x'.repeat(80)]);
    expect(await store.renameThread(alice, 'missing', 'x')).toBeNull();
    expect(await store.renameThread(bob, 't2', 'x')).toBeNull();
    expect((await store.listThreads(bob, { limit: 20 })).items.map((t) => t.title)).toEqual(['bob here']);

    expect(await store.deleteThread(bob, 't2')).toBe(false);
    expect(await store.deleteThread(alice, 't1')).toBe(true);
    expect(await store.deleteThread(alice, 't1')).toBe(false);
    expect((await store.listThreads(alice, { limit: 20 })).items.map((t) => t.threadId)).toEqual(['t2']);
    expect(await store.messages(alice, 't1', { limit: 20 })).toBeNull();
    // Bob's thread of the same name is his own.
    expect((await store.messages(bob, 't1', { limit: 20 }))!.items).toHaveLength(2);
  });
});
