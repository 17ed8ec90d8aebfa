import { afterEach, describe, expect, it, vi } from 'vitest';
import type { EventBody } from '@agentwire/protocol';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import { createLogHistoryStore } from '../../src/history/logHistoryStore.js';
import { MemoryThreadMarks, type ThreadMarkStore } from '../../src/history/threadMarks.js';
import type { HistoryStore } from '../../src/history/types.js';
import { ManualClock } from '../helpers/manualClock.js';
import { TEST_SECRET } from '../helpers/gateway.js';
import { createGateway } from '../../src/transport/index.js';

const DAY_MS = 86_400_000;

const ts = '2026-01-01T00:00:00.000Z';

function run(threadId: string, text: string): EventBody[] {
  const base = { run_id: `run_${threadId}_${text}`, thread_id: threadId, ts };
  return [
    { ...base, type: 'agent_started', message_id: `m_${threadId}_${text}`, text },
    { ...base, type: 'agent_completed', status: 'completed', text: `echo ${text}` },
  ];
}

/**
 * The in-memory marks (renames and deletions of the log-folded history) were bounded to the 10 000
 * users who wrote one last: the 10 001st user to rename or delete a thread dropped the marks of
 * the user who wrote least recently, whose deleted threads came back (their events were still in
 * the log) and renamed ones lost their names. One user's marks are no other user's to push out;
 * they go when the user has not used them for the retention age, as the log forgets an idle user.
 */
describe('in-memory thread marks', () => {
  it('other users’ renames and deletions never undo a user’s deletion or rename', async () => {
    const engine = new MemoryEngine();
    const store = createLogHistoryStore({ engine });
    await engine.append('alice', [...run('gone', 'deleted words'), ...run('kept', 'first words')]);
    expect(await store.deleteThread('alice', 'gone')).toBe(true);
    expect(await store.renameThread('alice', 'kept', 'my name')).not.toBeNull();
    for (let i = 0; i < 10_001; i++) {
      const user = `other-${i}`;
      await engine.append(user, run('t', 'x'));
      await store.renameThread(user, 't', 'theirs');
    }
    expect((await store.listThreads('alice', { limit: 10 })).items.map((t) => [t.threadId, t.title])).toEqual([['kept', 'my name']]);
    expect(await store.messages('alice', 'gone', { limit: 10 })).toBeNull();
    await engine.close();
  }, 60_000);

  it('a user’s own later deletions do not push out a deletion whose thread the log still holds', async () => {
    // Bounded at 1000 marks per user, the 1001st deletion dropped the first one while the log
    // (10 000 events by default) still held its thread, which came back. A mark matters while
    // the log holds an event of its thread: the bound is the log's, in events.
    const engine = new MemoryEngine();
    const store = createLogHistoryStore({ engine });
    const threads = Array.from({ length: 1001 }, (_, index) => `t${index}`);
    for (const threadId of threads) await engine.append('alice', run(threadId, 'words'));
    for (const threadId of threads) expect(await store.deleteThread('alice', threadId)).toBe(true);
    expect((await store.listThreads('alice', { limit: 10 })).items).toEqual([]);
    expect(await store.messages('alice', 't0', { limit: 10 })).toBeNull();
    await engine.close();
  }, 60_000);

  it('a user’s marks go once the user has not read or written them for the retention age', async () => {
    const clock = new ManualClock(1_000_000);
    const marks = new MemoryThreadMarks({ retentionMs: 1000, clock });
    await marks.put('idle', 't', { epoch: 'e', title: 'x' });
    await marks.put('busy', 't', { epoch: 'e', title: 'y' });
    await clock.advance(600);
    expect((await marks.all('busy')).size).toBe(1);
    await clock.advance(600);
    // Past the age for `idle` (written 1200 ms ago), not for `busy` (read 600 ms ago).
    await marks.put('other', 't', { epoch: 'e', title: 'z' });
    expect((await marks.all('idle')).size).toBe(0);
    expect((await marks.all('busy')).get('t')).toEqual({ epoch: 'e', title: 'y' });
  });
});

/**
 * A deletion's marks must live as long as the log holds any event they hide. A run still going
 * at the deletion appends its end afterwards; the in-memory marks were forgotten by the age of
 * their last read or write, before the log evicted that later event, and the thread came back.
 */
describe('in-memory thread marks and the log', () => {
  /**
   * Alice's thread `gone`, deleted while its run was going (a retention age of 1000 ms for the
   * log and the marks); `end()` appends the run's end `afterMs` later, as the gateway does
   * (telling its history store of the append: onAppended), and leaves the clock there.
   */
  async function deletedWhileRunning() {
    const clock = new ManualClock(1_000_000);
    const engine = new MemoryEngine({ clock, retentionMs: 1000 });
    const store = createLogHistoryStore({ engine, marks: new MemoryThreadMarks({ clock, retentionMs: 1000 }) });
    const [started, completed] = run('gone', 'words');
    await engine.append('alice', [started!]);
    expect(await store.deleteThread('alice', 'gone')).toBe(true);
    const history: HistoryStore = store;
    const end = async (afterMs: number) => {
      await clock.advance(afterMs);
      history.record('alice', await engine.append('alice', [completed!]));
    };
    const expectGone = async () => {
      expect((await store.listThreads('alice', { limit: 10 })).items).toEqual([]);
      expect(await store.messages('alice', 'gone', { limit: 10 })).toBeNull();
      await engine.close();
    };
    return { clock, engine, end, expectGone };
  }

  it('outlive the deleted thread’s last event in the log, appended after the deletion', async () => {
    const { clock, engine, end, expectGone } = await deletedWhileRunning();
    await end(500);
    await clock.advance(600);
    expect(await engine.read('alice', 1, 2)).toHaveLength(1);
    await expectGone();
  });

  it('outlive it also at exactly the retention age, when the log still holds the event', async () => {
    // The log evicts an event once it is older than the age (strictly), so at the age itself
    // it still holds it: the marks went 1 ms too early, and the deleted thread came back.
    const { clock, engine, end, expectGone } = await deletedWhileRunning();
    await end(0);
    await clock.advance(1000);
    expect(await engine.read('alice', 2, 2)).toHaveLength(1);
    await expectGone();
  });
});

