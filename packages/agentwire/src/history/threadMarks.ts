// What the log-folded history keeps beside the log: renames and deletions of a user's threads.
// The log itself is append-only, so these marks are applied when it is folded.
//
// A mark goes once it can change no answer (LogHistoryStore.pruneMarks), so the marks stay
// bounded by what the retained log can still show:
// - a mark of another epoch than the log's: it hides nothing (an epoch never comes back);
// - a deletion once every run it names has ended (appends are fenced: it can add nothing) and
//   every event it hid is below the fold's oldest seq, which only moves on (the fold is never
//   wider than the log), so nothing it hides can be shown again;
// - a rename once its thread shows no run and has none queued or running, and only while nothing
//   was appended since that was judged: a thread whose events are all gone may still be resumed,
//   and then starts afresh, titled by its new first message.
// The last two are judged only by a fold that reaches as far back as the log keeps events (the
// default; not with `maxEvents` below the engine's `retentionEvents`): a narrower fold cannot tell
// that an event below it is gone, and a node folding more would show it again.
// Removal is compare-and-delete: a mark written since it was judged stays.

import { systemClock, type Clock } from '@agentwire/protocol';
import { DEFAULTS } from '../config/settings.js';
import type { EventEngine, LogHead } from '../engine/types.js';
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
  /**
   * The user's log was appended to. Marks must live as long as the log holds the events they
   * hide (a deleted thread would come back), so a store that forgets by age counts this as use.
   * Stores whose marks the log's own writes keep alive (Redis: append.lua) need not have it.
   */
  appended?(userId: string): void;
  /**
   * Removes marks judged dead when the log stood at `head`, each only while the stored mark is
   * still the judged one; those judged `whileAt` only while the log still stands at `head`.
   * Resolves how many went. A store that cannot see the log leaves the `whileAt` ones.
   */
  remove?(userId: string, head: LogHead, dead: readonly DeadMark[]): Promise<number>;
}

/** A mark that can change no answer (see the rule above). */
export interface DeadMark {
  readonly threadId: string;
  readonly mark: ThreadMark;
  /** Dead only while nothing is appended past the head it was judged at (a rename). */
  readonly whileAt: boolean;
}

/** Bounds of `MemoryThreadMarks`. */
export interface MemoryThreadMarksOptions {
  /**
   * A user's marks are forgotten once the user has not read or written them, nor appended to
   * the log, for longer than this, as the in-memory log forgets an idle user and evicts events
   * older than its age. Default 24 h (the log's default retention age).
   */
  readonly retentionMs?: number;
  /** Users with marks at most; past it the least recently active goes. Default: no bound but the age. */
  readonly maxUsers?: number;
  /**
   * Marked threads per user (the oldest mark goes past it). A mark matters while the log holds
   * an event of its thread, so this is the log's bound in events per user: with fewer, the user's
   * own later deletions pushed out a deletion whose thread was still in the log, and it came back.
   * Default: AGENTWIRE_RETENTION_EVENTS's (10000).
   */
  readonly maxThreadsPerUser?: number;
  readonly clock?: Clock;
}

interface UserMarks {
  readonly marks: Map<string, ThreadMark>;
  usedAt: number;
}

/**
 * Marks of one node's in-memory log (they die with it, as the log does). Bounded per user, and
 * in time: never by how many other users there are, whose activity would otherwise push out a
 * user's deletions (the deleted threads would come back while the log still holds them).
 */
export class MemoryThreadMarks implements ThreadMarkStore {
  /** By recency of use: the least recently used user first. */
  readonly #users = new Map<string, UserMarks>();
  readonly #retentionMs: number;
  readonly #maxUsers: number;
  readonly #maxThreads: number;
  readonly #clock: Clock;

  constructor(options: MemoryThreadMarksOptions = {}) {
    this.#retentionMs = options.retentionMs ?? DEFAULTS.retentionMs;
    this.#maxUsers = options.maxUsers ?? Number.POSITIVE_INFINITY;
    this.#maxThreads = options.maxThreadsPerUser ?? DEFAULTS.retentionEvents;
    this.#clock = options.clock ?? systemClock;
  }

  /**
   * Marks for the log of `engine`: kept as long as it keeps an idle user's log, and as many per
   * user as it keeps events (the defaults where it says nothing), on `clock`.
   */
  static forLog(engine: Pick<EventEngine, 'retentionMs' | 'retentionEvents'>, clock: Clock): MemoryThreadMarks {
    return new MemoryThreadMarks({
      clock,
      ...(engine.retentionMs === undefined ? {} : { retentionMs: engine.retentionMs }),
      ...(engine.retentionEvents === undefined ? {} : { maxThreadsPerUser: engine.retentionEvents }),
    });
  }

  async all(userId: string): Promise<Map<string, ThreadMark>> {
    return new Map(this.#use(userId)?.marks);
  }

  async put(userId: string, threadId: string, mark: ThreadMark, expected?: ThreadMark | null): Promise<boolean> {
    const user = this.#use(userId) ?? { marks: new Map<string, ThreadMark>(), usedAt: this.#clock.now() };
    if (expected !== undefined && !sameMark(user.marks.get(threadId) ?? null, expected)) return false;
    this.#users.set(userId, user);
    // Re-inserted, so insertion order is recency: the oldest go first past a bound.
    user.marks.delete(threadId);
    user.marks.set(threadId, mark);
    if (user.marks.size > this.#maxThreads) user.marks.delete(user.marks.keys().next().value!);
    if (this.#users.size > this.#maxUsers) this.#users.delete(this.#users.keys().next().value!);
    return true;
  }

  appended(userId: string): void {
    this.#use(userId);
  }

  /** Without the log's head at hand, it leaves renames to its per-user bound. */
  async remove(userId: string, _head: LogHead, dead: readonly DeadMark[]): Promise<number> {
    const marks = this.#users.get(userId)?.marks;
    let removed = 0;
    for (const { threadId, mark, whileAt } of dead) {
      if (whileAt || !marks || !sameMark(marks.get(threadId) ?? null, mark)) continue;
      marks.delete(threadId);
      removed++;
    }
    return removed;
  }

  /** The user's marks (now the most recently used), after forgetting users idle past the age. */
  #use(userId: string): UserMarks | undefined {
    const now = this.#clock.now();
    for (const [idleId, idle] of this.#users) {
      // Kept at the age itself: the log evicts an event only once it is older than that.
      if (now - idle.usedAt <= this.#retentionMs) break;
      this.#users.delete(idleId);
    }
    const user = this.#users.get(userId);
    if (!user) return undefined;
    this.#users.delete(userId);
    this.#users.set(userId, user);
    user.usedAt = now;
    return user;
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
