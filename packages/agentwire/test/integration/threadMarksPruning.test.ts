import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import type { EventBody } from '@agentwire/protocol';
import type { LogHead } from '../../src/engine/types.js';
import { createLogHistoryStore, type LogHistoryStore } from '../../src/history/logHistoryStore.js';
import { MemoryThreadMarks, type DeadMark, type ThreadMark, type ThreadMarkStore } from '../../src/history/threadMarks.js';
import type { RedisBackend } from '../../src/redis/index.js';
import type { RunRecord } from '../../src/runs/runStore.js';
import { fcParams } from '../helpers/fastCheck.js';
import { machineRedisBackend } from '../helpers/machineRedis.js';
import { NextCallGate } from '../helpers/nextCallGate.js';
import { Waiters } from '../helpers/waitFor.js';

// The Redis thread marks (renames and deletions of the log-folded history) were one hash per
// user that nothing ever trimmed: an active user who renamed or deleted many threads grew it
// without bound, and every history request and run start read all of it. Marks that can change
// no answer are now removed (LogHistoryStore.pruneMarks, the rule in threadMarks.ts), never one
// that still hides or names something the log can show.

const USER = 'alice';
const ts = '2026-01-01T00:00:00.000Z';

function started(threadId: string, runId: string, text = `words of ${runId}`): EventBody {
  return { type: 'agent_started', run_id: runId, thread_id: threadId, ts, message_id: `m_${runId}`, text };
}

function ended(threadId: string, runId: string): EventBody {
  return { type: 'agent_completed', status: 'completed', text: `answer of ${runId}`, run_id: runId, thread_id: threadId, ts };
}

/** Marks whose removals can be awaited, and held between their judgment and their write. */
class WatchedMarks implements ThreadMarkStore {
  readonly removals = new Waiters();
  removed = 0;
  readonly #gate = new NextCallGate();

  constructor(readonly inner: ThreadMarkStore & Required<Pick<ThreadMarkStore, 'remove'>>) {}

  holdNextRemove(): { arrived: Promise<void>; release: () => void } {
    return this.#gate.holdNext();
  }

  all(userId: string): Promise<Map<string, ThreadMark>> {
    return this.inner.all(userId);
  }

  put(userId: string, threadId: string, mark: ThreadMark, expected?: ThreadMark | null): Promise<boolean | void> {
    return this.inner.put(userId, threadId, mark, expected);
  }

  async remove(userId: string, head: LogHead, dead: readonly DeadMark[]): Promise<number> {
    await this.#gate.pass();
    const removed = await this.inner.remove(userId, head, dead);
    this.removed += removed;
    this.removals.notify();
    return removed;
  }
}

/** A store whose marks are never pruned: what every answer must equal. */
class UnprunedMarks implements ThreadMarkStore {
  readonly #inner = new MemoryThreadMarks();

  all(userId: string): Promise<Map<string, ThreadMark>> {
    return this.#inner.all(userId);
  }

  put(userId: string, threadId: string, mark: ThreadMark, expected?: ThreadMark | null): Promise<boolean> {
    return this.#inner.put(userId, threadId, mark, expected);
  }
}

let backends: RedisBackend[] = [];
afterEach(async () => {
  for (const backend of backends) await backend.close();
  backends = [];
});

/** A Redis backend of its own keeping `retentionEvents` per log, and a history store on it. */
async function rig(retentionEvents: number, marksBeforePruning?: number) {
  const backend = await machineRedisBackend({ retentionEvents, retentionMs: 600_000, onError: () => {} });
  backends.push(backend);
  const marks = new WatchedMarks(backend.threadMarks);
  /** Another node's store on the same backend (its own fold cache). */
  const node = (pruneAt?: number) =>
    createLogHistoryStore({
      engine: backend.engine,
      marks,
      activeRuns: (userId) => backend.runStore.activeRuns(userId),
      ...(pruneAt !== undefined ? { marksBeforePruning: pruneAt } : {}),
    });
  const markedThreads = async () => (await backend.connection.client.hkeys(backend.connection.keys.user(USER).threadMarks)).sort();
  /** Appends `runs` completed runs of a thread of their own: the log moves on past what was before. */
  const fill = async (runs: number) => {
    const id = `fill_${Math.random().toString(36).slice(2, 10)}`;
    for (let i = 0; i < runs; i++) await backend.engine.append(USER, [started(id, `${id}_${i}`), ended(id, `${id}_${i}`)]);
  };
  /** A run the run store has active (queued or running) until `end`. */
  const activeRun = async (threadId: string, runId: string, userId = USER) => {
    const record: RunRecord = { runId, userId, threadId, messageId: `m_${runId}`, text: `words of ${runId}` };
    expect(await backend.runStore.enqueue(record, 'enqueue', 1000)).toMatch(/^(start|queued)$/);
    return {
      start: () => backend.engine.append(userId, [started(threadId, runId)], { runId, terminal: false }),
      end: async () => {
        await backend.engine.append(userId, [ended(threadId, runId)], { runId, terminal: true });
        await backend.runStore.advance(record);
      },
    };
  };
  return { backend, marks, store: node(marksBeforePruning), node, markedThreads, fill, activeRun };
}

