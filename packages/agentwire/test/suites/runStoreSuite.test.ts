/**
 * The RunStore contract, run against every run store: enqueue outcomes, message-id claims, the
 * per-thread FIFO, cancel lookups, active runs and the per-user cap. Store-specific behaviour
 * (claim retention, leases and lost runs, Redis outages) is tested beside each store.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LocalRunStore, type RunRecord, type RunStore } from '../../src/runs/runStore.js';
import { machineRedisBackend } from '../helpers/machineRedis.js';
import { RedisClusterServer } from '../helpers/redisCluster.js';

interface StoreUnderTest {
  readonly store: RunStore;
  close(): Promise<void>;
}

interface StoreKind {
  readonly make: () => Promise<StoreUnderTest>;
  /**
   * Shared by several nodes, with replies that can be lost (Redis): a lost enqueue is settled by
   * a replay-only enqueue, and a repeated advance hands the same run out again. A node-local
   * store's replies are never lost, so it answers a repeated advance with null.
   */
  readonly shared: boolean;
}

/** A 3-master Redis Cluster of this file's own: users and run ids spread over its slots. */
let cluster: RedisClusterServer | undefined;
beforeAll(async () => {
  cluster = await RedisClusterServer.start();
});
afterAll(async () => {
  await cluster?.stop();
});

/** The Redis run store on the machine's Redis, or on the file's cluster. */
function redisRunStore(onCluster: boolean): () => Promise<StoreUnderTest> {
  return async () => {
    const backend = await machineRedisBackend({}, onCluster ? cluster : undefined);
    return {
      store: backend.runStore,
      close: async () => {
        await backend.runStore.close();
        await backend.close();
      },
    };
  };
}

const implementations: [string, StoreKind][] = [
  [
    'LocalRunStore',
    {
      shared: false,
      make: async () => {
        const store = new LocalRunStore();
        return { store, close: () => store.close() };
      },
    },
  ],
  ['RedisRunStore', { shared: true, make: redisRunStore(false) }],
  ['RedisRunStore on a Redis Cluster', { shared: true, make: redisRunStore(true) }],
];

function record(n: number, messageId = `m${n}`, threadId = `t${n}`, userId = 'u1'): RunRecord {
  return { runId: `run_${n}`, userId, threadId, messageId, text: 'x' };
}

