import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '@agentwire/protocol';
import { RedisRunStore } from '../../src/redis/index.js';
import { RedisKeys } from '../../src/redis/keys.js';
import { RunManager } from '../../src/runs/runManager.js';
import type { Agent } from '../../src/runs/agent.js';
import type { LogEntry } from '@agentwire/protocol';
import { TestRedisEngine } from '../helpers/redisBackend.js';
import { RedisServer } from '../helpers/redisServer.js';
import { Waiters } from '../helpers/waitFor.js';

let redis: RedisServer;
beforeAll(async () => {
  redis = await RedisServer.start();
});
afterAll(async () => {
  await redis?.stop();
});

/** Records run outcomes and resolves once `count` have been reported. */
function outcomeRecorder() {
  const outcomes: string[] = [];
  const waiters = new Waiters(() => `outcomes: ${outcomes.join(',')}`);
  return {
    outcomes,
    onRunEnded: (outcome: string) => {
      outcomes.push(outcome);
      waiters.notify();
    },
    async until(count: number): Promise<void> {
      await waiters.until(() => outcomes.length >= count, 10_000, `${count} run outcome(s)`);
    },
  };
}

const idleAgent: Agent = {
  async *run() {
    yield { type: 'answer', text: 'never used' };
  },
};

/** Collects a user's live entries and resolves once one matches. */
async function watch(engine: TestRedisEngine, userId: string) {
  const entries: LogEntry[] = [];
  const waiters = new Waiters(() => `got ${entries.map((e) => e.type).join(',')}`);
  await engine.subscribe(userId, (entry) => {
    entries.push(entry);
    waiters.notify();
  });
  return {
    entries,
    until(predicate: (entry: LogEntry) => boolean, timeoutMs = 10_000): Promise<LogEntry> {
      return waiters.until(() => entries.find(predicate), timeoutMs, `a matching entry of ${userId}`);
    },
  };
}

describe('runs of a node that died', () => {
  it('a run handed to a node that died before writing anything ends with agent_started then run_lost, once', async () => {
    const prefix = 'lost1';
    const deadEngine = TestRedisEngine.on({ url: redis.url, keyPrefix: prefix });
    const aliveEngine = TestRedisEngine.on({ url: redis.url, keyPrefix: prefix });
    await Promise.all([deadEngine.ready(), aliveEngine.ready()]);
    // The "dead" node only enqueues (taking the run and its lease) and never executes it.
    const deadStore = new RedisRunStore(deadEngine.connection, { nodeId: 'dead', leaseMs: 300 });
    const record = { runId: 'run_lost_1', userId: 'uma', threadId: 't1', messageId: 'm1', text: 'hello' };
    expect(await deadStore.enqueue(record, 'enqueue', 32)).toBe('start');
    const queued = { ...record, runId: 'run_after', messageId: 'm2', text: 'next' };
    expect(await deadStore.enqueue(queued, 'enqueue', 32)).toBe('queued');

    const log = await watch(aliveEngine, 'uma');
    const aliveStore = new RedisRunStore(aliveEngine.connection, { nodeId: 'alive', leaseMs: 300 });
    const recorder = outcomeRecorder();
    const { outcomes } = recorder;
    const runs = new RunManager({
      engine: aliveEngine,
      agent: idleAgent,
      clock: systemClock,
      threadPolicy: 'enqueue',
      runTimeoutMs: 10_000,
      store: aliveStore,
      lostRunSweepMs: 50,
      onRunEnded: recorder.onRunEnded,
    });
    await log.until((e) => e.type === 'agent_completed' && JSON.parse(e.json).run_id === 'run_after');
    await recorder.until(2);
    const lostEvents = log.entries.map((e) => JSON.parse(e.json)).filter((e) => e.run_id === 'run_lost_1');
    expect(lostEvents.map((e) => [e.type, e.code])).toEqual([
      ['agent_started', undefined],
      ['agent_error', 'run_lost'],
    ]);
    expect(lostEvents[0]).toMatchObject({ message_id: 'm1', text: 'hello' });
    // The thread moved on to the queued run, which this node executed.
    expect(outcomes).toEqual(['run_lost', 'completed']);
    expect(log.entries.map((e) => e.seq)).toEqual(log.entries.map((_, i) => i + 1));
    // Nothing is left to sweep: the lease set is empty.
    expect(await leaseCount(aliveEngine, prefix)).toBe(0);

    await runs.close();
    await deadStore.close();
    await Promise.all([deadEngine.close(), aliveEngine.close()]);
  });

  it('a lost run whose terminal event its node had already written only moves its thread on', async () => {
    const prefix = 'lost2';
    const engine = TestRedisEngine.on({ url: redis.url, keyPrefix: prefix });
    await engine.ready();
    const deadStore = new RedisRunStore(engine.connection, { nodeId: 'dead', leaseMs: 300 });
    const record = { runId: 'run_done', userId: 'vic', threadId: 't1', messageId: 'm1', text: 'hi' };
    await deadStore.enqueue(record, 'enqueue', 32);
    await deadStore.enqueue({ ...record, runId: 'run_next', messageId: 'm2' }, 'enqueue', 32);
    // The dead node wrote the whole run, then died before advancing the thread.
    const stamp = { run_id: 'run_done', thread_id: 't1', ts: new Date(0).toISOString() };
    await engine.append('vic', [{ type: 'agent_started', message_id: 'm1', text: 'hi', ...stamp }], { runId: 'run_done', terminal: false });
    await engine.append('vic', [{ type: 'agent_completed', status: 'completed', text: 'ok', ...stamp }], { runId: 'run_done', terminal: true });

    const log = await watch(engine, 'vic');
    const store = new RedisRunStore(engine.connection, { nodeId: 'alive', leaseMs: 300 });
    const recorder = outcomeRecorder();
    const { outcomes } = recorder;
    const runs = new RunManager({
      engine,
      agent: idleAgent,
      clock: systemClock,
      threadPolicy: 'enqueue',
      runTimeoutMs: 10_000,
      store,
      lostRunSweepMs: 50,
      onRunEnded: recorder.onRunEnded,
    });
    await log.until((e) => e.type === 'agent_completed' && JSON.parse(e.json).run_id === 'run_next');
    await recorder.until(1);
    // No run_lost for a run that had ended: exactly one terminal event per run.
    expect(log.entries.map((e) => JSON.parse(e.json)).filter((e) => e.run_id === 'run_done')).toEqual([]);
    expect(outcomes).toEqual(['completed']);
    expect(await leaseCount(engine, prefix)).toBe(0);
    await runs.close();
    await deadStore.close();
    await engine.close();
  });
});

/** Leases left in every bucket's lease set. */
async function leaseCount(engine: TestRedisEngine, prefix: string): Promise<number> {
  const counts = await Promise.all(new RedisKeys(prefix).allLeaseKeys.map((key) => engine.redis.zcard(key)));
  return counts.reduce((sum, count) => sum + count, 0);
}
