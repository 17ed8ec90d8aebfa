import { RedisConnection, RedisEngine, type RedisConnectionOptions, type RedisEngineOptions } from '../../src/redis/index.js';
import { RedisKeys, type UserKeys } from '../../src/redis/keys.js';

/** The keys of `userId` under `prefix`, as the Redis backend names them. */
export function userKeys(prefix: string, userId: string): UserKeys {
  return new RedisKeys(prefix).user(userId);
}

/**
 * An engine on a connection of its own, for tests that build nodes part by part: `close()`
 * closes the connection too (nothing else uses it), and `keys`/`redis` reach its key names and
 * client. Run stores and presences of the same node are made on `connection`.
 */
export class TestRedisEngine extends RedisEngine {
  constructor(
    readonly connection: RedisConnection,
    options: RedisEngineOptions = {},
  ) {
    super(connection, options);
  }

  static on(options: RedisConnectionOptions & RedisEngineOptions): TestRedisEngine {
    return new TestRedisEngine(new RedisConnection(options), options);
  }

  keys(userId: string): UserKeys {
    return this.connection.keys.user(userId);
  }

  get redis(): RedisConnection['client'] {
    return this.connection.client;
  }

  override async close(): Promise<void> {
    await super.close();
    await this.connection.close();
  }
}
