import { markJson, parseMark, type ThreadMark, type ThreadMarkStore } from '../history/threadMarks.js';
import type { RedisConnection } from './connection.js';
import { decodeId, encodeId } from './keys.js';

/**
 * Thread marks in Redis, beside the user's log (one hash per user, in the user's slot), so that
 * every node folds the same renames and deletions. They expire with the log: a rename or deletion
 * and every append (append.lua) keep them for the retention age.
 */
export class RedisThreadMarks implements ThreadMarkStore {
  readonly #connection: RedisConnection;
  readonly #retentionMs: number;

  constructor(connection: RedisConnection, options: { readonly retentionMs: number }) {
    this.#connection = connection;
    this.#retentionMs = options.retentionMs;
  }

  async all(userId: string): Promise<Map<string, ThreadMark>> {
    const stored = await this.#connection.client.hgetall(this.#connection.keys.user(userId).threadMarks);
    const marks = new Map<string, ThreadMark>();
    for (const [field, json] of Object.entries(stored)) {
      const mark = parseMark(json);
      if (mark) marks.set(decodeId(field), mark);
    }
    return marks;
  }

  async put(userId: string, threadId: string, mark: ThreadMark, expected?: ThreadMark | null): Promise<boolean> {
    const key = this.#connection.keys.user(userId).threadMarks;
    const check = expected === undefined ? ['0', ''] : ['1', expected === null ? '' : markJson(expected)];
    const written = await this.#connection.script('putMark', [key], [encodeId(threadId), markJson(mark), this.#retentionMs, ...check]);
    return Number(written) === 1;
  }
}