/**
 * A gateway's default marks (no `threadMarks` given) were kept for 24 h of idleness by the
 * system clock, whatever the engine's retention age and the gateway's clock: with an engine that
 * keeps a week, a user idle for two days saw deleted threads again.
 */
describe('a gateway’s default thread marks', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('live as long as its engine keeps an idle user’s log, on the gateway’s clock', async () => {
    const clock = new ManualClock(1_000_000);
    const engine = new MemoryEngine({ clock, retentionMs: 7 * DAY_MS });
    const gateway = createGateway({ auth: { secret: TEST_SECRET }, engine, clock });
    await engine.append('alice', [...run('gone', 'deleted words'), ...run('kept', 'words')]);
    expect(await gateway.history.deleteThread('alice', 'gone')).toBe(true);
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 2 * DAY_MS);
    await clock.advance(2 * DAY_MS);
    expect((await gateway.history.listThreads('alice', { limit: 10 })).items.map((t) => t.threadId)).toEqual(['kept']);
    await gateway.shutdown();
  });

  it('keep as many marks per user as the engine keeps events (MemoryThreadMarks.forLog), not 10 000 whatever the engine', async () => {
    // An embedder's engine keeping more than 10 000 events per user had its deletions pushed out
    // at 10 000 marks while the log still held their threads. Seen here with a small engine.
    const clock = new ManualClock(1_000_000);
    const marks = MemoryThreadMarks.forLog(new MemoryEngine({ clock, retentionEvents: 2, retentionMs: 1000 }), clock);
    for (const threadId of ['a', 'b', 'c']) await marks.put('alice', threadId, { epoch: 'e', deletedThrough: 1 });
    expect([...(await marks.all('alice')).keys()]).toEqual(['b', 'c']);
    await clock.advance(1001);
    await marks.put('bob', 't', { epoch: 'e', title: 'x' });
    expect((await marks.all('alice')).size).toBe(0);
  });
});

/**
 * Pruning with the in-memory marks: a deletion goes once the log holds nothing it hides, as with
 * Redis; a rename waits for the per-user bound (these marks cannot see whether the log moved on
 * since the rename was judged, and a resumed thread would lose its name).
 */
describe('pruning in-memory thread marks', () => {
  it('removes a deletion whose events the log no longer holds, and keeps the rest', async () => {
    const engine = new MemoryEngine({ retentionEvents: 4 });
    const marks = new MemoryThreadMarks();
    const store = createLogHistoryStore({ engine, marks, activeRuns: async () => [] });
    await engine.append('alice', run('gone', 'secret'));
    expect(await store.deleteThread('alice', 'gone')).toBe(true);
    await engine.append('alice', run('named', 'words'));
    expect(await store.renameThread('alice', 'named', 'my name')).not.toBeNull();
    await engine.append('alice', run('shown', 'words'));
    await engine.append('alice', run('deleted later', 'words'));
    expect(await store.deleteThread('alice', 'deleted later')).toBe(true);

    expect(await store.pruneMarks('alice')).toBe(1);
    expect([...(await marks.all('alice')).keys()]).toEqual(['named', 'deleted later']);
    expect((await store.listThreads('alice', { limit: 10 })).items.map((t) => t.threadId)).toEqual(['shown']);
    await engine.close();
  });

  it('prunes in the background once a fold finds many marks; a failure is a fault, not the request’s', async () => {
    const engine = new MemoryEngine();
    const marks = new MemoryThreadMarks();
    const failing: ThreadMarkStore = {
      all: (userId) => marks.all(userId),
      put: (userId, threadId, mark, expected) => marks.put(userId, threadId, mark, expected),
      remove: () => Promise.reject(new Error('marks unreachable')),
    };
    let fault!: (fault: [unknown, string]) => void;
    const faulted = new Promise<[unknown, string]>((resolve) => (fault = resolve));
    const store = createLogHistoryStore({ engine, marks: failing, marksBeforePruning: 2, onFault: (error, context) => fault([error, context]) });
    await engine.append('alice', [...run('a', 'words'), ...run('b', 'words')]);
    expect(await store.renameThread('alice', 'a', 'first')).not.toBeNull();
    expect(await store.renameThread('alice', 'b', 'second')).not.toBeNull();
    expect((await store.listThreads('alice', { limit: 10 })).items.map((t) => t.title)).toEqual(['second', 'first']);
    const [error, context] = await faulted;
    expect([(error as Error).message, context]).toEqual(['marks unreachable', 'prune thread marks']);
    await engine.close();
  });
});
