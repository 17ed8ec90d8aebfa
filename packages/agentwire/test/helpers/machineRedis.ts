import { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { createRedisBackend, type RedisBackend, type RedisBackendOptions } from '../../src/redis/index.js';
import type { RedisClusterServer } from './redisCluster.js';

/** The machine's Redis; shared suites use it under a key prefix of their own. */
export const MACHINE_REDIS = process.env.AGENTWIRE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * A ready Redis backend under a new random key prefix (or `keyPrefix`, to be another node of a
 * backend): on the machine's Redis, whose keys under that prefix `close()` deletes, or on a
 * Redis Cluster of the test's own (stopped by the test, keys and all).
 */
export async function machineRedisBackend(options: Partial<RedisBackendOptions> = {}, cluster?: RedisClusterServer): Promise<RedisBackend> {
  const keyPrefix = options.keyPrefix ?? `suite-${randomUUID().slice(0, 12)}`;
  const target = cluster ? { clusterNodes: cluster.nodes } : { url: MACHINE_REDIS };
  const backend = createRedisBackend({ ...target, keyPrefix, ...options });
  await backend.engine.ready();
  if (cluster) return backend;
  return {
    ...backend,
    close: async () => {
      await backend.close();
      await deleteKeysUnder(keyPrefix);
    },
  };
}

/** Deletes the machine's Redis keys under `prefix` (a test's own), so that a test leaves nothing behind. */
export async function deleteKeysUnder(prefix: string): Promise<void> {
  const admin = new Redis(MACHINE_REDIS);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500);
      if (keys.length > 0) await admin.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    admin.disconnect();
  }
}
