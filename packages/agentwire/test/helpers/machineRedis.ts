import { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { createRedisBackend, type RedisBackend, type RedisBackendOptions } from '../../src/redis/index.js';

/** The machine's Redis; shared suites use it under a key prefix of their own. */
export const MACHINE_REDIS = process.env.AGENTWIRE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * A ready Redis backend on the machine's Redis under a new random key prefix (or `keyPrefix`,
 * to be another node of a backend); `close()` closes it and deletes every key under that prefix.
 */
export async function machineRedisBackend(options: Partial<RedisBackendOptions> = {}): Promise<RedisBackend> {
  const keyPrefix = options.keyPrefix ?? `suite-${randomUUID().slice(0, 12)}`;
  const backend = createRedisBackend({ url: MACHINE_REDIS, keyPrefix, ...options });
  await backend.engine.ready();
  return {
    ...backend,
    close: async () => {
      await backend.close();
      await deleteKeysUnder(keyPrefix);
    },
  };
}

async function deleteKeysUnder(prefix: string): Promise<void> {
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
