import type { EventEngine, LogHead } from '../engine/types.js';
import type { UnfinishedRun } from '../runs/runStore.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { conversationTurns, messagePage, runningRuns, threadPage, threadSummary } from './fold.js';
import { FoldCache, type Deletion, type UserFold } from './foldCache.js';
import { MemoryThreadMarks, type ThreadMark, type ThreadMarkStore } from './threadMarks.js';
import type { ConversationTurn, HistoryStore, MessagesPage, Page, PageRequest, ThreadSummary } from './types.js';

/** Writes of a rename or deletion tried, each after reading the marks again, before giving up. */
const MAX_MARK_ATTEMPTS = 5;

/** Options of `createLogHistoryStore`. */
export interface LogHistoryStoreOptions {
  /** The log to fold (its `read` and `head`). */
  readonly engine: Pick<EventEngine, 'read' | 'head' | 'available'>;
  /** Renames and deletions. Default: in memory (one node); `RedisThreadMarks` shares them. */
  readonly marks?: ThreadMarkStore;
  /**
   * Runs running or queued (the run store's `activeRuns`): a deletion also deletes their later
   * events. (A queued run as a thread's `last_run` is the routes' to add, for every store.)
   */
  readonly activeRuns?: (userId: string) => Promise<UnfinishedRun[]>;
  /** The newest events of a user folded, at most. Default 10 000 (the default retention). */
  readonly maxEvents?: number;
  /** Events whose fold is kept between requests, over all users (least recently read users go first). Default 100 000. */
  readonly maxCachedEvents?: number;
}

interface Folded {
  readonly head: LogHead;
  readonly user: UserFold;
  readonly marks: Map<string, ThreadMark>;
}

/**
 * The default history store: every answer is the fold of the user's retained log (as far as
 * `maxEvents` reaches), read through the engine, so with the Redis engine every node answers
 * alike. Nothing to set up, and nothing beyond retention: older history needs the PostgreSQL
 * store. Renames and deletions are marks kept beside the log (`ThreadMarkStore`).
 *
 * `queued`: a run accepted but not started has no event yet; when the run store can list active
 * runs, a thread whose newest run is queued reports it as `last_run` with status `queued`. Its
 * messages appear once it starts (its `agent_started` carries the user's text), so an answer's
 * messages are exactly the fold of the events up to its `last_seq`.
 */
export class LogHistoryStore implements HistoryStore {
  readonly #engine: LogHistoryStoreOptions['engine'];
  readonly #marks: ThreadMarkStore;
  readonly #activeRuns: LogHistoryStoreOptions['activeRuns'];
  readonly #cache: FoldCache;

  constructor(options: LogHistoryStoreOptions) {
    this.#engine = options.engine;
    this.#marks = options.marks ?? new MemoryThreadMarks();
    this.#activeRuns = options.activeRuns;
    this.#cache = new FoldCache(options.maxEvents ?? 10_000, options.maxCachedEvents ?? 100_000);
  }

  get available(): boolean {
    return this.#engine.available !== false;
  }

  async listThreads(userId: string, page: PageRequest): Promise<Page<ThreadSummary>> {
    const before = page.cursor === undefined ? Number.POSITIVE_INFINITY : decodeCursor('threads', page.cursor);
    const { head, user, marks } = await this.#fold(userId);
    const { items, more } = threadPage(user.fold, before, page.limit);
    const last = items.at(-1);
    return {
      items: items.map((thread) => withMarks(thread, currentMark(marks, thread.threadId, head.epoch))),
      nextCursor: more && last ? encodeCursor('threads', last.lastSeq) : null,
    };
  }

  async messages(userId: string, threadId: string, page: PageRequest): Promise<MessagesPage | null> {
    const before = page.cursor === undefined ? Number.POSITIVE_INFINITY : decodeCursor('messages', page.cursor);
    const { head, user } = await this.#fold(userId);
    const messages = messagePage(user.fold, threadId, before, page.limit);
    if (!messages) return null;
    const { items, more } = messages;
    return {
      epoch: head.epoch,
      lastSeq: user.readThrough,
      items: items.map((m) => m.message),
      nextCursor: more ? encodeCursor('messages', items[0]!.position) : null,
    };
  }

