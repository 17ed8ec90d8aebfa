import type { LogHead } from '../engine/types.js';
import { markJson, parseMark, type DeadMark, type ThreadMark, type ThreadMarkStore } from '../history/threadMarks.js';
import type { RedisConnection } from './connection.js';
import { decodeId, encodeId, keyTtlMs } from './keys.js';

/**
 * Thread marks in Redis, beside the user's log (one hash per user, in the user's slot), so that
 * every node folds the same renames and deletions. They expire with the log: a rename or deletion
 * and the appends that renew the user's keys (append.lua) keep them for the retention age and its
 * slack (keyTtlMs); the history store removes those that can change no answer (pruneMarks.lua),
 * so an active user's hash does not grow without bound.
 */
export class RedisThreadMarks implements ThreadMarkStore {
  readonly #connection: RedisConnection;
  readonly #keyTtlMs: number;

  constructor(connection: RedisConnection, options: { readonly retentionMs: number }) {
    this.#connection = connection;
    this.#keyTtlMs = keyTtlMs(options.retentionMs);
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
    const written = await this.#connection.script('putMark', [key], [encodeId(threadId), markJson(mark), this.#keyTtlMs, ...check]);
    return Number(written) === 1;
  }

  async remove(userId: string, head: LogHead, dead: readonly DeadMark[]): Promise<number> {
    if (dead.length === 0) return 0;
    const keys = this.#connection.keys.user(userId);
    const args: (string | number)[] = [head.epoch, head.lastSeq];
    for (const { threadId, mark, whileAt } of dead) args.push(encodeId(threadId), markJson(mark), whileAt ? '1' : '0');
    return Number(await this.#connection.script('pruneMarks', [keys.threadMarks, keys.meta], args));
  }
}
