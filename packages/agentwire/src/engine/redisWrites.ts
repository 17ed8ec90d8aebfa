import { Redis, type Cluster } from 'ioredis';
import { corkForTick } from '../corkForTick.js';

/**
 * The commands sent on this connection from now to the end of the tick go to Redis in one
 * write. Under load many runs append in one tick (their previous replies arrived in one read).
 * Unlike ioredis' auto-pipelining, nothing waits for an earlier batch's replies. A Cluster
 * client writes to several connections; its commands are sent as they come.
 */
export function coalesceWrites(redis: Redis | Cluster): void {
  if (redis instanceof Redis && redis.status === 'ready' && redis.stream) corkForTick(redis.stream);
}