  async renameThread(userId: string, threadId: string, title: string): Promise<ThreadSummary | null> {
    for (let attempt = 1; ; attempt++) {
      const { head, user, marks } = await this.#fold(userId);
      const thread = threadSummary(user.fold, threadId);
      if (!thread) return null;
      const mark: ThreadMark = { ...currentMark(marks, threadId, head.epoch), title };
      // Written only over the mark read above: a deletion made since is folded again (a 404).
      if (await this.#putMark(userId, threadId, mark, marks, attempt)) return withMarks(thread, mark);
    }
  }

  async deleteThread(userId: string, threadId: string, endingRunIds: readonly string[] = []): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      const [{ head, user, marks }, active] = await Promise.all([this.#fold(userId), this.#activeRuns?.(userId) ?? []]);
      if (!threadSummary(user.fold, threadId)) return false;
      // Runs still going end after the deletion (their terminal event, or a queued one's
      // agent_started) and must not bring the thread back: their later events are deleted too.
      const deletedRuns = new Set([
        ...runningRuns(user.fold, threadId),
        ...active.filter((run) => run.threadId === threadId).map((run) => run.runId),
        ...endingRunIds,
      ]);
      const previous = currentMark(marks, threadId, head.epoch);
      const mark: ThreadMark = {
        epoch: head.epoch,
        deletedThrough: user.readThrough,
        deletedRuns: [...new Set([...(previous.deletedRuns ?? []), ...deletedRuns])],
      };
      if (await this.#putMark(userId, threadId, mark, marks, attempt)) return true;
    }
  }

  /**
   * Writes a thread's mark if the stored one is still the one in `read`; false when another
   * write came between (the caller reads again). Past MAX_MARK_ATTEMPTS it gives up (a 503).
   */
  async #putMark(userId: string, threadId: string, mark: ThreadMark, read: Map<string, ThreadMark>, attempt: number): Promise<boolean> {
    if ((await this.#marks.put(userId, threadId, mark, read.get(threadId) ?? null)) !== false) return true;
    if (attempt >= MAX_MARK_ATTEMPTS) throw new Error(`the marks of thread ${threadId} kept changing under ${attempt} writes`);
    return false;
  }

  async conversation(userId: string, threadId: string, maxTurns: number, beforeRunId?: string): Promise<ConversationTurn[]> {
    if (maxTurns <= 0) return [];
    const { user } = await this.#fold(userId);
    return conversationTurns(user.fold, threadId, maxTurns, beforeRunId);
  }

  /**
   * What a node appends is in the log already; the marks only hear of it, so that they live as
   * long as the events they hide.
   */
  record(userId: string): void {
    this.#marks.appended?.(userId);
  }

  async close(): Promise<void> {}

  /**
   * The user's fold of their newest `maxEvents` events, including at least every event up to
   * the head read first (`readThrough` says how far), so an answer includes exactly the events
   * up to `readThrough`. Kept between requests (FoldCache): only what was appended since is read.
   */
  async #fold(userId: string): Promise<Folded> {
    const [head, marks] = await Promise.all([this.#engine.head(userId), this.#marks.all(userId)]);
    const user = await this.#cache.fold(this.#engine, userId, head, deletionsOf(marks, head.epoch));
    return { head, user, marks };
  }
}

/** Creates the default, log-folded history store (see `LogHistoryStore`). */
export function createLogHistoryStore(options: LogHistoryStoreOptions): LogHistoryStore {
  return new LogHistoryStore(options);
}

/** The thread's mark in this epoch (marks of a lost log's epoch mean nothing). */
function currentMark(marks: Map<string, ThreadMark>, threadId: string, epoch: string): ThreadMark {
  const mark = marks.get(threadId);
  return mark?.epoch === epoch ? mark : { epoch };
}

/** The deletions of the user's threads in this epoch, by thread id. */
function deletionsOf(marks: Map<string, ThreadMark>, epoch: string): Map<string, Deletion> {
  const deletions = new Map<string, Deletion>();
  for (const [threadId, mark] of marks) {
    if (mark.epoch === epoch && mark.deletedThrough !== undefined) {
      deletions.set(threadId, { through: mark.deletedThrough, runs: new Set(mark.deletedRuns) });
    }
  }
  return deletions;
}

function withMarks(thread: ThreadSummary, mark: ThreadMark): ThreadSummary {
  return { threadId: thread.threadId, title: mark.title ?? thread.title, createdAt: thread.createdAt, updatedAt: thread.updatedAt, lastRun: thread.lastRun };
}