async function listed(store: LogHistoryStore): Promise<[string, string][]> {
  return (await store.listThreads(USER, { limit: 100 })).items.map((thread) => [thread.threadId, thread.title]);
}

describe('pruning thread marks (Redis)', () => {
  it('a user’s marks shrink once the log no longer holds their threads, on a fold that finds many', async () => {
    const { store, node, marks, markedThreads, fill, backend } = await rig(20, 8);
    // Written through a node that never prunes them (fewer marks than its default threshold).
    const writer = node();
    for (let i = 0; i < 30; i++) {
      await backend.engine.append(USER, [started(`t${i}`, `r${i}`), ended(`t${i}`, `r${i}`)]);
      if (i % 2 === 0) expect(await writer.deleteThread(USER, `t${i}`)).toBe(true);
      else expect(await writer.renameThread(USER, `t${i}`, `name ${i}`)).not.toBeNull();
    }
    expect(await markedThreads()).toHaveLength(30);
    await fill(10); // the log's 20 events are now the filler's only

    expect(await listed(store)).toEqual([[expect.stringMatching(/^fill_/), expect.any(String)]]);
    await marks.removals.until(() => marks.removed > 0, 5000, 'the marks pruned');
    expect(await markedThreads()).toEqual([]);
  });

  it('keeps a deletion while a run it deleted can still append, and until its events are gone', async () => {
    const { store, markedThreads, fill, activeRun, backend } = await rig(10);
    await backend.engine.append(USER, [started('gone', 'r0', 'secret words'), ended('gone', 'r0')]);
    const queued = await activeRun('gone', 'r1');
    expect(await store.deleteThread(USER, 'gone')).toBe(true);
    await fill(6); // r0's events are trimmed; r1 has not started yet
    await store.pruneMarks(USER);
    expect(await markedThreads()).toEqual(['gone']);

    // The deleted run starts and ends after pruning was considered: still deleted.
    await queued.start();
    await queued.end();
    await store.pruneMarks(USER);
    expect(await markedThreads()).toEqual(['gone']);
    expect((await listed(store)).map(([id]) => id)).not.toContain('gone');
    expect(await store.messages(USER, 'gone', { limit: 10 })).toBeNull();

    await fill(6); // and now r1's events are gone too
    expect(await store.pruneMarks(USER)).toBe(1);
    expect(await markedThreads()).toEqual([]);
    expect(await store.messages(USER, 'gone', { limit: 10 })).toBeNull();
  });

  it('keeps a rename while its thread shows, and removes it once the thread has no event left', async () => {
    const { store, markedThreads, fill, backend } = await rig(10);
    await backend.engine.append(USER, [started('old', 'r0'), ended('old', 'r0'), started('named', 'r1', 'first words'), ended('named', 'r1')]);
    expect(await store.renameThread(USER, 'old', 'old name')).not.toBeNull();
    await fill(4); // 'old' is trimmed, 'named' is not
    expect(await store.renameThread(USER, 'named', 'my name')).not.toBeNull();
    expect(await store.pruneMarks(USER)).toBe(1);
    expect(await markedThreads()).toEqual(['named']);
    expect(await listed(store)).toContainEqual(['named', 'my name']);

    await fill(5);
    expect(await store.pruneMarks(USER)).toBe(1);
    expect(await markedThreads()).toEqual([]);
  });

  it('a node folding fewer events than the log keeps prunes nothing another node still shows', async () => {
    const { node, markedThreads, fill, backend } = await rig(20);
    const narrow = createLogHistoryStore({
      engine: backend.engine,
      marks: backend.threadMarks,
      activeRuns: (userId) => backend.runStore.activeRuns(userId),
      maxEvents: 6,
    });
    const wide = node();
    await backend.engine.append(USER, [started('gone', 'r0', 'secret words'), ended('gone', 'r0')]);
    await backend.engine.append(USER, [started('named', 'r1'), ended('named', 'r1')]);
    expect(await wide.deleteThread(USER, 'gone')).toBe(true);
    expect(await wide.renameThread(USER, 'named', 'my name')).not.toBeNull();
    await fill(4); // both threads are below the narrow fold, still in the log
    expect(await narrow.pruneMarks(USER)).toBe(0);
    expect(await markedThreads()).toEqual(['gone', 'named']);
    expect(await listed(wide)).toContainEqual(['named', 'my name']);
    expect(await wide.messages(USER, 'gone', { limit: 10 })).toBeNull();
  });

  it('never removes a mark written, or a thread resumed, between its judgment and its removal', async () => {
    const { store, node, marks, markedThreads, fill, backend } = await rig(10);
    const other = node(); // another node, writing while this one prunes
    await backend.engine.append(USER, [started('deleted', 'r0'), ended('deleted', 'r0'), started('renamed', 'r1'), ended('renamed', 'r1')]);
    expect(await store.deleteThread(USER, 'deleted')).toBe(true);
    expect(await store.renameThread(USER, 'renamed', 'kept name')).not.toBeNull();
    await fill(5); // both threads trimmed: both marks are dead

    const held = marks.holdNextRemove();
    const pruning = store.pruneMarks(USER);
    await held.arrived;
    // Both threads are resumed, and the deleted one deleted again (its mark rewritten).
    await backend.engine.append(USER, [started('deleted', 'r2', 'new secret'), ended('deleted', 'r2')]);
    await backend.engine.append(USER, [started('renamed', 'r3', 'resumed'), ended('renamed', 'r3')]);
    expect(await other.deleteThread(USER, 'deleted')).toBe(true);
    const rewritten = (await marks.all(USER)).get('deleted');
    held.release();
    expect(await pruning).toBe(0);

    expect(await markedThreads()).toEqual(['deleted', 'renamed']);
    expect((await marks.all(USER)).get('deleted')).toEqual(rewritten);
    expect(await listed(other)).toContainEqual(['renamed', 'kept name']);
    expect(await other.messages(USER, 'deleted', { limit: 10 })).toBeNull();
  });

  it('close() waits for a pruning under way, so none reaches Redis after the store was closed', async () => {
    // A background pruning went on past close(): the gateway's owner then closed the Redis
    // connection under it, and every shutdown during one logged a 'prune thread marks' fault.
    const { marks, node, fill, backend } = await rig(10);
    const store = node(1);
    await backend.engine.append(USER, [started('old', 'r0'), ended('old', 'r0')]);
    expect(await store.renameThread(USER, 'old', 'old name')).not.toBeNull();
    await fill(5); // 'old' is trimmed: its rename is dead
    const held = marks.holdNextRemove();
    await store.listThreads(USER, { limit: 10 }); // finds a mark: prunes in the background
    await held.arrived;
    const closing = store.close();
    held.release();
    await closing;
    expect(marks.removed).toBe(1);
  });

  it('removes marks of an earlier epoch of the log (it was lost: they hide nothing)', async () => {
    const { store, markedThreads, backend } = await rig(10);
    await backend.engine.append(USER, [started('t', 'r0'), ended('t', 'r0')]);
    expect(await store.deleteThread(USER, 't')).toBe(true);
    const keys = backend.connection.keys.user(USER);
    await backend.connection.client.del(keys.meta, keys.log);
    await backend.engine.append(USER, [started('t', 'r1', 'after the loss'), ended('t', 'r1')]);
    expect(await store.pruneMarks(USER)).toBe(1);
    expect(await markedThreads()).toEqual([]);
    expect(await listed(store)).toEqual([['t', 'after the loss']]);
  });

  it('answers as if nothing were pruned, whatever the order of appends, deletions, renames and prunes (property)', async () => {
    const { backend, activeRun } = await rig(6);
    const user = { n: 0 };
    const op = fc.oneof(
      // A run is queued, then started, then ended: `stage` is how far it goes at once.
      { weight: 3, arbitrary: fc.record({ kind: fc.constant('run' as const), thread: fc.nat(), stage: fc.constantFrom(0, 1, 2) }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('advance' as const), run: fc.nat() }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), thread: fc.nat() }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('rename' as const), thread: fc.nat(), title: fc.constantFrom('a', 'b') }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('fill' as const), runs: fc.integer({ min: 1, max: 3 }) }) },
      // `overlap`: the pruning runs alongside the next step (read, judged and removed meanwhile).
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('prune' as const), overlap: fc.boolean() }) },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 10, maxLength: 40 }), async (ops) => {
        // A user of its own per case, on the same Redis backend.
        const userId = `u${user.n++}`;
        const unpruned = new UnprunedMarks();
        const pruned = createLogHistoryStore({ engine: backend.engine, marks: backend.threadMarks, activeRuns: (id) => backend.runStore.activeRuns(id) });
        const reference = createLogHistoryStore({ engine: backend.engine, marks: unpruned, activeRuns: (id) => backend.runStore.activeRuns(id) });
        /** Runs not ended, with what they do next. */
        const pending: (() => Promise<unknown>)[][] = [];
        let made = 0;
        const threadsUsed = new Set<string>();
        const overlapping: Promise<number>[] = [];
        const answers = async (store: LogHistoryStore) => {
          const threads = (await store.listThreads(userId, { limit: 100 })).items.map((t) => [t.threadId, t.title, t.lastRun?.status]);
          const messages = await Promise.all([...threadsUsed].sort().map((id) => store.messages(userId, id, { limit: 100 })));
          return { threads, messages: messages.map((page) => page?.items.map((m) => m.text) ?? null) };
        };
        for (const step of ops) {
          if (step.kind === 'run') {
            // A run in a thread shown now, in a deleted thread whose mark names no title, or in
            // a new one: a renamed thread whose events are all gone starts afresh if resumed, so
            // it is not resumed here (that is the rule, not a difference).
            const shown = (await reference.listThreads(userId, { limit: 100 })).items.map((t) => t.threadId);
            const deleted = [...(await unpruned.all(userId))].filter(([, m]) => m.deletedThrough !== undefined && m.title === undefined).map(([id]) => id);
            const candidates = [...new Set([...shown, ...deleted]), `t${made}`];
            const threadId = candidates[step.thread % candidates.length]!;
            threadsUsed.add(threadId);
            const run = await activeRun(threadId, `${userId}_r${made++}`, userId);
            const stages = [run.start, run.end];
            for (let stage = 0; stage < step.stage; stage++) await stages.shift()!();
            if (stages.length > 0) pending.push(stages);
          } else if (step.kind === 'advance') {
            const stages = pending[step.run % Math.max(1, pending.length)];
            if (stages) await stages.shift()!();
            if (stages?.length === 0) pending.splice(pending.indexOf(stages), 1);
          } else if (step.kind === 'delete' || step.kind === 'rename') {
            const shown = (await reference.listThreads(userId, { limit: 100 })).items.map((t) => t.threadId);
            if (shown.length === 0) continue;
            const threadId = shown[step.thread % shown.length]!;
            if (step.kind === 'delete') {
              expect(await pruned.deleteThread(userId, threadId)).toBe(await reference.deleteThread(userId, threadId));
            } else {
              expect(await pruned.renameThread(userId, threadId, step.title)).toEqual(await reference.renameThread(userId, threadId, step.title));
            }
          } else if (step.kind === 'fill') {
            for (let i = 0; i < step.runs; i++) {
              const run = await activeRun(`f${made}`, `${userId}_r${made++}`, userId);
              await run.start();
              await run.end();
            }
          } else {
            overlapping.push(pruned.pruneMarks(userId));
            if (step.overlap) continue;
          }
          await Promise.all(overlapping.splice(0));
          expect(await answers(pruned)).toEqual(await answers(reference));
        }
        await Promise.all(overlapping);
        for (const stages of pending) for (const stage of stages) await stage();
      }),
      fcParams(100, 60_000),
    );
  }, 90_000);
});
