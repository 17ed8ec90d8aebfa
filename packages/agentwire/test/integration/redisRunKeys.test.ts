import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisRunStore } from '../../src/redis/index.js';
import { keyTtlMs } from '../../src/redis/keys.js';
import { TestRedisEngine } from '../helpers/redisBackend.js';
import { RedisServer } from '../helpers/redisServer.js';

/**
 * A run's keys besides the log: its thread queue (the runs queued behind it), its record, its
 * message claim, the user's active runs and the run-owner index. ENQUEUE writes them for the
 * retention; a run that outlives that (a short AGENTWIRE_RETENTION_MS, a long agent) must not
 * lose them while it runs: the runs queued behind it would never start, the run cap would stop
 * counting it, and a cancel from another node would find no owner.
 */
let redis: RedisServer;
beforeAll(async () => {
  redis = await RedisServer.start();
});
afterAll(async () => {
  await redis?.stop();
});

describe("a running run's keys", () => {
  it('are kept for the retention from each lease renewal, whatever the retention left since ENQUEUE', async () => {
    const retentionMs = 60_000;
    const engine = TestRedisEngine.on({ url: redis.url, keyPrefix: 'runkeys1' });
    await engine.ready();
    const store = new RedisRunStore(engine.connection, { nodeId: 'n1', retentionMs });
    const raw = new Redis(redis.url);
    try {
      const running = { runId: 'run_long', userId: 'ruth', threadId: 't1', messageId: 'm1', text: 'a long one' };
      expect(await store.enqueue(running, 'enqueue', 32)).toBe('start');
      expect(await store.enqueue({ ...running, runId: 'run_next', messageId: 'm2' }, 'enqueue', 32)).toBe('queued');
      const keys = engine.keys('ruth');
      const kept = [keys.thread('t1'), keys.run('run_long'), keys.claim('m1'), keys.activeRuns, engine.connection.keys.runOwner('run_long')];
      // As if most of the retention had passed since the run was enqueued.
      for (const key of kept) expect(await raw.pexpire(key, 1000)).toBe(1);
      await store.renewLeases([running]);
      for (const key of kept) {
        expect(await raw.pttl(key)).toBeGreaterThan(retentionMs);
        expect(await raw.pttl(key)).toBeLessThanOrEqual(keyTtlMs(retentionMs));
      }
    } finally {
      raw.disconnect();
      await store.close();
      await engine.close();
    }
  });
});