describe.each(implementations)('RunStore contract: %s', (_name, { make, shared }) => {
  const opened: StoreUnderTest[] = [];
  afterEach(async () => {
    for (const each of opened.splice(0)) await each.close();
  });
  async function runStore(): Promise<RunStore> {
    const made = await make();
    opened.push(made);
    return made.store;
  }

  it('a claimed id answers duplicate with its run; a refused run leaves its id free; a replay-only probe creates nothing', async () => {
    const store = await runStore();
    expect(await store.enqueue(record(1), 'reject', 32)).toBe('start');
    expect(await store.enqueue(record(2, 'm1', 't2'), 'reject', 32)).toEqual({ duplicate: { runId: 'run_1', threadId: 't1' } });
    // Busy (reject policy) and over the cap: nothing created, the ids stay free.
    expect(await store.enqueue(record(3, 'm3', 't1'), 'reject', 32)).toBe('busy');
    expect(await store.enqueue(record(4, 'm4', 't4'), 'reject', 32, { maxActive: 1 })).toBe('too_many_runs');
    expect(await store.enqueue(record(5, 'm3', 't5'), 'reject', 32)).toBe('start');
    expect(await store.enqueue(record(6, 'm4', 't6'), 'reject', 32)).toBe('start');
    expect(await store.enqueue(record(7, 'm7'), 'enqueue', 32, { replayOnly: true })).toBe('absent');
    expect(await store.enqueue(record(7, 'm7'), 'enqueue', 32)).toBe('start');
    expect(await store.enqueue(record(8, 'm7'), 'enqueue', 32, { replayOnly: true })).toEqual({ duplicate: { runId: 'run_7', threadId: 't7' } });
    // Claims are per user.
    expect(await store.enqueue(record(9, 'm1', 't1', 'u2'), 'reject', 32)).toBe('start');
  });

  it('starts the first run of a thread, queues the next ones up to the bound, and refuses beyond it or under the reject policy', async () => {
    const store = await runStore();
    expect(await store.enqueue(record(1, 'm1', 't1'), 'enqueue', 2)).toBe('start');
    expect(await store.enqueue(record(2, 'm2', 't1'), 'enqueue', 2)).toBe('queued');
    expect(await store.enqueue(record(3, 'm3', 't1'), 'enqueue', 2)).toBe('queued');
    expect(await store.enqueue(record(4, 'm4', 't1'), 'enqueue', 2)).toBe('busy');
    expect(await store.enqueue(record(5, 'm5', 't1'), 'reject', 32)).toBe('busy');
    // Other threads, and the same thread name of another user, are free.
    expect(await store.enqueue(record(6, 'm6', 't2'), 'reject', 32)).toBe('start');
    expect(await store.enqueue(record(7, 'm7', 't1', 'u2'), 'reject', 32)).toBe('start');
  });

  if (shared)
    it('settles a replay-only enqueue with the outcome of the attempt it repeats, or absent', async () => {
      const store = await runStore();
      expect(await store.enqueue(record(1, 'm1', 't1'), 'enqueue', 32)).toBe('start');
      expect(await store.enqueue(record(2, 'm2', 't1'), 'enqueue', 32)).toBe('queued');
      expect(await store.enqueue(record(1, 'm1', 't1'), 'enqueue', 32, { replayOnly: true })).toBe('start');
      expect(await store.enqueue(record(2, 'm2', 't1'), 'enqueue', 32, { replayOnly: true })).toBe('queued');
      expect(await store.enqueue(record(3, 'm3', 't1'), 'enqueue', 32, { replayOnly: true })).toBe('absent');
      expect(await store.activeRuns?.('u1')).toHaveLength(2);
    });

  it('hands the runs of a thread out in FIFO order, once each', async () => {
    const store = await runStore();
    const runs = [1, 2, 3].map((n) => record(n, `m${n}`, 't1'));
    expect(await store.enqueue(runs[0]!, 'enqueue', 32)).toBe('start');
    expect(await store.enqueue(runs[1]!, 'enqueue', 32)).toBe('queued');
    expect(await store.enqueue(runs[2]!, 'enqueue', 32)).toBe('queued');
    expect(await store.advance(runs[0]!)).toEqual({ record: runs[1], cancelRequested: false });
    // A second advance of the same run hands no other run out.
    expect(await store.advance(runs[0]!)).toEqual(shared ? { record: runs[1], cancelRequested: false } : null);
    expect(await store.advance(runs[1]!)).toEqual({ record: runs[2], cancelRequested: false });
    expect(await store.advance(runs[2]!)).toBeNull();
    // The thread is free again.
    expect(await store.enqueue(record(4, 'm4', 't1'), 'reject', 32)).toBe('start');
  });

  it('finds runs to cancel: running (and its owner), queued (marked), another user’s (forbidden), unknown', async () => {
    const store = await runStore();
    const running = record(1, 'm1', 't1');
    const queued = record(2, 'm2', 't1');
    expect(await store.enqueue(running, 'enqueue', 32)).toBe('start');
    expect(await store.enqueue(queued, 'enqueue', 32)).toBe('queued');
    expect(await store.requestCancel('u1', 'run_1')).toEqual({ kind: 'running', threadId: 't1', owner: store.nodeId });
    expect(await store.requestCancel('u1', 'run_2')).toEqual({ kind: 'queued', threadId: 't1' });
    expect(await store.requestCancel('u2', 'run_1')).toEqual({ kind: 'forbidden' });
    expect(await store.requestCancel('u2', 'run_2')).toEqual({ kind: 'forbidden' });
    expect(await store.requestCancel('u1', 'run_404')).toEqual({ kind: 'not_found' });
    // The queued run's turn comes with its cancel request.
    expect(await store.advance(running)).toEqual({ record: queued, cancelRequested: true });
    expect(await store.advance(queued)).toBeNull();
  });

  it('lists a user’s running and queued runs, oldest first', async () => {
    const store = await runStore();
    expect(await store.activeRuns?.('u1')).toEqual([]);
    await store.enqueue(record(1, 'm1', 't1'), 'enqueue', 32);
    await store.enqueue(record(2, 'm2', 't1'), 'enqueue', 32);
    await store.enqueue(record(3, 'm3', 't2'), 'enqueue', 32);
    await store.enqueue(record(4, 'm4', 't1', 'u2'), 'enqueue', 32);
    expect(await store.activeRuns?.('u1')).toEqual([
      { runId: 'run_1', threadId: 't1', state: 'running' },
      { runId: 'run_2', threadId: 't1', state: 'queued' },
      { runId: 'run_3', threadId: 't2', state: 'running' },
    ]);
    await store.advance(record(1, 'm1', 't1'));
    expect(await store.activeRuns?.('u1')).toEqual([
      { runId: 'run_2', threadId: 't1', state: 'running' },
      { runId: 'run_3', threadId: 't2', state: 'running' },
    ]);
    expect(await store.activeRuns?.('u2')).toEqual([{ runId: 'run_4', threadId: 't1', state: 'running' }]);
  });

  it('caps a user’s running and queued runs over all threads, per user', async () => {
    const store = await runStore();
    const cap = { maxActive: 2 };
    expect(await store.enqueue(record(1, 'm1', 't1'), 'enqueue', 32, cap)).toBe('start');
    expect(await store.enqueue(record(2, 'm2', 't1'), 'enqueue', 32, cap)).toBe('queued');
    expect(await store.enqueue(record(3, 'm3', 't2'), 'enqueue', 32, cap)).toBe('too_many_runs');
    expect(await store.enqueue(record(4, 'm4', 't1'), 'enqueue', 32, cap)).toBe('too_many_runs');
    expect(await store.enqueue(record(5, 'm5', 't1', 'u2'), 'enqueue', 32, cap)).toBe('start');
    // A run that ended frees its place; the refused message id stayed free.
    await store.advance(record(1, 'm1', 't1'));
    expect(await store.enqueue(record(6, 'm3', 't2'), 'enqueue', 32, cap)).toBe('start');
    expect(await store.enqueue(record(7, 'm7', 't3'), 'enqueue', 32, cap)).toBe('too_many_runs');
  });
});
