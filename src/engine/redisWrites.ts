import type { Redis } from 'ioredis';

const corked = new WeakSet<object>();

/**
 * Commands sent in the same tick leave in one write: the connection's socket is corked at the
 * first and uncorked on the next tick. Under load many runs append in one tick (their previous
 * replies arrived in one read), and one syscall replaces one per command. Unlike ioredis'
 * auto-pipelining, nothing waits for an earlier batch's replies.
 */
export function coalesceWrites(redis: Redis): void {
  const stream = redis.stream;
  if (redis.status !== 'ready' || !stream || corked.has(stream)) return;
  corked.add(stream);
  stream.cork();
  process.nextTick(() => {
    corked.delete(stream);
    stream.uncork();
  });
}
