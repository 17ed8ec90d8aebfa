// What the log-folded history keeps beside the log: renames and deletions of a user's threads.
// The log itself is append-only, so these marks are applied when it is folded.

import { parseJsonObject } from './fold.js';

/** A thread's marks; they belong to one epoch of the user's log and mean nothing in another. */
export interface ThreadMark {
  readonly epoch: string;
  /** The title given by `PATCH /v1/threads/<id>` (replaces the folded one). */
  readonly title?: string;
  /** The thread was deleted when the log stood at this seq: its events up to it are gone. */
  readonly deletedThrough?: number;
  /** Runs running or queued at the deletion: their later events are gone too. */
  readonly deletedRuns?: readonly string[];
}

/** Where the marks are kept: in memory for one node, in Redis for a cluster. */
export interface ThreadMarkStore {
  /** The user's marks by thread id. */
  all(userId: string): Promise<Map<string, ThreadMark>>;
  /**
   * Stores the thread's mark. With `expected` (the mark read before, null for none), only while
   * the stored mark is still that one, resolving false otherwise: a rename must not write over a
   * deletion made since it read. A store that resolves nothing counts as written.
   */
  put(userId: string, threadId: string, mark: ThreadMark, expected?: ThreadMark | null): Promise<boolean | void>;
}

/** Bounds of `MemoryThreadMarks`: the oldest marks are dropped past them. */
export interface MemoryThreadMarksOptions {
  /** Users with marks. Default 10 000. */
  readonly maxUsers?: number;
  /** Marked threads per user. Default 1000. */
  readonly maxThreadsPerUser?: number;
}

/** Marks of one node's in-memory log (they die with it, as the log does). Bounded. */
export class MemoryThreadMarks implements ThreadMarkStore {
  readonly #users = new Map<string, Map<string, ThreadMark>>();
  readonly #maxUsers: number;
  readonly #maxThreads: number;

  constructor(options: MemoryThreadMarksOptions = {}) {
    this.#maxUsers = options.maxUsers ?? 10_000;
    this.#maxThreads = options.maxThreadsPerUser ?? 1000;
  }

  async all(userId: string): Promise<Map<string, ThreadMark>> {
    return new Map(this.#users.get(userId));
  }

  async put(userId: string, threadId: string, mark: ThreadMark, expected?: ThreadMark | null): Promise<boolean> {
    if (expected !== undefined && !sameMark(this.#users.get(userId)?.get(threadId) ?? null, expected)) return false;
    const marks = this.#users.get(userId) ?? new Map<string, ThreadMark>();
    // Re-inserted, so insertion order is recency: the oldest go first past a bound.
    this.#users.delete(userId);
    this.#users.set(userId, marks);
    marks.delete(threadId);
    marks.set(threadId, mark);
    if (marks.size > this.#maxThreads) marks.delete(marks.keys().next().value!);
    if (this.#users.size > this.#maxUsers) this.#users.delete(this.#users.keys().next().value!);
    return true;
  }
}

/** A mark as stored: JSON with its fields always in one order, so equal marks are equal text. */
export function markJson(mark: ThreadMark): string {
  const { epoch, title, deletedThrough, deletedRuns } = mark;
  return JSON.stringify({ epoch, title, deletedThrough, deletedRuns });
}

function sameMark(a: ThreadMark | null, b: ThreadMark | null): boolean {
  return a === b || (a !== null && b !== null && markJson(a) === markJson(b));
}

/** A stored mark as JSON, or null when it is not one (storage is not trusted). */
export function parseMark(json: string): ThreadMark | null {
  const value = parseJsonObject(json);
  if (value === null) return null;
  const { epoch, title, deletedThrough, deletedRuns } = value;
  if (typeof epoch !== 'string') return null;
  if (title !== undefined && typeof title !== 'string') return null;
  if (deletedThrough !== undefined && !Number.isSafeInteger(deletedThrough)) return null;
  if (deletedRuns !== undefined && !(Array.isArray(deletedRuns) && deletedRuns.every((id) => typeof id === 'string'))) return null;
  return {
    epoch,
    ...(title !== undefined ? { title } : {}),
    ...(deletedThrough !== undefined ? { deletedThrough: deletedThrough as number } : {}),
    ...(deletedRuns !== undefined ? { deletedRuns: deletedRuns as string[] } : {}),
  };
}
