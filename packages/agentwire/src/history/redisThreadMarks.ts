import type { RedisEngine } from '../engine/redisEngine.js';
import { decodeId, encodeId } from '../engine/redisKeys.js';
import { parseMark, type ThreadMark, type ThreadMarkStore } from './threadMarks.js';

/**
 * Thread marks in Redis, beside the user's log (one hash per user, in the user's slot), so that
 * every node folds the same renames and deletions. They expire with the log's retention age.
 */
export class RedisThreadMarks implements ThreadMarkStore {
  readonly #engine: RedisEngine;

  constructor(engine: RedisEngine) {
    this.#engine = engine;
  }

  async all(userId: string): Promise<Map<string, ThreadMark>> {
    const stored = await this.#engine.redis.hgetall(this.#engine.keys(userId).threadMarks);
    const marks = new Map<string, ThreadMark>();
    for (const [field, json] of Object.entries(stored)) {
      const mark = parseMark(json);
      if (mark) marks.set(decodeId(field), mark);
    }
    return marks;
  }

  async put(userId: string, threadId: string, mark: ThreadMark): Promise<void> {
    const key = this.#engine.keys(userId).threadMarks;
    await this.#engine.redis.multi().hset(key, encodeId(threadId), JSON.stringify(mark)).pexpire(key, this.#engine.retentionMs).exec();
  }
}
