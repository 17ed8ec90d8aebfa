import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisRunStore } from '../../src/redis/index.js';
import { LEASE_BUCKETS } from '../../src/redis/keys.js';
import { TestRedisEngine } from '../helpers/redisBackend.js';
import { RedisServer } from '../helpers/redisServer.js';

let redis: RedisServer;
beforeAll(async () => {
  redis = await RedisServer.start();
});
afterAll(async () => {
  await redis?.stop();
});

describe('the run-owner index (a key outside the user slot, written beside ENQUEUE)', () => {
  it('is not left behind for an enqueue that created no run (busy, too_many_runs, duplicate)', async () => {
    const prefix = 'owner1';
    const engine = TestRedisEngine.on({ url: redis.url, keyPrefix: prefix });
    await engine.ready();
    const store = new RedisRunStore(engine.connection, { nodeId: 'n1' });
    const raw = new Redis(redis.url);
    try {
      const first = { runId: 'run_first', userId: 'ann', threadId: 't1', messageId: 'm1', text: 'hi' };
      expect(await store.enqueue(first, 'reject', 32)).toBe('start');
      // The thread is busy: rejected, no run.
      expect(await store.enqueue({ ...first, runId: 'run_busy', messageId: 'm2' }, 'reject', 32)).toBe('busy');
      // A replay of m1 under a fresh run id: a duplicate, no run.
      expect(await store.enqueue({ ...first, runId: 'run_dup' }, 'reject', 32)).toEqual({ duplicate: { runId: 'run_first', threadId: 't1' } });
      // Over the cap: no run.
      expect(await store.enqueue({ ...first, runId: 'run_capped', threadId: 't2', messageId: 'm3' }, 'reject', 32, { maxActive: 1 })).toBe('too_many_runs');
      await new Promise((resolve) => setTimeout(resolve, 50));
      const owners = (await raw.keys(`${prefix}:run-owner:*`)).sort();
      // Each of these keys lives for the whole retention (24 h by default): a client whose
      // messages are rejected would otherwise fill Redis with keys naming runs that never existed.
      expect(owners).toEqual([`${prefix}:run-owner:run_first`]);
    } finally {
      raw.disconnect();
      await store.close();
      await engine.close();
    }
  });

  it('a sweep on one Redis costs one command per bucket (measured, not a contract)', async () => {
    const prefix = 'owner2';
    const engine = TestRedisEngine.on({ url: redis.url, keyPrefix: prefix });
    await engine.ready();
    const store = new RedisRunStore(engine.connection, { nodeId: 'n1' });
    const raw = new Redis(redis.url);
    try {
      const calls = async () => Number(/cmdstat_zrangebyscore:calls=(\d+)/.exec(await raw.info('commandstats'))?.[1] ?? 0);
      const before = await calls();
      await store.claimLostRuns(20);
      expect((await calls()) - before).toBe(LEASE_BUCKETS);
    } finally {
      raw.disconnect();
      await store.close();
      await engine.close();
    }
  });
});
